//! The snapshot backend: a device's config space and BARs in a JSON file, or in memory.
//!
//! Every write that reaches the "device" is applied to the in-memory copy (the snapshot behaves
//! like plain RAM, without W1C or read-only bits) and **recorded** with the bytes it replaced, so
//! a test can check that nothing reached the device that the register table does not pass
//! through ([`SnapshotHandle::writes`]).
//!
//! # File format (`format = "pci-host-bridge-snapshot/1"`)
//!
//! ```json
//! {
//!   "format": "pci-host-bridge-snapshot/1",
//!   "description": "free text",
//!   "source": "0000:03:00.0",
//!   "ids": { "vendor": "0x8086", "device": "0x10ed" },
//!   "config_len": 4096,
//!   "config": { "0x000": "86 80 fb 10 06 04 10 00", "0x010": "0c 00 00 fb" },
//!   "bars": [
//!     { "index": 0, "kind": "mem64", "prefetchable": true, "host_addr": "0xfb000000", "size": "0x80000" },
//!     { "index": 2, "kind": "io", "host_addr": "0xe000", "size": "0x20" }
//!   ],
//!   "rom": { "kind": "mem32", "host_addr": "0xfc100000", "size": "0x80000" },
//!   "bar_data": [ { "index": 0, "offset": "0x3000", "bytes": "01 00 00 00" } ]
//! }
//! ```
//!
//! - `config` is either one hex string (a full dump, whitespace ignored), a list of such strings
//!   (concatenated; [`Snapshot::to_json`] writes 16 bytes per line), or an object mapping hex
//!   offsets to hex bytes (sparse, the rest zero: convenient for hand-made devices).
//! - `config_len` defaults to the dump's length (rounded up to 256 or 4096) or to 4096 for the
//!   sparse form.
//! - `ids` gives the vendor/device IDs the host reports when they differ from the bytes at 0x00
//!   (an SR-IOV VF reads 0xFFFF there; sysfs reports the real IDs). The config bytes stay raw.
//! - Numbers may be JSON integers or strings (`"0x..."` hex or decimal).
//! - `bar_data` gives sparse BAR contents (e.g. a PBA) for [`HostDevice::read_bar`]; the rest
//!   reads zero.
//!
//! # SR-IOV
//!
//! A VF snapshot holds the VF's raw config space (IDs 0xFFFF, BARs 0) and names its PF's
//! snapshot with `"physfn": "pf.json"` (relative to the VF's file); it then has no `ids` and no
//! `bars`: both are derived from the PF as the kernel derives them ([`crate::sriov`]): vendor ID
//! from the PF, device ID from the PF's SR-IOV VF Device ID, the VF index from the two routing
//! IDs (the PF snapshot's `source` and the VF's address: the configured `host`, else the VF
//! snapshot's `source`) and First VF Offset / VF Stride, and BARi = VF BARi base + index * size,
//! with the per-VF sizes (what sizing the VF BAR registers returns) stored in the PF snapshot:
//!
//! ```json
//! "vf_bars": [ { "index": 0, "size": "0x10000" }, { "index": 3, "size": "0x4000" } ]
//! ```
//!
//! A snapshot whose raw Vendor ID reads 0xFFFF but that has an `ids` override (a VF recorded
//! with what sysfs reports) is a VF too.
//!
//! # INTx
//!
//! [`SnapshotDevice::enable_intx`] gives the device a real eventfd as its host INTx
//! ([`super::intx_eventfd`]); a test signals it (in process with
//! [`SnapshotDevice::intx_handle`], from another process through
//! [`SnapshotDevice::publish_intx`]). On each notification the snapshot does what
//! `uio_pci_generic`'s handler does to a real device: it sets Interrupt Disable (not recorded
//! as a write: that is the host, not the bridge). The bridge's unmask clears it again through
//! [`HostDevice::write_config`], which is recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::intx_eventfd::IntxEventFd;
use super::sysfs::SysfsDevice;
use super::{BarInfo, BarKind, HostDevice, COMMAND_HIGH, INTX_DISABLE_BIT};
use crate::error::Error;
use crate::sriov::VfIdentity;
use crate::topology::PciAddress;

/// How many recent config writes [`HostDevice::status`] lists.
pub const STATUS_WRITES: usize = 32;

/// The `format` string of version 1 of the file format.
pub const FORMAT: &str = "pci-host-bridge-snapshot/1";

/// Serde helpers for numbers written as integers or `"0x..."` strings.
pub mod hexnum {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Str(String),
    }

    /// Parse `"0x1f"`, `"31"` or an integer.
    pub fn parse(s: &str) -> Option<u64> {
        let t = s.trim();
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(&h.replace('_', ""), 16).ok(),
            None => t.replace('_', "").parse().ok(),
        }
    }

    /// Deserialize a u64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Num::deserialize(d)? {
            Num::Int(v) => Ok(v),
            Num::Str(s) => {
                parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad number {s:?}")))
            }
        }
    }

    /// Serialize a u64 as a `"0x..."` string.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:#x}"))
    }

    /// The same for u16.
    pub mod u16 {
        use serde::{Deserializer, Serializer};

        /// Deserialize a u16.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
            let v = super::deserialize(d)?;
            u16::try_from(v)
                .map_err(|_| serde::de::Error::custom(format!("{v:#x} does not fit 16 bits")))
        }

        /// Serialize a u16 as `"0x..."`.
        pub fn serialize<S: Serializer>(v: &u16, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&format!("{v:#06x}"))
        }
    }
}

/// Vendor/device ID override.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotIds {
    /// Vendor ID.
    #[serde(with = "hexnum::u16")]
    pub vendor: u16,
    /// Device ID.
    #[serde(with = "hexnum::u16")]
    pub device: u16,
}

/// A BAR (or, without `index`, the ROM) in a snapshot file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBar {
    /// BAR slot 0..=5 (ignored for the ROM).
    #[serde(default)]
    pub index: u8,
    /// Decode type.
    pub kind: BarKind,
    /// Prefetchable.
    #[serde(default)]
    pub prefetchable: bool,
    /// Host address.
    #[serde(with = "hexnum")]
    pub host_addr: u64,
    /// Size in bytes.
    #[serde(with = "hexnum")]
    pub size: u64,
}

/// Sparse BAR contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotBarData {
    /// BAR slot (6 = ROM).
    pub index: u8,
    /// Offset inside the BAR.
    #[serde(with = "hexnum")]
    pub offset: u64,
    /// Hex bytes.
    pub bytes: String,
}

/// The per-VF size of one VF BAR, in a PF snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotVfBar {
    /// VF BAR slot 0..=5.
    pub index: u8,
    /// Bytes per VF (what sizing the VF BAR register returns).
    #[serde(with = "hexnum")]
    pub size: u64,
}

/// Config space in one of the three accepted forms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigBytes {
    /// One hex string.
    Dump(String),
    /// Hex strings, concatenated.
    Lines(Vec<String>),
    /// Hex offset -> hex bytes; the rest zero.
    Sparse(BTreeMap<String, String>),
}

/// A snapshot file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Must be [`FORMAT`].
    pub format: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where it came from (a host address for snapshots of real devices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Vendor/device ID override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<SnapshotIds>,
    /// Bytes of config space (256 or 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_len: Option<usize>,
    /// Config space.
    pub config: ConfigBytes,
    /// BARs.
    #[serde(default)]
    pub bars: Vec<SnapshotBar>,
    /// Expansion ROM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rom: Option<SnapshotBar>,
    /// Sparse BAR contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bar_data: Vec<SnapshotBarData>,
    /// For a VF: the PF's snapshot file (relative to this one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physfn: Option<String>,
    /// For a PF: the per-VF sizes of its VF BARs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vf_bars: Vec<SnapshotVfBar>,
}

/// Decode hex digits, ignoring whitespace.
pub fn parse_hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let h = std::str::from_utf8(p).ok()?;
            u8::from_str_radix(h, 16).ok()
        })
        .collect()
}

fn hex_line(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Snapshot {
    /// Parse a snapshot from JSON text.
    pub fn from_json(text: &str, origin: &Path) -> Result<Self, Error> {
        let s: Snapshot =
            serde_json::from_str(text).map_err(|e| Error::parse(origin, e.to_string()))?;
        if s.format != FORMAT {
            return Err(Error::parse(
                origin,
                format!("format {:?}, expected {FORMAT:?}", s.format),
            ));
        }
        Ok(s)
    }

    /// Read a snapshot file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Pretty JSON in the documented format.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("snapshot serializes")
    }

    /// Write the snapshot to a file.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.to_json() + "\n").map_err(|e| Error::io(path, e))
    }

    /// A snapshot of raw config bytes and BARs.
    pub fn from_parts(config: &[u8], bars: &[Option<BarInfo>; 6], rom: Option<BarInfo>) -> Self {
        let to_bar = |index: u8, b: BarInfo| SnapshotBar {
            index,
            kind: b.kind,
            prefetchable: b.prefetchable,
            host_addr: b.host_addr,
            size: b.size,
        };
        Snapshot {
            format: FORMAT.to_string(),
            description: String::new(),
            source: None,
            ids: None,
            config_len: Some(config.len()),
            config: ConfigBytes::Lines(config.chunks(16).map(hex_line).collect()),
            bars: bars
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| to_bar(i as u8, b)))
                .collect(),
            rom: rom.map(|r| to_bar(0, r)),
            bar_data: Vec::new(),
            physfn: None,
            vf_bars: Vec::new(),
        }
    }

    /// Snapshot a real host function through sysfs, **read-only**: the config file is opened
    /// without write access and no BAR is read. `sysfs_root` is normally `/sys`.
    pub fn from_sysfs(sysfs_root: &Path, addr: PciAddress) -> Result<Self, Error> {
        let dev = SysfsDevice::open(sysfs_root, addr, false)?;
        let mut config = vec![0u8; dev.config_len()];
        dev.read_config(0, &mut config)?;
        let bars = std::array::from_fn(|i| dev.bar(i));
        let mut snap = Self::from_parts(&config, &bars, dev.rom());
        snap.source = Some(addr.to_string());
        let (vendor, device) = dev.ids();
        if config[0..2] != vendor.to_le_bytes() || config[2..4] != device.to_le_bytes() {
            snap.ids = Some(SnapshotIds { vendor, device });
        }
        snap.description = format!("snapshot of host function {addr} (sysfs, read-only)");
        Ok(snap)
    }

    /// The config bytes, `config_len` long.
    pub fn config_bytes(&self, origin: &Path) -> Result<Vec<u8>, Error> {
        let bad = |m: String| Error::parse(origin, m);
        let (mut bytes, default_len) = match &self.config {
            ConfigBytes::Dump(s) => {
                let b = parse_hex_bytes(s).ok_or_else(|| bad("config: bad hex dump".into()))?;
                let l = if b.len() <= 256 { 256 } else { 4096 };
                (b, l)
            }
            ConfigBytes::Lines(lines) => {
                let b = parse_hex_bytes(&lines.concat())
                    .ok_or_else(|| bad("config: bad hex lines".into()))?;
                let l = if b.len() <= 256 { 256 } else { 4096 };
                (b, l)
            }
            ConfigBytes::Sparse(map) => {
                let mut b = vec![0u8; 4096];
                for (k, v) in map {
                    let off = hexnum::parse(k)
                        .ok_or_else(|| bad(format!("config: bad offset {k:?}")))?
                        as usize;
                    let data = parse_hex_bytes(v)
                        .ok_or_else(|| bad(format!("config {k}: bad hex bytes")))?;
                    if off + data.len() > 4096 {
                        return Err(bad(format!("config {k}: past 4096 bytes")));
                    }
                    b[off..off + data.len()].copy_from_slice(&data);
                }
                (b, 4096)
            }
        };
        let len = self.config_len.unwrap_or(default_len);
        if !(64..=4096).contains(&len) {
            return Err(bad(format!("config_len {len} (must be 64..=4096)")));
        }
        if bytes.len() > len {
            if bytes[len..].iter().any(|&b| b != 0) {
                return Err(bad(format!("config has data past config_len {len}")));
            }
            bytes.truncate(len);
        }
        bytes.resize(len, 0);
        Ok(bytes)
    }
}

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
struct State {
    config: Vec<u8>,
    writes: Vec<WriteRecord>,
    bar_data: BTreeMap<(u8, u64), u8>,
    bar_writes: Vec<BarWriteRecord>,
    events: Vec<DeviceEvent>,
    /// What [`HostDevice::reset`] answers: `Some(true)` (has a reset method, the default),
    /// `Some(false)` (none), `None` (fails).
    reset: Option<bool>,
    /// The file the config space is mirrored into ([`SnapshotDevice::set_config_mirror`]).
    mirror: Option<PathBuf>,
}

impl State {
    /// Write the whole config space to the mirror file (a temp file renamed over it, so a
    /// reader never sees half of it).
    fn mirror(&self) {
        let Some(p) = &self.mirror else { return };
        let tmp = p.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, &self.config).and_then(|()| std::fs::rename(&tmp, p)) {
            tracing::warn!("snapshot config mirror {}: {e}", p.display());
        }
    }

    fn event(&mut self, kind: DeviceEventKind) {
        self.events.push(DeviceEvent {
            seq: next_seq(),
            kind,
        });
    }
}

/// A shared view of a [`SnapshotDevice`]'s state, kept by tests after the device moved into
/// the bridge.
#[derive(Clone, Debug)]
pub struct SnapshotHandle(Arc<Mutex<State>>);

impl SnapshotHandle {
    fn lock(&self) -> MutexGuard<'_, State> {
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
        let s = self.lock();
        s.writes
            .get(from..)
            .map(<[WriteRecord]>::to_vec)
            .unwrap_or_default()
    }

    /// The BAR writes from index `from` on.
    pub fn bar_writes_from(&self, from: usize) -> Vec<BarWriteRecord> {
        let s = self.lock();
        s.bar_writes
            .get(from..)
            .map(<[BarWriteRecord]>::to_vec)
            .unwrap_or_default()
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
        let s = self.lock();
        s.events
            .get(from..)
            .map(<[DeviceEvent]>::to_vec)
            .unwrap_or_default()
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

/// A device backed by a snapshot.
#[derive(Debug)]
pub struct SnapshotDevice {
    name: String,
    state: Arc<Mutex<State>>,
    config_len: usize,
    ids: (u16, u16),
    bars: [Option<BarInfo>; 6],
    rom: Option<BarInfo>,
    is_vf: bool,
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
            config_len,
            ids,
            bars: sanitize_bars(bars),
            rom: rom.filter(|r| r.is_mem() && r.size > 0),
            is_vf: false,
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
            dev.ids = (ids.vendor, ids.device);
        }
        dev.is_vf = vf.is_some() || (config[0..2] == [0xFF, 0xFF] && snap.ids.is_some());
        if let Some(v) = vf {
            dev.ids = (v.vendor, v.device);
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

    /// Give the device an INTx eventfd ([`super::intx_eventfd`]); a no-op if it has one.
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
            config_len: self.config_len,
            ids: self.ids,
            bars: self.bars,
            rom: self.rom,
            is_vf: self.is_vf,
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

    fn bar_size(&self, index: u8) -> Option<u64> {
        if index == 6 {
            self.rom.map(|r| r.size)
        } else {
            self.bars
                .get(usize::from(index))
                .copied()
                .flatten()
                .map(|b| b.size)
        }
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

    fn config_len(&self) -> usize {
        self.config_len
    }

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

    fn ids(&self) -> (u16, u16) {
        self.ids
    }

    fn bar(&self, index: usize) -> Option<BarInfo> {
        self.bars.get(index).copied().flatten()
    }

    fn rom(&self) -> Option<BarInfo> {
        self.rom
    }

    fn is_virtual_function(&self) -> bool {
        self.is_vf
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
        let size = self.bar_size(index).ok_or_else(|| Error::Backend {
            device: self.name(),
            message: "no such BAR".into(),
        })?;
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > size)
        {
            return Err(Error::Backend {
                device: self.name(),
                message: "BAR read out of range".into(),
            });
        }
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
        let size = self.bar_size(index).ok_or_else(|| Error::Backend {
            device: self.name(),
            message: "no such BAR".into(),
        })?;
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > size)
        {
            return Err(Error::Backend {
                device: self.name(),
                message: "BAR write out of range".into(),
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_and_dump_forms() {
        let json = r#"{
            "format": "pci-host-bridge-snapshot/1",
            "ids": {"vendor": "0x8086", "device": "0x10ed"},
            "config": {"0x00": "ff ff ff ff", "0x08": "01 00 00 02", "0x100": "10 00 01 00"},
            "bars": [{"index": 0, "kind": "mem64", "prefetchable": true, "host_addr": "0xfb000000", "size": 16384}],
            "bar_data": [{"index": 0, "offset": "0x3000", "bytes": "aa bb"}]
        }"#;
        let mut d = SnapshotDevice::from_json(json, "inline").unwrap();
        assert_eq!(d.config_len(), 4096);
        assert_eq!(d.ids(), (0x8086, 0x10ed));
        assert_eq!(d.read_config_dword(0).unwrap(), 0xFFFF_FFFF);
        assert_eq!(d.read_config_dword(0x100).unwrap(), 0x0001_0010);
        assert_eq!(d.bar(0).unwrap().size, 0x4000);
        let mut b = [0u8; 4];
        d.read_bar(0, 0x3000, &mut b).unwrap();
        assert_eq!(b, [0xaa, 0xbb, 0, 0]);
        assert!(d.read_bar(0, 0x3ffe, &mut b).is_err());
        let h = d.handle();
        d.write_config(4, &[7, 1]).unwrap();
        assert_eq!(
            h.writes(),
            vec![WriteRecord {
                offset: 4,
                data: vec![7, 1],
                before: vec![0, 0]
            }]
        );

        // Round trip through the dump form.
        let bars = std::array::from_fn(|i| d.bar(i));
        let mut s = Snapshot::from_parts(&h.config(), &bars, None);
        s.ids = Some(SnapshotIds {
            vendor: 0x8086,
            device: 0x10ed,
        });
        let d2 = SnapshotDevice::from_json(&s.to_json(), "rt").unwrap();
        assert_eq!(d2.config_len(), 4096);
        assert_eq!(d2.read_config_word(4).unwrap(), 0x0107);
        assert_eq!(d2.bar(0), d.bar(0));
    }

    #[test]
    fn rejects_bad_files() {
        for json in [
            r#"{"format": "other", "config": ""}"#,
            r#"{"format": "pci-host-bridge-snapshot/1", "config": "abc"}"#,
            r#"{"format": "pci-host-bridge-snapshot/1", "config": {"0xfff": "00 00"}}"#,
            r#"{"format": "pci-host-bridge-snapshot/1", "config": "00", "bars": [{"index": 6, "kind": "io", "host_addr": 0, "size": 4}]}"#,
            r#"{"format": "pci-host-bridge-snapshot/1", "config": "00", "extra": 1}"#,
        ] {
            assert!(SnapshotDevice::from_json(json, "bad").is_err(), "{json}");
        }
    }
}
