//! Unit tests of the executor against the scripted fake: partial counts, rollback, E2BIG,
//! transient retries, MSI rebinding, deassignment from dom_io.

use super::fake::FakeChannel;
use super::*;

/// Xen 4.17's map_mmio_regions on 4 KiB pages: 64 frames a call.
fn xen_like(op: &PtOp) -> Result<u64, i32> {
    match *op {
        PtOp::MemoryMapping { nr, .. } if nr > 64 => Ok(64),
        _ => Ok(0),
    }
}

#[test]
fn memory_mapping_loops_over_partial_counts() {
    let (c, log) = FakeChannel::with_rule(3, Box::new(xen_like));
    let mut x = PassthroughExecutor::new(Box::new(c));
    x.map_memory(0xF1000, 0xE0000, 200).unwrap();
    let sent: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .map(|o| match *o {
            PtOp::MemoryMapping { gfn, mfn, nr, add } => (gfn, mfn, nr, add),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            (0xF1000, 0xE0000, 200, true),
            (0xF1040, 0xE0040, 136, true),
            (0xF1080, 0xE0080, 72, true),
            (0xF10C0, 0xE00C0, 8, true),
        ]
    );
    log.lock().unwrap().clear();
    x.unmap_memory(0xF1000).unwrap();
    assert_eq!(log.lock().unwrap().len(), 4, "unmap loops too");
    assert_eq!(x.memory_runs().count(), 0);
}

#[test]
fn failed_map_rolls_back_what_it_mapped() {
    let mut calls = 0;
    let (c, log) = FakeChannel::with_rule(
        3,
        Box::new(move |op| match *op {
            PtOp::MemoryMapping { add: true, .. } => {
                calls += 1;
                if calls == 1 {
                    Ok(64)
                } else {
                    Err(libc::ENOMEM)
                }
            }
            _ => Ok(0),
        }),
    );
    let mut x = PassthroughExecutor::new(Box::new(c));
    let e = x.map_memory(0x100, 0x200, 100).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOMEM));
    let l = log.lock().unwrap();
    assert_eq!(
        l.last(),
        Some(&PtOp::MemoryMapping {
            gfn: 0x100,
            mfn: 0x200,
            nr: 64,
            add: false
        })
    );
    assert_eq!(x.memory_runs().count(), 0);
}

#[test]
fn e2big_halves_the_batch() {
    let (c, log) = FakeChannel::with_rule(
        3,
        Box::new(|op| match *op {
            PtOp::MemoryMapping { nr, .. } if nr > 16 => Err(libc::E2BIG),
            _ => Ok(0),
        }),
    );
    let mut x = PassthroughExecutor::new(Box::new(c));
    x.map_memory(0, 0, 40).unwrap();
    let nrs: Vec<u64> = log
        .lock()
        .unwrap()
        .iter()
        .map(|o| match *o {
            PtOp::MemoryMapping { nr, .. } => nr,
            _ => 0,
        })
        .collect();
    assert_eq!(nrs, vec![40, 20, 10, 10, 10, 10]);
    // After a partial count the largest batch is halved, not the remaining chunk.
}

#[test]
fn only_transient_errors_are_retried() {
    let mut n = 0;
    let (c, log) = FakeChannel::with_rule(
        3,
        Box::new(move |op| match op {
            PtOp::AssignDevice { .. } => {
                n += 1;
                if n < 3 {
                    Err(libc::EBUSY)
                } else {
                    Ok(0)
                }
            }
            PtOp::MapPirqMsi(..) => Err(libc::EOPNOTSUPP),
            _ => Ok(0),
        }),
    );
    let mut x = PassthroughExecutor::new(Box::new(c));
    x.assign(0x100).unwrap();
    assert_eq!(log.lock().unwrap().len(), 3);
    let e = x
        .bind_msi(MsiBind {
            sbdf: 0x100,
            entry: 0,
            table_base: 0,
            nvec: 4,
            gvec: 0x40,
            gflags: 0,
            gtable: 0,
        })
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EOPNOTSUPP));
    assert_eq!(
        log.lock().unwrap().len(),
        4,
        "EOPNOTSUPP is an answer, not retried"
    );
    assert!(x.pirq(0x100, 0).is_none());
}

#[test]
fn rebind_keeps_the_pirq_and_a_new_gtable_unbinds_first() {
    let (c, log) = FakeChannel::new(3);
    let mut x = PassthroughExecutor::new(Box::new(c));
    let b = MsiBind {
        sbdf: 0x100,
        entry: 2,
        table_base: 0xE000_0000,
        nvec: 1,
        gvec: 0x30,
        gflags: 0x1_0000,
        gtable: 0xF100_0000,
    };
    assert_eq!(x.bind_msi(b).unwrap(), 102);
    x.bind_msi(MsiBind { gvec: 0x31, ..b }).unwrap();
    x.bind_msi(MsiBind {
        gtable: 0xF200_0000,
        ..b
    })
    .unwrap();
    // The ops' names as they serialise: the same few lines as xen-abi's own test of the
    // names, repeated on purpose (the crates share no test-only helper).
    let names: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|o| {
            serde_json::to_value(o).unwrap()["op"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        [
            "map_pirq_msi",
            "bind_pt_irq_msi",
            "bind_pt_irq_msi",
            "unbind_pt_irq_msi",
            "bind_pt_irq_msi"
        ]
    );
    x.unbind_all(0x100).unwrap();
    assert!(x.pirq(0x100, 2).is_none());
}

#[test]
fn deassign_takes_a_quarantined_function_back_from_dom_io() {
    let (c, log) = FakeChannel::with_rule(
        3,
        Box::new(|op| match op {
            PtOp::DeassignDevice {
                from_dom_io: false, ..
            } => Err(libc::ESRCH),
            _ => Ok(0),
        }),
    );
    let mut x = PassthroughExecutor::new(Box::new(c));
    x.assign(0x100).unwrap();
    x.deassign(0x100).unwrap();
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&PtOp::DeassignDevice {
            sbdf: 0x100,
            from_dom_io: true
        })
    );
    assert!(x.status()["assigned"].as_array().unwrap().is_empty());
}
