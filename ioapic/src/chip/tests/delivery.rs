//! Delivery: the MSI an entry sends, decoded as Xen's `hvm_inject_msi` does, and the
//! vectors and delivery modes that cannot be injected.

use super::*;

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
