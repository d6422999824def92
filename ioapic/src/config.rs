//! The `[ioapic]` section of the per-guest configuration file.
//!
//! ```toml
//! [ioapic]
//! base = 0xFEC00000              # MMIO base (256-byte aligned, below 4 GiB)
//! pins = 24                      # 1..=120
//! version = 0x20                 # 0x20 (EOI register) or 0x11 (82093AA)
//! id = 0                         # APIC ID, 0..=15
//! socket = "/run/xen-dm/7/ioapic.sock"   # optional: where interrupt sources connect
//! ```
//!
//! Every key is optional; the defaults are shown above (no socket by default). Unknown keys
//! are an error. Other sections of the file belong to the other processes and are ignored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::chip::Version;
use crate::regs::{DEFAULT_BASE, DEFAULT_PINS, ID_MASK, MAX_PINS, WINDOW_LEN};

/// The name of the section in the per-guest file.
pub const SECTION: &str = "ioapic";

/// Longest socket path a `sockaddr_un` holds (108 bytes with the terminating NUL).
const SUN_PATH_MAX: usize = 107;

/// The local APIC page, which Xen emulates itself and never forwards to an ioreq server.
const LAPIC_BASE: u64 = 0xFEE0_0000;
const LAPIC_LEN: u64 = 0x1000;

/// `[ioapic]` settings. Numbers are kept wide so that an out-of-range value is reported by
/// [`IoapicConfig::validate`] with the field's name.
/// A key left out takes its value from [`IoapicConfig::default`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IoapicConfig {
    /// Guest-physical base of the MMIO window (default 0xFEC00000).
    pub base: u64,
    /// Number of pins (default 24, at most 120).
    pub pins: u64,
    /// Version register value: 0x20 (default) or 0x11.
    pub version: u64,
    /// APIC ID (default 0, at most 15).
    pub id: u64,
    /// Unix socket for interrupt sources (see `irq_line`); none by default.
    pub socket: Option<PathBuf>,
}

impl Default for IoapicConfig {
    fn default() -> Self {
        IoapicConfig {
            base: DEFAULT_BASE,
            pins: u64::from(DEFAULT_PINS),
            version: 0x20,
            id: 0,
            socket: None,
        }
    }
}

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not valid TOML, or `[ioapic]` does not match [`IoapicConfig`] (unknown key,
    /// wrong type); the message names the key.
    #[error("[ioapic]: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value is out of range.
    #[error("ioapic.{field}: {reason}")]
    Invalid {
        /// The key.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl IoapicConfig {
    /// Reads the `[ioapic]` section of a whole per-guest TOML document (defaults if the section
    /// is absent) and validates it.
    pub fn from_toml(document: &str) -> Result<IoapicConfig, ConfigError> {
        /// The whole file; only `[ioapic]` is read, the other sections are not ours.
        #[derive(Deserialize)]
        struct Document {
            #[serde(default)]
            ioapic: Option<IoapicConfig>,
        }
        let config = toml::from_str::<Document>(document)?
            .ioapic
            .unwrap_or_default();
        config.validate()?;
        Ok(config)
    }

    /// Checks every value; the error names the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.base & (WINDOW_LEN - 1) != 0 {
            return Err(invalid(
                "base",
                format!("{:#x} is not aligned to {WINDOW_LEN:#x}", self.base),
            ));
        }
        let end = self.base + WINDOW_LEN - 1; // cannot overflow: base is aligned
        if end > u64::from(u32::MAX) {
            return Err(invalid(
                "base",
                format!(
                    "{:#x}: the window must lie below 4 GiB (the MADT holds a 32-bit address)",
                    self.base
                ),
            ));
        }
        if self.base < LAPIC_BASE + LAPIC_LEN && end >= LAPIC_BASE {
            return Err(invalid(
                "base",
                format!(
                    "{:#x}: overlaps the local APIC page at {LAPIC_BASE:#x}, which Xen emulates",
                    self.base
                ),
            ));
        }
        if self.pins == 0 || self.pins > u64::from(MAX_PINS) {
            return Err(invalid(
                "pins",
                format!("{} is not in 1..={MAX_PINS}", self.pins),
            ));
        }
        if u8::try_from(self.version)
            .ok()
            .and_then(Version::from_value)
            .is_none()
        {
            return Err(invalid(
                "version",
                format!("{:#x} is not 0x20 or 0x11", self.version),
            ));
        }
        if self.id > u64::from(ID_MASK) {
            return Err(invalid(
                "id",
                format!("{} is not in 0..={ID_MASK}", self.id),
            ));
        }
        if let Some(path) = &self.socket {
            let len = path.as_os_str().len();
            if len == 0 {
                return Err(invalid("socket", "empty path"));
            }
            if len > SUN_PATH_MAX {
                return Err(invalid(
                    "socket",
                    format!("path is {len} bytes, a Unix socket path holds {SUN_PATH_MAX}"),
                ));
            }
        }
        Ok(())
    }

    /// The pin count (call after [`IoapicConfig::validate`]; clamps otherwise).
    pub fn pins_u8(&self) -> u8 {
        self.pins.clamp(1, u64::from(MAX_PINS)) as u8
    }

    /// The version (call after [`IoapicConfig::validate`]; 0x20 otherwise).
    pub fn version_enum(&self) -> Version {
        u8::try_from(self.version)
            .ok()
            .and_then(Version::from_value)
            .unwrap_or(Version::V20)
    }

    /// The APIC ID (call after [`IoapicConfig::validate`]; masked otherwise).
    pub fn id_u8(&self) -> u8 {
        (self.id & u64::from(ID_MASK)) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_section() {
        assert_eq!(
            IoapicConfig::from_toml("").unwrap(),
            IoapicConfig::default()
        );
        assert_eq!(
            IoapicConfig::from_toml("[ioapic]\n").unwrap(),
            IoapicConfig::default()
        );
        let c = IoapicConfig::from_toml(
            r#"
            [pm-trap]
            whatever = 1
            [ioapic]
            base = 0xFEC01000
            pins = 48
            version = 0x11
            id = 2
            socket = "/run/ioapic.sock"
            "#,
        )
        .unwrap();
        assert_eq!(c.base, 0xFEC0_1000);
        assert_eq!(c.pins_u8(), 48);
        assert_eq!(c.version_enum(), Version::V11);
        assert_eq!(c.id_u8(), 2);
        assert_eq!(
            c.socket.as_deref(),
            Some(std::path::Path::new("/run/ioapic.sock"))
        );
        let d = IoapicConfig::default();
        assert_eq!(
            (d.base, d.pins, d.version, d.id, d.socket),
            (0xFEC0_0000, 24, 0x20, 0, None)
        );
    }

    fn err(doc: &str) -> String {
        IoapicConfig::from_toml(doc).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[ioapic]\npins = 0").starts_with("ioapic.pins:"));
        assert!(err("[ioapic]\npins = 121").starts_with("ioapic.pins:"));
        assert!(err("[ioapic]\nversion = 0x21").starts_with("ioapic.version:"));
        assert!(err("[ioapic]\nid = 16").starts_with("ioapic.id:"));
        assert!(err("[ioapic]\nbase = 0xFEC00010").starts_with("ioapic.base:"));
        assert!(err("[ioapic]\nbase = 0x100000000").starts_with("ioapic.base:"));
        assert!(err("[ioapic]\nbase = 0xFEE00000").starts_with("ioapic.base:"));
        assert!(err("[ioapic]\nsocket = \"\"").starts_with("ioapic.socket:"));
        let long = format!("[ioapic]\nsocket = \"/{}\"", "x".repeat(200));
        assert!(err(&long).starts_with("ioapic.socket:"));
        let unknown = err("[ioapic]\nbsae = 1");
        assert!(unknown.contains("bsae"), "{unknown}");
        let ty = err("[ioapic]\npins = \"24\"");
        assert!(ty.contains("pins"), "{ty}");
        let neg = err("[ioapic]\npins = -1");
        assert!(neg.contains("pins"), "{neg}");
        assert!(matches!(
            IoapicConfig::from_toml("ioapic = 3"),
            Err(ConfigError::Toml(_))
        ));
        assert!(matches!(
            IoapicConfig::from_toml("[ioapic"),
            Err(ConfigError::Toml(_))
        ));
    }
}
