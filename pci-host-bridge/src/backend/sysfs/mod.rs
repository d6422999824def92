//! The sysfs backend: `/sys/bus/pci/devices/SBDF/config` and `resource`.
//!
//! - Config reads and writes are `pread`/`pwrite` on `config` (the kernel splits them into
//!   naturally aligned config cycles). Only root sees more than the first 64 bytes.
//! - `resource` has one line per resource, `start end flags` in hex: lines 0-5 are the BARs,
//!   line 6 the expansion ROM (later lines are bridge windows or SR-IOV VF BARs). The flags are
//!   the kernel's `IORESOURCE_*` bits (include/linux/ioport.h). Parsed in `resource.rs`, which
//!   the VFIO backend shares.
//! - BAR contents (the MSI-X PBA, registers next to the MSI-X table, sub-page BARs, whatever
//!   Xen did not map): I/O BARs through `read`/`write` on `resourceN` (which sysfs supports for
//!   I/O resources); memory BARs through an `mmap` of `resourceN`, made once on first use,
//!   with one volatile access of exactly the guest's width ([`Mapping::read_mmio`], as QEMU and
//!   VFIO do). Not `/dev/mem`: on x86 its read/write accept only RAM below `high_memory`
//!   (`valid_phys_addr_range`), which no BAR of a PV dom0 is.
//! - Lifecycle: `enable` (1/0) turns host decoding on and off as `pci_enable_device` /
//!   `pci_disable_device`; `reset` resets the function with its config header saved and
//!   restored.
//!
//! - SR-IOV VFs (a `physfn` link): the kernel already reports the VF's IDs (`vendor`,
//!   `device`) and BARs (`resource`) as [`crate::sriov`] derives them from the PF; on open the
//!   derivation from the PF's config space (`physfn/config`) and VF BAR sizes (the PF's
//!   `resource` lines 7-12, each `size * TotalVFs`) is cross-checked and a disagreement logged.
//! - INTx through `uio_pci_generic` ([`super::uio`]): `[[pci.device]] intx = "uio"` or
//!   `"/dev/uioN"`.
//! - Assignment ([`HostDevice::detach_host_driver`]): dom0's driver is unbound through
//!   `driver/unbind` before the device is assigned (except `uio_pci_generic`, which delivers
//!   INTx, and pciback, which is there to keep drivers off). When the backend is dropped —
//!   after the ioreq server's teardown deassigned the device — the function is handed back by
//!   writing its address to `bus/pci/drivers_probe`, which lets the kernel re-probe its driver.
//!
//! Tests in this crate never open a real device writable.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ioreq_server::shared::Mapping;

use super::uio::{self, UioIntx};
use super::{BarInfo, BarKind, HostDevice, LearnedAtOpen};
use crate::error::Error;
use crate::sriov::VfIdentity;
use crate::topology::PciAddress;

mod resource;

pub use resource::{
    bars_from_resource, parse_resource, ResourceLine, IORESOURCE_DISABLED, IORESOURCE_IO,
    IORESOURCE_MEM, IORESOURCE_MEM_64, IORESOURCE_PREFETCH, IORESOURCE_UNSET,
};

/// Drivers [`HostDevice::detach_host_driver`] leaves bound.
pub const KEEP_DRIVERS: &[&str] = &[uio::DRIVER, "pciback", "xen-pciback"];

/// The directory of a function under a sysfs root (`ROOT/bus/pci/devices/SBDF`).
pub fn device_dir(sysfs_root: &Path, addr: PciAddress) -> PathBuf {
    sysfs_root.join("bus/pci/devices").join(addr.to_string())
}

fn read_hex_file(path: &Path) -> Result<u64, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let t = text.trim();
    u64::from_str_radix(t.trim_start_matches("0x"), 16)
        .map_err(|_| Error::parse(path, format!("expected a hex number, got {t:?}")))
}

/// A host function through sysfs.
#[derive(Debug)]
pub struct SysfsDevice {
    addr: PciAddress,
    dir: PathBuf,
    config: File,
    writable: bool,
    learned: LearnedAtOpen,
    /// `mmap`s of the memory BARs' `resourceN` (index 6 = ROM), made on first use:
    /// `(mapping, offset of the BAR's first byte in it)`, or why it failed.
    bar_maps: [OnceLock<Result<(Mapping, usize), String>>; 7],
    sysfs_root: PathBuf,
    intx: Option<UioIntx>,
    /// The dom0 driver we unbound (re-probed on drop).
    detached: Option<String>,
}

impl SysfsDevice {
    /// Open `addr` under `sysfs_root` (normally `/sys`). With `writable` false every
    /// [`HostDevice::write_config`] fails and the config file is opened read-only.
    pub fn open(sysfs_root: &Path, addr: PciAddress, writable: bool) -> Result<Self, Error> {
        let dir = device_dir(sysfs_root, addr);
        let cfg_path = dir.join("config");
        let config = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&cfg_path)
            .map_err(|e| Error::io(&cfg_path, e))?;
        let config_len = config
            .metadata()
            .map_err(|e| Error::io(&cfg_path, e))?
            .len() as usize;
        if config_len < 256 {
            return Err(Error::Unsupported {
                device: addr.to_string(),
                message: format!(
                    "{} has {config_len} bytes (only root can read past 64 bytes)",
                    cfg_path.display()
                ),
            });
        }
        let vendor = read_hex_file(&dir.join("vendor"))? as u16;
        let device = read_hex_file(&dir.join("device"))? as u16;
        let res_path = dir.join("resource");
        let text = std::fs::read_to_string(&res_path).map_err(|e| Error::io(&res_path, e))?;
        let (bars, rom) = bars_from_resource(&parse_resource(&text, &res_path)?);
        let is_vf = dir.join("physfn").exists();
        let d = SysfsDevice {
            addr,
            dir,
            config,
            writable,
            learned: LearnedAtOpen {
                config_len: config_len.min(4096),
                ids: (vendor, device),
                bars,
                rom,
                is_vf,
            },
            bar_maps: Default::default(),
            sysfs_root: sysfs_root.to_path_buf(),
            intx: None,
            detached: None,
        };
        if is_vf {
            match d.derive_vf() {
                Ok(v) => {
                    if (v.vendor, v.device) != d.learned.ids || v.bars != d.learned.bars {
                        tracing::warn!(
                            vf = %addr,
                            pf = %v.pf,
                            kernel_ids = ?d.learned.ids,
                            derived_ids = ?(v.vendor, v.device),
                            "the VF's IDs or BARs differ from what its PF's SR-IOV capability says; using the kernel's"
                        );
                    }
                }
                Err(e) => {
                    tracing::debug!(vf = %addr, "cannot cross-check the VF against its PF: {e}")
                }
            }
        }
        Ok(d)
    }

    /// Derive the VF's identity from its PF (`physfn`), read-only.
    pub fn derive_vf(&self) -> Result<VfIdentity, Error> {
        let pf_dir = self.dir.join("physfn");
        let pf_name = std::fs::read_link(&pf_dir).map_err(|e| Error::io(&pf_dir, e))?;
        let pf: PciAddress = pf_name
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .parse()?;
        let cfg_path = pf_dir.join("config");
        let pf_config = std::fs::read(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let res_path = pf_dir.join("resource");
        let text = std::fs::read_to_string(&res_path).map_err(|e| Error::io(&res_path, e))?;
        let lines = parse_resource(&text, &res_path)?;
        let total_path = pf_dir.join("sriov_totalvfs");
        let total = std::fs::read_to_string(&total_path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&t| t > 0)
            .ok_or_else(|| Error::parse(&total_path, "no TotalVFs"))?;
        let mut sizes = [0u64; 6];
        for (i, s) in sizes.iter_mut().enumerate() {
            if let Some(l) = lines.get(7 + i) {
                if l.end > l.start && l.flags & IORESOURCE_MEM != 0 {
                    *s = (l.end - l.start + 1) / total;
                }
            }
        }
        VfIdentity::derive(pf, &pf_config, self.addr, &sizes)
    }

    /// Forward INTx from `uio_pci_generic`: `spec` is `"uio"` (find `/dev/uioN` through the
    /// function's `uio` directory) or the path of the node.
    pub fn enable_intx(&mut self, spec: &str) -> Result<(), Error> {
        let node = if spec == "uio" {
            let driver = std::fs::read_link(self.dir.join("driver"))
                .ok()
                .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
            if driver.as_deref() != Some(uio::DRIVER) {
                return Err(Error::Unsupported {
                    device: self.addr.to_string(),
                    message: format!(
                        "intx = \"uio\" needs the function bound to {} (it is bound to {}); see the uio module docs",
                        uio::DRIVER,
                        driver.as_deref().unwrap_or("nothing")
                    ),
                });
            }
            let dev_root = if self.sysfs_root == Path::new("/sys") {
                PathBuf::from("/dev")
            } else {
                self.sysfs_root.join("dev")
            };
            uio::find_node(&self.dir, &dev_root)?
        } else {
            PathBuf::from(spec)
        };
        self.intx = Some(UioIntx::open(&node)?);
        tracing::info!(device = %self.addr, node = %node.display(), "INTx through uio_pci_generic");
        Ok(())
    }

    /// The host address.
    pub fn address(&self) -> PciAddress {
        self.addr
    }

    /// Whether the function is an SR-IOV virtual function (has a `physfn` link).
    pub fn is_virtual_function(&self) -> bool {
        self.learned.is_vf
    }

    fn bar_by_index(&self, index: u8) -> Option<BarInfo> {
        self.learned.bar_or_rom(index)
    }

    /// Check `[offset, offset + len)` against BAR `index`.
    fn bar_checked(&self, index: u8, offset: u64, len: usize) -> Result<BarInfo, Error> {
        let bar = self
            .bar_by_index(index)
            .ok_or_else(|| self.err(format!("no BAR {index}")))?;
        if offset
            .checked_add(len as u64)
            .is_none_or(|end| end > bar.size)
        {
            return Err(self.err(format!("BAR {index} access out of range")));
        }
        Ok(bar)
    }

    /// Whether `len` bytes at `offset` lie inside the config space the `config` file reaches
    /// (an error naming the `what`, read or write, if not).
    fn config_in_range(&self, offset: u16, len: usize, what: &str) -> Result<(), Error> {
        if usize::from(offset) + len > self.learned.config_len {
            return Err(self.err(format!("config {what} out of range")));
        }
        Ok(())
    }

    fn err(&self, message: String) -> Error {
        Error::Backend {
            device: self.name(),
            message,
        }
    }

    /// The mapping of memory BAR `index` (made on first use). The kernel maps whole pages
    /// from the page holding the BAR's start (`pci_mmap_resource_range`), so a sub-page BAR's
    /// first byte sits at its in-page offset.
    fn bar_map(&self, index: u8, bar: BarInfo) -> Result<(&Mapping, usize), Error> {
        let r = self.bar_maps[usize::from(index).min(6)].get_or_init(|| {
            let name = if index == 6 {
                "rom".to_string()
            } else {
                format!("resource{index}")
            };
            let path = self.dir.join(name);
            let in_page = (bar.host_addr & 0xFFF) as usize;
            let len = (in_page as u64 + bar.size).div_ceil(4096) * 4096;
            let f = OpenOptions::new()
                .read(true)
                .write(self.writable)
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let m = Mapping::map_fd(f.as_fd(), 0, len as usize)
                .map_err(|e| format!("mmap {}: {e}", path.display()))?;
            tracing::debug!(device = %self.addr, bar = index, len, "BAR mapped for forwarding");
            Ok((m, in_page))
        });
        match r {
            Ok((m, o)) => Ok((m, *o)),
            Err(e) => Err(self.err(e.clone())),
        }
    }

    /// The driver bound to the function now, if any.
    fn bound_driver(&self) -> Option<String> {
        std::fs::read_link(self.dir.join("driver"))
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    }

    fn sysfs_read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn sysfs_write(&self, file: &str, value: &str) -> Result<(), Error> {
        if !self.writable {
            return Err(self.err("opened read-only".into()));
        }
        let p = self.dir.join(file);
        std::fs::write(&p, value).map_err(|e| Error::io(&p, e))
    }
}

impl HostDevice for SysfsDevice {
    fn name(&self) -> String {
        format!("sysfs {}", self.addr)
    }

    crate::backend::answers_learned_at_open!(learned);

    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error> {
        self.config_in_range(offset, buf.len(), "read")?;
        self.config
            .read_exact_at(buf, u64::from(offset))
            .map_err(|e| Error::io(self.dir.join("config"), e))
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> Result<(), Error> {
        if !self.writable {
            return Err(self.err("opened read-only".into()));
        }
        self.config_in_range(offset, data.len(), "write")?;
        self.config
            .write_all_at(data, u64::from(offset))
            .map_err(|e| Error::io(self.dir.join("config"), e))
    }

    fn read_bar(&self, index: u8, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let bar = self.bar_checked(index, offset, buf.len())?;
        if bar.kind == BarKind::Io {
            let p = self.dir.join(format!("resource{index}"));
            let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
            return f.read_exact_at(buf, offset).map_err(|e| Error::io(&p, e));
        }
        let (m, base) = self.bar_map(index, bar)?;
        let v = m
            .read_mmio(base + offset as usize, buf.len())
            .ok_or_else(|| {
                self.err(format!(
                    "BAR {index}: {}-byte read at {offset:#x} is not a naturally aligned 1/2/4/8-byte access",
                    buf.len()
                ))
            })?;
        buf.copy_from_slice(&v.to_le_bytes()[..buf.len()]);
        Ok(())
    }

    fn intx_fd(&self) -> Option<std::os::fd::RawFd> {
        self.intx.as_ref().map(UioIntx::fd)
    }

    fn intx_ack(&mut self) -> Result<u64, Error> {
        match &mut self.intx {
            Some(u) => u.take(),
            None => Ok(0),
        }
    }

    fn detach_host_driver(&mut self) -> Result<Option<String>, Error> {
        if !self.writable {
            return Ok(None);
        }
        let link = self.dir.join("driver");
        let Ok(target) = std::fs::read_link(&link) else {
            return Ok(None);
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if KEEP_DRIVERS.contains(&name.as_str()) {
            return Ok(None);
        }
        let unbind = link.join("unbind");
        std::fs::write(&unbind, self.addr.to_string()).map_err(|e| Error::io(&unbind, e))?;
        tracing::info!(device = %self.addr, driver = %name, "dom0 driver unbound");
        self.detached = Some(name.clone());
        Ok(Some(name))
    }

    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        if !self.writable {
            return Err(self.err("opened read-only".into()));
        }
        let bar = self.bar_checked(index, offset, data.len())?;
        if bar.kind == BarKind::Io {
            let p = self.dir.join(format!("resource{index}"));
            let f = OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(|e| Error::io(&p, e))?;
            return f.write_all_at(data, offset).map_err(|e| Error::io(&p, e));
        }
        let mut v = [0u8; 8];
        v[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        let (m, base) = self.bar_map(index, bar)?;
        if !m.write_mmio(base + offset as usize, data.len(), u64::from_le_bytes(v)) {
            return Err(self.err(format!(
                "BAR {index}: {}-byte write at {offset:#x} is not a naturally aligned 1/2/4/8-byte access",
                data.len()
            )));
        }
        Ok(())
    }

    fn reprobe_host_driver(&mut self) -> Result<(), Error> {
        if !self.writable || self.bound_driver().is_some() {
            return Ok(());
        }
        let probe = self.sysfs_root.join("bus/pci/drivers_probe");
        std::fs::write(&probe, self.addr.to_string()).map_err(|e| Error::io(&probe, e))
    }

    fn enable_decode(&mut self) -> Result<(), Error> {
        // sysfs `enable` refuses (EBUSY) while a driver is bound (drivers/pci/pci-sysfs.c
        // enable_store); a driver we keep (uio_pci_generic for INTx, pciback) enabled the
        // device in its probe already.
        if self.bound_driver().is_some() {
            return Ok(());
        }
        self.sysfs_write("enable", "1")
    }

    fn disable_decode(&mut self) -> Result<(), Error> {
        // As above; and `enable` = 0 on a device that is not enabled is EIO.
        if self.bound_driver().is_some() || self.sysfs_read("enable").as_deref() == Some("0") {
            return Ok(());
        }
        self.sysfs_write("enable", "0")
    }

    fn reset(&mut self) -> Result<bool, Error> {
        if !self.dir.join("reset").exists() {
            return Ok(false);
        }
        self.sysfs_write("reset", "1").map(|()| true)
    }
}

impl Drop for SysfsDevice {
    /// Hand a function whose dom0 driver we unbound back to dom0: `drivers_probe` makes the
    /// kernel probe it again, which binds the driver that matches it.
    fn drop(&mut self) {
        let Some(driver) = self.detached.take() else {
            return;
        };
        let probe = self.sysfs_root.join("bus/pci/drivers_probe");
        match std::fs::write(&probe, self.addr.to_string()) {
            Ok(()) => {
                tracing::info!(device = %self.addr, %driver, "handed back to dom0 (re-probed)")
            }
            Err(e) => tracing::warn!(
                device = %self.addr,
                %driver,
                "could not hand the device back ({}: {e}); bind {driver} again by hand",
                probe.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_parsing() {
        let text = "0x00000000fb000000 0x00000000fb7fffff 0x0000000000140204\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x000000000000e000 0x000000000000e01f 0x0000000000040101\n\
                    0x00000000fb800000 0x00000000fb803fff 0x0000000000140204\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x00000000fc000000 0x00000000fc0fffff 0x0000000000042208\n\
                    0x00000000fc100000 0x00000000fc17ffff 0x0000000000046200\n";
        let lines = parse_resource(text, Path::new("resource")).unwrap();
        let (bars, rom) = bars_from_resource(&lines);
        assert_eq!(
            bars[0],
            Some(BarInfo {
                kind: BarKind::Mem64,
                prefetchable: false,
                host_addr: 0xfb00_0000,
                size: 0x80_0000
            })
        );
        assert_eq!(bars[1], None);
        assert_eq!(
            bars[2],
            Some(BarInfo {
                kind: BarKind::Io,
                prefetchable: false,
                host_addr: 0xe000,
                size: 0x20
            })
        );
        assert_eq!(bars[3].unwrap().kind, BarKind::Mem64);
        assert_eq!(bars[4], None);
        assert_eq!(
            bars[5],
            Some(BarInfo {
                kind: BarKind::Mem32,
                prefetchable: true,
                host_addr: 0xfc00_0000,
                size: 0x10_0000
            })
        );
        assert_eq!(rom.unwrap().size, 0x8_0000);
        assert!(parse_resource("0x1 0x2\n", Path::new("r")).is_err());
    }
}
