//! xen-sim enforces Xen's rules on device models: the test plays a buggy device model directly
//! on the sim transport (no server loop) and checks that the guest is crashed with Xen's
//! message, as xen/common/ioreq.c does.

mod common;

use std::time::Duration;

use ioreq_server::shared::IoreqPage;
use ioreq_server::transport::sim::SimTransport;
use ioreq_server::transport::Transport;
use xen_abi::dmop::Space;
use xen_abi::dmop::{DmOp, IoRange};
use xen_abi::*;
use xen_sim::{GuestError, Sim, SimOptions};

use common::bare_ioreq_server;

struct Buggy {
    sim: Sim,
    t: SimTransport,
    page: IoreqPage,
    port: u32,
    _dir: std::path::PathBuf,
}

fn setup(name: &str) -> Buggy {
    let dir = std::env::temp_dir().join(format!("pvh-dm-buggy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sim = Sim::start(SimOptions {
        socket: dir.join("sim.sock"),
        ioreq_timeout: Duration::from_secs(2),
    })
    .unwrap();
    sim.create_domain(1, 1, 4).unwrap();
    let mut t = SimTransport::connect(&dir.join("sim.sock"), 1, "buggy").unwrap();
    let (page, port) = bare_ioreq_server(&mut t, Space::Port, 0x700, 0x70F);
    Buggy {
        sim,
        t,
        page,
        port,
        _dir: dir,
    }
}

/// Wait until the request is posted in the slot.
fn wait_ready(b: &Buggy) {
    for _ in 0..2000 {
        if b.page.state(0) == STATE_IOREQ_READY {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no request posted");
}

#[test]
fn a_state_going_backwards_crashes_the_guest() {
    let mut b = setup("backwards");
    let sim = b.sim.clone();
    let guest = std::thread::spawn(move || sim.vcpu(1, 0).pio_read(0x700, 4));
    wait_ready(&b);
    // Answer with NONE instead of IORESP_READY.
    b.page.set_state(0, STATE_IOREQ_NONE);
    b.t.notify(b.port).unwrap();
    let r = guest.join().unwrap();
    assert!(
        matches!(&r, Err(GuestError::Crashed(m)) if m.contains("Weird HVM ioreq state transition")),
        "{r:?}"
    );
    assert!(b.sim.report(1).crashed.is_some());
    // A crashed domain runs no more.
    assert!(matches!(
        b.sim.vcpu(1, 0).pio_read(0x700, 4),
        Err(GuestError::Crashed(_))
    ));
}

#[test]
fn a_slot_left_busy_crashes_the_next_request() {
    let mut b = setup("busy");
    let sim = b.sim.clone();
    let guest = std::thread::spawn(move || sim.vcpu(1, 0).pio_read(0x700, 4));
    wait_ready(&b);
    // Answer properly...
    b.page.write_data(0, 0x1234);
    b.page.set_state(0, STATE_IORESP_READY);
    b.t.notify(b.port).unwrap();
    assert_eq!(guest.join().unwrap(), Ok(0x1234));
    // ...then scribble INPROCESS into the idle slot: Xen refuses the next request.
    b.page.set_state(0, STATE_IOREQ_INPROCESS);
    let r = b.sim.vcpu(1, 0).pio_read(0x700, 4);
    assert!(
        matches!(&r, Err(GuestError::Crashed(m)) if m.contains("device model set bad IO state")),
        "{r:?}"
    );
}

#[test]
fn only_the_emulator_may_touch_its_server() {
    let b = setup("perm");
    let dir = std::env::temp_dir().join(format!("pvh-dm-buggy-perm-{}", std::process::id()));
    let mut other = SimTransport::connect(&dir.join("sim.sock"), 1, "intruder").unwrap();
    let e = other
        .dm_op(&DmOp::MapIoRange(IoRange {
            id: 0,
            space: Space::Port,
            start: 0x800,
            end: 0x800,
        }))
        .unwrap_err();
    assert!(e.to_string().contains("Operation not permitted"), "{e}");
    assert!(other.map_resource(0, 1, 1).is_err());
    // The buffered frame of a server without buffering does not exist.
    let mut t = b.t;
    assert!(t
        .map_resource(0, 0, 1)
        .unwrap_err()
        .to_string()
        .contains("No such file"));
    // Unknown domain.
    assert!(SimTransport::connect(&dir.join("sim.sock"), 9, "nobody").is_err());
}
