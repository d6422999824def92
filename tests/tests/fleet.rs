//! The scale bench's fleet (tests::fleet): guests against one xen-sim, each with its three
//! device-model processes, all serving, and every process gone when the fleet is dropped.

use std::time::Duration;

use tests::fleet::{smaps_rollup_kib, Fleet, MODELS};
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
