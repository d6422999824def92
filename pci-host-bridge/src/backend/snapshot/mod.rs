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
//!
//! # Files
//!
//! `file.rs`: the file format (serde types, parse, write, capture through sysfs);
//! `record.rs`: the shared state and the record of writes and events, with the
//! [`SnapshotHandle`] tests read it through; `device.rs`: [`SnapshotDevice`], the
//! [`HostDevice`] over that state.

#[cfg(doc)]
use super::HostDevice;

mod device;
mod file;
mod record;

pub use device::{SnapshotDevice, STATUS_WRITES};
pub use file::{
    hexnum, parse_hex_bytes, ConfigBytes, Snapshot, SnapshotBar, SnapshotBarData, SnapshotIds,
    SnapshotVfBar, FORMAT,
};
pub use record::{
    next_seq, BarWriteRecord, DeviceEvent, DeviceEventKind, SnapshotHandle, WriteRecord,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::HostDevice;

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
