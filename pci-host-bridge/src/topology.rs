//! PCI addresses, SBDF numbers and the ECAM address decode.
//!
//! - SBDF (Xen's `IOREQ_TYPE_PCI_CONFIG` address, xen-abi.md 1.5): `seg << 16 | bus << 8 |
//!   dev << 3 | fn`; a config request's `addr` is `SBDF << 32 | reg`.
//! - ECAM: `base + (bus - bus_start) << 20 | dev << 15 | fn << 12 | reg` (PCI Firmware spec,
//!   MCFG; one 4 KiB page per function, 1 MiB per bus).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Bytes of configuration space per function (PCIe extended config space).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Bytes of ECAM per bus.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// A PCI function address (`DDDD:BB:DD.F`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// Segment (domain).
    pub segment: u16,
    /// Bus.
    pub bus: u8,
    /// Device (slot), 0..=31.
    pub device: u8,
    /// Function, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// An address; `device` and `function` are masked to 5 and 3 bits.
    pub const fn new(segment: u16, bus: u8, device: u8, function: u8) -> Self {
        PciAddress {
            segment,
            bus,
            device: device & 0x1F,
            function: function & 7,
        }
    }

    /// The SBDF number Xen uses (`seg << 16 | bus << 8 | dev << 3 | fn`).
    pub const fn sbdf(&self) -> u32 {
        xen_abi::pci_sbdf(self.segment, self.bus, self.device, self.function)
    }

    /// The address of an SBDF number.
    pub const fn from_sbdf(sbdf: u32) -> Self {
        PciAddress {
            segment: (sbdf >> 16) as u16,
            bus: (sbdf >> 8) as u8,
            device: ((sbdf >> 3) & 0x1F) as u8,
            function: (sbdf & 7) as u8,
        }
    }

    /// `dev << 3 | fn`.
    pub const fn devfn(&self) -> u8 {
        (self.device << 3) | self.function
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.segment, self.bus, self.device, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = Error;

    /// Parses `DDDD:BB:DD.F` or `BB:DD.F` (hex, as lspci and sysfs print them).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Address(s.to_string());
        let (rest, func) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (seg, bus, dev) = match parts.as_slice() {
            [seg, bus, dev] => (*seg, *bus, *dev),
            [bus, dev] => ("0", *bus, *dev),
            _ => return Err(bad()),
        };
        let hex = |t: &str, max: u32| -> Result<u32, Error> {
            if t.is_empty() || t.len() > 4 {
                return Err(bad());
            }
            let v = u32::from_str_radix(t, 16).map_err(|_| bad())?;
            if v > max {
                return Err(bad());
            }
            Ok(v)
        };
        Ok(PciAddress {
            segment: hex(seg, 0xFFFF)? as u16,
            bus: hex(bus, 0xFF)? as u8,
            device: hex(dev, 0x1F)? as u8,
            function: hex(func, 7)? as u8,
        })
    }
}

impl Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The ECAM window of the guest's PCI segment 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecam {
    /// Guest-physical base (the address of bus `bus_start`).
    pub base: u64,
    /// First bus decoded.
    pub bus_start: u8,
    /// Last bus decoded (inclusive).
    pub bus_end: u8,
}

impl Ecam {
    /// Size of the window in bytes.
    pub fn size(&self) -> u64 {
        (u64::from(self.bus_end.saturating_sub(self.bus_start)) + 1) * ECAM_BUS_SIZE
    }

    /// Whether `addr` lies in the window.
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size()
    }

    /// The function address (segment 0) and register of an address inside the window.
    pub fn decode(&self, addr: u64) -> Option<(PciAddress, u16)> {
        if !self.contains(addr) {
            return None;
        }
        let off = addr - self.base;
        let bus = u64::from(self.bus_start) + (off >> 20);
        let dev = ((off >> 15) & 0x1F) as u8;
        let func = ((off >> 12) & 7) as u8;
        Some((
            PciAddress::new(0, bus as u8, dev, func),
            (off & 0xFFF) as u16,
        ))
    }

    /// The ECAM address of `reg` of `addr` (segment ignored), if its bus is decoded.
    pub fn encode(&self, addr: PciAddress, reg: u16) -> Option<u64> {
        if addr.bus < self.bus_start || addr.bus > self.bus_end {
            return None;
        }
        let bus = u64::from(addr.bus - self.bus_start);
        Some(
            self.base
                + (bus << 20
                    | u64::from(addr.device) << 15
                    | u64::from(addr.function) << 12
                    | u64::from(reg & 0xFFF)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let a: PciAddress = "0000:03:10.1".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 3, 0x10, 1));
        assert_eq!(a.to_string(), "0000:03:10.1");
        assert_eq!(a.sbdf(), 0x0381);
        assert_eq!(PciAddress::from_sbdf(0x0381), a);
        let b: PciAddress = "3a:00.7".parse().unwrap();
        assert_eq!(b, PciAddress::new(0, 0x3a, 0, 7));
        for bad in [
            "",
            "0000:03:10",
            "0000:03:20.0",
            "0000:03:10.8",
            "x:1:2.3",
            "00000:00:00.0",
        ] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ecam_roundtrip() {
        let e = Ecam {
            base: 0xF000_0000,
            bus_start: 0,
            bus_end: 1,
        };
        assert_eq!(e.size(), 2 << 20);
        let a = PciAddress::new(0, 1, 3, 2);
        let addr = e.encode(a, 0x104).unwrap();
        assert_eq!(
            addr,
            0xF000_0000 + (1 << 20) + (3 << 15) + (2 << 12) + 0x104
        );
        assert_eq!(e.decode(addr), Some((a, 0x104)));
        assert_eq!(e.decode(0xF000_0000 + (2 << 20)), None);
        assert_eq!(e.encode(PciAddress::new(0, 2, 0, 0), 0), None);
    }
}
