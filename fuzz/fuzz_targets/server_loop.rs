//! Arbitrary ioreq_t sequences through the real server loop on the sim transport.
//!
//! One xen-sim and one ioreq server (scratch device, buffered ring on) live for the whole
//! fuzzing process; each input is a sequence of guest actions: raw requests handed straight
//! to the server (any type, size, count, flags, address, data), buffered writes, invalidates
//! and guest-memory writes. Invariant: every request is answered (the vCPU never gets stuck,
//! the domain never crashes), so the loop neither panics nor leaves a slot unanswered.
#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ioreq_server::server::{Server, ServerOptions};
use ioreq_server::transport::sim::SimTransport;
use libfuzzer_sys::fuzz_target;
use tests::scratch::Scratch;
use xen_abi::*;
use xen_sim::{Sim, SimOptions, Vcpu};

struct World {
    sim: Sim,
    vcpus: Vec<Vcpu>,
}

fn world() -> &'static Mutex<World> {
    static W: OnceLock<Mutex<World>> = OnceLock::new();
    W.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pvh-dm-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("sim.sock");
        let sim = Sim::start(SimOptions {
            socket: sock.clone(),
            ioreq_timeout: Duration::from_secs(5),
        })
        .unwrap();
        sim.create_domain(1, 2, 4).unwrap();
        std::thread::spawn(move || {
            let t = SimTransport::connect(&sock, 1, "fuzz").unwrap();
            let opts = ServerOptions {
                bufioreq: HVM_IOREQSRV_BUFIOREQ_ATOMIC,
                restrict: false,
                handle_signals: false,
                ..Default::default()
            };
            let s = Server::setup(t, vec![Box::new(Scratch::new())], opts).unwrap();
            s.run().unwrap();
        });
        assert!(
            sim.wait_for(1, Duration::from_secs(10), |d| d.serving() == 1
                && d.all_bound())
        );
        // Ranges are registered in one go after binding; give the last one a moment.
        std::thread::sleep(Duration::from_millis(50));
        let vcpus = vec![sim.vcpu(1, 0), sim.vcpu(1, 1)];
        Mutex::new(World { sim, vcpus })
    })
}

fn take<const N: usize>(d: &mut &[u8]) -> Option<[u8; N]> {
    let (a, b) = d.split_first_chunk::<N>()?;
    *d = b;
    Some(*a)
}

fuzz_target!(|data: &[u8]| {
    let mut w = world().lock().unwrap();
    let mut d = data;
    while let Some([op, vcpu]) = take::<2>(&mut d) {
        let v = usize::from(vcpu & 1);
        let r = match op % 4 {
            0 => {
                let Some(b) = take::<30>(&mut d) else { break };
                let mut r = Ioreq {
                    addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
                    data: u64::from_le_bytes(b[8..16].try_into().unwrap()),
                    // Counts up to 1024: enough for a repeat to run over a guest page and
                    // over the scratch device's 4 KiB MMIO page (at sizes 4 and 8), and
                    // bounded in time (every item is an access on the server thread;
                    // up to 5000 made long repeats most of a run's cost).
                    count: u32::from_le_bytes(b[16..20].try_into().unwrap()) % 1025,
                    size: u32::from_le_bytes(b[20..24].try_into().unwrap()) % 17,
                    type_: b[24] % 10,
                    ..Default::default()
                };
                // Point addresses at the claimed ranges most of the time.
                match b[25] % 4 {
                    0 => r.addr = 0x500 + (r.addr & 0x1F),
                    1 => r.addr = 0xFED0_0000 + (r.addr & 0x1FFF),
                    2 => r.addr = (u64::from(tests::scratch::SBDF) << 32) | (r.addr & 0x1FFF),
                    _ => {}
                }
                if b[26] & 1 != 0 {
                    r.data &= 0xFF_FFFF; // inside guest RAM
                }
                r.set_dir(b[27] & 1);
                r.set_df(b[27] & 2 != 0);
                r.set_data_is_ptr(b[27] & 4 != 0);
                w.vcpus[v].submit_to_server(0, r).map(|_| ())
            }
            1 => {
                let Some(b) = take::<12>(&mut d) else { break };
                let addr = u64::from(u16::from_le_bytes([b[0], b[1]]) & 0x1F)
                    + if b[2] & 1 == 0 { 0x500 } else { 0xA_0000 };
                let ty = if b[2] & 1 == 0 {
                    IOREQ_TYPE_PIO
                } else {
                    IOREQ_TYPE_COPY
                };
                let size = [1, 2, 4, 8][usize::from(b[3] & 3)];
                w.vcpus[v]
                    .buffered_write(
                        ty,
                        addr,
                        size,
                        u64::from_le_bytes(b[4..12].try_into().unwrap()),
                    )
                    .map(|_| ())
            }
            2 => w.vcpus[v].invalidate(),
            _ => {
                let Some(b) = take::<4>(&mut d) else { break };
                let gpa = u64::from(u32::from_le_bytes(b) & 0x3F_FFFF);
                w.sim.write_guest(1, gpa, &b);
                Ok(())
            }
        };
        assert!(r.is_ok(), "request not answered: {r:?}");
        pvh_dm_fuzz::accesses(1);
    }
    // Looked at in place (`report` copies the whole record, every DM op of the process
    // included); copied only to show it when the check fails.
    let sound = w.sim.wait_for(1, Duration::ZERO, |d| {
        d.report().crashed.is_none() && d.report().stuck.is_empty()
    });
    assert!(sound, "{:?}", w.sim.report(1));
});
