//! Register layout of the IOAPIC, as data.
//!
//! Sources: Intel 82093AA I/O Advanced Programmable Interrupt Controller (IOAPIC) datasheet
//! (order number 290566), section 3 "Register Description"; the EOI register of version 0x20
//! from the Intel I/O Controller Hub datasheets (ICH9/ICH10, "I/O APIC memory-mapped
//! registers", EOI at FEC0_0040h). Field positions agree with Xen's `vioapic.h` (xen-abi.md 9.3).

use serde::{Deserialize, Serialize};

/// Default base address of the MMIO window (82093AA 3.1: FEC0_xy00h with x = y = 0).
pub const DEFAULT_BASE: u64 = 0xFEC0_0000;

/// Length of the MMIO window claimed by the device.
///
/// The registers span 0x00..0x44 (IOREGSEL, IOWIN, EOI). 0x100 is what Xen's own vIOAPIC
/// (`VIOAPIC_MEM_LENGTH`) and KVM claim, and it keeps the 256-byte granularity at which the
/// 82093AA decodes its base (FEC0_xy00h), so a second IOAPIC may sit at the next 0x100.
pub const WINDOW_LEN: u64 = 0x100;

/// I/O Register Select (82093AA 3.1.1): 8-bit index of the indirect register, at offset 0x00.
pub const IOREGSEL: u64 = 0x00;
/// I/O Window (82093AA 3.1.2): 32-bit data of the selected register, at offset 0x10.
pub const IOWIN: u64 = 0x10;
/// EOI register (ICH, version 0x20 only): writing a vector clears Remote IRR of every entry
/// with that vector. At offset 0x40.
pub const EOI: u64 = 0x40;

/// Indirect register: IOAPIC identification (82093AA 3.2.1), ID in bits 27:24.
pub const REG_ID: u8 = 0x00;
/// Indirect register: IOAPIC version (82093AA 3.2.2), version in bits 7:0, maximum
/// redirection entry in bits 23:16.
pub const REG_VER: u8 = 0x01;
/// Indirect register: arbitration ID (82093AA 3.2.3), bits 27:24, read-only, loaded from the
/// ID register when the ID is written.
pub const REG_ARB: u8 = 0x02;
/// Indirect register: first redirection entry (82093AA 3.2.4); entry n is at 0x10 + 2n (bits
/// 31:0) and 0x11 + 2n (bits 63:32).
pub const REG_REDTBL: u8 = 0x10;

/// Bits 27:24 of the ID and ARB registers (82093AA 3.2.1, 3.2.3).
pub const ID_SHIFT: u32 = 24;
/// The APIC ID is 4 bits wide.
pub const ID_MASK: u8 = 0x0F;
/// Bits 23:16 of the version register: maximum redirection entry (82093AA 3.2.2).
pub const VER_MRE_SHIFT: u32 = 16;

/// Default number of pins (the 82093AA has 24).
pub const DEFAULT_PINS: u8 = 24;
/// Most pins an IOAPIC can have: IOREGSEL is 8 bits, so entries end at index 0xFF:
/// (0x100 - 0x10) / 2 = 120.
pub const MAX_PINS: u8 = 120;

/// Redirection entry, bits 7:0: interrupt vector (82093AA 3.2.4).
pub const RTE_VECTOR: u64 = 0xFF;
/// Redirection entry, bits 10:8: delivery mode.
pub const RTE_DELIVERY_MODE_SHIFT: u32 = 8;
/// Mask of the delivery mode field.
pub const RTE_DELIVERY_MODE: u64 = 0x7 << RTE_DELIVERY_MODE_SHIFT;
/// Redirection entry, bit 11: destination mode (0 physical, 1 logical).
pub const RTE_DEST_MODE: u64 = 1 << 11;
/// Redirection entry, bit 12: delivery status (read-only; 1 = send pending).
pub const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// Redirection entry, bit 13: interrupt input pin polarity (0 active high, 1 active low).
pub const RTE_POLARITY: u64 = 1 << 13;
/// Redirection entry, bit 14: Remote IRR (read-only; level interrupts: set when the local
/// APIC accepted the interrupt, cleared by its EOI).
pub const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry, bit 15: trigger mode (0 edge, 1 level).
pub const RTE_TRIGGER_LEVEL: u64 = 1 << 15;
/// Redirection entry, bit 16: interrupt mask (1 = masked). Set after reset.
pub const RTE_MASK: u64 = 1 << 16;
/// Redirection entry, bits 63:56: destination field (APIC ID or logical set).
pub const RTE_DEST_SHIFT: u32 = 56;
/// Mask of the destination field.
pub const RTE_DEST: u64 = 0xFF << RTE_DEST_SHIFT;

/// The bits software can write (bits 55:17 are reserved and read as 0 here).
pub const RTE_WRITABLE: u64 = RTE_VECTOR
    | RTE_DELIVERY_MODE
    | RTE_DEST_MODE
    | RTE_POLARITY
    | RTE_TRIGGER_LEVEL
    | RTE_MASK
    | RTE_DEST;
/// Every bit an entry can hold (writable bits plus the two read-only status bits).
pub const RTE_DEFINED: u64 = RTE_WRITABLE | RTE_DELIVERY_STATUS | RTE_REMOTE_IRR;

/// Delivery mode of a redirection entry (82093AA 3.2.4, bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeliveryMode {
    /// 000: deliver to all destination processors.
    Fixed,
    /// 001: deliver to the lowest-priority processor of the destination.
    LowestPriority,
    /// 010: system management interrupt (vector ignored).
    Smi,
    /// 100: non-maskable interrupt (vector ignored).
    Nmi,
    /// 101: INIT (vector ignored).
    Init,
    /// 111: external interrupt (8259-compatible acknowledge).
    ExtInt,
    /// 011 or 110: reserved encodings.
    Reserved(u8),
}

impl DeliveryMode {
    /// The 3-bit encoding.
    pub fn bits(self) -> u8 {
        match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::ExtInt => 7,
            DeliveryMode::Reserved(b) => b & 7,
        }
    }

    /// The mode of a 3-bit encoding (higher bits are ignored).
    pub fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            7 => DeliveryMode::ExtInt,
            b => DeliveryMode::Reserved(b),
        }
    }
}

/// Destination mode (bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DestinationMode {
    /// 0: the destination is an APIC ID.
    Physical,
    /// 1: the destination is a set of processors (logical destination).
    Logical,
}

/// Input pin polarity (bit 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Polarity {
    /// 0: the pin is asserted when high.
    ActiveHigh,
    /// 1: the pin is asserted when low.
    ActiveLow,
}

/// Trigger mode (bit 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriggerMode {
    /// 0: a rising edge of the (polarity-adjusted) line delivers once.
    Edge,
    /// 1: the asserted line delivers while Remote IRR is clear, and sets Remote IRR.
    Level,
}

/// One 64-bit redirection table entry (82093AA 3.2.4), as data with named accessors.
///
/// Only the defined bits are kept ([`RTE_DEFINED`]); reserved bits read as 0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RedirectionEntry(u64);

impl std::fmt::Debug for RedirectionEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedirectionEntry")
            .field("raw", &format_args!("{:#018x}", self.0))
            .field("vector", &self.vector())
            .field("delivery_mode", &self.delivery_mode())
            .field("destination_mode", &self.destination_mode())
            .field("polarity", &self.polarity())
            .field("remote_irr", &self.remote_irr())
            .field("trigger_mode", &self.trigger_mode())
            .field("masked", &self.masked())
            .field("destination", &self.destination())
            .finish()
    }
}

impl Default for RedirectionEntry {
    fn default() -> Self {
        Self::RESET
    }
}

impl RedirectionEntry {
    /// The state after reset: masked, everything else 0 (82093AA 3.2.4, bit 16).
    pub const RESET: RedirectionEntry = RedirectionEntry(RTE_MASK);

    /// An entry from its 64-bit value; undefined bits are dropped.
    pub fn from_raw(raw: u64) -> Self {
        RedirectionEntry(raw & RTE_DEFINED)
    }

    /// The 64-bit value.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// Bits 31:0 (indirect register 0x10 + 2n).
    pub fn low(self) -> u32 {
        self.0 as u32
    }

    /// Bits 63:32 (indirect register 0x11 + 2n).
    pub fn high(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Bits 7:0.
    pub fn vector(self) -> u8 {
        (self.0 & RTE_VECTOR) as u8
    }

    /// Sets bits 7:0.
    pub fn set_vector(&mut self, vector: u8) {
        self.0 = (self.0 & !RTE_VECTOR) | u64::from(vector);
    }

    /// Bits 10:8.
    pub fn delivery_mode(self) -> DeliveryMode {
        DeliveryMode::from_bits(((self.0 & RTE_DELIVERY_MODE) >> RTE_DELIVERY_MODE_SHIFT) as u8)
    }

    /// Sets bits 10:8.
    pub fn set_delivery_mode(&mut self, mode: DeliveryMode) {
        self.0 =
            (self.0 & !RTE_DELIVERY_MODE) | (u64::from(mode.bits()) << RTE_DELIVERY_MODE_SHIFT);
    }

    /// Bit 11.
    pub fn destination_mode(self) -> DestinationMode {
        self.choose(
            RTE_DEST_MODE,
            DestinationMode::Logical,
            DestinationMode::Physical,
        )
    }

    /// Sets bit 11.
    pub fn set_destination_mode(&mut self, mode: DestinationMode) {
        self.set_bit(RTE_DEST_MODE, mode == DestinationMode::Logical);
    }

    /// Bit 12 (read-only to the guest). Delivery here is immediate, so it always reads 0.
    pub fn delivery_status(self) -> bool {
        self.bit(RTE_DELIVERY_STATUS)
    }

    /// Bit 13.
    pub fn polarity(self) -> Polarity {
        self.choose(RTE_POLARITY, Polarity::ActiveLow, Polarity::ActiveHigh)
    }

    /// Sets bit 13.
    pub fn set_polarity(&mut self, polarity: Polarity) {
        self.set_bit(RTE_POLARITY, polarity == Polarity::ActiveLow);
    }

    /// Bit 14 (read-only to the guest).
    pub fn remote_irr(self) -> bool {
        self.bit(RTE_REMOTE_IRR)
    }

    /// Sets bit 14 (the device's own bookkeeping; guest writes never change it).
    pub(crate) fn set_remote_irr(&mut self, on: bool) {
        self.set_bit(RTE_REMOTE_IRR, on);
    }

    /// Bit 15.
    pub fn trigger_mode(self) -> TriggerMode {
        self.choose(RTE_TRIGGER_LEVEL, TriggerMode::Level, TriggerMode::Edge)
    }

    /// Sets bit 15.
    pub fn set_trigger_mode(&mut self, mode: TriggerMode) {
        self.set_bit(RTE_TRIGGER_LEVEL, mode == TriggerMode::Level);
    }

    /// Whether bit 15 says level.
    pub fn is_level(self) -> bool {
        self.trigger_mode() == TriggerMode::Level
    }

    /// Bit 16.
    pub fn masked(self) -> bool {
        self.bit(RTE_MASK)
    }

    /// Sets bit 16.
    pub fn set_masked(&mut self, masked: bool) {
        self.set_bit(RTE_MASK, masked);
    }

    /// Bits 63:56.
    pub fn destination(self) -> u8 {
        (self.0 >> RTE_DEST_SHIFT) as u8
    }

    /// Sets bits 63:56.
    pub fn set_destination(&mut self, dest: u8) {
        self.0 = (self.0 & !RTE_DEST) | (u64::from(dest) << RTE_DEST_SHIFT);
    }

    /// Whether `bit` is set.
    fn bit(self, bit: u64) -> bool {
        self.0 & bit != 0
    }

    /// `set` where `bit` is set, `clear` where it is not: the one-bit fields that name
    /// one of two modes (destination mode, polarity, trigger mode).
    fn choose<T>(self, bit: u64, set: T, clear: T) -> T {
        if self.bit(bit) {
            set
        } else {
            clear
        }
    }

    fn set_bit(&mut self, bit: u64, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_match_the_bit_layout() {
        // dest 0x3a, masked, level, polarity low, logical, SMI, vector 0x5f.
        let e = RedirectionEntry::from_raw(0x3a00_0000_0000_aa5f | RTE_MASK);
        assert_eq!(e.vector(), 0x5f);
        assert_eq!(e.delivery_mode(), DeliveryMode::Smi);
        assert_eq!(e.destination_mode(), DestinationMode::Logical);
        assert!(!e.delivery_status());
        assert_eq!(e.polarity(), Polarity::ActiveLow);
        assert!(!e.remote_irr());
        assert_eq!(e.trigger_mode(), TriggerMode::Level);
        assert!(e.masked());
        assert_eq!(e.destination(), 0x3a);

        let mut f = RedirectionEntry::RESET;
        f.set_vector(0x5f);
        f.set_delivery_mode(DeliveryMode::Smi);
        f.set_destination_mode(DestinationMode::Logical);
        f.set_polarity(Polarity::ActiveLow);
        f.set_trigger_mode(TriggerMode::Level);
        f.set_destination(0x3a);
        assert_eq!(f, e);
        assert_eq!(f.low(), 0x0001_aa5f);
        assert_eq!(f.high(), 0x3a00_0000);
    }

    #[test]
    fn reserved_bits_are_dropped_and_modes_round_trip() {
        assert_eq!(RedirectionEntry::from_raw(u64::MAX).raw(), RTE_DEFINED);
        for b in 0..8u8 {
            assert_eq!(DeliveryMode::from_bits(b).bits(), b);
        }
        assert_eq!(RedirectionEntry::default(), RedirectionEntry::RESET);
        assert!(RedirectionEntry::RESET.masked());
        assert_eq!(RTE_WRITABLE & 0xFFFF_FFFF, 0x0001_AFFF);
    }
}
