//! Unit tests of the state machine (crosvm's IOAPIC tests served as a checklist).

use super::*;

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

// -- Level pins --------------------------------------------------------------------------------

#[test]
fn level_pin_delivers_once_and_sets_remote_irr() {
    let mut io = set_up(TriggerMode::Level);
    assert_eq!(assert_line(&mut io, PIN, true), vec![expected_msi()]);
    assert!(io.entry(PIN).unwrap().remote_irr());
    assert!(assert_line(&mut io, PIN, false).is_empty());
    assert!(
        io.entry(PIN).unwrap().remote_irr(),
        "deassert does not clear Remote IRR"
    );
}

#[test]
fn level_interrupts_coalesce_until_eoi() {
    let mut io = set_up(TriggerMode::Level);
    let mut n = 0;
    for level in [true, false, true, false, true] {
        n += assert_line(&mut io, PIN, level).len();
    }
    assert_eq!(n, 1);
}

#[test]
fn eoi_redelivers_while_the_line_is_asserted() {
    let mut io = set_up(TriggerMode::Level);
    assert_line(&mut io, PIN, true);
    assert_eq!(
        eoi(&mut io, VECTOR),
        vec![expected_msi()],
        "still asserted: re-delivered"
    );
    assert!(io.entry(PIN).unwrap().remote_irr());
    assert_line(&mut io, PIN, false);
    assert!(eoi(&mut io, VECTOR).is_empty(), "deasserted: nothing");
    assert!(!io.entry(PIN).unwrap().remote_irr());
    assert_eq!(
        assert_line(&mut io, PIN, true),
        vec![expected_msi()],
        "next assertion delivers"
    );
}

#[test]
fn eoi_matches_the_vector_of_every_entry() {
    let mut io = set_up(TriggerMode::Level);
    let mut other = entry(TriggerMode::Level);
    other.set_destination(9);
    write_entry(&mut io, 6, other);
    let mut third = entry(TriggerMode::Level);
    third.set_vector(0x40);
    write_entry(&mut io, 7, third);
    for pin in [PIN, 6, 7] {
        assert_eq!(assert_line(&mut io, pin, true).len(), 1);
        assert_line(&mut io, pin, false);
    }
    assert!(eoi(&mut io, 0x99).is_empty());
    assert!(eoi(&mut io, VECTOR).is_empty());
    assert!(!io.entry(PIN).unwrap().remote_irr());
    assert!(!io.entry(6).unwrap().remote_irr());
    assert!(io.entry(7).unwrap().remote_irr(), "other vector untouched");
    // Only bits 7:0 of the EOI write count.
    let mut out = Vec::new();
    io.mmio_write(EOI, 4, 0xabcd_ef40, &mut out);
    assert!(!io.entry(7).unwrap().remote_irr());
}

#[test]
fn eoi_register_is_ignored_on_version_0x11() {
    let mut io = Ioapic::new(DEFAULT_PINS, Version::V11, 0).unwrap();
    write_entry(&mut io, PIN, entry(TriggerMode::Level));
    assert_line(&mut io, PIN, true);
    assert_line(&mut io, PIN, false);
    assert!(eoi(&mut io, VECTOR).is_empty());
    assert!(
        io.entry(PIN).unwrap().remote_irr(),
        "no EOI register on 0x11"
    );
    assert_eq!(io.mmio_read(EOI, 4), 0xffff_ffff);
    // The direct call (what a LAPIC EOI broadcast would do) still works on 0x11.
    io.eoi(VECTOR, &mut Vec::new());
    assert!(!io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn unmasking_an_asserted_level_pin_delivers() {
    let mut io = set_up(TriggerMode::Level);
    set_mask(&mut io, PIN, true);
    assert!(assert_line(&mut io, PIN, true).is_empty(), "masked");
    assert_eq!(set_mask(&mut io, PIN, false), vec![expected_msi()]);
    assert!(
        set_mask(&mut io, PIN, false).is_empty(),
        "Remote IRR set: no second delivery"
    );
}

#[test]
fn masking_preserves_remote_irr() {
    let mut io = set_up(TriggerMode::Level);
    assert_line(&mut io, PIN, true);
    set_mask(&mut io, PIN, true);
    set_mask(&mut io, PIN, false);
    assert!(io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn level_to_edge_clears_remote_irr() {
    let mut io = set_up(TriggerMode::Level);
    assert_line(&mut io, PIN, true);
    let mut e = read_entry(&mut io, PIN);
    e.set_trigger_mode(TriggerMode::Edge);
    assert!(write_entry(&mut io, PIN, e).is_empty());
    assert!(!read_entry(&mut io, PIN).remote_irr());
}

#[test]
fn edge_level_toggle_is_an_eoi_and_redelivers() {
    // Linux's EOI on 0x11: mask + edge, then the original (level, unmasked) entry.
    for version in [Version::V11, Version::V20] {
        let mut io = Ioapic::new(DEFAULT_PINS, version, 0).unwrap();
        write_entry(&mut io, PIN, entry(TriggerMode::Level));
        assert_eq!(assert_line(&mut io, PIN, true).len(), 1);
        let original = read_entry(&mut io, PIN);
        let mut edge = original;
        edge.set_masked(true);
        edge.set_trigger_mode(TriggerMode::Edge);
        assert!(write_entry(&mut io, PIN, edge).is_empty());
        assert_eq!(
            write_entry(&mut io, PIN, original),
            vec![expected_msi()],
            "line still high"
        );
        assert!(io.entry(PIN).unwrap().remote_irr());
        // Line low at the toggle: cleared, nothing sent.
        assert_line(&mut io, PIN, false);
        write_entry(&mut io, PIN, edge);
        assert!(write_entry(&mut io, PIN, original).is_empty());
        assert!(!io.entry(PIN).unwrap().remote_irr());
    }
}

#[test]
fn reconfiguration_race_with_eoi() {
    // An entry read before the EOI and written back (as edge) after it.
    let mut io = set_up(TriggerMode::Level);
    assert_eq!(assert_line(&mut io, PIN, true).len(), 1);
    let mut e = read_entry(&mut io, PIN);
    e.set_trigger_mode(TriggerMode::Edge);
    assert_line(&mut io, PIN, false);
    assert!(eoi(&mut io, VECTOR).is_empty());
    assert!(write_entry(&mut io, PIN, e).is_empty());
    assert!(!io.entry(PIN).unwrap().remote_irr());
    assert_eq!(
        assert_line(&mut io, PIN, true).len(),
        1,
        "one edge interrupt"
    );
    assert!(assert_line(&mut io, PIN, false).is_empty());
    assert!(!io.entry(PIN).unwrap().remote_irr());
}

#[test]
fn eoi_hook_can_release_the_line() {
    /// Behaves like the device: an EOI releases the line (the source must re-sample).
    struct Releasing(Vec<u8>, Vec<Msi>);
    impl IrqOutput for Releasing {
        fn inject(&mut self, _pin: u8, msi: Msi) {
            self.1.push(msi);
        }
        fn eoi(&mut self, pin: u8, _asserted: bool) -> bool {
            self.0.push(pin);
            false
        }
    }
    let mut io = set_up(TriggerMode::Level);
    let mut out = Releasing(Vec::new(), Vec::new());
    io.set_asserted(PIN, true, &mut out);
    io.mmio_write(EOI, 4, VECTOR.into(), &mut out);
    assert_eq!(out.0, vec![PIN]);
    assert_eq!(out.1.len(), 1, "no re-delivery: the line was released");
    assert!(!io.is_asserted(PIN));
    // An EOI for a pin whose Remote IRR is already clear is not reported.
    io.mmio_write(EOI, 4, VECTOR.into(), &mut out);
    assert_eq!(out.0, vec![PIN]);
}

// -- Edge pins ---------------------------------------------------------------------------------

#[test]
fn edge_pin_fires_on_rising_edges_only() {
    let mut io = set_up(TriggerMode::Edge);
    assert_eq!(assert_line(&mut io, PIN, true), vec![expected_msi()]);
    assert!(
        assert_line(&mut io, PIN, true).is_empty(),
        "still high: no edge"
    );
    assert!(assert_line(&mut io, PIN, false).is_empty());
    assert_eq!(assert_line(&mut io, PIN, true).len(), 1);
    assert!(
        !io.entry(PIN).unwrap().remote_irr(),
        "edge never sets Remote IRR"
    );
    assert!(eoi(&mut io, VECTOR).is_empty());
    assert!(
        assert_line(&mut io, PIN, true).is_empty(),
        "EOI does not make a new edge"
    );
}

#[test]
fn masked_edges_are_ignored_not_held() {
    let mut io = set_up(TriggerMode::Edge);
    assert_eq!(assert_line(&mut io, PIN, true).len(), 1);
    set_mask(&mut io, PIN, true);
    assert_line(&mut io, PIN, false);
    assert!(assert_line(&mut io, PIN, true).is_empty());
    assert_line(&mut io, PIN, false);
    assert!(
        set_mask(&mut io, PIN, false).is_empty(),
        "nothing pending after unmask"
    );
    assert_eq!(assert_line(&mut io, PIN, true).len(), 1);
}

// -- Polarity ----------------------------------------------------------------------------------

#[test]
fn active_low_pins_fire_on_a_low_line() {
    let mut io = new20();
    let mut e = entry(TriggerMode::Level);
    e.set_polarity(Polarity::ActiveLow);
    write_entry(&mut io, PIN, e);
    let mut out = Vec::new();
    io.set_line(PIN, true, &mut out);
    assert!(out.is_empty(), "high is inactive");
    io.set_line(PIN, false, &mut out);
    assert_eq!(out, vec![expected_msi()]);
    assert!(io.is_asserted(PIN));

    let mut e = entry(TriggerMode::Edge);
    e.set_polarity(Polarity::ActiveLow);
    write_entry(&mut io, 8, e);
    out.clear();
    io.set_line(8, true, &mut out);
    assert!(out.is_empty());
    io.set_line(8, false, &mut out);
    assert_eq!(
        out.len(),
        1,
        "falling electrical edge = rising asserted edge"
    );
    // Active-high for comparison.
    write_entry(&mut io, 9, entry(TriggerMode::Edge));
    out.clear();
    io.set_line(9, false, &mut out);
    assert!(out.is_empty());
    io.set_line(9, true, &mut out);
    assert_eq!(out.len(), 1);
}

// -- Delivery ----------------------------------------------------------------------------------

/// `hvm_inject_msi` (xen/arch/x86/hvm/irq.c, xen-abi.md 2.4), field by field.
struct XenMsi {
    vector: u8,
    delivery_mode: u8,
    trigger: u8,
    dest: u8,
    dest_mode: u8,
}

fn xen_decode(addr: u64, data: u32) -> XenMsi {
    XenMsi {
        vector: (data & 0xff) as u8,
        delivery_mode: ((data >> 8) & 0x7) as u8,
        trigger: ((data >> 15) & 1) as u8,
        dest: ((addr >> 12) & 0xff) as u8,
        dest_mode: ((addr >> 2) & 1) as u8,
    }
}

#[test]
fn msi_round_trips_through_xens_decoding() {
    let mut n = 0;
    for vector in [16u8, 0x31, 0x80, 0xef, 0xff] {
        for mode in [DeliveryMode::Fixed, DeliveryMode::LowestPriority] {
            for dest_mode in [DestinationMode::Physical, DestinationMode::Logical] {
                for dest in [0u8, 1, 0x5a, 0xff] {
                    for trigger in [TriggerMode::Edge, TriggerMode::Level] {
                        let mut io = new20();
                        let mut e = entry(trigger);
                        e.set_vector(vector);
                        e.set_delivery_mode(mode);
                        e.set_destination_mode(dest_mode);
                        e.set_destination(dest);
                        write_entry(&mut io, 2, e);
                        let mut actions = ioreq_server::device::Actions::new();
                        io.set_asserted(2, true, &mut actions);
                        let [ioreq_server::device::Action::InjectMsi { addr, data }] =
                            actions.as_slice()
                        else {
                            panic!("one InjectMsi expected, got {:?}", actions.as_slice());
                        };
                        assert_eq!(addr & 0xfff0_0000, 0xfee0_0000);
                        assert_eq!(addr >> 32, 0);
                        let x = xen_decode(*addr, *data);
                        assert_eq!(x.vector, vector);
                        assert_eq!(x.delivery_mode, mode.bits());
                        assert_eq!(x.dest, dest);
                        assert_eq!(x.dest_mode, u8::from(dest_mode == DestinationMode::Logical));
                        assert_eq!(x.trigger, 0, "level entries go out as edge MSIs");
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, 5 * 2 * 2 * 4 * 2);
}

#[test]
fn low_vectors_and_uninjectable_modes_are_refused() {
    for vector in [0u8, 1, 15] {
        let mut io = new20();
        let mut e = entry(TriggerMode::Level);
        e.set_vector(vector);
        write_entry(&mut io, PIN, e);
        assert!(assert_line(&mut io, PIN, true).is_empty());
        assert!(
            !io.entry(PIN).unwrap().remote_irr(),
            "not delivered, so no Remote IRR"
        );
        // Fixing the vector delivers the pending level interrupt.
        e.set_vector(16);
        assert_eq!(write_entry(&mut io, PIN, e).len(), 1);
    }
    for mode in [
        DeliveryMode::Smi,
        DeliveryMode::Nmi,
        DeliveryMode::Init,
        DeliveryMode::ExtInt,
        DeliveryMode::Reserved(3),
        DeliveryMode::Reserved(6),
    ] {
        let mut io = set_up(TriggerMode::Edge);
        let mut e = read_entry(&mut io, PIN);
        e.set_delivery_mode(mode);
        write_entry(&mut io, PIN, e);
        assert!(
            assert_line(&mut io, PIN, true).is_empty(),
            "{mode:?} refused"
        );
    }
}

// -- Snapshot ----------------------------------------------------------------------------------

#[test]
fn snapshot_round_trips_mid_interrupt() {
    let mut io = Ioapic::new(DEFAULT_PINS, Version::V20, 4).unwrap();
    write_entry(&mut io, PIN, entry(TriggerMode::Level));
    write_entry(&mut io, 9, entry(TriggerMode::Edge));
    assert_eq!(assert_line(&mut io, PIN, true).len(), 1); // Remote IRR set, line high
    assert_line(&mut io, 9, true);
    io.mmio_write(IOREGSEL, 4, 0x1b, &mut Vec::new());

    let s = io.snapshot();
    assert_eq!(s.format, SNAPSHOT_FORMAT);
    let json = serde_json::to_string(&s).unwrap();
    let mut restored = Ioapic::restore(serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(restored.snapshot(), s);
    assert_eq!(restored.ioregsel(), 0x1b);
    assert_eq!(restored.id(), 4);
    // The restored IOAPIC continues the interrupt: no second MSI, and EOI re-delivers.
    assert!(assert_line(&mut restored, PIN, true).is_empty());
    assert_eq!(eoi(&mut restored, VECTOR), vec![expected_msi()]);
    // Pin 9 (edge) was high: no new edge until it goes low.
    assert!(assert_line(&mut restored, 9, true).is_empty());
}

#[test]
fn restore_validates() {
    let good = set_up(TriggerMode::Level).snapshot();
    let bad = |f: &dyn Fn(&mut Snapshot)| {
        let mut s = good.clone();
        f(&mut s);
        Ioapic::restore(s).unwrap_err()
    };
    assert!(matches!(
        bad(&|s| s.format = 2),
        SnapshotError::Format { found: 2, .. }
    ));
    assert!(matches!(
        bad(&|s| s.version = 0x21),
        SnapshotError::Version(0x21)
    ));
    assert!(matches!(
        bad(&|s| s.pins = 0),
        SnapshotError::Invalid(IoapicError::Pins(0))
    ));
    assert!(matches!(bad(&|s| s.pins = 121), SnapshotError::Invalid(_)));
    assert!(matches!(
        bad(&|s| s.id = 16),
        SnapshotError::Invalid(IoapicError::Id(16))
    ));
    assert!(matches!(
        bad(&|s| s.pins = 23),
        SnapshotError::Length {
            field: "entries",
            ..
        }
    ));
    assert!(matches!(
        bad(&|s| {
            s.asserted.pop();
        }),
        SnapshotError::Length {
            field: "asserted",
            ..
        }
    ));
    assert!(matches!(
        bad(&|s| s.entries[0] |= 1 << 20),
        SnapshotError::Entry { pin: 0, .. }
    ));
    assert!(matches!(
        bad(&|s| s.entries[1] |= RTE_DELIVERY_STATUS),
        SnapshotError::Entry { pin: 1, .. }
    ));
    assert!(matches!(
        bad(&|s| s.entries[2] = RTE_REMOTE_IRR),
        SnapshotError::Entry { pin: 2, .. }
    ));
    let ok = Ioapic::restore(good.clone()).unwrap();
    assert_eq!(ok.snapshot(), good);
}
