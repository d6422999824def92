//! The IOAPIC state machine: registers, pin inputs, Remote IRR and EOI, MSI delivery.
//!
//! No hypervisor code: inputs are MMIO accesses (offsets inside the window) and pin levels;
//! outputs go to an [`IrqOutput`] (an MSI per delivery, and a notification whenever an EOI
//! clears Remote IRR).
//!
//! # Rules (82093AA datasheet 3.2.4, ICH datasheets for the EOI register, Xen's vioapic.c)
//! - **Edge** pins deliver on a rising edge of the polarity-adjusted line while unmasked. A
//!   masked edge pin ignores edges (they are not held pending). Remote IRR is never set.
//! - **Level** pins deliver while the line is asserted, the entry unmasked and Remote IRR
//!   clear, and set Remote IRR: one delivery until the EOI.
//! - **EOI**: a write of a vector to the EOI register (version 0x20 only) clears Remote IRR of
//!   every entry with that vector; switching an entry to edge (the 0x11 way: mask + edge, then
//!   level again) clears it too. Then [`IrqOutput::eoi`] is told, and the pin re-delivers if the
//!   line is still asserted.
//! - Unmasking an asserted level pin, or switching an asserted pin to level, delivers.
//! - Delivery status (bit 12) always reads 0: a delivery is handed over at once.
//!
//! # Pin inputs and polarity
//! The state kept per pin is the *asserted* (polarity-adjusted) level. [`Ioapic::set_line`]
//! takes the electrical level and adjusts it with the entry's polarity at that moment;
//! [`Ioapic::set_asserted`] takes the logical level directly. The second is what the
//! interrupt-line protocol uses (as Xen, KVM and QEMU do): a source says "I request service"
//! and the guest's choice of polarity (from its ACPI tables) cannot invert it. A later change
//! of the polarity bit does not re-evaluate a stored input, so it never fabricates an edge.
//!
//! # MMIO accesses
//! Only these have an effect:
//! - IOREGSEL (0x00): reads and writes of 1, 2 or 4 bytes at offset 0x00. It is an 8-bit
//!   register: the low byte is kept, upper bits read 0.
//! - IOWIN (0x10): aligned 4-byte reads and writes.
//! - EOI (0x40, version 0x20 only): aligned 4-byte writes (bits 7:0 = vector); reads return 0.
//!
//! Every other access (other offsets, sizes, 8-byte accesses, the EOI register on 0x11) reads
//! all-ones and is dropped on write, with a rate-limited warning. Nothing panics.

use serde::{Deserialize, Serialize};

use crate::ratelimit::RateLimit;
use crate::regs::*;
use crate::snapshot::{Snapshot, SnapshotError, SNAPSHOT_FORMAT};

/// Base of the MSI address window (Intel SDM vol. 3, 11.11.1: 0xFEEx_xxxx).
pub const MSI_ADDR_BASE: u64 = 0xFEE0_0000;
/// MSI address, bits 19:12: destination ID.
pub const MSI_ADDR_DEST_SHIFT: u32 = 12;
/// MSI address, bit 2: destination mode (1 logical).
pub const MSI_ADDR_DEST_MODE_SHIFT: u32 = 2;
/// MSI data, bits 10:8: delivery mode.
pub const MSI_DATA_DELIVERY_MODE_SHIFT: u32 = 8;
/// MSI data, bit 15: trigger mode (1 level).
pub const MSI_DATA_TRIGGER_SHIFT: u32 = 15;
/// Lowest vector the IOAPIC delivers; 0-15 are reserved exceptions (and Xen reads vector 0
/// in `inject_msi` as a PIRQ request).
pub const MIN_VECTOR: u8 = 16;

/// The IOAPIC version reported in bits 7:0 of the version register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Version {
    /// 0x11: the 82093AA. No EOI register; Linux EOIs level pins with mask + edge/level toggle.
    V11,
    /// 0x20: ICH-style, with the EOI register at 0x40 (the default).
    V20,
}

impl Version {
    /// The register value.
    pub fn value(self) -> u8 {
        match self {
            Version::V11 => 0x11,
            Version::V20 => 0x20,
        }
    }

    /// The version for a register value (only 0x11 and 0x20 are supported).
    pub fn from_value(v: u8) -> Option<Self> {
        match v {
            0x11 => Some(Version::V11),
            0x20 => Some(Version::V20),
            _ => None,
        }
    }

    /// Whether the EOI register exists.
    pub fn has_eoi_register(self) -> bool {
        self == Version::V20
    }
}

/// One interrupt message, as handed to `XEN_DMOP_inject_msi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Msi {
    /// `0xFEE00000 | destination << 12 | destination mode << 2`.
    pub addr: u64,
    /// `vector | delivery mode << 8 | trigger << 15` (trigger is always 0, see
    /// [`Msi::from_entry`]).
    pub data: u32,
}

impl Msi {
    /// The message for a redirection entry.
    pub fn from_entry(entry: RedirectionEntry) -> Msi {
        let dest_mode = u64::from(entry.destination_mode() == DestinationMode::Logical);
        let addr = MSI_ADDR_BASE
            | u64::from(entry.destination()) << MSI_ADDR_DEST_SHIFT
            | dest_mode << MSI_ADDR_DEST_MODE_SHIFT;
        // Level-triggered entries are sent as EDGE (trigger bit 15 = 0), on purpose. Xen forwards
        // no local APIC EOI to ioreq servers and its vLAPIC offers no directed EOI (xen-abi.md
        // 9.4; DESIGN.md "Interrupts"): with a level MSI the guest's EOI would end in Xen's
        // vioapic_update_EOI, which is not us, and Remote IRR here would never clear. Sent as
        // edge, the guest's local APIC TMR bit stays clear for the vector, so Linux sees an edge
        // at the LAPIC for a level RTE and EOIs the IOAPIC explicitly (EOI register on 0x20,
        // mask + edge/level toggle on 0x11), which is what clears Remote IRR here.
        let trigger: u32 = 0;
        let data = u32::from(entry.vector())
            | u32::from(entry.delivery_mode().bits()) << MSI_DATA_DELIVERY_MODE_SHIFT
            | trigger << MSI_DATA_TRIGGER_SHIFT;
        Msi { addr, data }
    }
}

/// Where the state machine sends its effects.
pub trait IrqOutput {
    /// Deliver `msi` (for `pin`).
    fn inject(&mut self, pin: u8, msi: Msi);

    /// An EOI just cleared Remote IRR of `pin`, whose input is `asserted`. Return the input
    /// level to re-check with: a source that must re-sample its line after an EOI (the
    /// irqfd/resamplefd model) releases it here and returns false. Default: unchanged.
    fn eoi(&mut self, pin: u8, asserted: bool) -> bool {
        let _ = pin;
        asserted
    }
}

/// Collects MSIs (EOIs keep the input level).
impl IrqOutput for Vec<Msi> {
    fn inject(&mut self, _pin: u8, msi: Msi) {
        self.push(msi);
    }
}

/// Turns each delivery into [`ioreq_server::device::Action::InjectMsi`].
impl IrqOutput for ioreq_server::device::Actions {
    fn inject(&mut self, _pin: u8, msi: Msi) {
        self.push(ioreq_server::device::Action::InjectMsi {
            addr: msi.addr,
            data: msi.data,
        });
    }
}

/// Errors creating an [`Ioapic`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoapicError {
    /// The pin count is not in 1..=120.
    #[error("pin count {0} is not in 1..={MAX_PINS}")]
    Pins(u32),
    /// The APIC ID does not fit in 4 bits.
    #[error("IOAPIC ID {0} is not in 0..=15")]
    Id(u32),
}

/// The IOAPIC state machine.
#[derive(Clone, Debug)]
pub struct Ioapic {
    version: Version,
    /// APIC ID, 4 bits (ID register bits 27:24; ARB mirrors it).
    id: u8,
    ioregsel: u8,
    entries: Vec<RedirectionEntry>,
    /// Polarity-adjusted input level per pin.
    asserted: Vec<bool>,
    warn_access: RateLimit,
    warn_delivery: RateLimit,
}

impl Ioapic {
    /// A reset IOAPIC: every entry masked, every input deasserted, IOREGSEL 0.
    pub fn new(pins: u8, version: Version, id: u8) -> Result<Ioapic, IoapicError> {
        if pins == 0 || pins > MAX_PINS {
            return Err(IoapicError::Pins(u32::from(pins)));
        }
        if id > ID_MASK {
            return Err(IoapicError::Id(u32::from(id)));
        }
        Ok(Ioapic {
            version,
            id,
            ioregsel: 0,
            entries: vec![RedirectionEntry::RESET; usize::from(pins)],
            asserted: vec![false; usize::from(pins)],
            warn_access: RateLimit::default(),
            warn_delivery: RateLimit::default(),
        })
    }

    /// Number of pins.
    pub fn pins(&self) -> u8 {
        self.entries.len() as u8
    }

    /// The reported version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The APIC ID (4 bits).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The current IOREGSEL value.
    pub fn ioregsel(&self) -> u8 {
        self.ioregsel
    }

    /// The redirection entry of `pin`.
    pub fn entry(&self, pin: u8) -> Option<RedirectionEntry> {
        self.entries.get(usize::from(pin)).copied()
    }

    /// Whether the (polarity-adjusted) input of `pin` is asserted.
    pub fn is_asserted(&self, pin: u8) -> bool {
        self.asserted
            .get(usize::from(pin))
            .copied()
            .unwrap_or(false)
    }

    // -- MMIO ---------------------------------------------------------------------------------

    /// A read of `size` bytes at `offset` inside the window. Never panics; see the module docs
    /// for which accesses have an effect.
    pub fn mmio_read(&mut self, offset: u64, size: u8) -> u64 {
        match (offset, size) {
            (IOREGSEL, 1 | 2 | 4) => u64::from(self.ioregsel),
            (IOWIN, 4) => u64::from(self.read_register(self.ioregsel)),
            (EOI, 4) if self.version.has_eoi_register() => 0,
            _ => {
                self.bad_access("read", offset, size, 0);
                size_mask(size)
            }
        }
    }

    /// A write of `size` bytes of `data` at `offset` inside the window.
    pub fn mmio_write(&mut self, offset: u64, size: u8, data: u64, out: &mut impl IrqOutput) {
        match (offset, size) {
            (IOREGSEL, 1 | 2 | 4) => self.ioregsel = data as u8,
            (IOWIN, 4) => self.write_register(self.ioregsel, data as u32, out),
            (EOI, 4) if self.version.has_eoi_register() => self.eoi(data as u8, out),
            _ => self.bad_access("write", offset, size, data),
        }
    }

    fn bad_access(&mut self, what: &str, offset: u64, size: u8, data: u64) {
        if let Some(suppressed) = self.warn_access.check() {
            tracing::warn!(
                offset = format_args!("{offset:#x}"),
                size,
                data = format_args!("{data:#x}"),
                suppressed,
                "ioapic: {what} with no register (only IOREGSEL at 0x00, aligned 4-byte IOWIN at 0x10 \
                 and EOI at 0x40 on version 0x20 have an effect); reads all-ones, writes dropped"
            );
        }
    }

    // -- Indirect registers -------------------------------------------------------------------

    /// The value of indirect register `index` (what IOWIN reads while IOREGSEL = `index`).
    /// Unimplemented indices read 0.
    pub fn read_register(&self, index: u8) -> u32 {
        match index {
            REG_ID | REG_ARB => u32::from(self.id) << ID_SHIFT,
            REG_VER => {
                u32::from(self.version.value()) | u32::from(self.pins() - 1) << VER_MRE_SHIFT
            }
            i if i >= REG_REDTBL => match self.rte_index(i) {
                Some((pin, high)) => {
                    let e = self.entries[usize::from(pin)];
                    if high {
                        e.high()
                    } else {
                        e.low()
                    }
                }
                None => 0,
            },
            _ => 0,
        }
    }

    /// A write of `value` to indirect register `index` (what IOWIN does while IOREGSEL =
    /// `index`). Read-only and unimplemented registers ignore it.
    pub fn write_register(&mut self, index: u8, value: u32, out: &mut impl IrqOutput) {
        match index {
            // Writing the ID also loads the arbitration ID (82093AA 3.2.3): both read `id`.
            REG_ID => self.id = (value >> ID_SHIFT) as u8 & ID_MASK,
            i if i >= REG_REDTBL => {
                if let Some((pin, high)) = self.rte_index(i) {
                    if high {
                        self.write_rte_high(pin, value, out);
                    } else {
                        self.write_rte_low(pin, value, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// Pin and half (true = high) of a redirection-table register index.
    fn rte_index(&self, index: u8) -> Option<(u8, bool)> {
        let rel = index.checked_sub(REG_REDTBL)?;
        let pin = rel / 2;
        (pin < self.pins()).then_some((pin, rel & 1 == 1))
    }

    fn write_rte_low(&mut self, pin: u8, value: u32, out: &mut impl IrqOutput) {
        let p = usize::from(pin);
        let old = self.entries[p];
        let writable = RTE_WRITABLE & 0xFFFF_FFFF;
        let mut new =
            RedirectionEntry::from_raw((old.raw() & !writable) | (u64::from(value) & writable));
        self.entries[p] = new;
        if new.remote_irr() && !new.is_level() {
            // Switching to edge clears Remote IRR: the 0x11 way to EOI (Linux masks, sets edge,
            // then restores level; Xen's vioapic does the same on an edge write).
            new.set_remote_irr(false);
            self.entries[p] = new;
            self.asserted[p] = out.eoi(pin, self.asserted[p]);
        }
        // Unmasking, or switching to level, with the line asserted delivers.
        self.service_level(pin, out);
    }

    fn write_rte_high(&mut self, pin: u8, value: u32, out: &mut impl IrqOutput) {
        let p = usize::from(pin);
        let writable = RTE_WRITABLE >> 32;
        let high = (u64::from(value) & writable) << 32;
        let old = self.entries[p].raw();
        self.entries[p] = RedirectionEntry::from_raw((old & 0xFFFF_FFFF) | high);
        self.service_level(pin, out);
    }

    // -- EOI and pins -------------------------------------------------------------------------

    /// The EOI register's effect (ICH): clears Remote IRR of every entry whose vector is
    /// `vector`, tells [`IrqOutput::eoi`], and re-delivers where the line is still asserted.
    /// Called by an EOI register write on version 0x20; callable directly on any version.
    pub fn eoi(&mut self, vector: u8, out: &mut impl IrqOutput) {
        for pin in 0..self.pins() {
            let p = usize::from(pin);
            let mut e = self.entries[p];
            if e.vector() != vector || !e.remote_irr() {
                continue;
            }
            e.set_remote_irr(false);
            self.entries[p] = e;
            self.asserted[p] = out.eoi(pin, self.asserted[p]);
            self.service_level(pin, out);
        }
    }

    /// Sets the polarity-adjusted input of `pin` (true = asserted) and delivers what the rules
    /// say. A pin outside the IOAPIC is ignored (with a rate-limited warning).
    pub fn set_asserted(&mut self, pin: u8, asserted: bool, out: &mut impl IrqOutput) {
        let Some(was) = self.asserted.get(usize::from(pin)).copied() else {
            if let Some(suppressed) = self.warn_access.check() {
                tracing::warn!(
                    pin,
                    pins = self.pins(),
                    suppressed,
                    "ioapic: input for a pin that does not exist"
                );
            }
            return;
        };
        self.asserted[usize::from(pin)] = asserted;
        let e = self.entries[usize::from(pin)];
        if e.is_level() {
            self.service_level(pin, out);
        } else if asserted && !was && !e.masked() {
            // Rising edge on an unmasked edge pin. (Masked: ignored, 82093AA 3.2.4 bit 16.)
            self.deliver(pin, out);
        }
    }

    /// Sets the electrical level of `pin` (true = high); the entry's polarity decides whether
    /// that is asserted (active-low pins are asserted when low).
    pub fn set_line(&mut self, pin: u8, high: bool, out: &mut impl IrqOutput) {
        let active_low = self
            .entry(pin)
            .is_some_and(|e| e.polarity() == Polarity::ActiveLow);
        self.set_asserted(pin, high != active_low, out);
    }

    /// Delivers a level pin if it is asserted, unmasked and Remote IRR is clear; sets Remote IRR.
    fn service_level(&mut self, pin: u8, out: &mut impl IrqOutput) {
        let p = usize::from(pin);
        let e = self.entries[p];
        if e.is_level()
            && !e.masked()
            && !e.remote_irr()
            && self.asserted[p]
            && self.deliver(pin, out)
        {
            self.entries[p].set_remote_irr(true);
        }
    }

    /// Sends the MSI of `pin`'s entry. Returns false if the entry cannot be delivered.
    fn deliver(&mut self, pin: u8, out: &mut impl IrqOutput) -> bool {
        let e = self.entries[usize::from(pin)];
        let refusal = match e.delivery_mode() {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority if e.vector() < MIN_VECTOR => {
                Some("vector below 16 (reserved for exceptions)")
            }
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => None,
            // Xen's hvm_inject_msi -> vmsi_deliver accepts only fixed and lowest priority and
            // fails the DM op otherwise; the server treats a failing action as fatal, so the
            // guest could take its own IOAPIC down. Refuse here instead.
            _ => Some("delivery mode not injectable through XEN_DMOP_inject_msi"),
        };
        if let Some(why) = refusal {
            if let Some(suppressed) = self.warn_delivery.check() {
                tracing::warn!(
                    pin,
                    vector = e.vector(),
                    mode = ?e.delivery_mode(),
                    suppressed,
                    "ioapic: interrupt not delivered: {why}"
                );
            }
            return false;
        }
        out.inject(pin, Msi::from_entry(e));
        true
    }

    // -- Snapshot -----------------------------------------------------------------------------

    /// The whole state as data.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            format: SNAPSHOT_FORMAT,
            version: self.version.value(),
            pins: self.pins(),
            id: self.id,
            ioregsel: self.ioregsel,
            entries: self.entries.iter().map(|e| e.raw()).collect(),
            asserted: self.asserted.clone(),
        }
    }

    /// An IOAPIC in the state of `snapshot`, after validating it (format version, pin count,
    /// lengths, IOAPIC version, ID, and that every entry is one the device could have made).
    pub fn restore(snapshot: Snapshot) -> Result<Ioapic, SnapshotError> {
        if snapshot.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Format {
                found: snapshot.format,
                expected: SNAPSHOT_FORMAT,
            });
        }
        let version = Version::from_value(snapshot.version)
            .ok_or(SnapshotError::Version(snapshot.version))?;
        let mut ioapic =
            Ioapic::new(snapshot.pins, version, snapshot.id).map_err(SnapshotError::Invalid)?;
        let pins = usize::from(snapshot.pins);
        if snapshot.entries.len() != pins {
            return Err(SnapshotError::Length {
                field: "entries",
                found: snapshot.entries.len(),
                pins,
            });
        }
        if snapshot.asserted.len() != pins {
            return Err(SnapshotError::Length {
                field: "asserted",
                found: snapshot.asserted.len(),
                pins,
            });
        }
        for (pin, &raw) in snapshot.entries.iter().enumerate() {
            let e = RedirectionEntry::from_raw(raw);
            if raw != e.raw() || e.delivery_status() || (e.remote_irr() && !e.is_level()) {
                return Err(SnapshotError::Entry {
                    pin: pin as u8,
                    raw,
                });
            }
        }
        ioapic.ioregsel = snapshot.ioregsel;
        ioapic.entries = snapshot
            .entries
            .into_iter()
            .map(RedirectionEntry::from_raw)
            .collect();
        ioapic.asserted = snapshot.asserted;
        Ok(ioapic)
    }
}

/// All-ones in `size` bytes (any size; 8 and above give 64 ones).
fn size_mask(size: u8) -> u64 {
    match size {
        0 => 0,
        1..=7 => (1u64 << (u32::from(size) * 8)) - 1,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests;
