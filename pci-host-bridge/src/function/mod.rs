//! One passed-through host function as the guest sees it: the register layout, the virtual
//! BARs, the MSI-X table, and the backend behind them.
//!
//! This file holds [`PassthroughFunction`] itself: its state, its construction from the
//! backend's config space (the [`Layout`] built from the header and capability tables, with
//! the IDs, the capability list, the multi-function bit and a VF's interrupt pin virtualized),
//! the copy the tests fork, and the read-only views of that state. What the function does
//! with each kind of access or event is one job per file of this directory:
//! - `config_virt.rs`: config accesses of any size (1..=8 bytes) at any offset split into bytes
//!   against the [`Layout`]: emulated bits from the virtual value, the rest from the device;
//!   pass-through bits merged into the device's current value (W1C bits not written by the
//!   guest become 0) and written in naturally aligned pieces; everything else dropped.
//! - `mappings.rs`: a write touching the command register, a BAR or the ROM makes
//!   [`PassthroughFunction::config_write`] return `true`; the owner (the bridge, which knows
//!   every function's BARs and resolves guest address overlaps between them) then calls
//!   [`PassthroughFunction::update_mappings`], which makes the differences in Xen as
//!   unmap-then-map actions.
//! - `bar_access.rs`: BAR accesses that reach us (the MSI-X table and PBA pages, sub-page
//!   BARs, anything Xen did not map): the MSI-X table and PBA emulated, the rest forwarded to
//!   the device, except writes Xen's read-only mapping of the MSI-X pages would fault on.
//! - `interrupts.rs`: after every config write and every MSI-X table write, the MSI / MSI-X
//!   bindings in Xen and the INTx forwarding are brought to what the guest programmed
//!   ([`crate::binding`], [`crate::msi`], [`crate::msix`], [`crate::intx`]); a refusal is
//!   shown to the guest.
//! - `start_stop.rs`: the function's side of [`crate::lifecycle`] (start, stop with the
//!   mappings and vectors removed, reclaim).
//! - `status.rs`: the JSON state shown on the status socket.

use crate::backend::HostDevice;
use crate::bars::{BarMapping, Bars};
use crate::binding::Bindings;
use crate::caps::{self, Caps};
use crate::config::Windows;
use crate::config_space::Layout;
use crate::error::Error;
use crate::header::{self, CAP_PTR, COMMAND, HEADER_TYPE, HEADER_TYPE0, STATUS, STATUS_CAP_LIST};
use crate::intx::Intx;
use crate::lifecycle::Lifecycle;
use crate::msi::MsiState;
use crate::msix::{MsixControl, MsixTable};
use crate::topology::PciAddress;
use ioreq_server::ratelimit::RateLimit;

mod bar_access;
mod config_virt;
mod interrupts;
mod mappings;
mod start_stop;
mod status;

/// A passed-through function.
pub struct PassthroughFunction {
    guest: PciAddress,
    host: PciAddress,
    dev: Box<dyn HostDevice>,
    dev_name: String,
    layout: Layout,
    bars: Bars,
    caps: Caps,
    msix: Option<MsixTable>,
    windows: Windows,
    mapped: Vec<BarMapping>,
    cmd_idx: usize,
    bindings: Bindings,
    intx: Option<Intx>,
    lifecycle: Lifecycle,
    /// The last refusal of a bind by Xen, for the status socket.
    last_refusal: Option<String>,
    /// The rate limit of this function's guest-caused warnings (`guest_warn!`), shared by the
    /// files of this directory.
    warn: RateLimit,
}

impl std::fmt::Debug for PassthroughFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughFunction")
            .field("guest", &self.guest)
            .field("host", &self.host)
            .field("device", &self.dev_name)
            .field("mapped", &self.mapped)
            .finish_non_exhaustive()
    }
}

impl PassthroughFunction {
    /// Build the guest view of `dev` (host function `host`) at guest address `guest`.
    /// `windows` are where BARs may be mapped; `multifunction` sets the header type's
    /// multi-function bit (other functions share the slot).
    pub fn new(
        guest: PciAddress,
        host: PciAddress,
        dev: Box<dyn HostDevice>,
        windows: Windows,
        multifunction: bool,
    ) -> Result<Self, Error> {
        let dev_name = dev.name();
        let len = dev.config_len().min(4096);
        if len < 256 {
            return Err(Error::Unsupported {
                device: dev_name,
                message: format!(
                    "only {len} bytes of config space readable (need 256; run as root)"
                ),
            });
        }
        let mut config = vec![0u8; len];
        dev.read_config(0, &mut config)?;
        let htype = config[usize::from(HEADER_TYPE)] & 0x7F;
        if htype != 0 {
            return Err(Error::Unsupported {
                device: dev_name,
                message: format!("header type {htype} (only type-0 functions, not bridges, can be passed through)"),
            });
        }
        let mut layout = Layout::new(len);
        layout.add_group("header", 0, 0x40, HEADER_TYPE0);
        let bar_infos = std::array::from_fn(|i| dev.bar(i));
        let caps = caps::build(&mut layout, &config, &bar_infos);
        layout.init_from_device(&config);
        for &(off, v) in &caps.builder_values {
            layout.set_virt(off, v);
        }
        let (vendor, device) = dev.ids();
        layout.set_virt(0x00, u32::from(vendor));
        layout.set_virt(0x02, u32::from(device));
        layout.set_virt(
            STATUS,
            if caps.first != 0 {
                u32::from(STATUS_CAP_LIST)
            } else {
                0
            },
        );
        layout.set_virt(HEADER_TYPE, if multifunction { 0x80 } else { 0 });
        layout.set_virt(CAP_PTR, u32::from(caps.first));
        if dev.is_virtual_function() {
            // VFs have no INTx (PCIe Base 5.0, 9.3.4.1.14); the raw register already reads 0.
            layout.set_virt(header::INTERRUPT_PIN, 0);
        }
        let pin = layout
            .find(header::INTERRUPT_PIN)
            .map_or(0, |i| layout.reg(i).virt as u8);
        let intx = match (dev.intx_fd(), pin) {
            (None, _) => None,
            (Some(_), 1..=4) => Intx::new(guest.device, pin),
            (Some(_), _) => {
                tracing::warn!(guest = %guest, device = %dev_name, pin, "INTx source configured but the function has no interrupt pin: not forwarded");
                None
            }
        };
        let cmd_idx = layout.find(COMMAND).ok_or_else(|| Error::Unsupported {
            device: dev_name.clone(),
            message: "no command register in layout".into(),
        })?;
        let bars = Bars::new(dev.as_ref());
        let msix = caps.msix.map(MsixTable::new);
        tracing::info!(
            guest = %guest,
            device = %dev_name,
            exposed = ?caps.standard.iter().filter(|c| c.exposed).map(|c| c.name).collect::<Vec<_>>(),
            hidden = ?caps.standard.iter().chain(&caps.extended).filter(|c| !c.exposed).map(|c| c.name).collect::<Vec<_>>(),
            "passthrough function ready"
        );
        Ok(PassthroughFunction {
            guest,
            host,
            dev,
            dev_name,
            layout,
            bars,
            caps,
            msix,
            windows,
            mapped: Vec::new(),
            cmd_idx,
            bindings: Bindings::new(host.sbdf()),
            intx,
            lifecycle: Lifecycle::default(),
            last_refusal: None,
            warn: RateLimit::guest(),
        })
    }

    /// A copy of this function in its current state (layout, BARs, interrupts, mappings and
    /// lifecycle as they are) over `dev`, which must be a copy of this function's device in
    /// its current state ([`crate::PciHostBridge::fork`]). Refused while an INTx line is
    /// attached.
    #[cfg(any(test, feature = "testing"))]
    pub fn fork(&self, dev: Box<dyn HostDevice>) -> Result<Self, Error> {
        let intx = match &self.intx {
            None => None,
            Some(i) => Some(i.fork().ok_or_else(|| {
                Error::Config(format!(
                    "{}: cannot fork with an INTx line attached",
                    self.guest
                ))
            })?),
        };
        Ok(PassthroughFunction {
            guest: self.guest,
            host: self.host,
            dev,
            dev_name: self.dev_name.clone(),
            layout: self.layout.clone(),
            bars: self.bars.clone(),
            caps: self.caps.clone(),
            msix: self.msix.clone(),
            windows: self.windows.clone(),
            mapped: self.mapped.clone(),
            cmd_idx: self.cmd_idx,
            bindings: self.bindings.clone(),
            intx,
            lifecycle: self.lifecycle.clone(),
            last_refusal: self.last_refusal.clone(),
            warn: self.warn.clone(),
        })
    }

    /// The guest address.
    pub fn guest_address(&self) -> PciAddress {
        self.guest
    }

    /// The host function.
    pub fn host_address(&self) -> PciAddress {
        self.host
    }

    /// The vectors bound in Xen.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// The INTx state, for functions that forward INTx.
    pub fn intx(&self) -> Option<&Intx> {
        self.intx.as_ref()
    }

    /// The backend's name.
    pub fn device_name(&self) -> &str {
        &self.dev_name
    }

    /// The register layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The virtual BARs.
    pub fn bars(&self) -> &Bars {
        &self.bars
    }

    /// The capabilities and how they are presented.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The mappings currently in force.
    pub fn mappings(&self) -> &[BarMapping] {
        &self.mapped
    }

    /// The emulated MSI-X table.
    pub fn msix_table(&self) -> Option<&MsixTable> {
        self.msix.as_ref()
    }

    /// The guest's MSI-X control bits.
    pub fn msix_control(&self) -> Option<MsixControl> {
        self.caps
            .msix
            .map(|m| MsixControl::from_layout(&self.layout, m.cap))
    }

    /// The guest's MSI programming.
    pub fn msi_state(&self) -> Option<MsiState> {
        self.caps
            .msi
            .map(|o| MsiState::from_layout(&self.layout, o))
    }

    /// The guest's command register (virtual bits only).
    pub fn command(&self) -> u16 {
        self.layout.reg(self.cmd_idx).virt as u16
    }

    /// The backend.
    pub fn device(&self) -> &dyn HostDevice {
        self.dev.as_ref()
    }
}
