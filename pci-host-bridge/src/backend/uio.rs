//! The sysfs backend's INTx: the host interrupt through `uio_pci_generic`.
//!
//! In a Xen dom0 the physical IOAPIC is Xen's and dom0 receives a device's INTx as an event
//! channel behind its Linux IRQ; a PVH domU has no vIOAPIC for Xen's own INTx passthrough
//! (`PT_IRQ_TYPE_PCI`, xen-abi.md 8.1). So dom0 keeps handling the host line with the
//! smallest driver there is, `uio_pci_generic` (drivers/uio/uio_pci_generic.c): its interrupt
//! handler checks the function's Interrupt Status bit, sets Interrupt Disable in the command
//! register (masking INTx at the device, `pci_check_and_mask_intx`) and wakes `/dev/uioN`.
//! `read()` of 4 bytes on `/dev/uioN` returns the interrupt count (a non-blocking fd returns
//! `EAGAIN` when nothing is new); user space re-enables the interrupt by clearing Interrupt
//! Disable through the `config` file (Documentation/driver-api/uio-howto.rst,
//! "uio_pci_generic"). `uio_pci_generic` has no `irqcontrol`, so writing to `/dev/uioN` does
//! not unmask; the bridge clears the bit through [`super::HostDevice::intx_unmask`].
//!
//! # Setting a device up (on the dom0, as root; never done by tests)
//!
//! ```text
//! modprobe uio_pci_generic
//! echo -n 0000:03:00.0 > /sys/bus/pci/devices/0000:03:00.0/driver/unbind   # dom0's driver
//! echo "8086 1572" > /sys/bus/pci/drivers/uio_pci_generic/new_id            # or:
//! echo -n 0000:03:00.0 > /sys/bus/pci/drivers/uio_pci_generic/bind
//! ls /sys/bus/pci/devices/0000:03:00.0/uio                                    # -> uio0
//! ```
//!
//! then in the guest config:
//!
//! ```toml
//! [[pci.device]]
//! host = "0000:03:00.0"
//! slot = 2
//! intx = "uio"            # or intx = "/dev/uio0"
//! ```
//!
//! `uio_pci_generic` refuses functions without an IRQ or without a working Interrupt Disable
//! bit (pre-PCI 2.3); such a function cannot forward INTx (use MSI/MSI-X). The bridge keeps
//! `uio_pci_generic` bound when it unbinds dom0 drivers at start (it is what delivers INTx and
//! it touches nothing else). SR-IOV VFs have no INTx and need none of this.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The driver that must be bound for [`UioIntx`].
pub const DRIVER: &str = "uio_pci_generic";

/// `/dev/uioN` of a function bound to `uio_pci_generic`.
#[derive(Debug)]
pub struct UioIntx {
    path: PathBuf,
    file: File,
}

/// The `/dev/uioN` node of the function whose sysfs directory is `dev_dir` (from its
/// `uio/uioN` entry), with `dev_root` as the `/dev` directory.
pub fn find_node(dev_dir: &Path, dev_root: &Path) -> Result<PathBuf, Error> {
    let uio_dir = dev_dir.join("uio");
    let rd = std::fs::read_dir(&uio_dir).map_err(|e| {
        Error::Unsupported {
            device: dev_dir.display().to_string(),
            message: format!(
                "intx = \"uio\" but {} is missing ({e}): bind the function to {DRIVER} first (see the uio module docs)",
                uio_dir.display()
            ),
        }
    })?;
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("uio") && n[3..].bytes().all(|b| b.is_ascii_digit()) && n.len() > 3
        })
        .collect();
    names.sort();
    let name = names.first().ok_or_else(|| Error::Unsupported {
        device: dev_dir.display().to_string(),
        message: format!("no uioN under {}", uio_dir.display()),
    })?;
    Ok(dev_root.join(name))
}

impl UioIntx {
    /// Open `/dev/uioN` read-only and non-blocking.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(UioIntx {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The node.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fd to watch.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Take a pending interrupt without blocking: 1 if the count moved, 0 if not.
    pub fn take(&mut self) -> Result<u64, Error> {
        let mut count = [0u8; 4];
        match self.file.read(&mut count) {
            Ok(4) => Ok(1),
            Ok(0) => Ok(0),
            Ok(n) => Err(Error::Backend {
                device: self.path.display().to_string(),
                message: format!("short read of {n} bytes"),
            }),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                Ok(0)
            }
            Err(e) => Err(Error::io(&self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_node_in_a_fake_tree() {
        let root = std::env::temp_dir().join(format!("uio-find-{}", std::process::id()));
        let dev = root.join("sys/bus/pci/devices/0000:03:00.0");
        std::fs::create_dir_all(dev.join("uio/uio7")).unwrap();
        assert_eq!(
            find_node(&dev, Path::new("/dev")).unwrap(),
            PathBuf::from("/dev/uio7")
        );
        let other = root.join("sys/bus/pci/devices/0000:04:00.0");
        std::fs::create_dir_all(&other).unwrap();
        let e = find_node(&other, Path::new("/dev"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("uio_pci_generic"), "{e}");
        // A plain file stands in for /dev/uioN: reads return 4 bytes -> one interrupt.
        let node = root.join("uio7");
        std::fs::write(&node, [3, 0, 0, 0]).unwrap();
        let mut u = UioIntx::open(&node).unwrap();
        assert_eq!(u.take().unwrap(), 1);
        assert_eq!(u.take().unwrap(), 0, "nothing new");
        let _ = std::fs::remove_dir_all(&root);
    }
}
