//! The per-guest configuration: one TOML file read by every process of the guest.
//!
//! ```toml
//! domid = 5
//! transport = "xen"          # or "sim"
//! vcpus = 2                  # optional: checked against what the hypervisor reports
//!
//! [sim]
//! socket = "/run/xen-sim/sim.sock"
//!
//! [control]
//! dir = "/run/pvh-dm"        # sockets at DIR/DOMID/PROCESS.sock
//!
//! [pm_trap]                  # one section per device model; each crate documents its keys
//! [ioapic]
//! [pci]
//! ```

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::transport::TransportKind;

/// A configuration problem, naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid for this schema (toml names the key and line).
    #[error("config {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message, which names the field.
        message: String,
    },
    /// A device section is invalid.
    #[error("config {path}, section [{section}]: {message}")]
    Section {
        /// File.
        path: PathBuf,
        /// Section name.
        section: String,
        /// What is wrong (names the field).
        message: String,
    },
}

/// `[sim]`: where xen-sim listens.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// xen-sim's socket (default `/run/xen-sim/sim.sock`).
    pub socket: PathBuf,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            socket: PathBuf::from("/run/xen-sim/sim.sock"),
        }
    }
}

/// `[control]`: where the processes put their control sockets.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Directory; each process listens at `DIR/DOMID/NAME.sock` (default `/run/pvh-dm`).
    pub dir: PathBuf,
    /// A group whose members may use the sockets too (a name from the group database, or a
    /// numeric gid): the control sockets and the ioapic's irq_line socket are then created
    /// mode 0660 with this group, and a peer in it is served. Default: none (mode 0600, only
    /// root and the device model's own uid).
    pub group: Option<GroupSpec>,
}

/// A group, as `[control] group` names it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum GroupSpec {
    /// A numeric gid (needs no entry in the group database).
    Gid(u32),
    /// A name looked up in the group database (`getgrnam`).
    Name(String),
}

impl GroupSpec {
    /// The gid, or why there is none.
    pub fn resolve(&self) -> Result<u32, String> {
        match self {
            GroupSpec::Gid(g) => Ok(*g),
            GroupSpec::Name(n) => match nix::unistd::Group::from_name(n) {
                Ok(Some(g)) => Ok(g.gid.as_raw()),
                Ok(None) => Err(format!(
                    "no group {n:?} in the group database (create it, e.g. `groupadd --system {n}`, or give a numeric gid)"
                )),
                Err(e) => Err(format!("looking up group {n:?}: {e}")),
            },
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            dir: PathBuf::from("/run/pvh-dm"),
            group: None,
        }
    }
}

/// The whole per-guest file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// The guest's domain id.
    pub domid: u16,
    /// Expected number of vCPUs (optional; the hypervisor's `nr_vcpus` is authoritative).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Which hypervisor to talk to (default `xen`).
    #[serde(default)]
    pub transport: TransportKind,
    /// `[sim]`.
    #[serde(default)]
    pub sim: SimConfig,
    /// `[control]`.
    #[serde(default)]
    pub control: ControlConfig,
    /// `[pm_trap]`, for the pm-trap process.
    #[serde(default)]
    pub pm_trap: Option<toml::Value>,
    /// `[ioapic]`, for the ioapic process.
    #[serde(default)]
    pub ioapic: Option<toml::Value>,
    /// `[pci]`, for the pci-host-bridge process.
    #[serde(default)]
    pub pci: Option<toml::Value>,
    /// Where this config was read from (for messages).
    #[serde(skip)]
    pub path: PathBuf,
}

impl GuestConfig {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parse config text (`path` is only used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut c: GuestConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        c.path = path.into();
        Ok(c)
    }

    /// Deserialize a device section; a missing section yields `T::default()`.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, ConfigError> {
        Ok(self.optional_section(name)?.unwrap_or_default())
    }

    /// Whether the section is present at all.
    pub fn has_section(&self, name: &str) -> bool {
        self.raw_section(name).is_some()
    }

    /// The section `name` if the file has it (`None` if not, unlike [`Self::section`]).
    pub fn optional_section<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ConfigError> {
        self.raw_section(name)
            .map(|v| {
                v.clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| ConfigError::Section {
                        path: self.path.clone(),
                        section: name.into(),
                        message: e.message().to_string(),
                    })
            })
            .transpose()
    }

    fn raw_section(&self, name: &str) -> Option<&toml::Value> {
        match name {
            "pm_trap" => self.pm_trap.as_ref(),
            "ioapic" => self.ioapic.as_ref(),
            "pci" => self.pci.as_ref(),
            _ => None,
        }
    }

    /// Who may connect to this guest's sockets (`[control] group` resolved; the error names
    /// the file and the group).
    pub fn socket_access(&self) -> Result<crate::socket_access::SocketAccess, ConfigError> {
        let group = match &self.control.group {
            None => None,
            Some(g) => Some(g.resolve().map_err(|message| ConfigError::Section {
                path: self.path.clone(),
                section: "control".into(),
                message: format!("group: {message}"),
            })?),
        };
        Ok(crate::socket_access::SocketAccess { group })
    }

    /// The control socket of process `name` for this guest.
    pub fn control_socket(&self, name: &str) -> PathBuf {
        self.control
            .dir
            .join(self.domid.to_string())
            .join(format!("{name}.sock"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_left_out_take_their_defaults() {
        let c =
            GuestConfig::parse("domid = 3\n[control]\ngroup = 7\n", Path::new("t.toml")).unwrap();
        assert_eq!(c.transport, TransportKind::Xen);
        assert_eq!(c.sim.socket, Path::new("/run/xen-sim/sim.sock"));
        assert_eq!(c.control.dir, Path::new("/run/pvh-dm"));
        assert_eq!(c.control.group, Some(GroupSpec::Gid(7)));
    }

    #[test]
    fn errors_name_the_field() {
        let e = GuestConfig::parse("domid = 1\ntransprt = \"sim\"\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("transprt") && e.contains("g.toml"), "{e}");
        let e = GuestConfig::parse("domid = \"x\"\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("domid"), "{e}");
        let e = GuestConfig::parse("domid = 1\ntransport = \"kvm\"\n", Path::new("g.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("transport") || e.contains("kvm"), "{e}");
    }

    #[test]
    fn defaults_and_sections() {
        let c =
            GuestConfig::parse("domid = 3\n[pm_trap]\nmode = \"guest\"\n", Path::new("g")).unwrap();
        assert_eq!(c.transport, TransportKind::Xen);
        assert!(c.has_section("pm_trap") && !c.has_section("ioapic"));
        assert_eq!(
            c.control_socket("pm-trap"),
            PathBuf::from("/run/pvh-dm/3/pm-trap.sock")
        );
    }
}
