//! The snapshot file format (`pci-host-bridge-snapshot/1`, described in the module doc of
//! [`crate::backend::snapshot`]): its serde types, parsing and writing, and the read-only
//! capture of a real host function through sysfs. Kept apart because it is the one place that
//! knows the JSON; the device built from a parsed file is in `device.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::sysfs::SysfsDevice;
use crate::backend::{BarInfo, BarKind, HostDevice};
use crate::error::Error;
use crate::topology::PciAddress;

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
