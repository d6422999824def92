//! Level-triggered pins: Remote IRR, coalescing until the EOI, re-delivery, masking, the
//! edge/level toggle Linux uses as an EOI on 0x11, and the EOI hook.

use super::*;

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
