//! Requests the broker must refuse (another domain, frames and ports outside the
//! functions' BARs and the guest's windows, another device, virtual registers, odd accesses),
//! none of which may reach Xen or the device; and messages of another version or garbage.

use super::*;

#[test]
fn refused_requests_reach_neither_xen_nor_the_device() {
    let mut r = rig();
    let vf = VF.sbdf();
    let legacy = LEGACY.sbdf();
    let vf_cmd = r.config_word(vf, crate::header::COMMAND);
    r.take_dev_log();
    let hypercalls = [
        // Another domid, with an op that would otherwise pass.
        Request::Hypercall {
            domid: DOMID + 1,
            op: mm(GFN, BAR0_MFN, 16),
        },
        Request::Hypercall {
            domid: 0,
            op: PtOp::GetDomainInfo,
        },
        // Host frames outside every BAR; one past the end of BAR0; straddling two BARs.
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, 0x1000, 1),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR0_MFN, 17),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR0_MFN + 15, 0x100_0000),
        },
        // The MSI-X table page, the PBA page, and a run over page 1 that reaches the PBA.
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR3_MFN, 1),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR3_MFN + 2, 1),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, BAR3_MFN + 1, 2),
        },
        // The sub-page BAR's frame (it may hold another function's registers).
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN, 0xFE000, 1),
        },
        // A good host run to guest frames outside the windows (dom0 RAM, the guest's RAM).
        Request::Hypercall {
            domid: DOMID,
            op: mm(0x100, BAR0_MFN, 16),
        },
        Request::Hypercall {
            domid: DOMID,
            op: mm(GFN + 0xFFFF, BAR0_MFN, 16),
        },
        // Ports outside the I/O BAR, and to guest ports outside the window.
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IoportMapping {
                gport: 0x6000,
                mport: 0x60,
                nr: 1,
                add: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IoportMapping {
                gport: 0x60,
                mport: 0xC000,
                nr: 0x100,
                add: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IomemPermission {
                mfn: 0xFEE00,
                nr: 1,
                allow: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IoportPermission {
                port: 0xCF8,
                nr: 8,
                allow: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::IrqPermission {
                pirq: 9,
                allow: true,
            },
        },
        // Another device: assignment and a pirq for its SBDF.
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::AssignDevice { sbdf: OTHER },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::DeassignDevice {
                sbdf: OTHER,
                from_dom_io: true,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: OTHER,
                entry: 0,
                table_base: 0,
                nvec: 1,
            }),
        },
        // Beyond the VF's 5 MSI-X entries; a table_base that is not the BAR's address;
        // more MSI vectors than the legacy device has; MSI-X for a function without it.
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: vf,
                entry: 5,
                table_base: BAR3_MFN << 12,
                nvec: 1,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: vf,
                entry: 0,
                table_base: (BAR3_MFN << 12) + 0x1000,
                nvec: 1,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: legacy,
                entry: 0,
                table_base: 0,
                nvec: 32,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::MapPirqMsi(MsiMap {
                sbdf: legacy,
                entry: 0,
                table_base: 0xFE00_0000,
                nvec: 1,
            }),
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::PrepareMsix { sbdf: legacy },
        },
        // Pirqs this broker never mapped (dom0's own devices' pirqs).
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::BindPtIrqMsi {
                pirq: 16,
                gvec: 0x30,
                gflags: 0,
                gtable: 0,
            },
        },
        Request::Hypercall {
            domid: DOMID,
            op: PtOp::UnmapPirq { pirq: 16 },
        },
    ];
    let device = [
        // Virtual registers: a BAR, the MSI-X table offset, the MSI address.
        Request::ConfigWrite {
            sbdf: vf,
            offset: 0x10,
            data: vec![0xFF; 4],
        },
        Request::ConfigWrite {
            sbdf: legacy,
            offset: 0x14,
            data: vec![0x00, 0x10, 0x00, 0xFE],
        },
        // Memory Space in the command register is the bridge's (host decode stays on).
        Request::ConfigWrite {
            sbdf: vf,
            offset: crate::header::COMMAND,
            data: (vf_cmd ^ crate::header::CMD_MEMORY).to_le_bytes().to_vec(),
        },
        // Unaligned, too wide, outside config space.
        Request::ConfigWrite {
            sbdf: vf,
            offset: 0x05,
            data: vec![0, 0],
        },
        Request::ConfigWrite {
            sbdf: vf,
            offset: 0x04,
            data: vec![0; 8],
        },
        Request::ConfigWrite {
            sbdf: legacy,
            offset: 0x100,
            data: vec![0],
        },
        // A function not assigned.
        Request::ConfigWrite {
            sbdf: OTHER,
            offset: 0x04,
            data: vec![0, 0],
        },
        Request::ConfigRead {
            sbdf: OTHER,
            offset: 0,
            len: 4,
        },
        Request::ConfigRead {
            sbdf: legacy,
            offset: 0xFC,
            len: 8,
        },
        // The host's MSI-X table and PBA; outside a BAR; unaligned.
        Request::BarWrite {
            sbdf: vf,
            bar: 3,
            offset: 0x10,
            data: vec![0; 4],
        },
        Request::BarWrite {
            sbdf: vf,
            bar: 3,
            offset: 0x2000,
            data: vec![0; 8],
        },
        Request::BarWrite {
            sbdf: legacy,
            bar: 6,
            offset: 0,
            data: vec![0; 4],
        },
        Request::BarRead {
            sbdf: vf,
            bar: 3,
            offset: 0x4000,
            len: 4,
        },
        Request::BarRead {
            sbdf: vf,
            bar: 0,
            offset: 0xFFFE,
            len: 4,
        },
        Request::BarRead {
            sbdf: vf,
            bar: 0,
            offset: 0,
            len: 3,
        },
        Request::BarRead {
            sbdf: vf,
            bar: 2,
            offset: 0,
            len: 4,
        },
        // Sysfs operations on a function not assigned.
        Request::Sysfs {
            sbdf: OTHER,
            op: SysfsOp::Reset,
        },
        Request::Sysfs {
            sbdf: OTHER,
            op: SysfsOp::DetachDriver,
        },
        Request::Sysfs {
            sbdf: OTHER,
            op: SysfsOp::EnableDecode,
        },
    ];
    let n = hypercalls.len() + device.len();
    for req in hypercalls.into_iter().chain(device) {
        let what = format!("{req:?}");
        let reply = r.ask(req);
        assert!(
            matches!(reply, Reply::Refused { .. }),
            "{what} must be refused, got {reply:?}"
        );
    }
    assert!(
        r.ops.lock().unwrap().is_empty(),
        "a refused hypercall reached Xen"
    );
    // The config-write checks read the current value; nothing else reached the device.
    let log = r.take_dev_log();
    assert!(
        log.iter().all(|l| l.starts_with("read_config")),
        "a refused request reached the device: {log:?}"
    );
    assert_eq!(r.broker.stats().refused, n as u64);
    assert_eq!(r.broker.stats().executed, 1, "only the first config read");
}

#[test]
fn another_version_and_garbage_get_one_refusal_each() {
    let mut r = rig();
    let msg = br#"{"version":2,"seq":9,"req":{"kind":"something_new"}}"#;
    let reply: Reply = proto::decode(&r.broker.handle_message(msg)).unwrap();
    assert!(
        matches!(&reply, Reply::Refused { seq: 9, reason } if reason.contains("version 2")),
        "{reply:?}"
    );
    let reply: Reply = proto::decode(&r.broker.handle_message(b"\x00\xff")).unwrap();
    assert!(matches!(reply, Reply::Refused { seq: 0, .. }), "{reply:?}");
    assert!(r.ops.lock().unwrap().is_empty());
}
