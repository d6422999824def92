//! Unit tests of the state machine (crosvm's IOAPIC tests served as a checklist).
//!
//! This file holds the helpers every test uses (register and entry access, a set-up pin, the
//! MSI it sends); the tests are in `registers` (the indirect registers and odd MMIO
//! accesses), `level` and `edge` (the two trigger modes, polarity with the latter),
//! `delivery` (the MSI as Xen decodes it) and `snapshot`.

use super::*;

mod delivery;
mod edge;
mod level;
mod registers;
mod snapshot;

const PIN: u8 = 5;
const VECTOR: u8 = 0x31;

fn new20() -> Ioapic {
    Ioapic::new(DEFAULT_PINS, Version::V20, 0).unwrap()
}

fn read_reg(io: &mut Ioapic, index: u8) -> u32 {
    io.mmio_write(IOREGSEL, 4, index.into(), &mut Vec::new());
    io.mmio_read(IOWIN, 4) as u32
}

fn write_reg(io: &mut Ioapic, index: u8, value: u32) -> Vec<Msi> {
    let mut out = Vec::new();
    io.mmio_write(IOREGSEL, 4, index.into(), &mut out);
    io.mmio_write(IOWIN, 4, value.into(), &mut out);
    out
}

fn read_entry(io: &mut Ioapic, pin: u8) -> RedirectionEntry {
    let low = read_reg(io, REG_REDTBL + 2 * pin);
    let high = read_reg(io, REG_REDTBL + 2 * pin + 1);
    RedirectionEntry::from_raw(u64::from(low) | u64::from(high) << 32)
}

/// Writes high then low, as Linux does.
fn write_entry(io: &mut Ioapic, pin: u8, e: RedirectionEntry) -> Vec<Msi> {
    let mut out = write_reg(io, REG_REDTBL + 2 * pin + 1, e.high());
    out.extend(write_reg(io, REG_REDTBL + 2 * pin, e.low()));
    out
}

fn entry(trigger: TriggerMode) -> RedirectionEntry {
    let mut e = RedirectionEntry::RESET;
    e.set_vector(VECTOR);
    e.set_trigger_mode(trigger);
    e.set_destination(3);
    e.set_masked(false);
    e
}

fn set_up(trigger: TriggerMode) -> Ioapic {
    let mut io = new20();
    assert!(write_entry(&mut io, PIN, entry(trigger)).is_empty());
    io
}

fn set_mask(io: &mut Ioapic, pin: u8, masked: bool) -> Vec<Msi> {
    let mut e = read_entry(io, pin);
    e.set_masked(masked);
    write_entry(io, pin, e)
}

fn assert_line(io: &mut Ioapic, pin: u8, level: bool) -> Vec<Msi> {
    let mut out = Vec::new();
    io.set_asserted(pin, level, &mut out);
    out
}

fn eoi(io: &mut Ioapic, vector: u8) -> Vec<Msi> {
    let mut out = Vec::new();
    io.mmio_write(EOI, 4, vector.into(), &mut out);
    out
}

fn expected_msi() -> Msi {
    Msi {
        addr: 0xFEE0_3000,
        data: u32::from(VECTOR),
    }
}
