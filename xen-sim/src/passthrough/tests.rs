//! Unit tests of the passthrough rules, one or more per rule of the module docs.

use super::*;
use crate::host::{HostBar, HostPciDevice, MsixLayout, Owner, MSIX_ENABLE, MSIX_MASKALL};
use xen_abi::passthrough::MsiMap;

const SBDF: u32 = 0x0312;
const BAR3: u64 = 0x38_0010_8000;
const GTABLE: u64 = 0xF101_0000;

fn vf(config_file: Option<std::path::PathBuf>) -> HostPciDevice {
    let mut bars = [None; 6];
    bars[0] = Some(HostBar {
        base: 0x38_0002_0000,
        size: 0x1_0000,
    });
    bars[3] = Some(HostBar {
        base: BAR3,
        size: 0x4000,
    });
    HostPciDevice {
        sbdf: SBDF,
        bars,
        msix: Some(MsixLayout {
            entries: 5,
            table_bir: 3,
            table_offset: 0x1000,
            pba_bir: 3,
            pba_offset: 0x2000,
        }),
        config_file,
        ..Default::default()
    }
}

/// A config space with the Command register and one MSI-X capability at 0x40.
fn config_file(name: &str, command: u16, msix_ctrl: u16) -> std::path::PathBuf {
    let mut c = vec![0u8; 256];
    c[4..6].copy_from_slice(&command.to_le_bytes());
    c[6] = 0x10;
    c[0x34] = 0x40;
    c[0x40] = 0x11;
    c[0x42..0x44].copy_from_slice(&(msix_ctrl | 4).to_le_bytes());
    c[0x44..0x48].copy_from_slice(&0x1003u32.to_le_bytes());
    c[0x48..0x4C].copy_from_slice(&0x2003u32.to_le_bytes());
    let p = std::env::temp_dir().join(format!("xen-sim-unit-{}-{name}", std::process::id()));
    std::fs::write(&p, c).unwrap();
    p
}

fn set_msix_ctrl(p: &std::path::Path, ctrl: u16) {
    crate::host::write_file_at(p, 0x42, &(ctrl | 4).to_le_bytes());
}

fn setup(iommu: bool) -> (Domain, Host) {
    let mut d = Domain::new(1, 2, 16 << 20).unwrap();
    d.iommu = iommu;
    let mut h = Host::default();
    h.add(vf(None));
    (d, h)
}

fn op(d: &mut Domain, h: &mut Host, o: PtOp) -> Result<u64, i32> {
    d.passthrough(h, &o)
}

fn mm(gfn: u64, mfn: u64, nr: u64, add: bool) -> PtOp {
    PtOp::MemoryMapping { gfn, mfn, nr, add }
}

fn permit(d: &mut Domain, h: &mut Host, mfn: u64, nr: u64) {
    op(
        d,
        h,
        PtOp::IomemPermission {
            mfn,
            nr,
            allow: true,
        },
    )
    .unwrap();
}

/// deassign_device of the VF; `from_dom_io`: take it back from quarantine.
fn deassign(from_dom_io: bool) -> PtOp {
    PtOp::DeassignDevice {
        sbdf: SBDF,
        from_dom_io,
    }
}

fn map_msix(entry: u32, table_base: u64) -> PtOp {
    PtOp::MapPirqMsi(MsiMap {
        sbdf: SBDF,
        entry,
        table_base,
        nvec: 1,
    })
}

fn bind(pirq: u64, gvec: u8, unmasked: bool, gtable: u64) -> PtOp {
    PtOp::BindPtIrqMsi {
        pirq: pirq as u32,
        gvec,
        gflags: if unmasked {
            XEN_DOMCTL_VMSI_X86_UNMASKED
        } else {
            0
        },
        gtable,
    }
}

/// Assigned, prepared, entries mapped: the usual state before binds.
fn assigned_and_prepared(d: &mut Domain, h: &mut Host) {
    op(d, h, PtOp::PrepareMsix { sbdf: SBDF }).unwrap();
    op(d, h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
}

#[test]
fn memory_mapping_does_64_iterations_and_returns_the_count() {
    let (mut d, mut h) = setup(true);
    // domctl.c:472-475: no iomem permission -> EPERM, nothing mapped.
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000, 0x3800020, 100, true)),
        Err(-libc::EPERM)
    );
    permit(&mut d, &mut h, 0x3800020, 100);
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000, 0x3800020, 100, true)),
        Ok(64)
    );
    assert_eq!(d.p2m.len(), 64);
    // The caller re-invokes for the rest, as libxenctrl does.
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000 + 64, 0x3800020 + 64, 36, true)),
        Ok(0)
    );
    assert!(d.p2m_mapped(0xF100_0000, 0xF106_3FFF));
    // Re-mapping the same frames is allowed (identical mapping).
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800020, 4, true)), Ok(0));
    // Unmap of a sub-range works (no exact-match rule); partial counts here too.
    assert_eq!(op(&mut d, &mut h, mm(0xF1010, 0x3800030, 8, false)), Ok(0));
    assert!(!d.p2m_mapped(0xF101_0000, 0xF101_0FFF));
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1020, 0x3800040, 68, false)),
        Ok(64)
    );
    // Unmapping a frame that is not mapped: EINVAL (p2m.c:1185-1190) at i = 0.
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1010, 0x3800030, 1, false)),
        Err(-libc::EINVAL)
    );
    // ... but after some were done: the count.
    assert_eq!(op(&mut d, &mut h, mm(0xF1008, 0x3800028, 16, false)), Ok(8));
    // A different mfn under an unmap is only logged; the entry goes.
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800021, 1, false)), Ok(0));
    assert!(d.notes["xen"]
        .as_str()
        .unwrap()
        .contains("no mapping between"));
    assert!(d.report.crashed.is_none());
}

#[test]
fn mapping_over_a_different_mfn_crashes_the_guest() {
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 0x1000);
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800020, 4, true)), Ok(0));
    // Frame 2 is mapped to 0x3800022; mapping it to another mfn is "not permitted".
    assert_eq!(
        op(&mut d, &mut h, mm(0xF1000, 0x3800100, 4, true)),
        Err(-libc::EPERM)
    );
    assert!(d
        .report
        .crashed
        .as_deref()
        .unwrap()
        .contains("not permitted"));
    // 2 frames in, it fails at the first conflicting one -> the count done.
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 0x1000);
    op(&mut d, &mut h, mm(0xF1002, 0x3800022, 1, true)).unwrap();
    assert_eq!(op(&mut d, &mut h, mm(0xF1000, 0x3800100, 4, true)), Ok(2));
}

#[test]
fn aligned_two_megabyte_runs_take_one_iteration() {
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 1 << 16);
    // gfn and mfn 2M-aligned: 64 iterations of 512 frames = 32768 frames (128 MiB).
    assert_eq!(
        op(&mut d, &mut h, mm(0x100000, 0x3800000, 40000, true)),
        Ok(64 * 512)
    );
    // Misaligned mfn: 4K iterations.
    let (mut d, mut h) = setup(true);
    permit(&mut d, &mut h, 0x3800000, 1 << 16);
    assert_eq!(
        op(&mut d, &mut h, mm(0x100000, 0x3800001, 1024, true)),
        Ok(64)
    );
}

#[test]
fn msix_map_pirq_needs_prepare_msix() {
    let (mut d, mut h) = setup(true);
    // Not assigned yet: map_domain_pirq finds no such device in the guest -> ENODEV.
    assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODEV));
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    // Assigned without prepare_msix: ENODATA (msi.c:882-887).
    assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODATA));
    // prepare_msix works whoever owns the function (pci_prepare_msix checks no owner).
    op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }).unwrap();
    assert_eq!(
        op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    assert!(pirq > 0);
    assert_eq!(h.devices[&SBDF].msix_used_entries, 2);
    assert_eq!(h.devices[&SBDF].msix_table_first, (BAR3 + 0x1000) >> 12);
    // Entry beyond the table: EINVAL.
    assert_eq!(op(&mut d, &mut h, map_msix(5, BAR3)), Err(-libc::EINVAL));
    // release_msix while an entry is in use: EBUSY; after the unmap it works, and the
    // table location is forgotten: the next map is ENODATA again.
    assert_eq!(
        op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    op(&mut d, &mut h, PtOp::UnmapPirq { pirq: pirq as u32 }).unwrap();
    op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }).unwrap();
    assert_eq!(h.devices[&SBDF].msix_table_first, 0);
    assert_eq!(op(&mut d, &mut h, map_msix(0, BAR3)), Err(-libc::ENODATA));
    assert_eq!(
        op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
}

#[test]
fn prepare_msix_needs_memory_decode() {
    let (mut d, mut h) = setup(true);
    let cfg = config_file("decode", 0, 0);
    h.add(vf(Some(cfg.clone())));
    assert_eq!(
        op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }),
        Err(-libc::ENXIO)
    );
    crate::host::write_file_at(&cfg, 4, &2u16.to_le_bytes());
    assert_eq!(op(&mut d, &mut h, PtOp::PrepareMsix { sbdf: SBDF }), Ok(0));
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn table_base_that_is_not_the_bar_base_is_recorded() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    assert_eq!(d.notes["table_base_check"], "ok: the BAR base");
    // BAR + table offset (the old bridge's formula): Xen's WARN_ON compares with the BAR.
    op(&mut d, &mut h, map_msix(1, BAR3 + 0x1000)).unwrap();
    assert!(d.notes["table_base_warn"]
        .as_str()
        .unwrap()
        .contains("msi.c:848"));
}

#[test]
fn assignment_needs_an_iommu_context() {
    let (mut d, mut h) = setup(false);
    assert_eq!(
        op(&mut d, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Err(-libc::EOPNOTSUPP)
    );
    assert_eq!(
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
        Err(-libc::EOPNOTSUPP)
    );
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    // bind_pt_irq: ESRCH. (The pirq can only exist for an assigned function, so plant one.)
    d.pirqs.insert(
        70,
        Pirq {
            sbdf: SBDF,
            msix_entry: Some(0),
            index: 0,
            guest_masked: true,
            bind: None,
        },
    );
    assert_eq!(
        op(&mut d, &mut h, bind(70, 0x41, true, GTABLE)),
        Err(-libc::ESRCH)
    );
    // Unbind without IOMMU: nothing done, 0 (domctl.c:583-594).
    assert_eq!(
        op(
            &mut d,
            &mut h,
            PtOp::UnbindPtIrqMsi {
                pirq: 70,
                gvec: 0x41,
                gflags: 0,
                gtable: GTABLE
            }
        ),
        Ok(0)
    );
}

#[test]
fn test_assign_and_ownership() {
    let (mut d, mut h) = setup(true);
    let (mut d2, _) = setup(true);
    d2.domid = 2;
    assert_eq!(
        op(&mut d, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Ok(0)
    );
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    // Owned by a guest: assign EBUSY (this guest too), test_assign EINVAL.
    assert_eq!(
        op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    assert_eq!(
        op(&mut d2, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Err(-libc::EINVAL)
    );
    // Deassign from another guest: ENODEV.
    assert_eq!(op(&mut d2, &mut h, deassign(false)), Err(-libc::ENODEV));
    // Deassign from the guest: quarantined (dom_io), by default.
    op(&mut d, &mut h, deassign(false)).unwrap();
    assert_eq!(h.devices[&SBDF].owner, Owner::DomIo);
    // A quarantined function can be assigned again.
    assert_eq!(
        op(&mut d2, &mut h, PtOp::TestAssignDevice { sbdf: SBDF }),
        Ok(0)
    );
    // De-quarantine: back to the hardware domain. Twice: ENODEV.
    op(&mut d, &mut h, deassign(true)).unwrap();
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    assert_eq!(op(&mut d, &mut h, deassign(true)), Err(-libc::ENODEV));
    // Without quarantine, deassign hands it straight back.
    h.quarantine = false;
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    op(&mut d, &mut h, deassign(false)).unwrap();
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
}

#[test]
fn a_dead_domain_leaves_its_functions_in_quarantine() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    op(&mut d, &mut h, bind(pirq, 0x41, true, GTABLE)).unwrap();
    d.destroy(&mut h);
    assert_eq!(h.devices[&SBDF].owner, Owner::DomIo);
    // Its pirqs were cleaned (arch_pci_clean_pirqs): only prepare_msix's user remains.
    assert_eq!(h.devices[&SBDF].msix_used_entries, 1);
    for o in [
        deassign(false),
        PtOp::UnmapPirq { pirq: pirq as u32 },
        mm(0xF1000, 0x3800020, 16, false),
        PtOp::GetDomainInfo,
    ] {
        assert_eq!(op(&mut d, &mut h, o), Err(-libc::ESRCH));
    }
    assert_eq!(op(&mut d, &mut h, deassign(true)), Ok(0));
    assert_eq!(h.devices[&SBDF].owner, Owner::Hardware);
    assert_eq!(op(&mut d, &mut h, PtOp::ReleaseMsix { sbdf: SBDF }), Ok(0));
}

#[test]
fn get_domain_info_is_max_pages() {
    let (mut d, mut h) = setup(true);
    assert_eq!(
        op(&mut d, &mut h, PtOp::GetDomainInfo),
        Ok((16 << 20) / 4096)
    );
}

#[test]
fn rebinding_changes_only_gvec_and_gflags_and_never_masks() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let pirq = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    // Bind with UNMASKED clear: the vector stays masked as map left it.
    op(&mut d, &mut h, bind(pirq, 0x41, false, GTABLE)).unwrap();
    assert!(d.pirqs[&(pirq as u32)].guest_masked);
    op(&mut d, &mut h, bind(pirq, 0x41, true, GTABLE)).unwrap();
    assert!(!d.pirqs[&(pirq as u32)].guest_masked);
    // A rebind with UNMASKED clear does not mask (hvm.c:387-398).
    op(&mut d, &mut h, bind(pirq, 0x42, false, GTABLE)).unwrap();
    assert!(!d.pirqs[&(pirq as u32)].guest_masked);
    assert_eq!(d.pirqs[&(pirq as u32)].bind, Some((0x42, 0)));
    // A rebind with a moved table: Xen keeps intercepting the first address.
    op(&mut d, &mut h, bind(pirq, 0x42, true, 0xF200_0000)).unwrap();
    assert!(d.notes.contains_key("gtable_ignored"));
    assert_eq!(d.msixtbl.len(), 1);
    assert_eq!(d.msixtbl[0].gtable, GTABLE);
    assert_eq!(d.msixtbl[0].refcnt, 1, "a rebind is not a registration");
    // Bind of a pirq that is not mapped: EPERM.
    assert_eq!(op(&mut d, &mut h, bind(999, 1, true, 0)), Err(-libc::EPERM));
}

#[test]
fn msixtbl_takes_bound_entries_before_the_device_model() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap() as u32;
    // Before any bind: nothing intercepted.
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
        MsixtblResult::Forward
    ));
    op(&mut d, &mut h, bind(p0.into(), 0x41, true, GTABLE)).unwrap();
    let fwd = |r: MsixtblResult| matches!(r, MsixtblResult::Forward);
    // Mask write of the bound entry: handled in Xen, never reaches the device model.
    assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 1)));
    assert!(d.pirqs[&p0].guest_masked);
    // Vector Control reads Xen's guest_masked.
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, false, 0),
        MsixtblResult::Done(1)
    ));
    // Address/data writes: forwarded, and shadowed by Xen.
    assert!(fwd(d.msixtbl_access(0, GTABLE, 4, true, 0xFEE0_1000)));
    assert!(fwd(d.msixtbl_access(0, GTABLE + 8, 4, true, 0x51)));
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 8, 4, false, 0),
        MsixtblResult::Done(0x51)
    ));
    // Address high was never written: its read goes to the device model.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 4, 4, false, 0)));
    // The unmask after address/data changed: forwarded, applied by Xen at completion.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 0)));
    assert!(d.pirqs[&p0].guest_masked, "not yet");
    d.msix_write_completion(0);
    assert!(!d.pirqs[&p0].guest_masked);
    // Mask and unmask with no address/data change: both Xen's.
    assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 1)));
    assert!(!fwd(d.msixtbl_access(0, GTABLE + 12, 4, true, 0)));
    assert!(!d.pirqs[&p0].guest_masked);
    // 2-byte accesses are not Xen's.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 12, 2, true, 1)));
    // An 8-byte write of data + vector control: mask applied in Xen AND forwarded.
    assert!(fwd(d.msixtbl_access(
        0,
        GTABLE + 8,
        8,
        true,
        0x51 | 1 << 32
    )));
    assert!(d.pirqs[&p0].guest_masked);
    // Entry 1 is not mapped: nothing of it is intercepted, even inside the table.
    assert!(fwd(d.msixtbl_access(0, GTABLE + 16 + 12, 4, true, 1)));
}

#[test]
fn an_unmask_snooped_during_the_bind_is_applied_at_completion() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    // The guest unmasks entry 0 before anything is bound: forwarded, snooped.
    assert!(matches!(
        d.msixtbl_access(1, GTABLE + 12, 4, true, 0),
        MsixtblResult::Forward
    ));
    d.vcpu_io[1].blocked = true;
    // The device model binds it with UNMASKED clear while vCPU 1 waits.
    op(&mut d, &mut h, bind(p0, 0x41, false, GTABLE)).unwrap();
    assert!(d.pirqs[&(p0 as u32)].guest_masked);
    d.msix_write_completion(1);
    assert!(!d.pirqs[&(p0 as u32)].guest_masked, "vmsi.c:514-529");
}

#[test]
fn unbinding_one_of_two_entries_drops_the_intercept_in_4_17() {
    let (mut d, mut h) = setup(true);
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    let p1 = op(&mut d, &mut h, map_msix(1, BAR3)).unwrap();
    op(&mut d, &mut h, bind(p0, 0x41, true, GTABLE)).unwrap();
    op(&mut d, &mut h, bind(p1, 0x42, true, GTABLE)).unwrap();
    assert_eq!(d.msixtbl[0].refcnt, 2);
    let unbind = |p: u64| PtOp::UnbindPtIrqMsi {
        pirq: p as u32,
        gvec: 0,
        gflags: 0,
        gtable: GTABLE,
    };
    op(&mut d, &mut h, unbind(p1)).unwrap();
    assert!(
        d.msixtbl.is_empty(),
        "vmsi.c:566: deleted while a bind remains"
    );
    // Entry 0 is still bound, but its mask writes now reach the device model.
    assert!(matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
        MsixtblResult::Forward
    ));
    // Unbind leaves the vector masked (hvm.c:590-604).
    op(&mut d, &mut h, unbind(p0)).unwrap();
    assert!(d.pirqs[&(p0 as u32)].guest_masked);
}

#[test]
fn multi_message_msi_rules() {
    let (mut d, mut h) = setup(true);
    op(&mut d, &mut h, PtOp::AssignDevice { sbdf: SBDF }).unwrap();
    let msi = |nvec, table_base| {
        PtOp::MapPirqMsi(MsiMap {
            sbdf: SBDF,
            entry: 0,
            table_base,
            nvec,
        })
    };
    assert_eq!(op(&mut d, &mut h, msi(4, BAR3)), Err(-libc::EINVAL));
    assert_eq!(op(&mut d, &mut h, msi(64, 0)), Err(-libc::EDOM));
    h.intremap = false;
    assert_eq!(op(&mut d, &mut h, msi(4, 0)), Err(-libc::EOPNOTSUPP));
    h.intremap = true;
    let p = op(&mut d, &mut h, msi(3, 0)).unwrap() as u32;
    assert_eq!(d.pirq_blocks[&p], 4, "rounded up to a power of two");
}

#[test]
fn a_bound_interrupt_arrives_only_with_the_devices_enable_bit() {
    let (mut d, mut h) = setup(true);
    let cfg = config_file("enable", 2, 0);
    h.add(vf(Some(cfg.clone())));
    assigned_and_prepared(&mut d, &mut h);
    let p0 = op(&mut d, &mut h, map_msix(0, BAR3)).unwrap();
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("not bound"));
    op(&mut d, &mut h, bind(p0, 0x41, true, GTABLE)).unwrap();
    // Xen never set Enable: the device model must.
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("Enable clear"));
    set_msix_ctrl(&cfg, MSIX_ENABLE | MSIX_MASKALL);
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("Function Mask"));
    set_msix_ctrl(&cfg, MSIX_ENABLE);
    d.device_interrupt(&h, SBDF, 0).unwrap();
    assert_eq!(d.report.msis.last().unwrap().vector, 0x41);
    // Masked by the guest (through msixtbl): held.
    assert!(!matches!(
        d.msixtbl_access(0, GTABLE + 12, 4, true, 1),
        MsixtblResult::Forward
    ));
    assert!(d
        .device_interrupt(&h, SBDF, 0)
        .unwrap_err()
        .contains("masked by the guest"));
    // Function Mask set at assignment: EBUSY (msi.c:1224-1227).
    let (mut d2, _) = setup(true);
    d2.domid = 2;
    d.destroy(&mut h);
    op(&mut d2, &mut h, deassign(true)).unwrap();
    set_msix_ctrl(&cfg, MSIX_MASKALL);
    assert_eq!(
        op(&mut d2, &mut h, PtOp::AssignDevice { sbdf: SBDF }),
        Err(-libc::EBUSY)
    );
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn ioport_mapping_is_keyed_by_machine_port() {
    let (mut d, mut h) = setup(true);
    let io = |g, m, n, add| PtOp::IoportMapping {
        gport: g,
        mport: m,
        nr: n,
        add,
    };
    assert_eq!(
        op(&mut d, &mut h, io(0xFFF0, 0xE000, 0x20, true)),
        Err(-libc::EINVAL)
    );
    op(&mut d, &mut h, io(0xC000, 0xE000, 0x20, true)).unwrap();
    assert!(d.ioport_mapped(0xC01C, 4) && !d.ioport_mapped(0xC01E, 4));
    // The guest moved the BAR: an add for the same machine port replaces the entry.
    op(&mut d, &mut h, io(0xD000, 0xE000, 0x20, true)).unwrap();
    assert_eq!(d.ioport_map, vec![(0xD000, 0xE000, 0x20)]);
    // Remove by machine port; removing what is not there is no error.
    op(&mut d, &mut h, io(0, 0xE000, 0x20, false)).unwrap();
    assert!(d.ioport_map.is_empty());
    op(&mut d, &mut h, io(0, 0xE000, 0x20, false)).unwrap();
}

#[test]
fn iomem_permission_ranges() {
    let (mut d, _) = setup(true);
    d.iomem_change(10, 19, true);
    d.iomem_change(20, 29, true);
    assert_eq!(d.iomem, vec![(10, 29)]);
    d.iomem_change(15, 16, false);
    assert_eq!(d.iomem, vec![(10, 14), (17, 29)]);
    assert!(d.iomem_permitted(17, 29) && !d.iomem_permitted(14, 17));
}
