//! A snapshot device's shared state and the record of what reached it: every config and BAR
//! write (with the bytes it replaced) and every decode / reset event, stamped with a
//! process-wide sequence number, and the [`SnapshotHandle`] a test keeps to read them after
//! the device moved into the bridge. Kept apart because this is the observation side (what the
//! tests and the invariant checker look at), not the behaviour of the device (`device.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

#[cfg(doc)]
use super::SnapshotDevice;
#[cfg(doc)]
use crate::backend::HostDevice;

/// One write that reached a snapshot device's config space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteRecord {
    /// Config offset.
    pub offset: u16,
    /// Bytes written.
    pub data: Vec<u8>,
    /// The bytes they replaced.
    pub before: Vec<u8>,
}

/// One write that reached a snapshot device's BAR.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BarWriteRecord {
    /// BAR slot (6 = ROM).
    pub index: u8,
    /// Offset in the BAR.
    pub offset: u64,
    /// Bytes written.
    pub data: Vec<u8>,
}

/// What happened to a snapshot device, in order, stamped with [`next_seq`] so that a test can
/// order it against other logs (the hypercalls a fake Xen recorded, say).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DeviceEventKind {
    /// A config write ([`HostDevice::write_config`]).
    ConfigWrite {
        /// Config offset.
        offset: u16,
        /// Bytes written.
        data: Vec<u8>,
    },
    /// A BAR write ([`HostDevice::write_bar`]).
    BarWrite {
        /// BAR slot.
        index: u8,
        /// Offset in the BAR.
        offset: u64,
        /// Bytes written.
        len: usize,
    },
    /// [`HostDevice::enable_decode`].
    EnableDecode,
    /// [`HostDevice::disable_decode`].
    DisableDecode,
    /// [`HostDevice::reset`].
    Reset,
}

/// One [`DeviceEventKind`] with its sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceEvent {
    /// From [`next_seq`]: increasing over the whole process.
    pub seq: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: DeviceEventKind,
}

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The next number of a process-wide sequence (every snapshot device event takes one), for
/// tests that interleave device events with other recorded events.
pub fn next_seq() -> u64 {
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) config: Vec<u8>,
    pub(super) writes: Vec<WriteRecord>,
    pub(super) bar_data: BTreeMap<(u8, u64), u8>,
    pub(super) bar_writes: Vec<BarWriteRecord>,
    pub(super) events: Vec<DeviceEvent>,
    /// What [`HostDevice::reset`] answers: `Some(true)` (has a reset method, the default),
    /// `Some(false)` (none), `None` (fails).
    pub(super) reset: Option<bool>,
    /// The file the config space is mirrored into ([`SnapshotDevice::set_config_mirror`]).
    pub(super) mirror: Option<PathBuf>,
}

impl State {
    /// Write the whole config space to the mirror file (a temp file renamed over it, so a
    /// reader never sees half of it).
    pub(super) fn mirror(&self) {
        let Some(p) = &self.mirror else { return };
        let tmp = p.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, &self.config).and_then(|()| std::fs::rename(&tmp, p)) {
            tracing::warn!("snapshot config mirror {}: {e}", p.display());
        }
    }

    pub(super) fn event(&mut self, kind: DeviceEventKind) {
        self.events.push(DeviceEvent {
            seq: next_seq(),
            kind,
        });
    }
}

/// A shared view of a [`SnapshotDevice`]'s state, kept by tests after the device moved into
/// the bridge.
#[derive(Clone, Debug)]
pub struct SnapshotHandle(pub(super) Arc<Mutex<State>>);

impl SnapshotHandle {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device's current config space.
    pub fn config(&self) -> Vec<u8> {
        self.lock().config.clone()
    }

    /// Every config write so far, in order.
    pub fn writes(&self) -> Vec<WriteRecord> {
        self.lock().writes.clone()
    }

    /// The config writes from index `from` on (cheaper than [`SnapshotHandle::writes`] when
    /// polling after every access).
    pub fn writes_from(&self, from: usize) -> Vec<WriteRecord> {
        tail(&self.lock().writes, from)
    }

    /// The BAR writes from index `from` on.
    pub fn bar_writes_from(&self, from: usize) -> Vec<BarWriteRecord> {
        tail(&self.lock().bar_writes, from)
    }

    /// `len` config bytes at `offset` as the device has them now (missing bytes read 0xFF).
    pub fn config_bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        let s = self.lock();
        (offset..offset + len)
            .map(|o| s.config.get(o).copied().unwrap_or(0xFF))
            .collect()
    }

    /// How many config writes, BAR writes and events were recorded so far (without copying
    /// them, for a checker marking them seen).
    #[cfg(any(test, feature = "testing"))]
    pub fn log_lengths(&self) -> (usize, usize, usize) {
        let s = self.lock();
        (s.writes.len(), s.bar_writes.len(), s.events.len())
    }

    /// Every event so far (config and BAR writes, decode on/off, resets), in order.
    pub fn events(&self) -> Vec<DeviceEvent> {
        self.lock().events.clone()
    }

    /// The events from index `from` on.
    pub fn events_from(&self, from: usize) -> Vec<DeviceEvent> {
        tail(&self.lock().events, from)
    }

    /// What the device's reset answers from now on: `Some(true)` (reset done, the default),
    /// `Some(false)` (no reset method), `None` (the reset fails).
    pub fn set_reset(&self, answer: Option<bool>) {
        self.lock().reset = answer;
    }

    /// Every BAR write so far, in order.
    pub fn bar_writes(&self) -> Vec<BarWriteRecord> {
        self.lock().bar_writes.clone()
    }

    /// Forget the recorded writes and events (the config keeps their effect).
    pub fn clear_writes(&self) {
        let mut s = self.lock();
        s.writes.clear();
        s.bar_writes.clear();
        s.events.clear();
    }

    /// Change the device behind the bridge's back (a status bit the hardware sets, say).
    pub fn poke_config(&self, offset: usize, data: &[u8]) {
        let mut s = self.lock();
        if let Some(dst) = s.config.get_mut(offset..offset + data.len()) {
            dst.copy_from_slice(data);
        }
        s.mirror();
    }
}

/// The records of `log` from index `from` on (none if `from` is past the end): what the three
/// `*_from` pollers of [`SnapshotHandle`] copy out of their logs.
fn tail<T: Clone>(log: &[T], from: usize) -> Vec<T> {
    log.get(from..).map(<[T]>::to_vec).unwrap_or_default()
}
