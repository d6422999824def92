//! The ioreq protocol end to end: a device-model *process* (tests' scratch-dm, built on the
//! real library) served through xen-sim, driven by a simulated guest.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ioreq_server::control;
use tests::harness::Harness;
use tests::scratch::*;
use xen_abi::*;
use xen_sim::GuestError;

fn scratch_dm() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_scratch-dm"))
}

fn start(vcpus: u32, extra: &[&str]) -> (Harness, u32) {
    let mut h = Harness::new(1, vcpus, Duration::from_secs(5));
    let cfg = h.write_config("");
    let pid = h.spawn(&scratch_dm(), &cfg, extra);
    assert!(h.wait_ready(&["scratch-dm"]), "scratch-dm did not come up");
    (h, pid)
}

fn status(h: &Harness) -> serde_json::Value {
    let r = control::request(
        &h.control_socket("scratch-dm"),
        &serde_json::json!({"cmd": "status"}),
    )
    .expect("status");
    assert_eq!(r["ok"], true, "{r}");
    r["status"].clone()
}

#[test]
fn pio_mmio_and_pci_config_round_trip() {
    let (mut h, _) = start(1, &[]);
    let mut v = h.sim.vcpu(1, 0);
    for (size, val) in [(1u32, 0xA5u64), (2, 0xBEEF), (4, 0xDEAD_BEEF)] {
        v.pio_write(PORT_BASE as u16, size, val).unwrap();
        assert_eq!(v.pio_read(PORT_BASE as u16, size).unwrap(), val);
    }
    // A 2-byte read of the last port pair.
    v.pio_write(PORT_BASE as u16 + 14, 2, 0x1234).unwrap();
    assert_eq!(v.pio_read(PORT_BASE as u16 + 15, 1).unwrap(), 0x12);
    for (size, val) in [
        (1u32, 0x5Au64),
        (2, 0xCAFE),
        (4, 0x0123_4567),
        (8, 0x0123_4567_89AB_CDEF),
    ] {
        v.mmio_write(MMIO_BASE + 0x100, size, val).unwrap();
        assert_eq!(v.mmio_read(MMIO_BASE + 0x100, size).unwrap(), val);
    }
    // CF8/CFC to the claimed function arrives as PCI_CONFIG; dword, word and byte.
    assert_eq!(v.pci_cf8_read((0, 5, 0), 0, 4).unwrap(), 0x1110_1af4);
    assert_eq!(v.pci_cf8_read((0, 5, 0), 2, 2).unwrap(), 0x1110);
    v.pci_cf8_write((0, 5, 0), 0x40, 4, 0x1122_3344).unwrap();
    assert_eq!(v.pci_cf8_read((0, 5, 0), 0x43, 1).unwrap(), 0x11);
    // AMD extended config access reaches registers above 0xFF.
    h.sim.set_amd_extended_config(1, true);
    v.pci_cf8_write((0, 5, 0), 0x104, 4, 0xABCD_0123).unwrap();
    assert_eq!(v.pci_cf8_read((0, 5, 0), 0x104, 4).unwrap(), 0xABCD_0123);
    // CF8 is latched only by 4-byte writes: a 2-byte write leaves it pointing at 00:05.0.
    v.pio_write(0xCF8, 4, 0x8000_2800).unwrap();
    v.pio_write(0xCF8, 2, 0x0000).unwrap();
    assert_eq!(v.pio_read(0xCFC, 4).unwrap(), 0x1110_1af4);
    // An unclaimed function reads all-ones (Xen's null handler), and no ioreq is sent for it.
    let before = h
        .sim
        .report(1)
        .ioreqs_by_type
        .get("PCI_CONFIG")
        .copied()
        .unwrap_or(0);
    assert_eq!(v.pci_cf8_read((0, 6, 0), 0, 4).unwrap(), 0xFFFF_FFFF);
    assert_eq!(
        h.sim
            .report(1)
            .ioreqs_by_type
            .get("PCI_CONFIG")
            .copied()
            .unwrap_or(0),
        before
    );

    let s = status(&h);
    assert!(
        s["stats"]["ioreqs_by_type"]["pio"].as_u64().unwrap() >= 7,
        "{s}"
    );
    assert!(
        s["stats"]["ioreqs_by_type"]["mmio"].as_u64().unwrap() >= 8,
        "{s}"
    );
    assert!(
        s["stats"]["ioreqs_by_type"]["pci_config"].as_u64().unwrap() >= 7,
        "{s}"
    );
    assert_eq!(s["stats"]["bad_requests"], 0);
    // SIGTERM: clean exit, and the server is destroyed in the sim.
    assert_eq!(h.stop_all(), vec![Some(0)]);
    assert!(h
        .sim
        .wait_for(1, Duration::from_secs(5), |d| d.servers() == 0));
    let ops: Vec<String> = h
        .sim
        .report(1)
        .dm_ops
        .iter()
        .map(|o| o["op"].as_str().unwrap_or("").to_string())
        .collect();
    let want = [
        "nr_vcpus",
        "create_ioreq_server",
        "get_ioreq_server_info",
        "set_ioreq_server_state",
    ];
    assert_eq!(&ops[..4], &want, "setup order: {ops:?}");
    assert_eq!(
        ops.last().map(String::as_str),
        Some("destroy_ioreq_server"),
        "{ops:?}"
    );
}

#[test]
fn unclaimed_port_and_memory_read_all_ones() {
    let (h, _) = start(1, &[]);
    let mut v = h.sim.vcpu(1, 0);
    assert_eq!(v.pio_read(0x600, 2).unwrap(), 0xFFFF);
    assert_eq!(v.mmio_read(0xFEB0_0000, 8).unwrap(), u64::MAX);
    v.pio_write(0x600, 1, 1).unwrap();
    // Straddling the end of the claimed ports: not inside one range, so the null handler.
    assert_eq!(v.pio_read(PORT_BASE as u16 + 15, 2).unwrap(), 0xFFFF);
    let r = h.sim.report(1);
    assert_eq!(r.unclaimed, 4);
    assert_eq!(r.ioreqs_by_type.values().sum::<u64>(), 0);
}

#[test]
fn rep_string_ops_with_data_is_ptr_and_invalidate() {
    let (h, _) = start(1, &[]);
    let mut v = h.sim.vcpu(1, 0);
    // rep movs guest RAM -> MMIO, 8 dwords, crossing a guest page boundary.
    let src = 0x1FF0u64;
    let data: Vec<u8> = (0u8..32).collect();
    assert!(h.sim.write_guest(1, src, &data));
    v.rep(IOREQ_TYPE_COPY, MMIO_BASE + 0x200, 4, 8, src, false, false)
        .unwrap();
    for i in 0..8u64 {
        let want = u32::from_le_bytes(data[i as usize * 4..i as usize * 4 + 4].try_into().unwrap());
        assert_eq!(
            v.mmio_read(MMIO_BASE + 0x200 + i * 4, 4).unwrap(),
            u64::from(want)
        );
    }
    // rep movs MMIO -> guest RAM with the direction flag set: items at decreasing addresses.
    let dst = 0x3000u64;
    v.rep(
        IOREQ_TYPE_COPY,
        MMIO_BASE + 0x200 + 7 * 4,
        4,
        8,
        dst + 7 * 4,
        true,
        true,
    )
    .unwrap();
    let mut back = vec![0u8; 32];
    assert!(h.sim.read_guest(1, dst, &mut back));
    assert_eq!(back, data);
    // rep outsb: every byte to the same port, so the port holds the last one.
    assert!(h.sim.write_guest(1, 0x5000, b"hello"));
    v.rep(IOREQ_TYPE_PIO, PORT_BASE + 3, 1, 5, 0x5000, false, false)
        .unwrap();
    assert_eq!(
        v.pio_read(PORT_BASE as u16 + 3, 1).unwrap(),
        u64::from(b'o')
    );
    // rep insw: the same port read 3 times into guest RAM.
    v.pio_write(PORT_BASE as u16 + 4, 2, 0x4241).unwrap();
    v.rep(IOREQ_TYPE_PIO, PORT_BASE + 4, 2, 3, 0x6000, true, false)
        .unwrap();
    let mut ins = [0u8; 6];
    assert!(h.sim.read_guest(1, 0x6000, &mut ins));
    assert_eq!(&ins, b"ABABAB");
    assert!(status(&h)["guest_pages_mapped"].as_u64().unwrap() >= 3);
    // INVALIDATE drops every guest mapping and is answered like any request.
    v.invalidate().unwrap();
    let s = status(&h);
    assert_eq!(s["guest_pages_mapped"], 0, "{s}");
    assert_eq!(s["stats"]["ioreqs_by_type"]["invalidate"], 1);
    // A pointer outside guest RAM is answered (nothing written), and the process lives on.
    v.rep(
        IOREQ_TYPE_COPY,
        MMIO_BASE,
        4,
        2,
        0xFFFF_F000_0000,
        false,
        false,
    )
    .unwrap();
    assert_eq!(v.pio_read(PORT_BASE as u16 + 4, 2).unwrap(), 0x4241);
}

#[test]
fn buffered_writes_through_the_atomic_ring() {
    let (h, _) = start(1, &["--bufioreq", "2"]);
    let mut v = h.sim.vcpu(1, 0);
    // More writes than the ring has slots, so the pointers wrap and Xen rebases them.
    for i in 0..700u64 {
        assert!(v.buffered_write(IOREQ_TYPE_PIO, PORT_BASE, 2, i).unwrap() || i > 0);
        if i % 100 == 99 {
            // A synchronous read orders after every buffered write before it.
            assert_eq!(v.pio_read(PORT_BASE as u16, 2).unwrap(), i);
        }
    }
    // An 8-byte MMIO write takes two slots.
    assert!(v
        .buffered_write(IOREQ_TYPE_COPY, LOW_MMIO_BASE + 8, 8, 0x1122_3344_5566_7788)
        .unwrap());
    assert_eq!(
        v.mmio_read(LOW_MMIO_BASE + 8, 8).unwrap(),
        0x1122_3344_5566_7788
    );
    let s = status(&h);
    assert!(s["stats"]["buffered"].as_u64().unwrap() >= 600, "{s}");
    assert_eq!(s["stats"]["bad_requests"], 0);
}

#[test]
fn bad_requests_are_answered_and_the_process_survives() {
    let (h, _) = start(2, &[]);
    let mut v = h.sim.vcpu(1, 1);
    let req = |type_: u8, addr: u64, size: u32, count: u32, read: bool| {
        let mut r = Ioreq {
            addr,
            size,
            count,
            type_,
            ..Default::default()
        };
        r.set_dir(if read { IOREQ_READ } else { IOREQ_WRITE });
        r
    };
    let mut cases = Vec::new();
    for size in [0u32, 3, 5, 6, 7, 9, 16, u32::MAX] {
        cases.push((req(IOREQ_TYPE_PIO, PORT_BASE, size, 1, true), "pio size"));
        cases.push((req(IOREQ_TYPE_COPY, MMIO_BASE, size, 1, true), "mmio size"));
    }
    cases.push((req(IOREQ_TYPE_PIO, PORT_BASE, 8, 1, true), "pio size 8"));
    cases.push((req(IOREQ_TYPE_COPY, MMIO_BASE, 4, 0, true), "count 0"));
    cases.push((
        req(IOREQ_TYPE_COPY, MMIO_BASE, 4, u32::MAX, true),
        "absurd count",
    ));
    cases.push((
        req(IOREQ_TYPE_COPY, u64::MAX - 1, 4, 1, true),
        "address overflow",
    ));
    cases.push((req(IOREQ_TYPE_PIO, 0xFFFF, 4, 1, true), "port overflow"));
    cases.push((
        req(
            IOREQ_TYPE_PCI_CONFIG,
            (u64::from(SBDF) << 32) | 0xFFE,
            4,
            1,
            true,
        ),
        "config beyond 4 KiB",
    ));
    cases.push((req(42, MMIO_BASE, 4, 1, true), "unknown type"));
    let mut dfo = req(IOREQ_TYPE_COPY, MMIO_BASE, 4, 16, true);
    dfo.set_df(true);
    cases.push((dfo, "df below the range"));
    let mut ptr = req(IOREQ_TYPE_COPY, MMIO_BASE, 4, 4, false);
    ptr.set_data_is_ptr(true);
    ptr.data = u64::MAX - 4;
    cases.push((ptr, "guest pointer overflow"));
    let n = cases.len();
    for (r, what) in cases {
        let got = v
            .submit_to_server(0, r)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if r.is_read() && !r.data_is_ptr() && r.type_ != IOREQ_TYPE_INVALIDATE {
            let want = ioreq_server::server::dispatch::size_mask(r.size);
            assert_eq!(got, want, "{what}: reads must be all-ones");
        }
    }
    // Writes of bad requests were dropped: the storage is unchanged.
    let mut w = req(IOREQ_TYPE_PIO, PORT_BASE, 3, 1, false);
    w.data = 0xFFFFFF;
    v.submit_to_server(0, w).unwrap();
    assert_eq!(v.pio_read(PORT_BASE as u16, 4).unwrap(), 0);
    let s = status(&h);
    assert!(
        s["stats"]["bad_requests"].as_u64().unwrap() >= n as u64 - 1,
        "{s}"
    );
    assert_eq!(
        s["stats"]["ioreqs_by_vcpu"][1].as_u64().unwrap(),
        s["stats"]["ioreqs_by_type"]
            .as_object()
            .unwrap()
            .values()
            .map(|x| x.as_u64().unwrap())
            .sum::<u64>()
    );
}

#[test]
fn vcpus_in_parallel() {
    let (h, _) = start(4, &[]);
    let threads: Vec<_> = (0..4u32)
        .map(|c| {
            let sim = h.sim.clone();
            std::thread::spawn(move || {
                let mut v = sim.vcpu(1, c);
                for i in 0..200u64 {
                    let a = MMIO_BASE + u64::from(c) * 0x100;
                    v.mmio_write(a, 8, i << 8 | u64::from(c)).unwrap();
                    assert_eq!(v.mmio_read(a, 8).unwrap(), i << 8 | u64::from(c));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let s = status(&h);
    for c in 0..4 {
        assert_eq!(s["stats"]["ioreqs_by_vcpu"][c], 400, "{s}");
    }
}

#[test]
fn a_device_model_killed_mid_request_leaves_the_vcpu_reported_stuck() {
    let mut h = Harness::new(1, 1, Duration::from_secs(2));
    let cfg = h.write_config("");
    let pid = h.spawn(&scratch_dm(), &cfg, &["--stall-port", "0x50f"]);
    assert!(h.wait_ready(&["scratch-dm"]));
    let sim = h.sim.clone();
    let t = std::thread::spawn(move || sim.vcpu(1, 0).pio_read(0x50F, 1));
    std::thread::sleep(Duration::from_millis(300));
    h.kill(pid);
    let started = Instant::now();
    let r = t.join().unwrap();
    assert!(matches!(r, Err(GuestError::Stuck { vcpu: 0, .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let rep = h.sim.report(1);
    assert_eq!(rep.stuck.len(), 1, "{:?}", rep.stuck);
    assert_eq!(rep.stuck[0]["addr"], 0x50F);
}

#[test]
fn control_socket_shutdown_and_bad_commands() {
    let (mut h, pid) = start(1, &[]);
    let sock = h.control_socket("scratch-dm");
    let r = control::request(&sock, &serde_json::json!({"cmd": "frobnicate"})).unwrap();
    assert_eq!(r["ok"], false);
    let s = status(&h);
    assert!(s["uptime_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(s["ranges"].as_array().unwrap().len(), 4);
    let r = control::request(&sock, &serde_json::json!({"cmd": "shutdown"})).unwrap();
    assert_eq!(r["ok"], true);
    assert_eq!(h.wait_exit(pid, Duration::from_secs(5)), Some(0));
    assert!(h
        .sim
        .wait_for(1, Duration::from_secs(5), |d| d.servers() == 0));
}

#[test]
fn setup_failure_destroys_the_server_and_exits_nonzero() {
    let mut h = Harness::new(1, 1, Duration::from_secs(2));
    // Another process holds the scratch ports... in the same server? No: make range
    // registration fail the way Xen fails it, with an injected -ENOSPC.
    h.sim
        .fail_next_dm_ops(1, XEN_DMOP_MAP_IO_RANGE_TO_IOREQ_SERVER, 1, libc::ENOSPC);
    let cfg = h.write_config("");
    let pid = h.spawn(&scratch_dm(), &cfg, &[]);
    assert_eq!(h.wait_exit(pid, Duration::from_secs(10)), Some(1));
    let ops = h.sim.report(1).dm_ops;
    assert_eq!(ops.last().unwrap()["op"], "destroy_ioreq_server", "{ops:?}");
    assert!(h
        .sim
        .wait_for(1, Duration::from_secs(1), |d| d.servers() == 0));
}

#[test]
fn missing_sim_socket_is_a_clear_error() {
    let h = Harness::new(1, 1, Duration::from_secs(1));
    let cfg = h.write_config("");
    std::fs::remove_file(h.dir.join("sim.sock")).unwrap();
    let out = std::process::Command::new(scratch_dm())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sim.sock does not exist") && err.contains("xen-sim"),
        "{err}"
    );
}

#[test]
fn xen_transport_without_xen_names_the_file_and_the_alternative() {
    let h = Harness::new(1, 1, Duration::from_secs(1));
    let cfg = h.write_config("");
    let out = std::process::Command::new(scratch_dm())
        .arg("--config")
        .arg(&cfg)
        .args(["--transport", "xen"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/xen/privcmd") && err.contains("--transport sim"),
        "{err}"
    );
}

#[test]
fn a_command_followed_at_once_by_eof_still_gets_its_answer() {
    use std::io::{Read, Write};
    let (h, _) = start(1, &[]);
    for _ in 0..20 {
        let mut s =
            std::os::unix::net::UnixStream::connect(h.control_socket("scratch-dm")).unwrap();
        s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(reply.trim()).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
        assert_eq!(v["ok"], true);
    }
}
