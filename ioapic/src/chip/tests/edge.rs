//! Edge-triggered pins (rising edges only, masked edges dropped), and polarity.

use super::*;

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
