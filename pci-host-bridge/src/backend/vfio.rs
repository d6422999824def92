//! The VFIO backend: the device's config space, BAR regions, function reset and INTx through
//! a VFIO device (`vfio-ioctls` with `default-features = false`, i.e. without KVM).
//!
//! For hosts that offer VFIO: the function must be bound to `vfio-pci` and sit in an IOMMU
//! group (`/sys/bus/pci/devices/SBDF/iommu_group`, `/dev/vfio/GROUP`). In a Xen dom0 the IOMMU
//! belongs to Xen and Linux shows no IOMMU groups, so there the sysfs backend is the one to
//! use; this backend says so instead of failing obscurely.
//!
//! VFIO regions are file offsets, not host addresses: the BARs' host physical addresses, which
//! `XEN_DOMCTL_memory_mapping` needs, come from sysfs `resource` as for the sysfs backend.
//! INTx: VFIO signals an eventfd and masks the line itself; `intx_unmask` is VFIO's unmask.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use vfio_ioctls::{VfioContainer, VfioDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::sysfs::{bars_from_resource, device_dir, parse_resource};
use super::{HostDevice, LearnedAtOpen};
use crate::error::Error;
use crate::topology::PciAddress;

/// Region indexes of a vfio-pci device (linux/vfio.h `VFIO_PCI_*_REGION_INDEX`).
const VFIO_PCI_ROM_REGION_INDEX: u32 = 6;
const VFIO_PCI_CONFIG_REGION_INDEX: u32 = 7;
/// IRQ index of INTx (linux/vfio.h `VFIO_PCI_INTX_IRQ_INDEX`).
const VFIO_PCI_INTX_IRQ_INDEX: u32 = 0;
/// The VFIO container device node.
pub const VFIO_CONTAINER: &str = "/dev/vfio/vfio";

/// A function opened through VFIO.
pub struct VfioHostDevice {
    addr: PciAddress,
    dev: VfioDevice,
    learned: LearnedAtOpen,
    intx: Option<EventFd>,
}

fn unsupported(addr: PciAddress, message: String) -> Error {
    Error::Unsupported {
        device: addr.to_string(),
        message,
    }
}

/// Check that `addr` can be opened through VFIO at all, naming what is missing.
pub fn check_available(sysfs_root: &Path, addr: PciAddress, vfio_dir: &Path) -> Result<(), Error> {
    let dir = device_dir(sysfs_root, addr);
    if !dir.exists() {
        return Err(Error::io(
            &dir,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    let group = dir.join("iommu_group");
    if !group.exists() {
        return Err(unsupported(
            addr,
            format!(
                "{} does not exist: the function is in no IOMMU group, so VFIO cannot open it \
                 (in a Xen dom0 the IOMMU is Xen's: use backend = \"sysfs\")",
                group.display()
            ),
        ));
    }
    let container = vfio_dir.join("vfio");
    if !container.exists() {
        return Err(unsupported(
            addr,
            format!(
                "{} does not exist: load vfio-pci and bind the function to it",
                container.display()
            ),
        ));
    }
    Ok(())
}

impl VfioHostDevice {
    /// Open `addr` (bound to vfio-pci) and reset it.
    pub fn open(sysfs_root: &Path, addr: PciAddress) -> Result<Self, Error> {
        check_available(sysfs_root, addr, Path::new("/dev/vfio"))?;
        let dir = device_dir(sysfs_root, addr);
        let vfio_err = |what: &str, e: &dyn std::fmt::Display| Error::Backend {
            device: format!("vfio {addr}"),
            message: format!("{what}: {e}"),
        };
        let container =
            VfioContainer::new(None).map_err(|e| vfio_err("opening the VFIO container", &e))?;
        let dev = VfioDevice::new(&dir, Arc::new(container), false)
            .map_err(|e| vfio_err("opening the device", &e))?;
        let config_len = dev.get_region_size(VFIO_PCI_CONFIG_REGION_INDEX).min(4096) as usize;
        if config_len < 64 {
            return Err(unsupported(
                addr,
                format!("VFIO config region of {config_len} bytes"),
            ));
        }
        let res_path = dir.join("resource");
        let text = std::fs::read_to_string(&res_path).map_err(|e| Error::io(&res_path, e))?;
        let (bars, rom) = bars_from_resource(&parse_resource(&text, &res_path)?);
        let is_vf = dir.join("physfn").exists();
        let mut d = VfioHostDevice {
            addr,
            dev,
            learned: LearnedAtOpen {
                config_len,
                ids: (0xFFFF, 0xFFFF),
                bars,
                rom,
                is_vf,
            },
            intx: None,
        };
        // A VF's config space reads 0xFFFF IDs; the kernel's sysfs files carry the real ones.
        d.learned.ids = if is_vf {
            let rd = |f: &str| -> Result<u16, Error> {
                let p = dir.join(f);
                let t = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
                u16::from_str_radix(t.trim().trim_start_matches("0x"), 16).map_err(|e| {
                    Error::Parse {
                        path: p.clone(),
                        message: e.to_string(),
                    }
                })
            };
            (rd("vendor")?, rd("device")?)
        } else {
            (d.read_config_word(0)?, d.read_config_word(2)?)
        };
        d.dev.reset();
        tracing::info!(device = %addr, config_len, "opened through VFIO and reset");
        Ok(d)
    }

    /// Forward the function's INTx through a VFIO eventfd.
    pub fn enable_intx(&mut self) -> Result<(), Error> {
        let efd = EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Backend {
            device: self.name(),
            message: format!("eventfd: {e}"),
        })?;
        self.dev
            .enable_irq(VFIO_PCI_INTX_IRQ_INDEX, vec![&efd])
            .map_err(|e| Error::Backend {
                device: self.name(),
                message: format!("VFIO INTx: {e}"),
            })?;
        self.intx = Some(efd);
        Ok(())
    }

    fn region_len(&self, index: u32) -> u64 {
        self.dev.get_region_size(index)
    }
}

/// Whether `[offset, offset + len)` lies inside a region of `size` bytes.
fn inside(offset: u64, len: usize, size: u64) -> bool {
    offset
        .checked_add(len as u64)
        .is_some_and(|end| end <= size)
}

impl VfioHostDevice {
    /// Whether `len` bytes at `offset` lie inside the config region (an error naming the
    /// `what`, read or write, if not).
    fn config_in_range(&self, offset: u16, len: usize, what: &str) -> Result<(), Error> {
        if !inside(u64::from(offset), len, self.learned.config_len as u64) {
            return Err(Error::Backend {
                device: self.name(),
                message: format!("config {what} at {offset:#x} out of range"),
            });
        }
        Ok(())
    }
}

impl HostDevice for VfioHostDevice {
    fn name(&self) -> String {
        format!("vfio {}", self.addr)
    }

    crate::backend::answers_learned_at_open!(learned);

    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error> {
        buf.fill(0xFF);
        self.config_in_range(offset, buf.len(), "read")?;
        self.dev
            .region_read(VFIO_PCI_CONFIG_REGION_INDEX, buf, u64::from(offset));
        Ok(())
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Result<(), Error> {
        self.config_in_range(offset, data.len(), "write")?;
        self.dev
            .region_write(VFIO_PCI_CONFIG_REGION_INDEX, data, u64::from(offset));
        Ok(())
    }

    fn read_bar(&self, index: u8, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        buf.fill(0xFF);
        let region = if index == 6 {
            VFIO_PCI_ROM_REGION_INDEX
        } else {
            u32::from(index)
        };
        if index > 6 || !inside(offset, buf.len(), self.region_len(region)) {
            return Err(Error::Backend {
                device: self.name(),
                message: format!("BAR{index} read at {offset:#x} out of range"),
            });
        }
        self.dev.region_read(region, buf, offset);
        Ok(())
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        if index > 5 || !inside(offset, data.len(), self.region_len(u32::from(index))) {
            return Err(Error::Backend {
                device: self.name(),
                message: format!("BAR{index} write at {offset:#x} out of range"),
            });
        }
        self.dev.region_write(u32::from(index), data, offset);
        Ok(())
    }

    fn intx_fd(&self) -> Option<RawFd> {
        self.intx.as_ref().map(|e| e.as_raw_fd())
    }

    fn intx_ack(&mut self) -> Result<u64, Error> {
        match &self.intx {
            Some(e) => match e.read() {
                Ok(n) => Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
                Err(e) => Err(Error::Backend {
                    device: self.name(),
                    message: format!("INTx eventfd: {e}"),
                }),
            },
            None => Ok(0),
        }
    }

    /// VFIO masks INTx itself when it fires; unmasking is VFIO's, not the command register's.
    fn intx_unmask(&mut self) -> Result<(), Error> {
        if self.intx.is_none() {
            return super::set_interrupt_disable(self, false);
        }
        self.dev
            .unmask_irq(VFIO_PCI_INTX_IRQ_INDEX)
            .map_err(|e| Error::Backend {
                device: self.name(),
                message: format!("VFIO INTx unmask: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> PciAddress {
        "0000:03:00.0".parse().unwrap()
    }

    #[test]
    fn without_an_iommu_group_the_error_points_at_the_sysfs_backend() {
        let root = std::env::temp_dir().join(format!("vfio-test-{}", std::process::id()));
        let dir = device_dir(&root, addr());
        std::fs::create_dir_all(&dir).unwrap();
        let e = check_available(&root, addr(), Path::new("/nonexistent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("iommu_group") && e.contains("sysfs"), "{e}");
        std::fs::create_dir_all(dir.join("iommu_group")).unwrap();
        let e = check_available(&root, addr(), Path::new("/nonexistent/vfio"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/vfio/vfio") && e.contains("vfio-pci"),
            "{e}"
        );
        let e = check_available(
            &root,
            "0000:09:00.0".parse().unwrap(),
            Path::new("/dev/vfio"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("0000:09:00.0"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn bounds_never_overflow() {
        assert!(inside(0, 4, 256));
        assert!(!inside(254, 4, 256));
        assert!(!inside(u64::MAX, 4, u64::MAX));
    }
}

#[cfg(test)]
mod config_tests {
    use crate::config::PciConfig;

    fn parse(dev: &str) -> Result<(), String> {
        let c: PciConfig = toml::from_str(&format!(
            "[[device]]\nhost = \"0000:03:00.0\"\nslot = 2\n{dev}"
        ))
        .map_err(|e| e.to_string())?;
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn vfio_backend_config_rules() {
        assert!(parse("backend = \"vfio\"\n").is_ok());
        assert!(parse("backend = \"vfio\"\nintx = \"vfio\"\n").is_ok());
        let e = parse("backend = \"vfio\"\nintx = \"uio\"\n").unwrap_err();
        assert!(e.contains("use intx = \"vfio\""), "{e}");
        let e = parse("backend = \"vfio\"\nsnapshot = \"x.json\"\n").unwrap_err();
        assert!(e.contains("snapshot"), "{e}");
    }
}
