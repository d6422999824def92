//! Snapshot and restore: a round trip in the middle of an interrupt, and what restore
//! refuses.

use super::*;

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
