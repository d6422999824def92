//! [`SnapshotDevice`], the snapshot backend's [`HostDevice`]: built from a parsed snapshot
//! (with a VF's IDs and BARs derived from its PF's snapshot) or from raw bytes, behaving like
//! plain RAM, recording every write into the shared state of `record.rs`, and giving INTx an
//! eventfd. Kept apart from the file format (`file.rs`), which it only reads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::file::{parse_hex_bytes, Snapshot};
use super::record::{BarWriteRecord, DeviceEventKind, SnapshotHandle, State, WriteRecord};
use crate::backend::intx_eventfd::IntxEventFd;
use crate::backend::{BarInfo, BarKind, HostDevice, LearnedAtOpen, COMMAND_HIGH, INTX_DISABLE_BIT};
use crate::error::Error;
use crate::sriov::VfIdentity;
use crate::topology::PciAddress;

/// How many recent config writes [`HostDevice::status`] lists.
pub const STATUS_WRITES: usize = 32;

/// A device backed by a snapshot.
#[derive(Debug)]
pub struct SnapshotDevice {
    name: String,
    state: Arc<Mutex<State>>,
    learned: LearnedAtOpen,
    vf: Option<VfIdentity>,
    intx: Option<IntxEventFd>,
}

impl SnapshotDevice {
    /// From raw config bytes (64..=4096 of them) and BARs; for tests.
    pub fn from_raw(config: &[u8], bars: [Option<BarInfo>; 6], rom: Option<BarInfo>) -> Self {
        let mut cfg = config[..config.len().min(4096)].to_vec();
        if cfg.len() < 64 {
            cfg.resize(64, 0);
        }
        let ids = (
            u16::from_le_bytes([cfg[0], cfg[1]]),
            u16::from_le_bytes([cfg[2], cfg[3]]),
        );
        let config_len = cfg.len();
        SnapshotDevice {
            name: "snapshot (raw)".into(),
            state: Arc::new(Mutex::new(State {
                config: cfg,
                reset: Some(true),
                ..Default::default()
            })),
            learned: LearnedAtOpen {
                config_len,
                ids,
                bars: sanitize_bars(bars),
                rom: rom.filter(|r| r.is_mem() && r.size > 0),
                is_vf: false,
            },
            vf: None,
            intx: None,
        }
    }

    /// From a parsed snapshot; `origin` names it in errors (and anchors a relative
    /// `physfn`); the device's address is the snapshot's `source`.
    pub fn from_snapshot(snap: &Snapshot, origin: &Path) -> Result<Self, Error> {
        Self::from_snapshot_at(snap, origin, None)
    }

    /// Like [`SnapshotDevice::from_snapshot`] for a device at host `address` (which wins over
    /// the snapshot's `source`; it matters for a VF's index).
    pub fn from_snapshot_at(
        snap: &Snapshot,
        origin: &Path,
        address: Option<PciAddress>,
    ) -> Result<Self, Error> {
        let config = snap.config_bytes(origin)?;
        let mut bars = [None; 6];
        for b in &snap.bars {
            let slot = bars.get_mut(usize::from(b.index)).ok_or_else(|| {
                Error::parse(origin, format!("bar index {} (must be 0..=5)", b.index))
            })?;
            if b.size == 0 {
                return Err(Error::parse(origin, format!("bar {}: size 0", b.index)));
            }
            *slot = Some(BarInfo {
                kind: b.kind,
                prefetchable: b.prefetchable,
                host_addr: b.host_addr,
                size: b.size,
            });
        }
        let source = snap.source.as_ref().map(|s| {
            s.parse::<PciAddress>()
                .map_err(|e| Error::parse(origin, format!("source {s:?}: {e}")))
        });
        let vf = match &snap.physfn {
            None => None,
            Some(pf_file) => {
                if snap.ids.is_some() || !snap.bars.is_empty() {
                    return Err(Error::parse(
                        origin,
                        "a VF snapshot with physfn takes its ids and bars from the PF: remove \"ids\" and \"bars\"",
                    ));
                }
                let vf_addr = match (address, source) {
                    (Some(a), _) => a,
                    (None, Some(s)) => s?,
                    (None, None) => {
                        return Err(Error::parse(
                            origin,
                            "a VF snapshot needs its address (source) to find its VF index",
                        ))
                    }
                };
                Some(derive_vf(origin, pf_file, vf_addr)?)
            }
        };
        if let Some(v) = &vf {
            bars = v.bars;
        }
        let rom = snap.rom.map(|r| BarInfo {
            kind: BarKind::Mem32,
            prefetchable: false,
            host_addr: r.host_addr,
            size: r.size,
        });
        let mut dev = Self::from_raw(&config, bars, rom);
        if let Some(ids) = snap.ids {
            dev.learned.ids = (ids.vendor, ids.device);
        }
        dev.learned.is_vf = vf.is_some() || (config[0..2] == [0xFF, 0xFF] && snap.ids.is_some());
        if let Some(v) = vf {
            dev.learned.ids = (v.vendor, v.device);
            dev.vf = Some(v);
        }
        {
            let mut st = dev.state.lock().unwrap_or_else(|p| p.into_inner());
            for d in &snap.bar_data {
                let bytes = parse_hex_bytes(&d.bytes).ok_or_else(|| {
                    Error::parse(
                        origin,
                        format!("bar_data {} {:#x}: bad hex", d.index, d.offset),
                    )
                })?;
                for (i, b) in bytes.into_iter().enumerate() {
                    st.bar_data.insert((d.index, d.offset + i as u64), b);
                }
            }
        }
        dev.name = match &snap.source {
            Some(s) => format!("snapshot {} ({})", origin.display(), s),
            None => format!("snapshot {}", origin.display()),
        };
        Ok(dev)
    }

    /// Load a snapshot file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        Self::from_snapshot(&Snapshot::load(path)?, path)
    }

    /// Load a snapshot file for the device at host `address` (see
    /// [`SnapshotDevice::from_snapshot_at`]).
    pub fn open_at(path: &Path, address: Option<PciAddress>) -> Result<Self, Error> {
        Self::from_snapshot_at(&Snapshot::load(path)?, path, address)
    }

    /// The VF identity derived from the PF snapshot, for a VF snapshot with `physfn`.
    pub fn vf_identity(&self) -> Option<&VfIdentity> {
        self.vf.as_ref()
    }

    /// Mirror the config space into `path` from now on (written at once and after every
    /// change; see [`crate::config::PciDeviceConfig::config_mirror`]).
    pub fn set_config_mirror(&mut self, path: &Path) {
        let mut st = self.lock();
        st.mirror = Some(path.to_path_buf());
        st.mirror();
    }

    /// Give the device an INTx eventfd ([`crate::backend::intx_eventfd`]); a no-op if it has
    /// one.
    pub fn enable_intx(&mut self) -> Result<(), Error> {
        if self.intx.is_none() {
            self.intx = Some(IntxEventFd::new()?);
        }
        Ok(())
    }

    /// Hand the INTx eventfd to other processes on a socket at `path`
    /// ([`IntxEventFd::publish`]). Needs [`SnapshotDevice::enable_intx`] first.
    pub fn publish_intx(&self, path: &Path) -> Result<(), Error> {
        match &self.intx {
            Some(i) => i.publish(path),
            None => Err(Error::Backend {
                device: self.name.clone(),
                message: "no INTx eventfd to publish".into(),
            }),
        }
    }

    /// A duplicate of the INTx eventfd for an in-process test to signal (write a non-zero
    /// `u64`).
    pub fn intx_handle(&self) -> Option<std::os::fd::OwnedFd> {
        self.intx.as_ref().and_then(|i| i.duplicate().ok())
    }

    /// Parse snapshot JSON text (`origin` names it in errors).
    pub fn from_json(text: &str, origin: impl Into<PathBuf>) -> Result<Self, Error> {
        let origin = origin.into();
        Self::from_snapshot(&Snapshot::from_json(text, &origin)?, &origin)
    }

    /// An independent copy of the device in its current state, with an empty write log (a
    /// cheap way to start many runs from one parsed snapshot).
    pub fn duplicate(&self) -> Self {
        let st = self.lock();
        self.duplicate_of(&st)
    }

    /// A copy of this device with the state `handle` shows now (config, BAR data, reset
    /// answer) and an empty write log: `handle` is the handle of a device that started as a
    /// duplicate of this one and moved into a bridge (the copy's device for
    /// [`crate::PciHostBridge::fork`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn duplicate_with_state(&self, handle: &SnapshotHandle) -> Self {
        let st = handle.lock();
        self.duplicate_of(&st)
    }

    fn duplicate_of(&self, st: &State) -> Self {
        let state = State {
            config: st.config.clone(),
            bar_data: st.bar_data.clone(),
            reset: st.reset,
            ..Default::default()
        };
        SnapshotDevice {
            name: self.name.clone(),
            state: Arc::new(Mutex::new(state)),
            learned: self.learned,
            vf: self.vf,
            intx: self.intx.as_ref().and_then(|_| IntxEventFd::new().ok()),
        }
    }

    /// A handle on the device's state that outlives moving the device into the bridge.
    pub fn handle(&self) -> SnapshotHandle {
        SnapshotHandle(self.state.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether BAR `index` (6 = ROM) exists and `len` bytes at `offset` lie inside it (an error
    /// naming the `what`, read or write, if not).
    fn bar_in_range(&self, index: u8, offset: u64, len: usize, what: &str) -> Result<(), Error> {
        let size = self.bar_size(index).ok_or_else(|| Error::Backend {
            device: self.name(),
            message: "no such BAR".into(),
        })?;
        if offset.checked_add(len as u64).is_none_or(|e| e > size) {
            return Err(Error::Backend {
                device: self.name(),
                message: format!("BAR {what} out of range"),
            });
        }
        Ok(())
    }

    fn bar_size(&self, index: u8) -> Option<u64> {
        self.learned.bar_or_rom(index).map(|b| b.size)
    }
}

/// Load the PF snapshot `pf_file` (relative to the VF snapshot `origin`) and derive the VF at
/// `vf_addr` from it.
fn derive_vf(origin: &Path, pf_file: &str, vf_addr: PciAddress) -> Result<VfIdentity, Error> {
    let pf_path = origin
        .parent()
        .map_or_else(|| PathBuf::from(pf_file), |d| d.join(pf_file));
    let pf = Snapshot::load(&pf_path)?;
    let pf_addr: PciAddress = pf
        .source
        .as_deref()
        .ok_or_else(|| Error::parse(&pf_path, "a PF snapshot needs its address (source)"))?
        .parse()
        .map_err(|e| Error::parse(&pf_path, format!("source: {e}")))?;
    let pf_config = pf.config_bytes(&pf_path)?;
    let mut sizes = [0u64; 6];
    for b in &pf.vf_bars {
        let s = sizes.get_mut(usize::from(b.index)).ok_or_else(|| {
            Error::parse(
                &pf_path,
                format!("vf_bars index {} (must be 0..=5)", b.index),
            )
        })?;
        *s = b.size;
    }
    VfIdentity::derive(pf_addr, &pf_config, vf_addr, &sizes)
        .map_err(|e| Error::parse(origin, format!("physfn {}: {e}", pf_path.display())))
}

/// Drop BARs that cannot exist: the slot after a 64-bit BAR, a 64-bit BAR in slot 5, size 0.
fn sanitize_bars(mut bars: [Option<BarInfo>; 6]) -> [Option<BarInfo>; 6] {
    let mut i = 0;
    while i < 6 {
        match bars[i] {
            Some(b) if b.size == 0 => bars[i] = None,
            Some(b) if b.kind == BarKind::Mem64 => {
                if i == 5 {
                    bars[i] = None;
                } else {
                    bars[i + 1] = None;
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    bars
}

impl HostDevice for SnapshotDevice {
    fn name(&self) -> String {
        self.name.clone()
    }

    crate::backend::answers_learned_at_open!(learned);

    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error> {
        let st = self.lock();
        let off = usize::from(offset);
        let src = st
            .config
            .get(off..off + buf.len())
            .ok_or_else(|| Error::Backend {
                device: self.name.clone(),
                message: format!("config read {off:#x}+{} out of range", buf.len()),
            })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Result<(), Error> {
        let name = self.name.clone();
        let mut st = self.lock();
        let off = usize::from(offset);
        let dst = st
            .config
            .get_mut(off..off + data.len())
            .ok_or_else(|| Error::Backend {
                device: name,
                message: format!("config write {off:#x}+{} out of range", data.len()),
            })?;
        let before = dst.to_vec();
        dst.copy_from_slice(data);
        st.writes.push(WriteRecord {
            offset,
            data: data.to_vec(),
            before,
        });
        st.event(DeviceEventKind::ConfigWrite {
            offset,
            data: data.to_vec(),
        });
        st.mirror();
        Ok(())
    }

    /// Recorded ([`DeviceEventKind::EnableDecode`]); the config bytes do not change (sysfs
    /// `enable` is the kernel's enable count, not a config write of ours).
    fn enable_decode(&mut self) -> Result<(), Error> {
        self.lock().event(DeviceEventKind::EnableDecode);
        Ok(())
    }

    /// Recorded ([`DeviceEventKind::DisableDecode`]).
    fn disable_decode(&mut self) -> Result<(), Error> {
        self.lock().event(DeviceEventKind::DisableDecode);
        Ok(())
    }

    /// Recorded ([`DeviceEventKind::Reset`]); the config bytes stay (the kernel saves and
    /// restores the config header around a sysfs reset). Answers what
    /// [`SnapshotHandle::set_reset`] chose (done, by default).
    fn reset(&mut self) -> Result<bool, Error> {
        let mut st = self.lock();
        st.event(DeviceEventKind::Reset);
        st.reset.ok_or_else(|| Error::Backend {
            device: self.name.clone(),
            message: "reset failed (snapshot told to fail)".into(),
        })
    }

    fn intx_fd(&self) -> Option<std::os::fd::RawFd> {
        self.intx.as_ref().map(IntxEventFd::fd)
    }

    fn status(&self) -> serde_json::Value {
        let st = self.lock();
        let n = st.writes.len();
        serde_json::json!({
            "kind": "snapshot",
            "config_writes": n,
            // The most recent ones, bounded.
            "last_config_writes": st.writes[n.saturating_sub(STATUS_WRITES)..],
            "bar_writes": st.bar_writes.len(),
        })
    }

    fn intx_ack(&mut self) -> Result<u64, Error> {
        let Some(i) = &self.intx else { return Ok(0) };
        let n = i.take()?;
        if n > 0 {
            // What uio_pci_generic's handler does to the real device: mask INTx at the device.
            let mut st = self.lock();
            if let Some(b) = st.config.get_mut(usize::from(COMMAND_HIGH)) {
                *b |= INTX_DISABLE_BIT;
            }
        }
        Ok(n)
    }

    fn read_bar(&self, index: u8, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.bar_in_range(index, offset, buf.len(), "read")?;
        let st = self.lock();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = st
                .bar_data
                .get(&(index, offset + i as u64))
                .copied()
                .unwrap_or(0);
        }
        Ok(())
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.bar_in_range(index, offset, data.len(), "write")?;
        let mut st = self.lock();
        for (i, b) in data.iter().enumerate() {
            st.bar_data.insert((index, offset + i as u64), *b);
        }
        st.bar_writes.push(BarWriteRecord {
            index,
            offset,
            data: data.to_vec(),
        });
        st.event(DeviceEventKind::BarWrite {
            index,
            offset,
            len: data.len(),
        });
        Ok(())
    }
}
