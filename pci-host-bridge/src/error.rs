//! Errors of the pci-host-bridge library (setup time only: guest accesses never fail, they are
//! answered with all-ones or dropped and logged).

use std::path::PathBuf;

/// What can go wrong while building the bridge or reading the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[pci]` configuration is inconsistent (the message names the key).
    #[error("[pci] config: {0}")]
    Config(String),
    /// A PCI address string is malformed.
    #[error("invalid PCI address {0:?} (expected DDDD:BB:DD.F or BB:DD.F)")]
    Address(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs or snapshot file has unexpected contents.
    #[error("{path}: {message}")]
    Parse {
        /// The file (or a description of the in-memory source).
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The host function cannot be passed through as configured.
    #[error("{device}: {message}")]
    Unsupported {
        /// The host function.
        device: String,
        /// Why.
        message: String,
    },
    /// A backend operation failed.
    #[error("backend {device}: {message}")]
    Backend {
        /// The host function.
        device: String,
        /// Why.
        message: String,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Parse`] for `path`.
    pub fn parse(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            message: message.into(),
        }
    }
}
