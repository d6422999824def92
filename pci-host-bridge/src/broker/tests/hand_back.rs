//! What the broker hands back: everything a worker set up when the worker is gone without
//! its teardown, nothing after a clean teardown, only dom0's side once the domain is gone.

use super::*;

/// What a worker sets up for the VF (the lifecycle's start, a mapped BAR, a bound MSI-X
/// vector, Bus Master and MSI-X Enable in the host), through the broker. Its ops are listed
/// in full, like `accepted_requests_reach_it_exactly_once`'s, on purpose: what each test
/// sends stays in view.
fn set_up_vf(r: &mut Rig) -> u64 {
    let vf = VF.sbdf();
    assert!(matches!(
        r.ask(Request::Sysfs {
            sbdf: vf,
            op: SysfsOp::EnableDecode
        }),
        Reply::Sysfs { .. }
    ));
    let gtable = GUEST_MMIO.0 + 0x10_0000;
    for op in [
        PtOp::PrepareMsix { sbdf: vf },
        PtOp::AssignDevice { sbdf: vf },
        PtOp::IomemPermission {
            mfn: BAR0_MFN,
            nr: 16,
            allow: true,
        },
        mm(GFN, BAR0_MFN, 16),
        PtOp::MapPirqMsi(MsiMap {
            sbdf: vf,
            entry: 2,
            table_base: BAR3_MFN << 12,
            nvec: 1,
        }),
        PtOp::BindPtIrqMsi {
            pirq: 102,
            gvec: 0x60,
            gflags: 0,
            gtable,
        },
    ] {
        assert!(matches!(r.hc(op), Reply::Value { .. }));
    }
    let cmd = r.config_word(vf, crate::header::COMMAND);
    let cap = r.broker_policy_msix_cap(vf);
    let ctl = r.config_word(vf, cap + 2);
    for (off, v) in [
        (crate::header::COMMAND, cmd | crate::header::CMD_MASTER),
        (cap + 2, ctl | crate::msix::FLAGS_ENABLE),
    ] {
        let reply = r.ask(Request::ConfigWrite {
            sbdf: vf,
            offset: off,
            data: v.to_le_bytes().to_vec(),
        });
        assert!(matches!(reply, Reply::Value { .. }), "{reply:?}");
    }
    r.ops.lock().unwrap().clear();
    r.take_dev_log();
    gtable
}

fn deassign(sbdf: u32, from_dom_io: bool) -> PtOp {
    PtOp::DeassignDevice { sbdf, from_dom_io }
}

/// The hypercalls of a worker's teardown of what [`set_up_vf`] set up (the MSI-X table at
/// `gtable`), in order.
fn vf_teardown(gtable: u64) -> Vec<PtOp> {
    let vf = VF.sbdf();
    vec![
        PtOp::MemoryMapping {
            gfn: GFN,
            mfn: BAR0_MFN,
            nr: 16,
            add: false,
        },
        PtOp::UnbindPtIrqMsi {
            pirq: 102,
            gvec: 0x60,
            gflags: 0,
            gtable,
        },
        PtOp::UnmapPirq { pirq: 102 },
        PtOp::ReleaseMsix { sbdf: vf },
        deassign(vf, false),
        deassign(vf, true),
        PtOp::IomemPermission {
            mfn: BAR0_MFN,
            nr: 16,
            allow: false,
        },
    ]
}

#[test]
fn a_worker_gone_without_its_teardown_is_handed_back_by_the_broker() {
    let mut r = rig();
    let gtable = set_up_vf(&mut r);
    let vf = VF.sbdf();
    let cap = r.broker_policy_msix_cap(vf);
    let Rig {
        broker,
        ops,
        dev_log,
        ..
    } = r;
    let errs = broker.hand_back();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        *ops.lock().unwrap(),
        [vec![PtOp::GetDomainInfo], vf_teardown(gtable)].concat()
    );
    let log = dev_log.lock().unwrap().clone();
    let writes: Vec<&String> = log
        .iter()
        .filter(|l| !l.starts_with("read_config"))
        .collect();
    assert_eq!(writes.len(), 4, "{log:?}");
    assert!(writes[0].starts_with("write_config 0x4 "), "{log:?}");
    assert!(
        writes[1].starts_with(&format!("write_config {:#x} ", cap + 2)),
        "{log:?}"
    );
    assert_eq!(writes[2..], ["reset", "disable_decode"]);
}

#[test]
fn after_a_clean_teardown_the_broker_has_nothing_to_hand_back() {
    let mut r = rig();
    let gtable = set_up_vf(&mut r);
    let vf = VF.sbdf();
    for op in vf_teardown(gtable) {
        assert!(matches!(r.hc(op), Reply::Value { .. }));
    }
    assert!(matches!(
        r.ask(Request::Sysfs {
            sbdf: vf,
            op: SysfsOp::DisableDecode
        }),
        Reply::Sysfs { .. }
    ));
    assert!(r.broker.ledger().is_empty(), "{:?}", r.broker.ledger());
    r.ops.lock().unwrap().clear();
    let ops = r.ops.clone();
    assert!(r.broker.hand_back().is_empty());
    assert!(ops.lock().unwrap().is_empty());
}

#[test]
fn with_the_domain_gone_only_dom0s_side_is_handed_back() {
    let dead = std::sync::atomic::AtomicBool::new(false);
    let dead = Arc::new(dead);
    let d = dead.clone();
    let mut r = rig_with(FakeChannel::with_rule(
        DOMID,
        Box::new(move |op| match op {
            PtOp::MapPirqMsi(m) => Ok(100 + u64::from(m.entry)),
            PtOp::GetDomainInfo if d.load(std::sync::atomic::Ordering::Relaxed) => Err(libc::ESRCH),
            PtOp::GetDomainInfo => Ok(256 * 256),
            // Quarantined when the domain died: only dom_io gives it back.
            PtOp::DeassignDevice {
                from_dom_io: false, ..
            } if d.load(std::sync::atomic::Ordering::Relaxed) => Err(libc::EINVAL),
            _ => Ok(0),
        }),
    ));
    set_up_vf(&mut r);
    dead.store(true, std::sync::atomic::Ordering::Relaxed);
    let vf = VF.sbdf();
    let ops = r.ops.clone();
    let errs = r.broker.hand_back();
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        *ops.lock().unwrap(),
        vec![
            PtOp::GetDomainInfo,
            PtOp::ReleaseMsix { sbdf: vf },
            deassign(vf, false),
            deassign(vf, true),
        ]
    );
}
