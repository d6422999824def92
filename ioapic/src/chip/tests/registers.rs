//! The indirect registers (IOREGSEL, version, ID / arbitration, the redirection table's
//! read-only and reserved bits), and MMIO accesses of odd offsets and sizes.

use super::*;

// -- Registers ---------------------------------------------------------------------------------

#[test]
fn ioregsel_is_an_8_bit_register_of_any_access_size() {
    let mut io = new20();
    for (size, value, expect) in [
        (1u8, 0x0fu64, 0x0f),
        (2, 0xf0f0, 0xf0),
        (4, 0xdead_be01, 0x01),
        (1, 0xff, 0xff),
    ] {
        io.mmio_write(IOREGSEL, size, value, &mut Vec::new());
        assert_eq!(io.mmio_read(IOREGSEL, size), expect);
        assert_eq!(io.ioregsel(), expect as u8);
    }
}

#[test]
fn version_register_is_read_only_and_reports_max_entry() {
    let mut io = new20();
    let before = read_reg(&mut io, REG_VER);
    assert_eq!(before, 0x0017_0020);
    write_reg(&mut io, REG_VER, !before);
    assert_eq!(read_reg(&mut io, REG_VER), before);

    let mut io = Ioapic::new(48, Version::V11, 0).unwrap();
    assert_eq!(read_reg(&mut io, REG_VER), 0x002F_0011);
    let mut io = Ioapic::new(MAX_PINS, Version::V20, 0).unwrap();
    assert_eq!(read_reg(&mut io, REG_VER), 0x0077_0020);
}

#[test]
fn id_keeps_bits_27_24_and_arbitration_mirrors_it_read_only() {
    let mut io = Ioapic::new(DEFAULT_PINS, Version::V20, 3).unwrap();
    assert_eq!(read_reg(&mut io, REG_ID), 0x0300_0000);
    write_reg(&mut io, REG_ID, 0x1f3e_5d7c);
    assert_eq!(read_reg(&mut io, REG_ID), 0x0f00_0000);
    assert_eq!(read_reg(&mut io, REG_ARB), 0x0f00_0000);
    write_reg(&mut io, REG_ARB, !0x1f3e_5d7c);
    assert_eq!(read_reg(&mut io, REG_ARB), 0x0f00_0000);
    assert_eq!(io.id(), 0xf);
    assert!(Ioapic::new(24, Version::V20, 16).is_err());
    assert!(Ioapic::new(0, Version::V20, 0).is_err());
    assert!(Ioapic::new(121, Version::V20, 0).is_err());
}

#[test]
fn unimplemented_indirect_registers_read_zero_and_ignore_writes() {
    let mut io = new20();
    for index in [0x03u8, 0x0f, REG_REDTBL + 2 * DEFAULT_PINS, 0xff] {
        assert!(write_reg(&mut io, index, 0xffff_ffff).is_empty());
        assert_eq!(read_reg(&mut io, index), 0);
    }
}

#[test]
fn entries_reset_masked_and_round_trip_with_reserved_bits_zero() {
    let mut io = new20();
    for pin in 0..DEFAULT_PINS {
        assert_eq!(read_entry(&mut io, pin), RedirectionEntry::RESET);
    }
    let mut e = entry(TriggerMode::Level);
    e.set_delivery_mode(DeliveryMode::LowestPriority);
    e.set_destination_mode(DestinationMode::Logical);
    e.set_polarity(Polarity::ActiveLow);
    e.set_masked(true);
    write_entry(&mut io, 7, e);
    assert_eq!(read_entry(&mut io, 7), e);
    // Reserved bits 55:17 do not stick.
    write_reg(&mut io, REG_REDTBL + 15, 0x00ff_ffff | 0x4200_0000);
    write_reg(&mut io, REG_REDTBL + 14, 0xfffe_0000 | e.low());
    assert_eq!(
        read_entry(&mut io, 7).raw(),
        (e.raw() & 0x00ff_ffff_ffff_ffff) | 0x4200_0000u64 << 32
    );
    // The last of 120 entries is reachable at 0xFE/0xFF.
    let mut io = Ioapic::new(MAX_PINS, Version::V20, 0).unwrap();
    write_reg(&mut io, 0xff, 0x0500_0000);
    assert_eq!(io.entry(MAX_PINS - 1).unwrap().destination(), 5);
}

#[test]
fn remote_irr_and_delivery_status_are_read_only() {
    let mut io = set_up(TriggerMode::Level);
    assert_eq!(assert_line(&mut io, PIN, true), vec![expected_msi()]);
    let mut e = read_entry(&mut io, PIN);
    assert!(e.remote_irr());
    assert!(
        !e.delivery_status(),
        "delivery is immediate: status reads idle"
    );
    // Writing Remote IRR = 0 (or delivery status = 1) changes nothing.
    e.set_remote_irr(false);
    write_reg(
        &mut io,
        REG_REDTBL + 2 * PIN,
        e.low() | RTE_DELIVERY_STATUS as u32,
    );
    let after = read_entry(&mut io, PIN);
    assert!(after.remote_irr());
    assert!(!after.delivery_status());
    // And on an idle pin, writing Remote IRR = 1 does not set it.
    write_reg(
        &mut io,
        REG_REDTBL + 2,
        entry(TriggerMode::Level).low() | RTE_REMOTE_IRR as u32,
    );
    assert!(!read_entry(&mut io, 1).remote_irr());
}

// -- MMIO edge cases ---------------------------------------------------------------------------

#[test]
fn odd_accesses_read_all_ones_and_writes_are_dropped() {
    let mut io = set_up(TriggerMode::Level);
    let snapshot = io.snapshot();
    for (offset, size) in [
        (0x00u64, 8u8),
        (0x01, 1),
        (0x03, 1),
        (0x04, 4),
        (0x10, 1),
        (0x10, 2),
        (0x12, 2),
        (0x10, 8),
        (0x14, 4),
        (0x20, 4),
        (0x40, 8),
        (0x41, 1),
        (0x44, 4),
        (0xfc, 4),
        (0xff, 1),
    ] {
        let expect = if size == 8 {
            u64::MAX
        } else {
            (1u64 << (8 * size)) - 1
        };
        assert_eq!(
            io.mmio_read(offset, size),
            expect,
            "read at {offset:#x}/{size}"
        );
        let mut out = Vec::new();
        io.mmio_write(
            offset,
            size,
            0xffff_ffff_ffff_ffff >> (64 - 8 * u32::from(size)),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(
            io.snapshot(),
            snapshot,
            "write at {offset:#x}/{size} dropped"
        );
    }
    // The EOI register reads 0 on 0x20.
    assert_eq!(io.mmio_read(EOI, 4), 0);
}

#[test]
fn no_access_panics() {
    for version in [Version::V11, Version::V20] {
        for pins in [1u8, 24, MAX_PINS] {
            let mut io = Ioapic::new(pins, version, 0).unwrap();
            let mut out = Vec::new();
            for sel in 0..=255u8 {
                io.mmio_write(IOREGSEL, 1, sel.into(), &mut out);
                for offset in 0..0x110u64 {
                    for size in [1u8, 2, 4, 8, 0, 3, 16] {
                        let _ = io.mmio_read(offset, size);
                        io.mmio_write(offset, size, 0x0001_0000 | u64::from(sel), &mut out);
                    }
                }
                let _ = io.mmio_read(u64::MAX, 4);
                io.mmio_write(u64::MAX - 3, 4, 0, &mut out);
            }
            io.set_asserted(pins, true, &mut out);
            io.set_line(255, true, &mut out);
            assert!(!io.is_asserted(255));
            assert!(io.entry(pins).is_none());
        }
    }
}
