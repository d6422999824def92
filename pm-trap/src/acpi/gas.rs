//! The Generic Address Structure (ACPI 6.0, 5.2.3.2 "Generic Address Structure (GAS)", Table 5-25).
//!
//! Layout (12 bytes): Address Space ID (1), Register Bit Width (1), Register Bit Offset (1),
//! Access Size (1), Address (8, little endian).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Size of a GAS in bytes.
pub const GAS_LEN: usize = 12;

/// A GAS Address Space ID (ACPI 6.0, Table 5-25).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressSpace(pub u8);

impl AddressSpace {
    /// 0: System Memory.
    pub const SYSTEM_MEMORY: AddressSpace = AddressSpace(0);
    /// 1: System I/O.
    pub const SYSTEM_IO: AddressSpace = AddressSpace(1);
    /// 2: PCI Configuration Space.
    pub const PCI_CONFIG: AddressSpace = AddressSpace(2);
    /// 0x7F: Functional Fixed Hardware.
    pub const FIXED_HARDWARE: AddressSpace = AddressSpace(0x7F);

    /// Short name used in JSON: `mem`, `io`, `pci`, `ec`, `smbus`, `cmos`, `pci_bar`, `ipmi`,
    /// `gpio`, `serial_bus`, `pcc`, `prm`, `ffh`; anything else `space_0xNN`.
    pub fn name(self) -> Cow<'static, str> {
        Cow::Borrowed(match self.0 {
            0 => "mem",
            1 => "io",
            2 => "pci",
            3 => "ec",
            4 => "smbus",
            5 => "cmos",
            6 => "pci_bar",
            7 => "ipmi",
            8 => "gpio",
            9 => "serial_bus",
            0x0A => "pcc",
            0x0B => "prm",
            0x7F => "ffh",
            n => return Cow::Owned(format!("space_{n:#04x}")),
        })
    }

    /// The inverse of [`AddressSpace::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        let id = match name {
            "mem" => 0,
            "io" => 1,
            "pci" => 2,
            "ec" => 3,
            "smbus" => 4,
            "cmos" => 5,
            "pci_bar" => 6,
            "ipmi" => 7,
            "gpio" => 8,
            "serial_bus" => 9,
            "pcc" => 0x0A,
            "prm" => 0x0B,
            "ffh" => 0x7F,
            other => {
                let hex = other.strip_prefix("space_0x")?;
                return u8::from_str_radix(hex, 16).ok().map(AddressSpace);
            }
        };
        Some(AddressSpace(id))
    }
}

impl fmt::Display for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for AddressSpace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for AddressSpace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AddressSpace::from_name(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown address space {s:?}")))
    }
}

/// A register location as declared in a table. Serializes to `{"space", "addr", "bit_width"}`;
/// `bit_offset` and `access_size` are kept for callers but not serialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gas {
    /// Address space.
    pub space: AddressSpace,
    /// Address (port number for `io`).
    pub addr: u64,
    /// Register width in bits.
    pub bit_width: u8,
    /// Register bit offset.
    #[serde(skip)]
    pub bit_offset: u8,
    /// Access size (0 undefined, 1 byte, 2 word, 3 dword, 4 qword).
    #[serde(skip)]
    pub access_size: u8,
}

impl Gas {
    /// Decode the 12 bytes at `bytes[..12]`; `None` if fewer than 12 bytes are given.
    pub fn parse(bytes: &[u8]) -> Option<Gas> {
        let b = bytes.get(..GAS_LEN)?;
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&b[4..12]);
        Some(Gas {
            space: AddressSpace(b[0]),
            bit_width: b[1],
            bit_offset: b[2],
            access_size: b[3],
            addr: u64::from_le_bytes(addr),
        })
    }

    /// A System I/O register of `bytes` bytes at port `port` (how ACPICA converts the 32-bit
    /// FADT block fields).
    pub fn io(port: u64, bytes: u8) -> Gas {
        Gas {
            space: AddressSpace::SYSTEM_IO,
            addr: port,
            bit_width: bytes.saturating_mul(8),
            bit_offset: 0,
            access_size: 0,
        }
    }

    /// `Some(self)` unless the address is 0 (ACPI: "not implemented").
    pub fn non_zero(self) -> Option<Gas> {
        (self.addr != 0).then_some(self)
    }
}

impl fmt::Display for Gas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:#x} ({} bits)",
            self.space, self.addr, self.bit_width
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_names() {
        let raw = [1u8, 16, 0, 2, 0x04, 0x18, 0, 0, 0, 0, 0, 0];
        let g = Gas::parse(&raw).unwrap();
        assert_eq!(
            g,
            Gas {
                space: AddressSpace::SYSTEM_IO,
                addr: 0x1804,
                bit_width: 16,
                bit_offset: 0,
                access_size: 2
            }
        );
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"space":"io","addr":6148,"bit_width":16}"#
        );
        assert!(Gas::parse(&raw[..11]).is_none());
        for id in 0..=255u8 {
            let s = AddressSpace(id);
            assert_eq!(AddressSpace::from_name(&s.name()), Some(s));
        }
    }
}
