//! Wire conformance of `xen_abi::dmop::DmOp::encode()` with Debian's real
//! libxendevicemodel.
//!
//! `tests/c/dmop_driver.c` calls libxendevicemodel with fixed arguments under the LD_PRELOAD
//! interposer `tests/c/dmop_interposer.c`, which fakes /dev/xen/privcmd and records every
//! `IOCTL_PRIVCMD_DM_OP` (request number, domid, buffer count, each buffer's bytes before and
//! after the fake hypervisor filled the outputs). For each call this test checks that what
//! the library sent is exactly what the Rust xen transport sends for the same op:
//! `IOCTL_PRIVCMD_DM_OP` with the same domid and one buffer of `XEN_DM_OP_SIZE` bytes equal to
//! `DmOp::encode()`; that `DmOp::decode()` gives the op back; and that `DmOp::read_output()`
//! reads the values libxendevicemodel returned to its caller. A missing compiler or library
//! fails the test with the apt package to install.
#![forbid(unsafe_code)]

// Shared with the other ABI test; kept out of the `tests` library so this file does not
// depend on tests/src/lib.rs.
#[path = "../src/cc.rs"]
mod cc;
mod wire_dump;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use wire_dump::{hex, num, unhex};
use xen_abi::dmop::Space;
use xen_abi::dmop::{DmOp, IoRange};
use xen_abi::*;

/// The driver's fixed arguments (tests/c/dmop_driver.c `DOM`, `ID`).
const DOM: DomId = 0x1234;
const ID: IoservId = 0x0102;

/// Every call the driver makes, by its label, with the op the Rust side sends for it.
fn expected_ops() -> Vec<(String, DmOp)> {
    use DmOp::*;
    let mut ops: Vec<(String, DmOp)> = Vec::new();
    let mut add = |label: &str, op: DmOp| ops.push((label.to_string(), op));
    add(
        "create_ioreq_server/0",
        CreateIoreqServer {
            handle_bufioreq: HVM_IOREQSRV_BUFIOREQ_OFF,
        },
    );
    add(
        "create_ioreq_server/1",
        CreateIoreqServer {
            handle_bufioreq: HVM_IOREQSRV_BUFIOREQ_LEGACY,
        },
    );
    add(
        "create_ioreq_server/2",
        CreateIoreqServer {
            handle_bufioreq: HVM_IOREQSRV_BUFIOREQ_ATOMIC,
        },
    );
    // libxendevicemodel sets XEN_DMOP_no_gfns when both gfn pointers are NULL, only then.
    add(
        "get_ioreq_server_info/gfns",
        GetIoreqServerInfo { id: ID, flags: 0 },
    );
    add(
        "get_ioreq_server_info/no_gfns",
        GetIoreqServerInfo {
            id: ID,
            flags: XEN_DMOP_NO_GFNS,
        },
    );
    add(
        "get_ioreq_server_info/ioreq_gfn_only",
        GetIoreqServerInfo { id: ID, flags: 0 },
    );
    add(
        "map_io_range/port",
        MapIoRange(IoRange {
            id: ID,
            space: Space::Port,
            start: 0xb000,
            end: 0xb00f,
        }),
    );
    add(
        "map_io_range/memory",
        MapIoRange(IoRange {
            id: ID,
            space: Space::Memory,
            start: 0xfec0_0000,
            end: 0x1_fec0_00ff,
        }),
    );
    let sbdf = u64::from(pci_sbdf(0x0001, 0x02, 0x1f, 7));
    add(
        "map_pcidev",
        MapIoRange(IoRange {
            id: ID,
            space: Space::PciConfig,
            start: sbdf,
            end: sbdf,
        }),
    );
    add(
        "unmap_io_range/port",
        UnmapIoRange(IoRange {
            id: ID,
            space: Space::Port,
            start: 0xcf8,
            end: 0xcff,
        }),
    );
    add(
        "unmap_io_range/memory",
        UnmapIoRange(IoRange {
            id: ID,
            space: Space::Memory,
            start: 0xfee0_0000,
            end: 0xfeef_ffff,
        }),
    );
    let sbdf = u64::from(pci_sbdf(0, 0, 3, 0));
    add(
        "unmap_pcidev",
        UnmapIoRange(IoRange {
            id: ID,
            space: Space::PciConfig,
            start: sbdf,
            end: sbdf,
        }),
    );
    add(
        "set_ioreq_server_state/0",
        SetIoreqServerState {
            id: ID,
            enabled: false,
        },
    );
    add(
        "set_ioreq_server_state/1",
        SetIoreqServerState {
            id: ID,
            enabled: true,
        },
    );
    add(
        "set_ioreq_server_state/2",
        SetIoreqServerState {
            id: ID,
            enabled: true,
        },
    ); // C: !!enabled
    add("destroy_ioreq_server", DestroyIoreqServer { id: ID });
    add(
        "set_pci_intx_level/1",
        SetPciIntxLevel {
            domain: 0,
            bus: 0,
            device: 3,
            intx: 1,
            level: 1,
        },
    );
    add(
        "set_pci_intx_level/0",
        SetPciIntxLevel {
            domain: 0x0102,
            bus: 0x03,
            device: 0x1f,
            intx: 3,
            level: 0,
        },
    );
    add(
        "set_isa_irq_level/1",
        SetIsaIrqLevel {
            isa_irq: 9,
            level: 1,
        },
    );
    add(
        "set_isa_irq_level/0",
        SetIsaIrqLevel {
            isa_irq: 15,
            level: 0,
        },
    );
    add(
        "inject_msi/low",
        InjectMsi {
            addr: 0xfee0_1000,
            data: 0x4031,
        },
    );
    add(
        "inject_msi/high",
        InjectMsi {
            addr: 0x1_2345_6789,
            data: 0x89ab_cdef,
        },
    );
    for reason in [
        SHUTDOWN_POWEROFF,
        SHUTDOWN_REBOOT,
        SHUTDOWN_SUSPEND,
        SHUTDOWN_CRASH,
        SHUTDOWN_WATCHDOG,
        SHUTDOWN_SOFT_RESET,
    ] {
        add(&format!("shutdown/{reason}"), RemoteShutdown { reason });
    }
    add("nr_vcpus", NrVcpus);
    ops
}

/// Exhaustive on purpose: a new `DmOp` variant does not build until it is named here, and
/// the test then fails until the driver exercises it.
fn variant(op: &DmOp) -> &'static str {
    match op {
        DmOp::CreateIoreqServer { .. } => "CreateIoreqServer",
        DmOp::GetIoreqServerInfo { .. } => "GetIoreqServerInfo",
        DmOp::MapIoRange(..) => "MapIoRange",
        DmOp::UnmapIoRange(..) => "UnmapIoRange",
        DmOp::SetIoreqServerState { .. } => "SetIoreqServerState",
        DmOp::DestroyIoreqServer { .. } => "DestroyIoreqServer",
        DmOp::SetPciIntxLevel { .. } => "SetPciIntxLevel",
        DmOp::SetIsaIrqLevel { .. } => "SetIsaIrqLevel",
        DmOp::InjectMsi { .. } => "InjectMsi",
        DmOp::RemoteShutdown { .. } => "RemoteShutdown",
        DmOp::NrVcpus => "NrVcpus",
    }
}
const ALL_VARIANTS: [&str; 11] = [
    "CreateIoreqServer",
    "GetIoreqServerInfo",
    "MapIoRange",
    "UnmapIoRange",
    "SetIoreqServerState",
    "DestroyIoreqServer",
    "SetPciIntxLevel",
    "SetIsaIrqLevel",
    "InjectMsi",
    "RemoteShutdown",
    "NrVcpus",
];

// -------------------------------------------------------------------------------------------
// The dump
// -------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Buf {
    size: usize,
    input: Vec<u8>,
    output: Vec<u8>,
}

#[derive(Debug)]
enum Event {
    Open {
        path: String,
        result: String,
    },
    DmOp {
        req: u64,
        dom: u64,
        num: u64,
        bufs: Vec<Buf>,
    },
    Restrict {
        req: u64,
        dom: u64,
    },
    Unexpected {
        req: u64,
    },
    Result {
        name: String,
        value: u64,
    },
}

type Call = wire_dump::Call<Event>;

fn parse_dump(text: &str) -> Vec<Call> {
    wire_dump::parse_dump(text, |call, w, line| {
        Some(match (w[0], w.get(2).copied()) {
            ("OPEN", _) => Event::Open {
                path: w[1].to_string(),
                result: w[2].to_string(),
            },
            ("IOCTL", Some("DM_OP")) => Event::DmOp {
                req: num(w[1]),
                dom: num(w[3]),
                num: num(w[4]),
                bufs: Vec::new(),
            },
            ("IOCTL", Some("RESTRICT")) => Event::Restrict {
                req: num(w[1]),
                dom: num(w[3]),
            },
            ("IOCTL", Some("UNEXPECTED")) => Event::Unexpected { req: num(w[1]) },
            ("BUF", _) => {
                let buf = Buf {
                    size: num(w[2]) as usize,
                    input: unhex(w[3]),
                    output: unhex(w[4]),
                };
                match call.events.last_mut() {
                    Some(Event::DmOp { bufs, .. }) if num(w[1]) as usize == bufs.len() => {
                        bufs.push(buf)
                    }
                    _ => panic!("BUF line out of place: {line:?}"),
                }
                return None;
            }
            ("RESULT", _) => {
                assert_eq!(w[1], call.label, "RESULT for another call: {line:?}");
                Event::Result {
                    name: w[2].to_string(),
                    value: num(w[3]),
                }
            }
            _ => panic!("unknown dump line {line:?}"),
        })
    })
}

// -------------------------------------------------------------------------------------------
// Build and run
// -------------------------------------------------------------------------------------------

fn run_driver(dir: &Path) -> String {
    let so = wire_dump::build_interposer(dir, "dmop_interposer", "dmop interposer");
    let exe = wire_dump::build_driver(
        dir,
        "dmop_driver",
        "dmop driver (links Debian's libxendevicemodel)",
        &[],
        &["xendevicemodel"],
    );
    let dump = dir.join("dump.txt");
    cc::run(
        "dmop driver",
        Command::new(&exe)
            .env("LD_PRELOAD", &so)
            .env("DMOP_DUMP", &dump),
    );
    std::fs::read_to_string(&dump).unwrap_or_else(|e| panic!("no dump at {}: {e}", dump.display()))
}

// -------------------------------------------------------------------------------------------
// Comparison
// -------------------------------------------------------------------------------------------

/// Byte-by-byte difference, for the failure message.
fn diff(rust: &[u8], c: &[u8]) -> String {
    let n = rust.len().max(c.len());
    let offs: Vec<String> = (0..n)
        .filter(|&i| rust.get(i) != c.get(i))
        .map(|i| {
            let byte = |b: Option<&u8>| b.map_or("--".to_string(), |b| format!("{b:02x}"));
            format!("@{i}: Rust {} C {}", byte(rust.get(i)), byte(c.get(i)))
        })
        .collect();
    format!(
        "\n      Rust {}\n      C    {}\n      {}",
        hex(rust),
        hex(c),
        offs.join(", ")
    )
}

/// Check one recorded call against the Rust op; returns the mismatches.
fn check_call(call: &Call, op: &DmOp) -> Vec<String> {
    let mut bad = Vec::new();
    let label = &call.label;
    let dm_ops: Vec<&Event> = call
        .events
        .iter()
        .filter(|e| matches!(e, Event::DmOp { .. }))
        .collect();
    let [Event::DmOp {
        req,
        dom,
        num,
        bufs,
    }] = dm_ops.as_slice()
    else {
        return vec![format!(
            "{label}: expected exactly one DM_OP ioctl, got {:?}",
            call.events
        )];
    };
    if *req != IOCTL_PRIVCMD_DM_OP {
        bad.push(format!(
            "{label}: ioctl request C {req:#x}, Rust IOCTL_PRIVCMD_DM_OP {IOCTL_PRIVCMD_DM_OP:#x}"
        ));
    }
    if *dom != u64::from(DOM) {
        bad.push(format!("{label}: domid C {dom:#x}, Rust {DOM:#x}"));
    }
    // The Rust xen transport sends one buffer holding `op.encode()`.
    let rust = op.encode();
    if *num != 1 || bufs.len() != 1 {
        bad.push(format!(
            "{label}: C sent {num} buffers ({} recorded), Rust sends 1",
            bufs.len()
        ));
    }
    let Some(b) = bufs.first() else { return bad };
    if b.size != XEN_DM_OP_SIZE || b.input.len() != b.size {
        bad.push(format!(
            "{label}: C buffer is {} bytes, Rust sends XEN_DM_OP_SIZE = {XEN_DM_OP_SIZE}",
            b.size
        ));
    }
    if b.input != rust {
        bad.push(format!(
            "{label}: {op:?}: encode() differs from libxendevicemodel's bytes:{}",
            diff(&rust, &b.input)
        ));
    }
    match DmOp::decode(&b.input) {
        Ok(d) if d == *op => {}
        other => bad.push(format!(
            "{label}: DmOp::decode(libxendevicemodel's bytes) = {other:?}, expected {op:?}"
        )),
    }
    // What the library returned to its caller must be what read_output() finds in the
    // buffer the fake hypervisor filled in.
    let Ok(out) = <[u8; XEN_DM_OP_SIZE]>::try_from(b.output.as_slice()) else {
        bad.push(format!(
            "{label}: output buffer is {} bytes",
            b.output.len()
        ));
        return bad;
    };
    let got = op.read_output(&out);
    for e in &call.events {
        if let Event::Result { name, value } = e {
            let rust = match name.as_str() {
                "id" => got.id.map(u64::from),
                "bufioreq_port" => got.bufioreq_port.map(u64::from),
                "vcpus" => got.vcpus.map(u64::from),
                other => {
                    bad.push(format!("{label}: unknown RESULT {other}"));
                    continue;
                }
            };
            if rust != Some(*value) {
                bad.push(format!(
                    "{label}: libxendevicemodel returned {name} = {value:#x}, DmOp::read_output() gives {rust:x?}"
                ));
            }
        }
    }
    bad
}

#[test]
fn dm_op_bytes_match_libxendevicemodel() {
    let expected = expected_ops();
    let exercised: BTreeSet<&str> = expected.iter().map(|(_, op)| variant(op)).collect();
    wire_dump::assert_all_exercised(
        &ALL_VARIANTS,
        &exercised,
        "DmOp variants not exercised by the wire test",
    );

    let dir = cc::ScratchDir::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "abi_wire");
    let calls = parse_dump(&run_driver(dir.path()));

    let mut bad: Vec<String> = Vec::new();
    // Nothing but DM_OP and RESTRICT may reach the fake privcmd.
    for call in &calls {
        for e in &call.events {
            if let Event::Unexpected { req } = e {
                bad.push(format!(
                    "{}: unexpected ioctl {req:#x} on the fake privcmd",
                    call.label
                ));
            }
        }
    }
    // The labels: open, restrict, the ops in order, close.
    let labels: Vec<&str> = calls.iter().map(|c| c.label.as_str()).collect();
    let mut want: Vec<&str> = vec!["open", "restrict"];
    want.extend(expected.iter().map(|(l, _)| l.as_str()));
    want.push("close");
    assert_eq!(
        labels, want,
        "the driver's calls and this test's table are out of step"
    );

    // xendevicemodel_open: privcmd opened (by libxencall and by libxendevicemodel), then the
    // probe DM_OP(DOMID_INVALID, 0 buffers) libxendevicemodel uses to detect the ioctl.
    let open = &calls[0];
    let fake_opens =
        open.events.iter().filter(|e| matches!(e, Event::Open { path, result } if path == "/dev/xen/privcmd" && result == "fake")).count();
    if fake_opens == 0 {
        bad.push(format!(
            "open: /dev/xen/privcmd was never opened: {:?}",
            open.events
        ));
    }
    match open.events.iter().find(|e| matches!(e, Event::DmOp { .. })) {
        Some(Event::DmOp {
            req,
            dom,
            num,
            bufs,
        }) if *req == IOCTL_PRIVCMD_DM_OP
            && *dom == u64::from(DOMID_INVALID)
            && *num == 0
            && bufs.is_empty() => {}
        other => bad.push(format!(
            "open: expected the probe DM_OP(DOMID_INVALID, 0 bufs), got {other:?}"
        )),
    }
    // xendevicemodel_restrict: IOCTL_PRIVCMD_RESTRICT with the domid.
    match calls[1].events.as_slice() {
        [Event::Restrict { req, dom }] if *req == IOCTL_PRIVCMD_RESTRICT && *dom == u64::from(DOM) => {}
        other => bad.push(format!(
            "restrict: expected IOCTL_PRIVCMD_RESTRICT ({IOCTL_PRIVCMD_RESTRICT:#x}) for {DOM:#x}, got {other:?}"
        )),
    }

    for ((_, op), call) in expected.iter().zip(&calls[2..]) {
        bad.extend(check_call(call, op));
    }
    let results = calls
        .iter()
        .flat_map(|c| &c.events)
        .filter(|e| matches!(e, Event::Result { .. }))
        .count();
    println!(
        "abi_wire: {} libxendevicemodel calls compared byte for byte with DmOp::encode() ({} DmOp variants), \
         {} outputs compared with DmOp::read_output(), open probe and restrict checked; {} mismatches",
        expected.len(),
        exercised.len(),
        results,
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "DmOp wire encoding differs from libxendevicemodel:\n  {}",
        bad.join("\n  ")
    );
}
