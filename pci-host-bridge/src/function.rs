//! One passed-through host function as the guest sees it: the register layout, the virtual
//! BARs, the MSI-X table, and the backend behind them.
//!
//! Config accesses of any size (1..=8 bytes) at any offset are split into bytes against the
//! [`Layout`]:
//! - read: emulated bits from the virtual value, the rest from the device (one backend read of
//!   the bytes that need the device), all-ones past the backend's config space;
//! - write: emulated, guest-writable bits update the virtual value; pass-through bits are merged
//!   into the device's current value (W1C bits not written by the guest become 0) and written in
//!   naturally aligned pieces covering only bytes that have pass-through bits; everything else
//!   is dropped (and logged once per offset for unknown, hidden or opaque bytes).
//!
//! A write touching the command register, a BAR or the ROM makes [`PassthroughFunction::config_write`]
//! return `true`; the owner (the bridge, which knows every function's BARs and resolves guest
//! address overlaps between them) then calls [`PassthroughFunction::update_mappings`], which
//! returns the differences as unmap-then-map actions.
//!
//! Interrupts: after every config write and every MSI-X table write the function compares
//! what the guest programmed with what is bound in Xen ([`crate::binding`], rules in
//! [`crate::msi`] and [`crate::msix`]) and binds or unbinds synchronously through the
//! [`PassthroughExecutor`]; a refusal is logged (rate-limited) and shown to the guest (MSI
//! Enable reads back 0; a refused MSI-X entry reads back masked). The guest's MSI / MSI-X
//! Enable (and MSI-X Function Mask) are then written through to the device as one 16-bit write
//! of Message Control: Xen leaves them to dom0. INTx ([`crate::intx`]) is reconciled after
//! every config write (MSI / MSI-X enable and the guest's Interrupt Disable force it off) and
//! on the backend's and the IOAPIC line's fds ([`PassthroughFunction::on_event`]).
//!
//! BAR accesses that reach us (the MSI-X table and PBA pages, sub-page BARs, anything Xen did
//! not map) are forwarded to the device with one access of the guest's width, except writes
//! to the MSI-X table and PBA pages outside the table and PBA themselves: Xen 4.17 puts those
//! pages in `mmio_ro_ranges` (`msix_capability_init`, xen/arch/x86/msi.c), so dom0's mapping of
//! them is read-only and such a write would fault; it is dropped with a warning.
//!
//! Life cycle: [`crate::lifecycle`] (start: driver off, decode on, prepare_msix, reset,
//! Function Mask clear, assign, permissions; stop: the reverse, with rollback of a partial
//! start).

use std::os::fd::RawFd;

use ioreq_server::executor::{PassthroughExecutor, PtError};
use ioreq_server::irq_line::IrqLine;
use serde_json::json;

use crate::backend::HostDevice;
use crate::bars::{Bars, Mapping};
use crate::binding::{Bindings, IrqSlot, Vector};
use crate::caps::{self, Caps};
use crate::config::Windows;
use crate::config_space::{Layout, RegKind, Slot};
use crate::error::Error;
use crate::header::{self, CAP_PTR, COMMAND, HEADER_TYPE, HEADER_TYPE0, STATUS, STATUS_CAP_LIST};
use crate::intx::Intx;
use crate::lifecycle::{Lifecycle, Target};
use crate::msi::MsiState;
use crate::msix::{self, MsixControl, MsixTable};
use crate::topology::PciAddress;
use crate::warn::WarnOnce;

/// Split `[start, end)` into naturally aligned 1/2/4-byte pieces.
fn aligned_pieces(start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut o = start;
    std::iter::from_fn(move || {
        if o >= end {
            return None;
        }
        let size = if o.is_multiple_of(4) && end - o >= 4 {
            4
        } else if o.is_multiple_of(2) && end - o >= 2 {
            2
        } else {
            1
        };
        let piece = (o, size);
        o += size;
        Some(piece)
    })
}

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
    mapped: Vec<Mapping>,
    cmd_idx: usize,
    bindings: Bindings,
    intx: Option<Intx>,
    lifecycle: Lifecycle,
    /// The last refusal of a bind by Xen, for the status socket.
    last_refusal: Option<String>,
    warn: WarnOnce,
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
            warn: WarnOnce::default(),
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
    pub fn mappings(&self) -> &[Mapping] {
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

    /// Read `len` (1..=8) bytes of config space at `reg` (bytes past 4095 read all-ones).
    pub fn config_read(&mut self, reg: u16, len: usize) -> u64 {
        let len = len.clamp(1, 8);
        let start = usize::from(reg);
        let mut need: Option<(usize, usize)> = None;
        for off in start..start + len {
            let r = self.layout.rule(off);
            let needs = match r.slot {
                Slot::Unknown => true,
                Slot::Absent | Slot::Hidden => false,
                Slot::Reg(_) => r.emu != 0xFF,
            };
            if needs {
                need = Some(need.map_or((off, off), |(a, _)| (a, off)));
            }
        }
        let mut dev_bytes = [0xFFu8; 8];
        if let Some((a, b)) = need {
            let buf = &mut dev_bytes[a - start..=b - start];
            if let Err(e) = self.dev.read_config(a as u16, buf) {
                buf.fill(0xFF);
                self.warn.warn((1, a as u64), || {
                    format!("{}: config read at {a:#x} failed: {e}", self.guest)
                });
            }
        }
        let mut v = 0u64;
        for (i, off) in (start..start + len).enumerate() {
            let byte = match self.layout.slot(off) {
                Slot::Absent => 0xFF,
                Slot::Hidden => 0,
                Slot::Unknown => dev_bytes[i],
                Slot::Reg(idx) => {
                    let inst = self.layout.reg(usize::from(idx));
                    let shift = 8 * (off - usize::from(inst.base)) as u32;
                    let virt = match inst.desc.kind {
                        RegKind::Bar(n) => self.bars.read(usize::from(n)),
                        RegKind::Rom => self.bars.read_rom(),
                        _ => inst.virt,
                    };
                    let emu = (inst.desc.masks().0 >> shift) as u8;
                    (dev_bytes[i] & !emu) | ((virt >> shift) as u8 & emu)
                }
            };
            v |= u64::from(byte) << (8 * i);
        }
        v
    }

    /// Write `len` (1..=8) bytes of `data` at `reg`, (re)binding interrupts as the write
    /// implies. Returns whether the guest mappings may have changed (command, BAR or ROM
    /// written): then call [`PassthroughFunction::update_mappings`].
    pub fn config_write(
        &mut self,
        reg: u16,
        len: usize,
        data: u64,
        exec: &mut PassthroughExecutor,
    ) -> bool {
        let len = len.clamp(1, 8);
        let start = usize::from(reg);
        // (offset, guest byte, pass mask, w1c mask) of bytes with pass-through bits.
        let mut pass: Vec<(usize, u8, u8, u8)> = Vec::new();
        // BAR register writes: (kind, byte mask, value) merged per register.
        let mut bar_writes: Vec<(RegKind, u32, u32)> = Vec::new();
        let mut remap = false;
        let mut msi_ctrl = None;
        let msix_before = self.msix_control();
        for (i, off) in (start..start + len).enumerate() {
            let d = (data >> (8 * i)) as u8;
            let idx = match self.layout.slot(off) {
                Slot::Reg(idx) => usize::from(idx),
                Slot::Unknown | Slot::Absent => {
                    self.drop_write(off, d, "unknown");
                    continue;
                }
                Slot::Hidden => {
                    self.drop_write(off, d, "hidden");
                    continue;
                }
            };
            let (kind, base, (emu, ro, pmask, w1c)) = {
                let inst = self.layout.reg(idx);
                (inst.desc.kind, usize::from(inst.base), inst.desc.masks())
            };
            let shift = 8 * (off - base) as u32;
            match kind {
                RegKind::Opaque => {
                    self.drop_write(off, d, "vendor-specific");
                    continue;
                }
                RegKind::Bar(_) | RegKind::Rom => {
                    let m = 0xFFu32 << shift;
                    let v = u32::from(d) << shift;
                    match bar_writes.iter_mut().find(|(k, _, _)| *k == kind) {
                        Some(w) => {
                            w.1 |= m;
                            w.2 = (w.2 & !m) | v;
                        }
                        None => bar_writes.push((kind, m, v)),
                    }
                    remap = true;
                    continue;
                }
                RegKind::Command => remap = true,
                RegKind::MsiControl => msi_ctrl = Some(idx),
                _ => {}
            }
            let (emu, ro, pmask, w1c) = (
                (emu >> shift) as u8,
                (ro >> shift) as u8,
                (pmask >> shift) as u8,
                (w1c >> shift) as u8,
            );
            let writable = emu & !ro;
            if writable != 0 {
                let clear = writable & w1c & d;
                let set = writable & !w1c;
                let inst = self.layout.reg_mut(idx);
                let vb = (inst.virt >> shift) as u8;
                let nb = (vb & !set & !clear) | (d & set);
                inst.virt = (inst.virt & !(0xFF << shift)) | (u32::from(nb) << shift);
            }
            if pmask != 0 {
                pass.push((off, d, pmask, w1c));
            }
        }
        if let Some(idx) = msi_ctrl {
            let inst = self.layout.reg_mut(idx);
            inst.virt = crate::msi::clamp_control(inst.virt);
        }
        for (kind, mask, value) in bar_writes {
            match kind {
                RegKind::Bar(n) => {
                    let cur = self.bars.read(usize::from(n));
                    self.bars
                        .write(usize::from(n), (cur & !mask) | (value & mask));
                }
                _ => {
                    let cur = self.bars.read_rom();
                    self.bars.write_rom((cur & !mask) | (value & mask));
                }
            }
        }
        self.write_through(&pass);
        let msix_after = self.msix_control();
        if msix_before.is_some_and(|b| b.enabled) && !msix_after.is_some_and(|a| a.enabled) {
            // MSI-X disabled: every entry is unbound (below); our copy of the mask bits may
            // be stale (Xen took the guest's mask writes of bound entries), and Linux masks
            // every entry before disabling anyway.
            if let Some(t) = &mut self.msix {
                for i in 0..t.len() {
                    t.set_masked(i, true);
                }
            }
        }
        self.sync_interrupts(exec);
        if msix_before != msix_after {
            self.write_host_msix_control();
        }
        remap
    }

    /// Write the guest's MSI-X Enable and Function Mask to the device: one 16-bit write of
    /// Message Control, the only write of the capability Xen lets dom0 make
    /// (xen/arch/x86/msi.c:1253-1263 in 4.17).
    fn write_host_msix_control(&mut self) {
        let (Some(m), Some(c)) = (self.caps.msix, self.msix_control()) else {
            return;
        };
        let off = m.cap + 2;
        let cur = match self.dev.read_config_word(off) {
            Ok(v) => v,
            Err(e) => {
                self.warn.warn((7, u64::from(off)), || {
                    format!("{}: reading the host's MSI-X control: {e}", self.guest)
                });
                return;
            }
        };
        let mut v = cur & !(msix::FLAGS_ENABLE | msix::FLAGS_MASKALL);
        if c.enabled {
            v |= msix::FLAGS_ENABLE;
        }
        if c.masked {
            v |= msix::FLAGS_MASKALL;
        }
        if v != cur {
            if let Err(e) = self.dev.write_config(off, &v.to_le_bytes()) {
                self.warn.warn((7, u64::from(off)), || {
                    format!("{}: writing the host's MSI-X control: {e}", self.guest)
                });
            }
        }
    }

    /// Set or clear the host's MSI Enable (bit 0 of Message Control, one 16-bit
    /// read-modify-write; Xen programmed address, data and Multiple Message Enable itself).
    fn write_host_msi_enable(&mut self, on: bool) {
        let Some(cap) = self.caps.msi else { return };
        let off = cap + 2;
        let r = self.dev.read_config_word(off).and_then(|cur| {
            let v = if on {
                cur | crate::msi::FLAGS_ENABLE
            } else {
                cur & !crate::msi::FLAGS_ENABLE
            };
            if v != cur {
                self.dev.write_config(off, &v.to_le_bytes())
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            self.warn.warn((8, u64::from(off)), || {
                format!("{}: writing the host's MSI Enable: {e}", self.guest)
            });
        }
    }

    fn refused(&mut self, what: String, e: &PtError) {
        let guest = self.guest;
        let msg = format!("{what}: {e}");
        self.warn.warn((9, e.errno().unwrap_or(0) as u64), || {
            format!("{guest}: Xen refused {msg}; the guest sees the vector disabled")
        });
        self.last_refusal = Some(msg);
    }

    /// Whether INTx is forced off: MSI or MSI-X enabled, or the guest's Interrupt Disable set.
    fn intx_blocked(&self) -> bool {
        self.msi_state().is_some_and(|m| m.enabled)
            || self.msix_control().is_some_and(|c| c.enabled)
            || self.command() & header::CMD_INTX_DISABLE != 0
    }

    /// The vector the MSI capability asks for now.
    pub fn msi_vector(&self) -> Option<Vector> {
        let msix_on = self.msix_control().is_some_and(|c| c.enabled);
        self.msi_state()?.vector(msix_on)
    }

    /// The vector MSI-X entry `i` asks for now: unmasked, MSI-X enabled (and MSI not enabled).
    /// The Function Mask does not unbind: it is written through to the device, and Xen
    /// tracks it (`guest_maskall`) from dom0's control write.
    pub fn msix_vector(&self, i: usize) -> Option<Vector> {
        let t = self.msix.as_ref()?;
        let c = self.msix_control()?;
        if !c.enabled || self.msi_state().is_some_and(|m| m.enabled) {
            return None;
        }
        let e = t.entry(i)?;
        if e.masked {
            return None;
        }
        let info = t.info();
        let bar = self.bars.bar(usize::from(info.table_bar))?;
        // Xen wants the BAR's base and adds the table offset itself (msi.c:847-860).
        let table_base = bar.host.host_addr;
        let gtable = bar.guest.wrapping_add(info.table_offset);
        Some(e.vector(table_base, gtable))
    }

    /// What MSI-X entry `i` should be bound to after a config write. An entry already bound
    /// keeps its message: Xen's msixtbl owns its mask, and a new address/data counts only once
    /// Xen forwards the unmask ([`PassthroughFunction::mmio_write`]); only the table's
    /// addresses follow a moved BAR. An unbound entry is bound if the guest unmasked it.
    /// Nothing while MSI-X is disabled (or MSI enabled).
    fn msix_want(&self, i: usize) -> Option<Vector> {
        let c = self.msix_control()?;
        if !c.enabled || self.msi_state().is_some_and(|m| m.enabled) {
            return None;
        }
        match self.bindings.get(IrqSlot::Msix(i as u32)) {
            Some(b) => {
                let info = self.msix.as_ref()?.info();
                let bar = self.bars.bar(usize::from(info.table_bar))?;
                Some(Vector {
                    table_base: bar.host.host_addr,
                    gtable: bar.guest.wrapping_add(info.table_offset),
                    ..*b
                })
            }
            None => self.msix_vector(i),
        }
    }

    /// Bring every MSI / MSI-X binding and INTx to what the guest programmed, and the host's
    /// MSI Enable to what is bound.
    fn sync_interrupts(&mut self, exec: &mut PassthroughExecutor) {
        let mut wants = Vec::new();
        if self.caps.msi.is_some() {
            wants.push((IrqSlot::Msi, self.msi_vector()));
        }
        let n = self.msix.as_ref().map_or(0, MsixTable::len);
        for i in 0..n {
            let want = self.msix_want(i);
            let slot = IrqSlot::Msix(i as u32);
            if want.is_some() || self.bindings.get(slot).is_some() {
                wants.push((slot, want));
            }
        }
        let msi_was_bound = self.bindings.get(IrqSlot::Msi).is_some();
        for (slot, e) in self.bindings.sync_all(wants, exec) {
            match slot {
                IrqSlot::Msi => {
                    // Refused: the guest reads its Enable bit back as 0.
                    if let Some(cap) = self.caps.msi {
                        if let Some(i) = self.layout.find(cap + 2) {
                            let r = self.layout.reg_mut(i);
                            r.virt &= !u32::from(crate::msi::FLAGS_ENABLE);
                        }
                    }
                    self.refused("MSI".into(), &e);
                }
                IrqSlot::Msix(n) => {
                    if self.bindings.get(slot).is_none() {
                        if let Some(t) = &mut self.msix {
                            t.set_masked(n as usize, true);
                        }
                    }
                    self.refused(format!("MSI-X entry {n}"), &e);
                }
            }
        }
        let msi_bound = self.bindings.get(IrqSlot::Msi).is_some();
        if msi_bound != msi_was_bound {
            self.write_host_msi_enable(msi_bound);
        }
        self.reconcile_intx();
    }

    fn reconcile_intx(&mut self) {
        let blocked = self.intx_blocked();
        if let Some(i) = &mut self.intx {
            i.reconcile(self.dev.as_mut(), blocked);
        }
    }

    /// Attach the IOAPIC line for this function's INTx (registered on
    /// [`Intx::gsi`]); INTx becomes live (unmasked at the device unless forced off).
    pub fn attach_intx_line(&mut self, line: IrqLine) {
        if let Some(i) = &mut self.intx {
            i.attach(line);
        }
        self.reconcile_intx();
    }

    /// Connect this function's INTx to the IOAPIC's irq_line socket (no-op without INTx).
    pub fn connect_intx(
        &mut self,
        socket: &std::path::Path,
    ) -> Result<(), ioreq_server::irq_line::IrqLineError> {
        if let Some(i) = &mut self.intx {
            if !i.has_line() {
                i.connect(socket)?;
                tracing::info!(guest = %self.guest, gsi = i.gsi(), "INTx routed to the IOAPIC");
            }
        }
        self.reconcile_intx();
        Ok(())
    }

    /// The fds this function wants watched: the backend's INTx notification and the IOAPIC
    /// line's resample fd.
    pub fn event_fds(&self) -> Vec<RawFd> {
        let Some(i) = &self.intx else {
            return Vec::new();
        };
        self.dev
            .intx_fd()
            .into_iter()
            .chain(i.resample_fd())
            .collect()
    }

    /// One of [`PassthroughFunction::event_fds`] is readable. Returns whether it was ours.
    pub fn on_event(&mut self, fd: RawFd) -> bool {
        let blocked = self.intx_blocked();
        let Some(i) = &mut self.intx else {
            return false;
        };
        if self.dev.intx_fd() == Some(fd) {
            i.on_host_interrupt(self.dev.as_mut(), blocked);
            true
        } else if i.resample_fd() == Some(fd) {
            i.on_resample(self.dev.as_mut(), blocked);
            true
        } else {
            false
        }
    }

    /// Setup before the guest runs ([`crate::lifecycle`]); INTx starts in its wanted state.
    /// On an error the steps done stay recorded: call [`PassthroughFunction::stop`].
    pub fn start(&mut self, exec: &mut PassthroughExecutor) -> Result<(), Error> {
        let r = self.lifecycle.start(
            Target {
                host: self.host,
                dev: self.dev.as_mut(),
                msix_cap: self.caps.msix.map(|m| m.cap),
                msi_cap: self.caps.msi,
            },
            exec,
        );
        self.reconcile_intx();
        r
    }

    /// Teardown and hand-back ([`crate::lifecycle`]): bus master off, every mapping and vector
    /// removed, reset, release_msix, deassign, permissions revoked. With `guest_alive` false
    /// (the domain is gone, and with it its p2m and pirqs) only dom0's side is undone.
    pub fn stop(&mut self, exec: &mut PassthroughExecutor, guest_alive: bool) {
        if let Some(i) = &mut self.intx {
            // Setting Interrupt Disable deasserts the line; the device goes back masked.
            i.reconcile(self.dev.as_mut(), true);
        }
        let guest = self.guest;
        let mapped = std::mem::take(&mut self.mapped);
        let mut bindings = std::mem::take(&mut self.bindings);
        let msi = self.caps.msi;
        let msix = self.caps.msix.map(|m| m.cap);
        let mut left = Vec::new();
        if !guest_alive {
            bindings.forget_all();
        }
        self.lifecycle.stop(
            self.host,
            self.dev.as_mut(),
            exec,
            guest_alive,
            &mut |dev, exec| {
                let mut errs = Vec::new();
                if guest_alive {
                    for m in &mapped {
                        if let Err(e) = unmap(m, exec) {
                            errs.push(format!("{guest}: unmapping {m:?}: {e}"));
                            left.push(*m);
                        }
                    }
                    for (slot, e) in bindings.unbind_all(exec) {
                        errs.push(format!("{guest}: unbinding {slot:?}: {e}"));
                    }
                }
                // The host's MSI / MSI-X Enable off (one 16-bit write each).
                for (cap, bit) in [
                    (msi, crate::msi::FLAGS_ENABLE),
                    (msix, msix::FLAGS_ENABLE | msix::FLAGS_MASKALL),
                ] {
                    let Some(cap) = cap else { continue };
                    if let Ok(c) = dev.read_config_word(cap + 2) {
                        if c & bit != 0 {
                            let v = c & !bit;
                            if let Err(e) = dev.write_config(cap + 2, &v.to_le_bytes()) {
                                errs.push(format!("{guest}: host MSI control off: {e}"));
                            }
                        }
                    }
                }
                errs
            },
        );
        self.mapped = left;
        self.bindings = bindings;
    }

    /// Hand back a function that a dead bridge left assigned to a domain that is gone
    /// ([`Lifecycle::reclaim`]); returns the failed steps.
    pub fn reclaim(&mut self, exec: &mut PassthroughExecutor) -> Vec<String> {
        Lifecycle::reclaim(self.host, self.dev.as_mut(), self.caps.msix.is_some(), exec)
    }

    /// The lifecycle steps done.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    fn drop_write(&mut self, off: usize, d: u8, what: &str) {
        let guest = self.guest;
        self.warn.warn((0, off as u64), || {
            format!("{guest}: guest write {d:#04x} to {what} config byte {off:#x} dropped (further ones at this offset not logged)")
        });
    }

    /// Merge and write the pass-through bytes, run by run of consecutive offsets.
    fn write_through(&mut self, pass: &[(usize, u8, u8, u8)]) {
        let mut i = 0;
        while i < pass.len() {
            let mut j = i + 1;
            while j < pass.len() && pass[j].0 == pass[j - 1].0 + 1 {
                j += 1;
            }
            let run = &pass[i..j];
            let a = run[0].0;
            let mut cur = vec![0u8; run.len()];
            if let Err(e) = self.dev.read_config(a as u16, &mut cur) {
                // Without the current value a merge could change bits the guest does not own.
                self.warn.warn((2, a as u64), || {
                    format!(
                        "{}: config read at {a:#x} failed, write dropped: {e}",
                        self.guest
                    )
                });
                i = j;
                continue;
            }
            let out: Vec<u8> = run
                .iter()
                .zip(&cur)
                .map(|(&(_, d, p, w), &c)| (c & !p & !w) | (d & p))
                .collect();
            for (o, size) in aligned_pieces(a, a + run.len()) {
                let k = o - a;
                let piece = &out[k..k + size];
                // Skip a piece that neither changes a non-W1C bit nor clears a W1C bit.
                let unchanged = run[k..k + size]
                    .iter()
                    .zip(piece.iter().zip(&cur[k..k + size]))
                    .all(|(r, (&o, &c))| (o ^ c) & !r.3 == 0 && o & r.3 == 0);
                if unchanged {
                    continue;
                }
                if let Err(e) = self.dev.write_config(o as u16, piece) {
                    self.warn.warn((3, o as u64), || {
                        format!("{}: config write at {o:#x} failed: {e}", self.guest)
                    });
                }
            }
            i = j;
        }
    }

    /// The guest ranges this function decodes now: `(bar, is_io, start, len)` for every BAR
    /// (6 = ROM) that is placed inside the windows with its decode enabled.
    pub fn decoded_ranges(&self) -> Vec<(u8, bool, u64, u64)> {
        let cmd = self.command();
        let mut v = Vec::new();
        for i in 0..6 {
            let Some(b) = self.bars.bar(i) else { continue };
            if b.guest == 0 {
                continue;
            }
            if b.host.kind == crate::backend::BarKind::Io {
                if cmd & header::CMD_IO != 0 && self.windows.contains_io(b.guest, b.host.size) {
                    v.push((i as u8, true, b.guest, b.host.size));
                }
            } else if cmd & header::CMD_MEMORY != 0
                && self.windows.contains_mmio(b.guest, b.emu_size)
            {
                v.push((i as u8, false, b.guest, b.emu_size));
            }
        }
        if let Some(r) = self.bars.rom() {
            if cmd & header::CMD_MEMORY != 0
                && self.bars.rom_enabled()
                && r.guest != 0
                && self.windows.contains_mmio(r.guest, r.emu_size)
            {
                v.push((6, false, r.guest, r.emu_size));
            }
        }
        v
    }

    /// Recompute the mappings, leaving out the BARs in `blocked` (6 = ROM; the bridge blocks
    /// BARs whose guest ranges overlap another decoded BAR), and make the differences in Xen
    /// (unmaps first). Only what Xen did is recorded: a mapping Xen refused is left out (its
    /// accesses then arrive as ioreqs and are forwarded), an unmapping Xen refused stays.
    pub fn update_mappings(&mut self, blocked: &[u8], exec: &mut PassthroughExecutor) {
        let msix = self.caps.msix;
        let trapped = move |bar: u8| msix.map(|m| m.trapped_pages(bar)).unwrap_or_default();
        let mut desired = self
            .bars
            .desired_mappings(self.command(), &self.windows, &trapped);
        desired.retain(|m| {
            let bar = match m {
                Mapping::Mem { bar, .. } | Mapping::Io { bar, .. } => *bar,
            };
            !blocked.contains(&bar)
        });
        let guest = self.guest;
        let mut now = Vec::new();
        for m in std::mem::take(&mut self.mapped) {
            if desired.contains(&m) {
                now.push(m);
                continue;
            }
            tracing::debug!(guest = %guest, mapping = ?m, "unmap");
            if let Err(e) = unmap(&m, exec) {
                self.warn.warn((10, 0), || {
                    format!("{guest}: Xen refused to unmap {m:?}: {e}")
                });
                now.push(m);
            }
        }
        for m in desired {
            if now.contains(&m) {
                continue;
            }
            tracing::debug!(guest = %guest, mapping = ?m, "map");
            match map(&m, exec) {
                Ok(()) => now.push(m),
                Err(e) => self.warn.warn((11, 0), || {
                    format!("{guest}: Xen refused to map {m:?}: {e}; its accesses are forwarded instead")
                }),
            }
        }
        self.mapped = now;
    }

    /// Remove every mapping (at shutdown); the ones Xen refused to remove stay recorded.
    pub fn unmap_all(&mut self, exec: &mut PassthroughExecutor) {
        let mut left = Vec::new();
        for m in std::mem::take(&mut self.mapped) {
            if let Err(e) = unmap(&m, exec) {
                tracing::error!(guest = %self.guest, mapping = ?m, "unmapping failed: {e}");
                left.push(m);
            }
        }
        self.mapped = left;
    }

    /// Whether an MMIO access at `[addr, addr + len)` belongs to a decoded BAR of this function.
    pub fn claims_mmio(&self, addr: u64, len: usize) -> bool {
        self.command() & header::CMD_MEMORY != 0
            && self
                .bars
                .find_mem(addr, len as u64, &self.windows)
                .is_some()
    }

    /// An MMIO read that arrived (the page is not mapped): MSI-X table and PBA emulation,
    /// otherwise forwarded to the device's BAR. `None` if no decoded BAR of this function
    /// covers the access.
    pub fn mmio_read(&mut self, addr: u64, len: usize) -> Option<u64> {
        if self.command() & header::CMD_MEMORY == 0 {
            return None;
        }
        let (bar, off) = self.bars.find_mem(addr, len as u64, &self.windows)?;
        let len = len.clamp(1, 8);
        let l = len as u64;
        if let Some(t) = &self.msix {
            let info = *t.info();
            if bar == info.table_bar && overlaps(off, l, info.table_offset, info.table_len()) {
                let rel = off.wrapping_sub(info.table_offset);
                if off >= info.table_offset
                    && off + l <= info.table_offset + info.table_len()
                    && msix::access_ok(rel, len)
                {
                    return Some(t.read(rel, len));
                }
                self.warn.warn((4, off), || {
                    format!("{}: MSI-X table access of {len} bytes at {off:#x} is not an aligned DWORD/QWORD inside the table: reads all-ones", self.guest)
                });
                return Some(u64::MAX);
            }
            if bar == info.pba_bar && overlaps(off, l, info.pba_offset, info.pba_len()) {
                let rel = off.wrapping_sub(info.pba_offset);
                if off >= info.pba_offset
                    && off + l <= info.pba_offset + info.pba_len()
                    && msix::access_ok(rel, len)
                {
                    return Some(self.bar_read(bar, off, len).unwrap_or(0));
                }
                self.warn.warn((4, off), || {
                    format!("{}: MSI-X PBA access of {len} bytes at {off:#x} is not an aligned DWORD/QWORD inside the PBA: reads all-ones", self.guest)
                });
                return Some(u64::MAX);
            }
        }
        Some(self.bar_read(bar, off, len).unwrap_or(u64::MAX))
    }

    /// An MMIO write that arrived, see [`PassthroughFunction::mmio_read`]; an unmask in the
    /// MSI-X table (re)binds its entry (see [`crate::msix`] for why address/data writes are
    /// only latched and mask writes never unbind). Returns whether a decoded BAR of this
    /// function covers the access.
    pub fn mmio_write(
        &mut self,
        addr: u64,
        len: usize,
        data: u64,
        exec: &mut PassthroughExecutor,
    ) -> bool {
        if self.command() & header::CMD_MEMORY == 0 {
            return false;
        }
        let Some((bar, off)) = self.bars.find_mem(addr, len as u64, &self.windows) else {
            return false;
        };
        let len = len.clamp(1, 8);
        let l = len as u64;
        let guest = self.guest;
        if let Some(info) = self.msix.as_ref().map(|t| *t.info()) {
            if bar == info.table_bar && overlaps(off, l, info.table_offset, info.table_len()) {
                let rel = off.wrapping_sub(info.table_offset);
                if off >= info.table_offset
                    && off + l <= info.table_offset + info.table_len()
                    && msix::access_ok(rel, len)
                {
                    if let Some(t) = &mut self.msix {
                        t.write(rel, len, data);
                    }
                    // An aligned DWORD or QWORD lies inside one 16-byte entry; does it cover
                    // Vector Control (bytes 12..16)?
                    let i = (rel / msix::ENTRY_SIZE) as usize;
                    let in_entry = rel % msix::ENTRY_SIZE;
                    let ctrl = in_entry + l > 12;
                    let unmasked = self
                        .msix
                        .as_ref()
                        .and_then(|t| t.entry(i))
                        .is_some_and(|e| !e.masked);
                    if ctrl && unmasked {
                        let want = self.msix_vector(i);
                        let slot = IrqSlot::Msix(i as u32);
                        if want.is_some() {
                            if let Err(e) = self.bindings.sync(slot, want, exec) {
                                if let Some(t) = &mut self.msix {
                                    if self.bindings.get(slot).is_none() {
                                        t.set_masked(i, true);
                                    }
                                }
                                self.refused(format!("MSI-X entry {i}"), &e);
                            }
                        }
                    }
                } else {
                    self.warn.warn((4, off), || {
                        format!("{guest}: MSI-X table write of {len} bytes at {off:#x} is not an aligned DWORD/QWORD inside the table: dropped")
                    });
                }
                return true;
            }
            if bar == info.pba_bar && overlaps(off, l, info.pba_offset, info.pba_len()) {
                self.warn.warn((5, off), || {
                    format!("{guest}: write to the read-only MSI-X PBA dropped")
                });
                return true;
            }
            let page = off / crate::bars::PAGE_SIZE;
            let on_trapped_page = [
                (info.table_bar, info.table_offset, info.table_len()),
                (info.pba_bar, info.pba_offset, info.pba_len()),
            ]
            .iter()
            .any(|&(b, o, n)| {
                b == bar
                    && page >= o / crate::bars::PAGE_SIZE
                    && page <= (o + n.max(1) - 1) / crate::bars::PAGE_SIZE
            });
            if on_trapped_page {
                // Xen maps these pages read-only for dom0 (mmio_ro_ranges): a write would fault.
                self.warn.warn((12, off), || {
                    format!("{guest}: write of {len} bytes at BAR {bar} + {off:#x} (a page Xen keeps read-only for the MSI-X table or PBA) dropped")
                });
                return true;
            }
        }
        let size = self.bars.bar(usize::from(bar)).map_or(0, |b| b.host.size);
        if off + l <= size {
            let bytes = data.to_le_bytes();
            if let Err(e) = self.dev.write_bar(bar, off, &bytes[..len]) {
                self.warn.warn((6, u64::from(bar)), || {
                    format!("{guest}: BAR {bar} write forwarding failed: {e}")
                });
            }
        }
        true
    }

    fn bar_read(&mut self, bar: u8, off: u64, len: usize) -> Option<u64> {
        let size = self.bars.bar(usize::from(bar)).map_or(0, |b| b.host.size);
        if off + len as u64 > size {
            return None;
        }
        let mut buf = [0u8; 8];
        match self.dev.read_bar(bar, off, &mut buf[..len]) {
            Ok(()) => Some(u64::from_le_bytes(buf)),
            Err(e) => {
                self.warn.warn((6, u64::from(bar)), || {
                    format!("{}: BAR {bar} read forwarding failed: {e}", self.guest)
                });
                None
            }
        }
    }

    /// Device state for the status socket.
    pub fn status(&self) -> serde_json::Value {
        let bars: Vec<_> = (0..6)
            .filter_map(|i| {
                self.bars.bar(i).map(|b| {
                    json!({
                        "index": i,
                        "kind": b.host.kind,
                        "prefetchable": b.host.prefetchable,
                        "size": b.host.size,
                        "guest": format!("{:#x}", b.guest),
                        "host": format!("{:#x}", b.host.host_addr),
                    })
                })
            })
            .collect();
        json!({
            "guest": self.guest.to_string(),
            "device": self.dev_name,
            "command": format!("{:#06x}", self.command()),
            "bars": bars,
            "rom": self.bars.rom().map(|r| json!({
                "size": r.host.size,
                "guest": format!("{:#x}", r.guest),
                "enabled": self.bars.rom_enabled(),
            })),
            "mappings": self.mapped,
            "capabilities": self.caps,
            "host": self.host.to_string(),
            "msi": self.msi_state(),
            "msix": self.msix_control(),
            "bound_vectors": self.bindings.bound().map(|(s, v)| json!({"slot": s, "vector": v})).collect::<Vec<_>>(),
            "binds_unbinds": self.bindings.counts(),
            "intx": self.intx.as_ref().map(Intx::status),
            "lifecycle": self.lifecycle,
            "last_refusal": self.last_refusal,
            "backend": self.dev.status(),
            "suppressed_warnings": self.warn.suppressed(),
        })
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

fn map(m: &Mapping, exec: &mut PassthroughExecutor) -> Result<(), PtError> {
    match *m {
        Mapping::Mem { gfn, mfn, nr, .. } => exec.map_memory(gfn, mfn, nr),
        Mapping::Io {
            gport, mport, nr, ..
        } => exec.map_ioports(gport, mport, nr),
    }
}

fn unmap(m: &Mapping, exec: &mut PassthroughExecutor) -> Result<(), PtError> {
    match *m {
        Mapping::Mem { gfn, .. } => exec.unmap_memory(gfn),
        Mapping::Io { gport, .. } => exec.unmap_ioports(gport),
    }
}
