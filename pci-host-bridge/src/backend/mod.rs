//! Host-device access: one trait, several backends.
//!
//! - [`sysfs`]: `/sys/bus/pci/devices/SBDF/config` for config space, `resource` for the BARs'
//!   host addresses and sizes (the default in a Xen dom0, where the IOMMU belongs to Xen);
//! - [`snapshot`]: a file (or in-memory) copy of a real or hand-made device that records every
//!   write reaching it, for tests and dry runs;
//! - [`uio`] (the sysfs backend's INTx through `uio_pci_generic`) and [`intx_eventfd`] (the
//!   snapshot backend's INTx: an eventfd a test signals). Both hand the bridge one fd through
//!   [`HostDevice::intx_fd`]; the bridge has a single INTx path for all backends.
//!
//! VFIO is not implemented yet (see DESIGN.md "Passthrough").

pub mod intx_eventfd;
pub mod snapshot;
pub mod sysfs;
pub mod uio;
pub mod vfio;

use std::os::fd::RawFd;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{BackendKind, PciDeviceConfig};
use crate::error::Error;
use crate::header;

/// What a backend learns of a host function once, when it opens it (sysfs, vfio, snapshot
/// alike), and answers from then on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedAtOpen {
    /// Bytes of config space the backend can reach (64..=4096).
    pub config_len: usize,
    /// Vendor and device ID (a VF's come from the kernel or its PF: its config reads 0xFFFF).
    pub ids: (u16, u16),
    /// The six BAR slots (the upper half of a 64-bit BAR is `None`).
    pub bars: [Option<BarInfo>; 6],
    /// The expansion ROM.
    pub rom: Option<BarInfo>,
    /// Whether the function is an SR-IOV virtual function.
    pub is_vf: bool,
}

impl LearnedAtOpen {
    /// What `dev` answers (the broker sends it to the worker once, at open).
    pub fn of(dev: &dyn HostDevice) -> Self {
        LearnedAtOpen {
            config_len: dev.config_len(),
            ids: dev.ids(),
            bars: std::array::from_fn(|i| dev.bar(i)),
            rom: dev.rom(),
            is_vf: dev.is_virtual_function(),
        }
    }

    /// BAR `index`, where index 6 is the ROM (as sysfs's `resourceN` and vfio's regions count).
    pub fn bar_or_rom(&self, index: u8) -> Option<BarInfo> {
        if index == 6 {
            self.rom
        } else {
            self.bars.get(usize::from(index)).copied().flatten()
        }
    }
}

/// [`HostDevice::config_len`], [`HostDevice::ids`], [`HostDevice::bar`], [`HostDevice::rom`]
/// and [`HostDevice::is_virtual_function`] for a backend that keeps a [`LearnedAtOpen`] in the
/// field the macro names (`learned`, or `facts.learned`): the answers are the same bookkeeping
/// for each, written here once. Used inside the backend's `impl HostDevice` block.
macro_rules! answers_learned_at_open {
    ($($field:ident).+) => {
        fn config_len(&self) -> usize {
            self.$($field).+.config_len
        }

        fn ids(&self) -> (u16, u16) {
            self.$($field).+.ids
        }

        fn bar(&self, index: usize) -> Option<$crate::backend::BarInfo> {
            self.$($field).+.bars.get(index).copied().flatten()
        }

        fn rom(&self) -> Option<$crate::backend::BarInfo> {
            self.$($field).+.rom
        }

        fn is_virtual_function(&self) -> bool {
            self.$($field).+.is_vf
        }
    };
}
pub(crate) use answers_learned_at_open;

/// The decode type of a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory (occupies this BAR slot and the next one).
    Mem64,
}

/// One host BAR (or the expansion ROM) as the host kernel assigned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarInfo {
    /// Decode type.
    pub kind: BarKind,
    /// Prefetchable memory.
    #[serde(default)]
    pub prefetchable: bool,
    /// Host address (machine physical address or host port).
    pub host_addr: u64,
    /// Size in bytes (a power of two for well-formed devices; never 0 here).
    pub size: u64,
}

impl BarInfo {
    /// Whether this is a memory BAR.
    pub fn is_mem(&self) -> bool {
        self.kind != BarKind::Io
    }
}

/// Access to one host PCI function. Config offsets are bytes from the start of the function's
/// config space; accesses of 1, 2 and 4 bytes are naturally aligned when this crate issues them
/// (reads may be of any length up to 8 at any offset).
pub trait HostDevice {
    /// A name for logs (`"sysfs 0000:03:10.1"`).
    fn name(&self) -> String;

    /// Bytes of config space the backend can reach (64, 256 or 4096).
    fn config_len(&self) -> usize;

    /// Read `buf.len()` bytes of config space at `offset`.
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), Error>;

    /// Write `data` to config space at `offset`. This is the only path by which a guest's
    /// config write can reach the device; the bridge calls it only with bits its register table
    /// passes through.
    fn write_config(&mut self, offset: u16, data: &[u8]) -> Result<(), Error>;

    /// Vendor and device ID of the function. For an SR-IOV VF, whose config space reads 0xFFFF
    /// there, these come from the PF (sysfs does this for us).
    fn ids(&self) -> (u16, u16);

    /// BAR `index` (0..=5); `None` for an unused BAR and for the upper half of a 64-bit BAR.
    fn bar(&self, index: usize) -> Option<BarInfo>;

    /// The expansion ROM, if any.
    fn rom(&self) -> Option<BarInfo>;

    /// Read `buf.len()` (1, 2, 4 or 8) bytes at `offset` inside BAR `index` (6 = ROM) on the
    /// device, as ONE access of exactly that width (device registers act on the width).
    /// Used for the MSI-X PBA, registers sharing a page with the MSI-X table or PBA, sub-page
    /// BARs and any part of a BAR Xen did not map.
    fn read_bar(&self, index: u8, offset: u64, buf: &mut [u8]) -> Result<(), Error> {
        let _ = (index, offset, buf);
        Err(Error::Backend {
            device: self.name(),
            message: "BAR access not supported".into(),
        })
    }

    /// Write `data` (1, 2, 4 or 8 bytes) at `offset` inside BAR `index` on the device as one
    /// access of exactly that width, see [`HostDevice::read_bar`].
    fn write_bar(&mut self, index: u8, offset: u64, data: &[u8]) -> Result<(), Error> {
        let _ = (index, offset, data);
        Err(Error::Backend {
            device: self.name(),
            message: "BAR access not supported".into(),
        })
    }

    /// Whether the function is an SR-IOV Virtual Function (no INTx; IDs and BARs come from
    /// the PF, see [`crate::sriov`]).
    fn is_virtual_function(&self) -> bool {
        false
    }

    /// The host's INTx notification for this function: an fd that becomes readable when the
    /// device asserted INTx and the host masked it at the device (Interrupt Disable set). `None`
    /// when INTx is not forwarded.
    fn intx_fd(&self) -> Option<RawFd> {
        None
    }

    /// Consume the notification without blocking: the number of host interrupts since the
    /// last call (0: nothing new).
    fn intx_ack(&mut self) -> Result<u64, Error> {
        Ok(0)
    }

    /// Set the device's Interrupt Disable bit (command register bit 10, PCI Local Bus 3.0
    /// 6.2.2): the device stops asserting INTx.
    fn intx_mask(&mut self) -> Result<(), Error> {
        set_interrupt_disable(self, true)
    }

    /// Clear the device's Interrupt Disable bit: the device may assert INTx again (with
    /// uio_pci_generic this is how user space re-enables the interrupt).
    fn intx_unmask(&mut self) -> Result<(), Error> {
        set_interrupt_disable(self, false)
    }

    /// Turn the function's decoding on in the host, as pciback's `pci_enable_device` does
    /// (sysfs `enable` = 1). QEMU 7.2 decodes a VF's BARs only with the VF's own Memory Space
    /// bit, and Xen reads the MSI-X table location at `prepare_msix` through it.
    fn enable_decode(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Undo [`HostDevice::enable_decode`] before dom0's driver gets the function back.
    fn disable_decode(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Reset the function (sysfs `reset`: the kernel picks FLR or another method and saves and
    /// restores the config header around it), so that neither dom0's state reaches the guest
    /// nor the guest's state (its DMA rings) dom0. `Ok(false)`: the function has no reset
    /// method.
    fn reset(&mut self) -> Result<bool, Error> {
        Ok(false)
    }

    /// Let dom0's kernel probe a driver for the function again (sysfs `drivers_probe`), for
    /// a function whose driver this process did not unbind itself (`reclaim`).
    fn reprobe_host_driver(&mut self) -> Result<(), Error> {
        Ok(())
    }

    /// Keep dom0's driver off the device before it is assigned (sysfs: unbind it). Returns the
    /// driver that was unbound, if any.
    fn detach_host_driver(&mut self) -> Result<Option<String>, Error> {
        Ok(None)
    }

    /// Backend-specific state for the status socket (the snapshot backend lists the writes
    /// that reached it, so that a test in another process can see them).
    fn status(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Read one config byte.
    fn read_config_byte(&self, offset: u16) -> Result<u8, Error> {
        let mut b = [0u8; 1];
        self.read_config(offset, &mut b)?;
        Ok(b[0])
    }

    /// Read one config word (little endian).
    fn read_config_word(&self, offset: u16) -> Result<u16, Error> {
        let mut b = [0u8; 2];
        self.read_config(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Read one config dword (little endian).
    fn read_config_dword(&self, offset: u16) -> Result<u32, Error> {
        let mut b = [0u8; 4];
        self.read_config(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Byte of the command register holding Interrupt Disable (bit 10 = bit 2 of byte 5), for
/// models of what a host driver does to the bit (the snapshot backend's uio).
pub const COMMAND_HIGH: u16 = 0x05;
/// Interrupt Disable within [`COMMAND_HIGH`].
pub const INTX_DISABLE_BIT: u8 = 0x04;

/// Set or clear Interrupt Disable (command register bit 10, PCI Local Bus 3.0 6.2.2) with a
/// 16-bit read-modify-write of the whole command register, rewriting its other bits as read
/// (no write when the bit is already so).
///
/// A word, not a byte at 0x05 where the bit lives: a word write is what Linux itself does
/// (`pci_intx()`, `pci_check_and_set_intx_mask()` in drivers/pci/pci.c), and emulated devices
/// are tested against that. QEMU 7.2, the rig's hypervisor host, re-evaluates a function's
/// INTx line only for config writes that cover byte 0x04 (hw/pci/pci.c
/// `pci_default_write_config`: `if (range_covers_byte(addr, l, PCI_COMMAND))
/// pci_update_irq_disabled(...)`; fixed upstream in 2023 by "pci: Fix the update of interrupt
/// disable bit in PCI_COMMAND register"). A byte write clearing the bit while the function
/// had an interrupt pending left QEMU's count for the INTx line one low: the line then read
/// asserted with nothing pending and dom0 took a million unhandled interrupts (rig scenario f,
/// traced with QEMU's `ioapic_*` and `pci_cfg_write` events).
pub fn set_interrupt_disable<D: HostDevice + ?Sized>(
    dev: &mut D,
    disable: bool,
) -> Result<(), Error> {
    let c = dev.read_config_word(header::COMMAND)?;
    let n = if disable {
        c | header::CMD_INTX_DISABLE
    } else {
        c & !header::CMD_INTX_DISABLE
    };
    if n != c {
        dev.write_config(header::COMMAND, &n.to_le_bytes())?;
    }
    Ok(())
}

/// Open the backend a `[[pci.device]]` entry names. `sysfs_root` is normally `/sys`.
/// The sysfs backend is opened writable: this is the production path.
pub fn open(dev: &PciDeviceConfig, sysfs_root: &Path) -> Result<Box<dyn HostDevice>, Error> {
    match dev.backend {
        BackendKind::Sysfs => {
            let mut d = sysfs::SysfsDevice::open(sysfs_root, dev.host, true)?;
            if let Some(intx) = &dev.intx {
                d.enable_intx(intx)?;
            }
            Ok(Box::new(d))
        }
        BackendKind::Vfio => {
            let mut d = vfio::VfioHostDevice::open(sysfs_root, dev.host)?;
            if dev.intx.is_some() {
                d.enable_intx()?;
            }
            Ok(Box::new(d))
        }
        BackendKind::Snapshot => {
            let path = dev.snapshot.as_ref().ok_or_else(|| {
                Error::Config(format!(
                    "device {}: snapshot backend without a snapshot file",
                    dev.host
                ))
            })?;
            let mut d = snapshot::SnapshotDevice::open_at(path, Some(dev.host))?;
            if let Some(m) = &dev.config_mirror {
                d.set_config_mirror(m);
            }
            if let Some(intx) = &dev.intx {
                d.enable_intx()?;
                d.publish_intx(Path::new(intx))?;
            }
            Ok(Box::new(d))
        }
    }
}
