//! Requests the broker accepts reach Xen or the device exactly once; and a worker's
//! executor and backend against the broker over a real socketpair.

use super::*;

#[test]
fn accepted_requests_reach_it_exactly_once() {
    let mut r = rig();
    let vf = VF.sbdf();
    let legacy = LEGACY.sbdf();
    let gtable = GUEST_MMIO.0 + 0x10_0000;
    let accepted = vec![
        PtOp::TestAssignDevice { sbdf: vf },
        PtOp::PrepareMsix { sbdf: vf },
        PtOp::AssignDevice { sbdf: vf },
        PtOp::IomemPermission {
            mfn: BAR3_MFN,
            nr: 4,
            allow: true,
        },
        PtOp::IomemPermission {
            mfn: 0xFE000,
            nr: 1,
            allow: true,
        },
        PtOp::IoportPermission {
            port: 0xC000,
            nr: 0x100,
            allow: true,
        },
        mm(GFN, BAR0_MFN, 16),
        mm(GFN + 0x101, BAR3_MFN + 1, 1),
        mm(GFN + 0x103, BAR3_MFN + 3, 1),
        PtOp::IoportMapping {
            gport: 0x6000,
            mport: 0xC000,
            nr: 0x100,
            add: true,
        },
        PtOp::MapPirqMsi(MsiMap {
            sbdf: vf,
            entry: 4,
            table_base: BAR3_MFN << 12,
            nvec: 1,
        }),
        PtOp::BindPtIrqMsi {
            pirq: 104,
            gvec: 0x40,
            gflags: 0,
            gtable,
        },
        PtOp::MapPirqMsi(MsiMap {
            sbdf: legacy,
            entry: 0,
            table_base: 0,
            nvec: 1,
        }),
        PtOp::BindPtIrqMsi {
            pirq: 100,
            gvec: 0x41,
            gflags: 0,
            gtable: 0,
        },
        PtOp::UnbindPtIrqMsi {
            pirq: 104,
            gvec: 0x40,
            gflags: 0,
            gtable,
        },
        PtOp::UnmapPirq { pirq: 104 },
        PtOp::GetDomainInfo,
        PtOp::DeassignDevice {
            sbdf: vf,
            from_dom_io: true,
        },
        PtOp::ReleaseMsix { sbdf: vf },
    ];
    for op in &accepted {
        let reply = r.hc(op.clone());
        assert!(
            matches!(reply, Reply::Value { .. }),
            "{op:?} must be executed, got {reply:?}"
        );
    }
    assert_eq!(
        *r.ops.lock().unwrap(),
        accepted,
        "each accepted op exactly once"
    );
    // The unmapped pirq is no longer the guest's; a second map of a mapped entry is refused.
    assert!(matches!(
        r.hc(PtOp::BindPtIrqMsi {
            pirq: 104,
            gvec: 0x40,
            gflags: 0,
            gtable,
        }),
        Reply::Refused { .. }
    ));
    assert!(matches!(
        r.hc(PtOp::MapPirqMsi(MsiMap {
            sbdf: legacy,
            entry: 0,
            table_base: 0,
            nvec: 1,
        })),
        Reply::Refused { .. }
    ));
    assert_eq!(r.ops.lock().unwrap().len(), accepted.len());

    // Config writes the bridge makes: Bus Master (passes through), Interrupt Disable
    // (the bridge's), MSI-X Enable + Function Mask (the bridge's), MSI Enable.
    let cmd = r.config_word(vf, crate::header::COMMAND);
    let msix_cap = r.broker_policy_msix_cap(vf);
    let msix_ctl = r.config_word(vf, msix_cap + 2);
    let msi_cap = r.broker_policy_msi_cap(legacy);
    let msi_ctl = r.config_word(legacy, msi_cap + 2);
    r.take_dev_log();
    let writes = [
        (
            vf,
            crate::header::COMMAND,
            cmd | crate::header::CMD_MASTER | crate::header::CMD_INTX_DISABLE,
        ),
        (
            vf,
            msix_cap + 2,
            msix_ctl | crate::msix::FLAGS_ENABLE | crate::msix::FLAGS_MASKALL,
        ),
        (legacy, msi_cap + 2, msi_ctl | crate::msi::FLAGS_ENABLE),
    ];
    let mut want = Vec::new();
    for (sbdf, off, v) in writes {
        let data = v.to_le_bytes().to_vec();
        let reply = r.ask(Request::ConfigWrite {
            sbdf,
            offset: off,
            data: data.clone(),
        });
        assert!(matches!(reply, Reply::Value { .. }), "{reply:?}");
        want.push(format!("read_config {off:#x} 2"));
        want.push(format!("write_config {off:#x} {data:02x?}"));
    }
    let reply = r.ask(Request::Sysfs {
        sbdf: vf,
        op: SysfsOp::Reset,
    });
    assert!(matches!(reply, Reply::Sysfs { .. }), "{reply:?}");
    want.push("reset".into());
    let reply = r.ask(Request::BarRead {
        sbdf: vf,
        bar: 3,
        offset: 0x2000,
        len: 8,
    });
    assert!(matches!(reply, Reply::Bytes { .. }), "{reply:?}");
    want.push("read_bar 3 0x2000 8".into());
    assert_eq!(r.take_dev_log(), want);
}

/// The worker's executor and backend over a real socketpair, the broker in another thread
/// (as it will be another process), until the worker closes its end.
#[test]
fn worker_and_broker_over_a_socketpair() {
    let (worker_end, broker_end) = seqpacket::pair().unwrap();
    let broker = std::thread::spawn(move || {
        let mut r = rig();
        r.broker
            .serve(std::os::fd::AsFd::as_fd(&broker_end))
            .expect("serve until EOF");
        let ops = r.ops.lock().unwrap().clone();
        (ops, r.broker.stats(), r.take_dev_log())
    });
    let client = Arc::new(BrokerClient::new(worker_end));
    let mut exec = PassthroughExecutor::new(Box::new(BrokerChannel::new(client.clone(), DOMID)));
    exec.map_memory(GFN, BAR0_MFN, 16).expect("a BAR maps");
    let e = exec
        .map_memory(GFN + 0x100, BAR3_MFN, 1)
        .expect_err("the MSI-X table page is refused");
    assert!(matches!(e, PtError::Channel { .. }), "{e:?}");
    let pirq = exec
        .bind_msi(MsiBind {
            sbdf: VF.sbdf(),
            entry: 1,
            table_base: BAR3_MFN << 12,
            nvec: 1,
            gvec: 0x50,
            gflags: 0,
            gtable: GUEST_MMIO.0 + 0x10_0000,
        })
        .expect("bind");
    assert_eq!(pirq, 101);
    exec.unbind_msi(VF.sbdf(), 1).expect("unbind");
    let snap = snapshot(VF);
    let mut dev = BrokerDevice::new(client.clone(), VF, DeviceFacts::of(&snap));
    let mut direct = vec![0u8; 256];
    let mut brokered = vec![0u8; 256];
    snap.read_config(0, &mut direct).unwrap();
    dev.read_config(0, &mut brokered).unwrap();
    assert_eq!(direct, brokered);
    assert!(
        dev.write_config(0x10, &[0xFF; 4]).is_err(),
        "a BAR register is virtual"
    );
    crate::backend::set_interrupt_disable(&mut dev, true).expect("INTx Disable is the bridge's");
    drop((exec, dev, client));
    let (ops, stats, log) = broker.join().expect("the broker ends at EOF");
    assert_eq!(
        ops,
        vec![
            mm(GFN, BAR0_MFN, 16),
            PtOp::MapPirqMsi(MsiMap {
                sbdf: VF.sbdf(),
                entry: 1,
                table_base: BAR3_MFN << 12,
                nvec: 1
            }),
            PtOp::BindPtIrqMsi {
                pirq: 101,
                gvec: 0x50,
                gflags: 0,
                gtable: GUEST_MMIO.0 + 0x10_0000
            },
            PtOp::UnbindPtIrqMsi {
                pirq: 101,
                gvec: 0x50,
                gflags: 0,
                gtable: GUEST_MMIO.0 + 0x10_0000
            },
            PtOp::UnmapPirq { pirq: 101 },
        ]
    );
    assert_eq!(stats.refused, 2);
    assert_eq!(
        log.iter().filter(|l| l.starts_with("write_config")).count(),
        1,
        "{log:?}"
    );
}
