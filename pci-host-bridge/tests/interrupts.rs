//! SR-IOV VF synthesis, MSI and MSI-X binding, INTx forwarding and the assignment life cycle,
//! register by register, through the Device interface against the hand-made PF / VF pair
//! (testdata/sriov-nic-{pf,vf}.json).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use ioreq_server::device::{Action, Actions, Device};
use ioreq_server::irq_line::{IrqLine, IrqLineServer};
use ioreq_server::passthrough::{msi_gflags, PtOp};
use pci_host_bridge::backend::snapshot::{SnapshotDevice, WriteRecord};
use pci_host_bridge::intx::guest_gsi;
use pci_host_bridge::{HostDevice, PciAddress};

const PF: &str = "sriov-nic-pf.json";
const VF: &str = "sriov-nic-vf.json";
const PF_HOST: PciAddress = PciAddress::new(0, 3, 0, 0);
const VF_HOST: PciAddress = PciAddress::new(0, 3, 2, 2);
const VF_SBDF: u32 = 0x0312;
const PF_SBDF: u32 = 0x0300;

fn mem(gfn: u64, mfn: u64, nr: u64, map: bool) -> Action {
    Action::MapMemory { gfn, mfn, nr, map }
}

fn vf() -> One {
    one_at(
        SnapshotDevice::open_at(&testdata(VF), Some(VF_HOST)).unwrap(),
        VF_HOST,
        3,
    )
}

fn pf() -> One {
    one_at(snapshot(PF), PF_HOST, 2)
}

/// Guest BAR placement of the VF: BAR0 at 0xF100_0000, BAR3 (MSI-X) at 0xF101_0000.
const VF_TABLE: u64 = 0xF101_0000;
const VF_PBA: u64 = 0xF101_2000;

fn place_vf(t: &mut One) -> Vec<Action> {
    for (reg, v) in [
        (0x10, 0xF100_0000u64),
        (0x14, 0),
        (0x1C, VF_TABLE),
        (0x20, 0),
    ] {
        assert!(t.wr(reg, 4, v).is_empty());
    }
    t.wr(4, 2, 0x0006)
}

#[allow(clippy::too_many_arguments)]
fn bind(
    sbdf: u32,
    entry: u32,
    table_base: u64,
    nvec: u32,
    addr: u64,
    data: u32,
    unmasked: bool,
    gtable: u64,
) -> Action {
    Action::BindMsi {
        sbdf,
        entry,
        table_base,
        nvec,
        gvec: data as u8,
        gflags: msi_gflags(addr, data, unmasked),
        gtable,
    }
}

fn unbind(sbdf: u32, entry: u32) -> Action {
    Action::UnbindMsi { sbdf, entry }
}

#[test]
fn vf_ids_bars_and_pin_come_from_the_pf() {
    let mut t = vf();
    // Raw config: IDs 0xFFFF, BARs 0; the guest sees the PF's vendor and VF Device ID.
    assert_eq!(t.dev_dword(0), 0xFFFF_FFFF);
    assert_eq!(t.rd(0, 4), 0x154c_8086);
    assert!(t.func().device().is_virtual_function());
    assert_eq!(t.rd(0x3D, 1), 0, "no INTx on a VF");
    // BAR sizing: BAR0 64 KiB 64-bit prefetchable, BAR3 16 KiB, the others unused.
    let mut sizes = Vec::new();
    for reg in (0x10..0x28).step_by(4) {
        t.wr(reg, 4, 0xFFFF_FFFF);
        sizes.push(t.rd(reg, 4));
        t.wr(reg, 4, 0);
    }
    assert_eq!(
        sizes,
        vec![0xFFFF_000C, 0xFFFF_FFFF, 0, 0xFFFF_C00C, 0xFFFF_FFFF, 0]
    );
    // VF 2 of the PF: BARi = VF BARi base + 2 * size.
    let host = |i: usize| t.func().device().bar(i).unwrap().host_addr;
    assert_eq!((host(0), host(3)), (0x38_0002_0000, 0x38_0010_8000));
    // Decode on: BAR0 whole, BAR3 around the table (page 0) and PBA (page 2).
    assert_eq!(
        place_vf(&mut t),
        vec![
            mem(0xF1000, 0x3800020, 16, true),
            mem(0xF1011, 0x3800109, 1, true),
            mem(0xF1013, 0x380010B, 1, true),
        ]
    );
    // Only bus mastering reached the device.
    assert!(
        t.handle.writes().iter().all(|w| w.offset == 4),
        "{:?}",
        t.handle.writes()
    );
}

#[test]
fn vf_snapshot_rules() {
    // Not a VF of that PF (03:01.0 is below First VF Offset): refused.
    assert!(SnapshotDevice::open_at(&testdata(VF), Some(PciAddress::new(0, 3, 1, 0))).is_err());
    // Past NumVFs (8): 03:03.0 would be VF 8.
    assert!(SnapshotDevice::open_at(&testdata(VF), Some(PciAddress::new(0, 3, 3, 0))).is_err());
    let d = SnapshotDevice::open_at(&testdata(VF), Some(PciAddress::new(0, 3, 2, 7))).unwrap();
    assert_eq!(d.vf_identity().unwrap().index, 7);
    assert_eq!(d.bar(0).unwrap().host_addr, 0x38_0007_0000);
    // physfn and explicit ids together: one truth only.
    let text = std::fs::read_to_string(testdata(VF)).unwrap().replace(
        "\"physfn\"",
        "\"ids\": {\"vendor\": \"0x8086\", \"device\": \"0x1\"}, \"physfn\"",
    );
    let dir = std::env::temp_dir().join(format!("vf-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(testdata(PF), dir.join(PF)).unwrap();
    std::fs::write(dir.join(VF), text).unwrap();
    let e = SnapshotDevice::open(&dir.join(VF)).unwrap_err().to_string();
    assert!(e.contains("physfn"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn msix_linux_sequence_binds_lazily() {
    let mut t = vf();
    place_vf(&mut t);
    t.handle.clear_writes();
    assert_eq!(t.rd(0x72, 2), 0x0004, "5 entries, disabled, not masked");
    let e = |i: u64| VF_TABLE + 16 * i;
    // Entries programmed while masked (and MSI-X off): nothing bound.
    for i in 0..5u64 {
        assert!(t.mmio_wr_act(e(i) + 12, 4, 1).is_empty());
        assert!(t.mmio_wr_act(e(i), 4, 0xFEE0_0000 | i << 12).is_empty());
        assert!(t.mmio_wr_act(e(i) + 4, 4, 0).is_empty());
        assert!(t.mmio_wr_act(e(i) + 8, 4, 0x41 + i).is_empty());
    }
    // Enable with the function masked, then clear the function mask: all entries masked.
    assert!(t.wr(0x72, 2, 0xC000).is_empty());
    assert_eq!(t.rd(0x72, 2), 0xC004);
    assert!(t.wr(0x72, 2, 0x8000).is_empty());
    // Unmask entries 0 and 1 one by one: one bind each, with the host table address as
    // table_base and the guest table address as gtable.
    let tb = 0x38_0010_8000u64;
    assert_eq!(
        t.mmio_wr_act(e(0) + 12, 4, 0),
        vec![bind(VF_SBDF, 0, tb, 1, 0xFEE0_0000, 0x41, true, VF_TABLE)]
    );
    assert_eq!(
        t.mmio_wr_act(e(1) + 12, 4, 0),
        vec![bind(VF_SBDF, 1, tb, 1, 0xFEE0_1000, 0x42, true, VF_TABLE)]
    );
    assert_eq!(
        t.func().bindings().msix_bound(),
        2,
        "entries 2-4 stay masked: unbound"
    );
    // Reads come back from the emulated table.
    assert_eq!(t.mmio_rd(e(1), 8), 0xFEE0_1000);
    assert_eq!(t.mmio_rd(e(1) + 12, 4), 0);
    // New data while bound: a rebind (the server keeps the pirq), same for an 8-byte address.
    assert_eq!(
        t.mmio_wr_act(e(1) + 8, 4, 0x0051),
        vec![bind(VF_SBDF, 1, tb, 1, 0xFEE0_1000, 0x51, true, VF_TABLE)]
    );
    assert_eq!(
        t.mmio_wr_act(e(1), 8, 0xFEE0_2004),
        vec![bind(VF_SBDF, 1, tb, 1, 0xFEE0_2004, 0x51, true, VF_TABLE)]
    );
    // Same value again: nothing.
    assert!(t.mmio_wr_act(e(1) + 8, 4, 0x0051).is_empty());
    // Mask entry 0: unbound. Unmask: bound again.
    assert_eq!(t.mmio_wr_act(e(0) + 12, 4, 1), vec![unbind(VF_SBDF, 0)]);
    assert_eq!(t.mmio_wr_act(e(0) + 12, 4, 0).len(), 1);
    // Function mask: everything unbound; cleared: bound again.
    assert_eq!(
        t.wr(0x72, 2, 0xC000),
        vec![unbind(VF_SBDF, 0), unbind(VF_SBDF, 1)]
    );
    assert_eq!(t.wr(0x72, 2, 0x8000).len(), 2);
    // Moving the table's BAR changes gtable: rebinds.
    let a = t.wr(0x1C, 4, 0xF102_0000);
    assert!(
        a.contains(&bind(
            VF_SBDF,
            0,
            tb,
            1,
            0xFEE0_0000,
            0x41,
            true,
            0xF102_0000
        )),
        "{a:?}"
    );
    t.wr(0x1C, 4, VF_TABLE);
    // Odd accesses to the table: dropped / all-ones, no action.
    assert!(t.mmio_wr_act(e(2) + 12, 2, 0).is_empty());
    assert!(t.mmio_wr_act(e(2) + 12, 1, 0).is_empty());
    assert!(t.mmio_wr_act(e(2) + 10, 4, 0).is_empty());
    assert!(
        t.mmio_wr_act(e(2) + 12, 8, 0).is_empty(),
        "QWORD must be 8-aligned"
    );
    assert_eq!(t.mmio_rd(e(2) + 12, 4), 1, "entry 2 still masked");
    assert_eq!(t.mmio_rd(e(2) + 12, 2), 0xFFFF);
    // The PBA comes from the device (entry 1 pending there); writes dropped.
    assert_eq!(t.mmio_rd(VF_PBA, 8), 2);
    assert!(t.mmio_wr_act(VF_PBA, 8, 0).is_empty());
    assert_eq!(t.mmio_rd(VF_PBA, 4), 2);
    // Disable: both unbound.
    assert_eq!(
        t.wr(0x72, 2, 0x0000),
        vec![unbind(VF_SBDF, 0), unbind(VF_SBDF, 1)]
    );
    // Nothing of this reached the device: no config write, no BAR write.
    assert!(t.handle.writes().is_empty(), "{:?}", t.handle.writes());
    assert!(t.handle.bar_writes().is_empty());
}

#[test]
fn msi_registers_and_multi_message_binding() {
    let mut t = pf();
    // 64-bit, per-vector masking, MMC 3 (8 vectors); pending bits from the device.
    assert_eq!(t.rd(0x52, 2), 0x0186);
    assert_eq!(t.rd(0x64, 4), 0x2, "pending bit 1 is the device's");
    t.wr(0x64, 4, 0);
    assert_eq!(t.rd(0x64, 4), 0x2, "pending is read-only");
    // Address (bits 1:0 read 0), upper address, data, mask (8 implemented bits).
    assert!(t.wr(0x54, 4, 0xFEE0_1003).is_empty());
    assert_eq!(t.rd(0x54, 4), 0xFEE0_1000);
    assert!(t.wr(0x58, 4, 0).is_empty());
    assert!(t.wr(0x5C, 2, 0x0050).is_empty());
    t.wr(0x60, 4, 0xFFFF_FFFF);
    assert_eq!(t.rd(0x60, 4), 0xFF);
    t.wr(0x60, 4, 0);
    // Enable with MME = 2: one bind of 4 vectors.
    let addr = 0xFEE0_1000;
    assert_eq!(
        t.wr(0x52, 2, 0x0021),
        vec![bind(PF_SBDF, 0, 0, 4, addr, 0x50, true, 0)]
    );
    assert_eq!(t.rd(0x52, 2), 0x01A7);
    // New data while enabled: a rebind only.
    assert_eq!(
        t.wr(0x5C, 2, 0x0058),
        vec![bind(PF_SBDF, 0, 0, 4, addr, 0x58, true, 0)]
    );
    // Mask vector 0: rebind with the unmasked flag clear.
    assert_eq!(
        t.wr(0x60, 4, 1),
        vec![bind(PF_SBDF, 0, 0, 4, addr, 0x58, false, 0)]
    );
    t.wr(0x60, 4, 0);
    // MME 3 while enabled: the pirq block changes size: unbind, then bind 8.
    assert_eq!(
        t.wr(0x52, 2, 0x0031),
        vec![
            unbind(PF_SBDF, 0),
            bind(PF_SBDF, 0, 0, 8, addr, 0x58, true, 0)
        ]
    );
    // MME 5 is beyond MMC 3: kept at 3, nothing to do.
    assert!(t.wr(0x52, 2, 0x0051).is_empty());
    assert_eq!(t.rd(0x52, 2), 0x01B7);
    // Disable: unbound.
    assert_eq!(t.wr(0x52, 2, 0x0030), vec![unbind(PF_SBDF, 0)]);
    // MSI registers never reach the device.
    assert!(
        t.handle
            .writes()
            .iter()
            .all(|w| w.offset < 0x50 || w.offset >= 0x68),
        "{:?}",
        t.handle.writes()
    );
}

#[test]
fn msi_and_msix_both_enabled_bind_nothing() {
    let mut t = pf();
    t.wr(0x54, 4, 0xFEE0_0000);
    assert_eq!(t.wr(0x52, 2, 1).len(), 1);
    // MSI-X enabled too (undefined by the spec): the MSI binding goes, nothing else comes.
    assert_eq!(t.wr(0x72, 2, 0x8000), vec![unbind(PF_SBDF, 0)]);
    assert!(t.func().bindings().bound().next().is_none());
    // MSI off again: MSI-X alone, but every entry is masked: still nothing.
    assert!(t.wr(0x52, 2, 0).is_empty());
}

/// An in-process IOAPIC side of the irq_line protocol and a line registered on `pin`.
fn ioapic_line(pin: u8) -> (IrqLineServer, IrqLine) {
    let mut srv = IrqLineServer::unbound(24).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    srv.adopt(a).unwrap();
    let reg = std::thread::spawn(move || IrqLine::register_on(b, pin, Duration::from_secs(5)));
    let mut changes = Vec::new();
    while !reg.is_finished() {
        for fd in srv.fds() {
            srv.handle(fd, &mut changes);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (srv, reg.join().unwrap().unwrap())
}

fn serve(srv: &mut IrqLineServer) {
    let mut changes = Vec::new();
    for fd in srv.fds() {
        srv.handle(fd, &mut changes);
    }
}

fn event(t: &mut One, fd: i32) {
    let mut a = Actions::new();
    t.bridge.on_event(fd, &mut a);
    assert!(a.is_empty());
}

fn intx_disable_writes(t: &One) -> Vec<bool> {
    t.handle
        .writes()
        .iter()
        .filter(|w| w.offset == 5)
        .map(|w| w.data[0] & 4 != 0)
        .collect()
}

#[test]
fn intx_through_the_ioapic_and_forced_off_by_msi() {
    let mut dev = snapshot(PF);
    dev.enable_intx().unwrap();
    let mut host_irq = std::fs::File::from(dev.intx_handle().unwrap());
    let mut t = one_at(dev, PF_HOST, 2);
    let gsi = guest_gsi(2, 1).unwrap();
    assert_eq!(gsi, 18, "slot 2, INTA: 16 + (2 + 1 - 1) % 4");
    assert_eq!(t.func().intx().unwrap().gsi(), gsi);
    let (mut srv, line) = ioapic_line(gsi);
    // The PF's command register has Interrupt Disable set; attaching the line unmasks it.
    t.bridge
        .function_mut(t.addr)
        .unwrap()
        .attach_intx_line(line);
    assert_eq!(
        t.handle.writes(),
        vec![WriteRecord {
            offset: 5,
            data: vec![0x00],
            before: vec![0x04]
        }]
    );
    let fds = t.bridge.event_fds();
    assert_eq!(fds.len(), 2, "host notification and resample");
    let (host_fd, resample_fd) = (fds[0], fds[1]);
    // The device asserts: the host masks it and notifies; the bridge asserts the pin.
    host_irq.write_all(&1u64.to_ne_bytes()).unwrap();
    event(&mut t, host_fd);
    assert_eq!(
        t.handle.config_bytes(5, 1),
        vec![0x04],
        "masked by the host"
    );
    serve(&mut srv);
    assert!(srv.level(gsi), "the IOAPIC pin is asserted");
    // The guest EOIs: resample; the bridge unmasks INTx at the device (recorded write).
    t.handle.clear_writes();
    srv.release_pin(gsi);
    event(&mut t, resample_fd);
    assert_eq!(
        t.handle.writes(),
        vec![WriteRecord {
            offset: 5,
            data: vec![0x00],
            before: vec![0x04]
        }]
    );
    assert!(!t.func().intx().unwrap().is_asserted());
    // MSI enabled: INTx forced off at the device; a host interrupt is not forwarded.
    t.handle.clear_writes();
    t.wr(0x54, 4, 0xFEE0_0000);
    assert_eq!(t.wr(0x52, 2, 1).len(), 1);
    assert_eq!(intx_disable_writes(&t), vec![true]);
    host_irq.write_all(&1u64.to_ne_bytes()).unwrap();
    event(&mut t, host_fd);
    serve(&mut srv);
    assert!(!srv.level(gsi), "no assertion while MSI is enabled");
    // MSI off: INTx unmasked again. The guest's own Interrupt Disable masks it.
    t.wr(0x52, 2, 0);
    t.wr(4, 2, 0x0400);
    t.wr(4, 2, 0x0000);
    assert_eq!(intx_disable_writes(&t), vec![true, false, true, false]);
    // Asserted when the guest sets Interrupt Disable: deasserted.
    host_irq.write_all(&1u64.to_ne_bytes()).unwrap();
    event(&mut t, host_fd);
    serve(&mut srv);
    assert!(srv.level(gsi));
    t.wr(4, 2, 0x0400);
    serve(&mut srv);
    assert!(!srv.level(gsi), "Interrupt Disable deasserts INTx");
    let _ = resample_fd.as_raw_fd();
}

#[test]
fn start_and_stop_assign_and_undo_everything() {
    let mut t = vf();
    let mut a = Actions::new();
    t.bridge.start(&mut a);
    let pt = |op| Action::Passthrough { op };
    assert_eq!(
        a.drain().collect::<Vec<_>>(),
        vec![
            pt(PtOp::IomemPermission {
                mfn: 0x3800020,
                nr: 16,
                allow: true
            }),
            pt(PtOp::IomemPermission {
                mfn: 0x3800108,
                nr: 4,
                allow: true
            }),
            pt(PtOp::AssignDevice { sbdf: VF_SBDF }),
        ]
    );
    place_vf(&mut t);
    for s in linux_msix(&mut t, 2) {
        assert_eq!(s.len(), 1);
    }
    t.bridge.stop(&mut a);
    assert_eq!(
        a.drain().collect::<Vec<_>>(),
        vec![
            mem(0xF1000, 0x3800020, 16, false),
            mem(0xF1011, 0x3800109, 1, false),
            mem(0xF1013, 0x380010B, 1, false),
            unbind(VF_SBDF, 0),
            unbind(VF_SBDF, 1),
            pt(PtOp::DeassignDevice { sbdf: VF_SBDF }),
            pt(PtOp::IomemPermission {
                mfn: 0x3800020,
                nr: 16,
                allow: false
            }),
            pt(PtOp::IomemPermission {
                mfn: 0x3800108,
                nr: 4,
                allow: false
            }),
        ]
    );
    // Stopping twice does nothing more.
    t.bridge.stop(&mut a);
    assert!(a.is_empty());
}

/// Linux's MSI-X bring-up on the VF with `n` entries unmasked; the actions of each unmask.
fn linux_msix(t: &mut One, n: u64) -> Vec<Vec<Action>> {
    t.wr(0x72, 2, 0xC000);
    for i in 0..5u64 {
        t.mmio_wr_act(VF_TABLE + 16 * i + 12, 4, 1);
        t.mmio_wr_act(VF_TABLE + 16 * i, 4, 0xFEE0_0000);
        t.mmio_wr_act(VF_TABLE + 16 * i + 8, 4, 0x30 + i);
    }
    t.wr(0x72, 2, 0x8000);
    (0..n)
        .map(|i| t.mmio_wr_act(VF_TABLE + 16 * i + 12, 4, 0))
        .collect()
}
