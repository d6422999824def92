//! The scale bench's fleet (tests::fleet): guests against one xen-sim, each with its three
//! device-model processes, all serving, and every process gone when the fleet is dropped.

use std::time::Duration;

use tests::fleet::{host_function, smaps_rollup_kib, Fleet, FUNCTION_SLOT, MODELS};
use tests::harness::bin_path;

#[test]
fn three_guests_serve_and_leave_nothing_behind() {
    let bin = bin_path("pm-trap");
    let mut fleet = Fleet::new(3).unwrap();
    fleet.spawn_all(bin.parent().unwrap()).unwrap();
    assert_eq!(fleet.procs.len(), 3 * MODELS.len());
    assert!(fleet.wait_all_serving(Duration::from_secs(30)));
    for d in fleet.domids.clone() {
        assert!(fleet.guest_served(d), "guest {d} not served");
    }
    // Each guest has its own servers: three per domain.
    for d in &fleet.domids {
        assert!(fleet
            .sim
            .wait_for(*d, Duration::from_secs(5), |v| v.serving() == 3));
    }
    assert!(fleet
        .procs
        .iter()
        .all(|p| smaps_rollup_kib(p.pid, "Pss") > 0 && smaps_rollup_kib(p.pid, "Rss") > 0));
    assert_eq!(fleet.running(), 9);
    let pgid = nix::unistd::Pid::from_raw(fleet.procs[0].pid as i32);
    let dir = fleet.dir.clone();
    drop(fleet);
    assert_eq!(
        nix::sys::signal::killpg(pgid, None),
        Err(nix::errno::Errno::ESRCH),
        "a process of the fleet's group survived"
    );
    assert!(!dir.exists());
}

#[test]
fn each_guest_gets_its_own_snapshot_backed_function() {
    let bin = bin_path("pm-trap");
    let snap = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../pci-host-bridge/testdata/real/virtio-net-1af4-1041.json");
    let mut fleet = Fleet::with_function(2, Some(&snap)).unwrap();
    fleet.spawn_all(bin.parent().unwrap()).unwrap();
    assert!(fleet.wait_all_serving(Duration::from_secs(30)));
    assert_ne!(host_function(1), host_function(2));
    assert_eq!(host_function(257), "0000:41:00.1");
    for d in fleet.domids.clone() {
        assert!(fleet.guest_served(d), "guest {d} not served");
        let mut v = fleet.sim.vcpu(d, 0);
        v.pio_write(0xCF8, 4, 0x8000_0000 | u64::from(FUNCTION_SLOT) << 11)
            .unwrap();
        assert_eq!(v.pio_read(0xCFC, 4).unwrap(), 0x1041_1af4, "guest {d}");
    }
}
