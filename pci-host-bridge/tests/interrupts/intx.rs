//! INTx of the PF forwarded to an IOAPIC pin over the interrupt-line protocol, the resample
//! at the guest's EOI, and INTx forced off while MSI is enabled.

use super::*;

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
        .filter(|w| w.offset == 4 && w.data.len() == 2)
        .map(|w| w.data[1] & 4 != 0)
        .collect()
}

/// The bridge's own Interrupt Disable write: the whole command register as one word (a byte
/// write at 0x05 leaves QEMU 7.2's INTx line count wrong; see `set_interrupt_disable`), with
/// the low byte rewritten as it was.
fn intx_word_write(t: &One, disable: bool) -> WriteRecord {
    let low = t.handle.config_bytes(4, 1)[0];
    let hi = |d: bool| if d { 0x04 } else { 0x00 };
    WriteRecord {
        offset: 4,
        data: vec![low, hi(disable)],
        before: vec![low, hi(!disable)],
    }
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
    assert_eq!(t.handle.writes(), vec![intx_word_write(&t, false)]);
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
    assert_eq!(t.handle.writes(), vec![intx_word_write(&t, false)]);
    assert!(!t.func().intx().unwrap().is_asserted());
    // MSI enabled: INTx forced off at the device; a host interrupt is not forwarded.
    t.handle.clear_writes();
    t.wr(0x54, 4, 0xFEE0_0000);
    assert_eq!(
        names(&t.wr(0x52, 2, 1)),
        ["map_pirq_msi", "bind_pt_irq_msi"]
    );
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
