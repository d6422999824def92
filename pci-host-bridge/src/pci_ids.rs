//! Vendor, device and class names from the pci.ids database (pciutils' `pci.ids`, Debian
//! package `pci.ids`). Optional everywhere: without the file, names are simply absent.
//!
//! Format: `vvvv  Vendor` at column 0, `\tdddd  Device` under it, `\t\tssss ssss  Subsystem`
//! (ignored); classes as `C cc  Class`, `\tss  Subclass`, `\t\tpp  Programming interface`
//! (ignored). `#` starts a comment line.

use std::collections::HashMap;
use std::path::Path;

use crate::error::Error;

/// Where distributions install the database.
pub const DEFAULT_PATHS: &[&str] = &[
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

#[derive(Clone, Debug, Default)]
struct Vendor {
    name: String,
    devices: HashMap<u16, String>,
}

#[derive(Clone, Debug, Default)]
struct Class {
    name: String,
    subclasses: HashMap<u8, String>,
}

/// A parsed pci.ids database.
#[derive(Clone, Debug, Default)]
pub struct PciIds {
    vendors: HashMap<u16, Vendor>,
    classes: HashMap<u8, Class>,
}

fn split_id(s: &str, digits: usize) -> Option<(u32, &str)> {
    let id = s.get(..digits)?;
    let rest = s.get(digits..)?;
    if !rest.starts_with(' ') {
        return None;
    }
    Some((u32::from_str_radix(id, 16).ok()?, rest.trim()))
}

impl PciIds {
    /// Parse the text of a pci.ids file (malformed lines are skipped).
    pub fn parse(text: &str) -> Self {
        enum Ctx {
            None,
            Vendor(u16),
            Class(u8),
        }
        let mut ids = PciIds::default();
        let mut ctx = Ctx::None;
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("C ") {
                ctx = match split_id(rest, 2) {
                    Some((c, name)) => {
                        ids.classes.insert(
                            c as u8,
                            Class {
                                name: name.to_string(),
                                ..Default::default()
                            },
                        );
                        Ctx::Class(c as u8)
                    }
                    None => Ctx::None,
                };
            } else if line.starts_with("\t\t") {
                // Subsystems and programming interfaces: not needed.
            } else if let Some(rest) = line.strip_prefix('\t') {
                match ctx {
                    Ctx::Vendor(v) => {
                        if let (Some((d, name)), Some(vendor)) =
                            (split_id(rest, 4), ids.vendors.get_mut(&v))
                        {
                            vendor.devices.insert(d as u16, name.to_string());
                        }
                    }
                    Ctx::Class(c) => {
                        if let (Some((s, name)), Some(class)) =
                            (split_id(rest, 2), ids.classes.get_mut(&c))
                        {
                            class.subclasses.insert(s as u8, name.to_string());
                        }
                    }
                    Ctx::None => {}
                }
            } else {
                ctx = match split_id(line, 4) {
                    Some((v, name)) => {
                        ids.vendors.insert(
                            v as u16,
                            Vendor {
                                name: name.to_string(),
                                ..Default::default()
                            },
                        );
                        Ctx::Vendor(v as u16)
                    }
                    None => Ctx::None,
                };
            }
        }
        ids
    }

    /// Load a pci.ids file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Load the first database found in [`DEFAULT_PATHS`], if any.
    pub fn load_default() -> Option<Self> {
        DEFAULT_PATHS
            .iter()
            .find_map(|p| Self::load(Path::new(p)).ok())
    }

    /// A vendor's name.
    pub fn vendor(&self, vendor: u16) -> Option<&str> {
        self.vendors.get(&vendor).map(|v| v.name.as_str())
    }

    /// A device's name.
    pub fn device(&self, vendor: u16, device: u16) -> Option<&str> {
        self.vendors
            .get(&vendor)?
            .devices
            .get(&device)
            .map(String::as_str)
    }

    /// The name of a class code (`class << 16 | subclass << 8 | prog_if`): the subclass name if
    /// known, else the class name.
    pub fn class(&self, class_code: u32) -> Option<&str> {
        let c = self.classes.get(&((class_code >> 16) as u8))?;
        Some(
            c.subclasses
                .get(&((class_code >> 8) as u8))
                .unwrap_or(&c.name)
                .as_str(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vendors_devices_classes() {
        let text = "# comment\n8086  Intel Corporation\n\t10fb  82599ES 10-Gigabit SFI/SFP+ Network Connection\n\t\t8086 000c  Ethernet Server Adapter X520-2\n\t10ed  82599 Ethernet Controller Virtual Function\n1af4  Red Hat, Inc.\n\t1041  Virtio 1.0 network device\nC 02  Network controller\n\t00  Ethernet controller\nC 06  Bridge\n\t00  Host bridge\n\t\t00  prog\nbad line\n\t1234  orphan\n";
        let ids = PciIds::parse(text);
        assert_eq!(ids.vendor(0x8086), Some("Intel Corporation"));
        assert_eq!(
            ids.device(0x8086, 0x10ed),
            Some("82599 Ethernet Controller Virtual Function")
        );
        assert_eq!(
            ids.device(0x1af4, 0x1041),
            Some("Virtio 1.0 network device")
        );
        assert_eq!(ids.device(0x8086, 0x1234), None);
        assert_eq!(ids.class(0x020000), Some("Ethernet controller"));
        assert_eq!(ids.class(0x028000), Some("Network controller"));
        assert_eq!(ids.class(0x060000), Some("Host bridge"));
        assert_eq!(ids.class(0xff0000), None);
    }
}
