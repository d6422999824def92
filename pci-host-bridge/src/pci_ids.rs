//! Vendor, device and class names for `list`, from the PCI ID Repository's `pci.ids`.
//!
//! Two sources, looked up name by name in this order:
//! 1. the host's own `pci.ids`, when one is installed ([`DEFAULT_PATHS`]: Debian's package
//!    `pci.ids`, hwdata elsewhere);
//! 2. the database the `pci-ids` crate embeds at build time, always there.
//!
//! Why the host's file is still read: the embedded database is the snapshot the crate was
//! released with (pci-ids 0.2.5: 2022-11-25; 0.2.6 is not used because its build script
//! downloads the file with curl on every fresh build), and it changes only with a new crate
//! release. The host's file is kept current by the distribution (`update-pciids`), and the
//! functions one passes through are often the newest hardware, which only a current file
//! names. Since the fallback is per name, a host file older than the snapshot loses nothing.
//! Reading it is the small line parser below; everything else comes from the crate.
//!
//! The embedded database is the crate feature `pci-ids` (default). It costs every
//! pci-host-bridge process, including the serving ones that never list, ~1.1 MiB of private
//! memory: its ~1.2 MB of name tables hold pointers that the loader relocates when the
//! (position-independent) binary starts. Built without it, only the host's file names devices.
//!
//! Host file format: `vvvv  Vendor` at column 0, `\tdddd  Device` under it,
//! `\t\tssss ssss  Subsystem` (ignored); classes as `C cc  Class`, `\tss  Subclass`,
//! `\t\tpp  Programming interface` (ignored). `#` starts a comment line.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

use crate::error::Error;

/// Where distributions install the database.
pub const DEFAULT_PATHS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// A top-level entry of the file (a vendor or a class) with the names one level under it
/// (its devices or subclasses), by ID.
#[derive(Clone, Debug)]
struct Entry<K> {
    name: String,
    children: HashMap<K, String>,
}

/// A parsed host `pci.ids` file.
#[derive(Clone, Debug, Default)]
struct HostIds {
    vendors: HashMap<u16, Entry<u16>>,
    classes: HashMap<u8, Entry<u8>>,
}

/// `digits` hex digits, then at least one space, then the name.
fn split_id<K: TryFrom<u32>>(s: &str, digits: usize) -> Option<(K, &str)> {
    let id = s.get(..digits)?;
    let rest = s.get(digits..)?;
    if !rest.starts_with(' ') {
        return None;
    }
    let id = u32::from_str_radix(id, 16).ok()?;
    Some((K::try_from(id).ok()?, rest.trim()))
}

/// A top-level line: a new entry in `map`, whose ID it returns (`None`: malformed).
fn add_entry<K: TryFrom<u32> + Copy + Eq + Hash, C>(
    map: &mut HashMap<K, Entry<C>>,
    line: &str,
    digits: usize,
) -> Option<K> {
    let (id, name) = split_id(line, digits)?;
    let children = HashMap::new();
    map.insert(
        id,
        Entry {
            name: name.to_string(),
            children,
        },
    );
    Some(id)
}

/// A second-level line: a name under the entry `parent` of `map`.
fn add_child<P: Eq + Hash, K: TryFrom<u32> + Eq + Hash>(
    map: &mut HashMap<P, Entry<K>>,
    parent: P,
    line: &str,
    digits: usize,
) {
    if let (Some((id, name)), Some(entry)) = (split_id(line, digits), map.get_mut(&parent)) {
        entry.children.insert(id, name.to_string());
    }
}

impl HostIds {
    /// Parse the text of a pci.ids file (malformed lines are skipped).
    pub fn parse(text: &str) -> Self {
        /// The entry the second-level lines below belong to.
        enum Under {
            Nothing,
            Vendor(u16),
            Class(u8),
        }
        let mut ids = HostIds::default();
        let mut under = Under::Nothing;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() || line.starts_with("\t\t") {
                // Comments; subsystems and programming interfaces (not needed).
                continue;
            }
            if let Some(rest) = line.strip_prefix('\t') {
                match under {
                    Under::Vendor(v) => add_child(&mut ids.vendors, v, rest, 4),
                    Under::Class(c) => add_child(&mut ids.classes, c, rest, 2),
                    Under::Nothing => {}
                }
            } else if let Some(rest) = line.strip_prefix("C ") {
                under = add_entry(&mut ids.classes, rest, 2).map_or(Under::Nothing, Under::Class);
            } else {
                under = add_entry(&mut ids.vendors, line, 4).map_or(Under::Nothing, Under::Vendor);
            }
        }
        ids
    }
}

/// Lookups in the embedded database.
#[cfg(feature = "pci-ids")]
mod embedded {
    use pci_ids::FromId;

    pub fn vendor(vendor: u16) -> Option<&'static str> {
        pci_ids::Vendor::from_id(vendor).map(|v| v.name())
    }

    pub fn device(vendor: u16, device: u16) -> Option<&'static str> {
        pci_ids::Device::from_vid_pid(vendor, device).map(|d| d.name())
    }

    pub fn subclass(class: u8, subclass: u8) -> Option<&'static str> {
        pci_ids::Subclass::from_cid_sid(class, subclass).map(|s| s.name())
    }

    pub fn class(class: u8) -> Option<&'static str> {
        pci_ids::Class::from_id(class).map(|c| c.name())
    }
}

/// Built without the embedded database: it names nothing.
#[cfg(not(feature = "pci-ids"))]
mod embedded {
    pub fn vendor(_: u16) -> Option<&'static str> {
        None
    }

    pub fn device(_: u16, _: u16) -> Option<&'static str> {
        None
    }

    pub fn subclass(_: u8, _: u8) -> Option<&'static str> {
        None
    }

    pub fn class(_: u8) -> Option<&'static str> {
        None
    }
}

/// Names from the host's `pci.ids` (if one was loaded) over the embedded database.
#[derive(Clone, Debug, Default)]
pub struct PciIds {
    host: Option<HostIds>,
}

impl PciIds {
    /// The embedded database alone (which names nothing when built without the feature
    /// `pci-ids`).
    pub fn embedded() -> Self {
        Self::default()
    }

    /// The text of a host pci.ids file over the embedded database (malformed lines are
    /// skipped).
    pub fn parse(text: &str) -> Self {
        Self {
            host: Some(HostIds::parse(text)),
        }
    }

    /// A host pci.ids file over the embedded database.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// The first host database found in [`DEFAULT_PATHS`] over the embedded one; the embedded
    /// one alone if none is readable.
    pub fn load_default() -> Self {
        DEFAULT_PATHS
            .iter()
            .find_map(|p| Self::load(Path::new(p)).ok())
            .unwrap_or_default()
    }

    /// Whether a host file was loaded.
    pub fn has_host_file(&self) -> bool {
        self.host.is_some()
    }

    /// A vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.host
            .as_ref()
            .and_then(|h| h.vendors.get(&vendor))
            .map(|v| v.name.as_str())
            .or_else(|| embedded::vendor(vendor))
    }

    /// A device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.host
            .as_ref()
            .and_then(|h| h.vendors.get(&vendor)?.children.get(&device))
            .map(String::as_str)
            .or_else(|| embedded::device(vendor, device))
    }

    /// The name of a class code (`class << 16 | subclass << 8 | prog_if`): the subclass name if
    /// either source knows it, else the class name.
    pub fn class(&self, class_code: u32) -> Option<&str> {
        let (c, s) = ((class_code >> 16) as u8, (class_code >> 8) as u8);
        let host = self.host.as_ref().and_then(|h| h.classes.get(&c));
        host.and_then(|h| h.children.get(&s))
            .map(String::as_str)
            .or_else(|| embedded::subclass(c, s))
            .or_else(|| host.map(|h| h.name.as_str()))
            .or_else(|| embedded::class(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vendor id that neither the embedded database nor `ids` names.
    fn unknown_vendor(ids: &PciIds) -> u16 {
        (0..=u16::MAX)
            .rev()
            .find(|&v| ids.vendor(v).is_none())
            .expect("some vendor id is unassigned")
    }

    #[cfg(feature = "pci-ids")]
    #[test]
    fn embedded_names_well_known_ids() {
        let ids = PciIds::embedded();
        assert!(!ids.has_host_file());
        assert!(ids.vendor(0x8086).unwrap().contains("Intel"));
        assert!(ids.vendor(0x1af4).unwrap().contains("Red Hat"));
        // The 82599 (ixgbe) and its VF have been in pci.ids since 2009.
        assert!(ids.device(0x8086, 0x10fb).unwrap().contains("82599"));
        assert!(ids
            .device(0x8086, 0x10ed)
            .unwrap()
            .contains("Virtual Function"));
        assert!(ids.class(0x020000).unwrap().contains("Ethernet"));
        assert!(ids.class(0x060000).unwrap().contains("Host bridge"));
        // A subclass it does not know falls back to the class's name.
        let bridge = ids.class(0x06ee00).unwrap();
        assert!(bridge.contains("Bridge"), "{bridge}");
        let v = unknown_vendor(&ids);
        assert_eq!(ids.vendor(v), None);
        assert_eq!(ids.device(v, 0x0001), None);
    }

    #[test]
    fn host_file_overrides_and_embedded_fills_in() {
        // A device id of Intel's that the embedded database does not name, for an orphan line.
        let absent = (0..=u16::MAX)
            .rev()
            .find(|&d| PciIds::embedded().device(0x8086, d).is_none())
            .unwrap();
        let text = format!("# comment\n8086  Override Corp\n\t10fb  Override NIC\n\t\t8086 000c  Subsystem\n\tfff0  Made-up device\nfff1  Made-up vendor\n\t0001  Made-up device one\nC 02  Override network\n\t80  Override other network\nC 06  Bridge\n\t00  Host bridge\n\t\t00  prog\nbad line\n\t{absent:04x}  orphan\n");
        let ids = PciIds::parse(&text);
        assert!(ids.has_host_file());
        // Names the file gives win.
        assert_eq!(ids.vendor(0x8086), Some("Override Corp"));
        assert_eq!(ids.device(0x8086, 0x10fb), Some("Override NIC"));
        assert_eq!(ids.device(0x8086, 0xfff0), Some("Made-up device"));
        assert_eq!(ids.vendor(0xfff1), Some("Made-up vendor"));
        assert_eq!(ids.device(0xfff1, 0x0001), Some("Made-up device one"));
        assert_eq!(ids.class(0x028000), Some("Override other network"));
        // What the file lacks comes from the embedded database, name by name.
        if cfg!(feature = "pci-ids") {
            assert!(ids.vendor(0x1af4).unwrap().contains("Red Hat"));
            assert!(ids
                .device(0x8086, 0x10ed)
                .unwrap()
                .contains("Virtual Function"));
            assert!(ids.class(0x020000).unwrap().contains("Ethernet"));
        } else {
            assert_eq!(ids.vendor(0x1af4), None);
            assert_eq!(ids.class(0x020000), Some("Override network"));
        }
        // Malformed and orphan lines are skipped, not attached anywhere.
        assert_eq!(ids.device(0x8086, absent), None);
        assert_eq!(ids.vendor(unknown_vendor(&ids)), None);
    }

    #[cfg(not(feature = "pci-ids"))]
    #[test]
    fn without_the_feature_nothing_is_embedded() {
        let ids = PciIds::embedded();
        assert_eq!(ids.vendor(0x8086), None);
        assert_eq!(ids.class(0x020000), None);
    }
}
