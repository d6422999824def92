//! Wire conformance of `xen_abi::passthrough::PtOp::encode_4_17()` with Debian's real
//! libxenctrl 4.17 (domctl interface version 0x15).
//!
//! `tests/c/pt_driver.c` calls libxenctrl's passthrough functions with fixed arguments under
//! the LD_PRELOAD interposer `tests/c/pt_interposer.c`, which fakes /dev/xen/privcmd, records
//! every `IOCTL_PRIVCMD_HYPERCALL` (op, the five arguments, and the bytes of the domctl or
//! physdev argument struct the library's hypercall buffer holds, before and after the fake
//! hypervisor answered) and answers from a script. For each call this test checks that the
//! library made exactly the hypercalls the Rust side makes for the same operation: same
//! hypercall and physdev command, and an argument struct equal byte for byte to
//! `encode_4_17()` — the domctl envelope (cmd, interface_version, domain) and the whole
//! 128-byte union, padding included.
//!
//! Uninitialised bytes: libxenctrl 4.17 fills a `struct xen_domctl` on its stack without
//! zeroing it (`DECLARE_DOMCTL`, tools/libs/ctrl/xc_private.h:64) and sends all 144 bytes. The
//! driver paints the stack with a canary before each call, and runs twice with different
//! canaries (0xA5, 0x5A). A byte that differs between the two runs, and equals the canary in
//! each, is proven uninitialised: it is not compared, and the Rust side must have 0 there.
//! Every byte equal in both runs is compared. The only exception is the domctls libxenctrl
//! makes from inside a call it is already in (the undo pass of `xc_domain_memory_mapping`):
//! the painted stack was used by the outer call's frames, so there uninitialised bytes hold
//! stale stack data, equal in both runs, not the canary. For those, exactly the bytes the
//! painted calls of the same op proved written are compared (for `getdomaininfo`, whose union
//! is OUT-only, that is the envelope).
//!
//! `PHYSDEVOP_prepare_msix` / `release_msix` have no libxenctrl wrapper (see pt_driver.c):
//! the reference is `struct physdev_pci_device` from <xen/physdev.h>, sent through libxencall.
//!
//! The partial-count loop of `xc_domain_memory_mapping` is recorded too: the fake hypervisor
//! answers positive counts smaller than `nr` (what Xen 4.17 x86 does after 64 iterations,
//! xen/arch/x86/mm/p2m.c:1670-1738) and `-E2BIG`, and the sequence of
//! (first_gfn, first_mfn, nr_mfns) the library sends is asserted. A second test drives
//! `ioreq_server::executor::PassthroughExecutor` over a fake channel scripted the same way
//! and compares its memory_mapping calls with libxenctrl's (deliberate differences are listed
//! in `KNOWN_LOOP_DIFFERENCES`).
//!
//! A missing compiler or library fails the test with the apt package to install.
//!
//! This file holds the table of the driver's calls with the hypercalls the Rust side makes for
//! each (`expected()`), and reading, building and running what both tests share; the
//! byte-for-byte comparison is in `hypercalls.rs`, the memory_mapping loop in
//! `executor_loop.rs`.
#![forbid(unsafe_code)]

// Shared with the other ABI tests; kept out of the `tests` library so this file does not
// depend on tests/src/lib.rs.
#[path = "../../src/cc.rs"]
mod cc;
#[path = "../wire_dump/mod.rs"]
mod wire_dump;

mod executor_loop;
mod hypercalls;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::process::Command;
use std::rc::Rc;
use std::sync::OnceLock;

use ioreq_server::executor::{PassthroughExecutor, PtChannel};
use ioreq_server::transport::TransportError;
use wire_dump::{hex, num};
use xen_abi::passthrough::{Hypercall, MsiMap, PtOp, PT_OP_NAMES};
use xen_abi::*;

/// The driver's target domain (tests/c/pt_driver.c `DOM`).
const DOM: DomId = 0x1234;
/// The two stack canaries.
const CANARIES: [u8; 2] = [0xA5, 0x5A];
/// What the fake hypervisor answers (tests/c/pt_interposer.c `FAKE_*`).
const FAKE_PIRQ: u64 = 0x3c;
const FAKE_TOT_PAGES: u64 = 0x12345;
const FAKE_MAX_PAGES: u64 = 0x40100;

const EPERM: i64 = 1;
const E2BIG: i64 = 7;
const DPCI_ADD: bool = true;
const DPCI_REMOVE: bool = false;

/// One hypercall the library is expected to make.
#[derive(Clone, Debug)]
struct Expect {
    op: PtOp,
    /// What the fake hypervisor answers: >= 0, or -errno.
    ret: i64,
    /// Made from inside a call libxenctrl was already in (not canary-painted).
    nested: bool,
}

/// One call of the driver.
struct Case {
    label: &'static str,
    hcalls: Vec<Expect>,
    /// The `RESULT` lines: what the libxenctrl function returned ("rc") and through pointers.
    results: Vec<(&'static str, i64)>,
}

fn ex(op: PtOp) -> Expect {
    Expect {
        op,
        ret: 0,
        nested: false,
    }
}

fn getinfo() -> Expect {
    ex(PtOp::GetDomainInfo)
}

fn mm(gfn: u64, mfn: u64, nr: u64, add: bool, ret: i64) -> Expect {
    Expect {
        op: PtOp::MemoryMapping { gfn, mfn, nr, add },
        ret,
        nested: false,
    }
}

fn nested(e: Expect) -> Expect {
    Expect { nested: true, ..e }
}

fn case(label: &'static str, hcalls: Vec<Expect>, rc: i64) -> Case {
    Case {
        label,
        hcalls,
        results: vec![("rc", rc)],
    }
}

/// The base of the partial-count cases (pt_driver.c).
const G: u64 = 0xf1000;
const M: u64 = 0x3e1234;

/// Every call the driver makes, in order, with the hypercalls the Rust side sends for it.
/// One case per call, spelled out even where neighbours differ only in their numbers, on
/// purpose: the table reads side by side with pt_driver.c.
fn expected() -> Vec<Case> {
    use PtOp::*;
    let sbdf = 0x0001_0311; // 0001:03:02.1
    let mut v = vec![
        Case {
            label: "getinfo",
            hcalls: vec![getinfo()],
            results: vec![
                ("rc", 1),
                ("domid", DOM as i64),
                ("max_memkb", (FAKE_MAX_PAGES * 4) as i64),
                ("nr_pages", FAKE_TOT_PAGES as i64),
                ("hvm", 1),
            ],
        },
        // Xen answered for the next domain: libxenctrl reports it, decode_result refuses it.
        Case {
            label: "getinfo/gone",
            hcalls: vec![getinfo()],
            results: vec![("rc", 1), ("domid", DOM as i64 + 1)],
        },
        case(
            "memory_mapping/add",
            vec![getinfo(), mm(0xf0000, 0xe0000, 16, DPCI_ADD, 0)],
            0,
        ),
        case(
            "memory_mapping/remove",
            vec![getinfo(), mm(0xf0000, 0xe0000, 16, DPCI_REMOVE, 0)],
            0,
        ),
        // Script 64, 64, -E2BIG, -E2BIG, 10, 0, 0: a positive count advances by that count;
        // E2BIG halves the batch (200 -> 100 -> 50) and retries from the same frame.
        case(
            "memory_mapping/partial",
            vec![
                getinfo(),
                mm(G, M, 200, DPCI_ADD, 64),
                mm(G + 64, M + 64, 136, DPCI_ADD, 64),
                mm(G + 128, M + 128, 72, DPCI_ADD, -E2BIG),
                mm(G + 128, M + 128, 72, DPCI_ADD, -E2BIG),
                mm(G + 128, M + 128, 50, DPCI_ADD, 10),
                mm(G + 138, M + 138, 50, DPCI_ADD, 0),
                mm(G + 188, M + 188, 12, DPCI_ADD, 0),
            ],
            0,
        ),
        // Script 64, -EPERM, 0: an error while adding stops the loop, and libxenctrl removes
        // the whole range (a nested xc_domain_memory_mapping, getinfo included).
        case(
            "memory_mapping/add_fails",
            vec![
                getinfo(),
                mm(G, M, 200, DPCI_ADD, 64),
                mm(G + 64, M + 64, 136, DPCI_ADD, -EPERM),
                nested(getinfo()),
                nested(mm(G, M, 200, DPCI_REMOVE, 0)),
            ],
            -1,
        ),
        // Script 64, -EPERM: an error while removing is kept and the rest of that chunk is
        // skipped (done += nr), the loop goes on; here it was the last chunk.
        case(
            "memory_mapping/remove_fails",
            vec![
                getinfo(),
                mm(G, M, 130, DPCI_REMOVE, 64),
                mm(G + 64, M + 64, 66, DPCI_REMOVE, -EPERM),
            ],
            -1,
        ),
        // Script -E2BIG, -E2BIG: 3 -> 1 frame, then libxenctrl gives up (rc -1, nothing done).
        case(
            "memory_mapping/e2big",
            vec![
                getinfo(),
                mm(G, M, 3, DPCI_ADD, -E2BIG),
                mm(G, M, 1, DPCI_ADD, -E2BIG),
            ],
            -1,
        ),
        Case {
            label: "map_pirq_msi/msi",
            hcalls: vec![ex(MapPirqMsi(MsiMap {
                sbdf: 0x0000_0310,
                entry: 0,
                table_base: 0,
                nvec: 1,
            }))],
            results: vec![("rc", 0), ("pirq", FAKE_PIRQ as i64)],
        },
        Case {
            label: "map_pirq_msi/msix",
            hcalls: vec![ex(MapPirqMsi(MsiMap {
                sbdf,
                entry: 5,
                table_base: 0xf0_fe00_3000,
                nvec: 1,
            }))],
            results: vec![("rc", 0), ("pirq", FAKE_PIRQ as i64)],
        },
        case("unmap_pirq", vec![ex(UnmapPirq { pirq: 0x77 })], 0),
        case(
            "update_msi_irq",
            vec![ex(BindPtIrqMsi {
                pirq: 0x77,
                gvec: 0x31,
                gflags: 0x12305,
                gtable: 0xfeb0_0000,
            })],
            0,
        ),
        // xc_domain_unbind_msi_irq has no gtable argument and leaves it uninitialised.
        case(
            "unbind_msi_irq",
            vec![ex(UnbindPtIrqMsi {
                pirq: 0x77,
                gvec: 0x31,
                gflags: 0x12305,
                gtable: 0,
            })],
            0,
        ),
        case("assign_device", vec![ex(AssignDevice { sbdf })], 0),
        case("test_assign_device", vec![ex(TestAssignDevice { sbdf })], 0),
        case(
            "deassign_device",
            vec![ex(DeassignDevice {
                sbdf,
                from_dom_io: false,
            })],
            0,
        ),
        case(
            "deassign_device/dom_io",
            vec![ex(DeassignDevice {
                sbdf,
                from_dom_io: true,
            })],
            0,
        ),
    ];
    for (label, allow) in [("iomem_permission/1", true), ("iomem_permission/0", false)] {
        v.push(case(
            label,
            vec![ex(IomemPermission {
                mfn: 0x3f_e000,
                nr: 0x20,
                allow,
            })],
            0,
        ));
    }
    for (label, allow) in [
        ("ioport_permission/1", true),
        ("ioport_permission/0", false),
    ] {
        v.push(case(
            label,
            vec![ex(IoportPermission {
                port: 0xc000,
                nr: 0x40,
                allow,
            })],
            0,
        ));
    }
    for (label, add) in [("ioport_mapping/1", true), ("ioport_mapping/0", false)] {
        v.push(case(
            label,
            vec![ex(IoportMapping {
                gport: 0xc000,
                mport: 0xd000,
                nr: 0x40,
                add,
            })],
            0,
        ));
    }
    for (label, allow) in [("irq_permission/1", true), ("irq_permission/0", false)] {
        v.push(case(
            label,
            vec![ex(IrqPermission { pirq: 0x77, allow })],
            0,
        ));
    }
    v.push(case("prepare_msix", vec![ex(PrepareMsix { sbdf })], 0));
    v.push(case("release_msix", vec![ex(ReleaseMsix { sbdf })], 0));
    v
}

/// Deliberate differences from libxenctrl: (label, byte offset in the argument, Rust, C, why).
const KNOWN_DIFFERENCES: [(&str, usize, u8, u8, &str); 2] = [
    (
        "map_pirq_msi/msi",
        4,
        MAP_PIRQ_TYPE_MSI_SEG as u8,
        MAP_PIRQ_TYPE_MSI as u8,
        "physdev_map_pirq.type: xc_physdev_map_pirq_msi always sends MAP_PIRQ_TYPE_MSI, for which \
         Xen takes segment 0 (xen/arch/x86/physdev.c:311-328); the Rust side sends MSI_SEG so Xen takes \
         the segment from bus >> 16. Same device for segment 0",
    ),
    (
        "map_pirq_msi/msix",
        4,
        MAP_PIRQ_TYPE_MSI_SEG as u8,
        MAP_PIRQ_TYPE_MSI as u8,
        "as above; here the segment is 1, which libxenctrl's encoding loses (Xen would map \
         0000:03:02.1, not 0001:03:02.1)",
    ),
];

// -------------------------------------------------------------------------------------------
// The dump
// -------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
#[allow(dead_code)] // Debug output
struct Hcall {
    op: u64,
    args: [u64; 5],
    /// >= 0, or -errno.
    ret: i64,
    input: Vec<u8>,
    output: Vec<u8>,
}

#[derive(Debug)]
#[allow(dead_code)] // Debug output
enum Event {
    Open {
        path: String,
        result: String,
    },
    Hcall(Hcall),
    Ioctl {
        req: u64,
        what: String,
        rest: Vec<String>,
    },
    Result {
        name: String,
        value: i64,
    },
}

type Call = wire_dump::Call<Event>;

impl Call {
    fn hcalls(&self) -> Vec<&Hcall> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Hcall(h) => Some(h),
                _ => None,
            })
            .collect()
    }
    fn result(&self, name: &str) -> Option<i64> {
        self.events.iter().find_map(|e| match e {
            Event::Result { name: n, value } if n == name => Some(*value),
            _ => None,
        })
    }
}

fn signed(s: &str) -> i64 {
    s.parse()
        .unwrap_or_else(|_| panic!("bad number {s:?} in the dump"))
}

/// The bytes of a hex string of the dump; "-" (no buffer) is none.
fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    wire_dump::unhex(s)
}

fn parse_dump(text: &str) -> Vec<Call> {
    wire_dump::parse_dump(text, |call, w, line| {
        Some(match w[0] {
            "OPEN" => Event::Open {
                path: w[1].to_string(),
                result: w[2].to_string(),
            },
            "HCALL" => {
                assert_eq!(w.len(), 11, "bad HCALL line {line:?}");
                let ret = signed(w[7]);
                let errno = signed(w[8]);
                Event::Hcall(Hcall {
                    op: num(w[1]),
                    args: [num(w[2]), num(w[3]), num(w[4]), num(w[5]), num(w[6])],
                    ret: if ret < 0 { -errno } else { ret },
                    input: unhex(w[9]),
                    output: unhex(w[10]),
                })
            }
            "IOCTL" => Event::Ioctl {
                req: num(w[1]),
                what: w[2].to_string(),
                rest: w[3..].iter().map(|s| s.to_string()).collect(),
            },
            "RESULT" => {
                assert_eq!(w[1], call.label, "RESULT for another call: {line:?}");
                Event::Result {
                    name: w[2].to_string(),
                    value: signed(w[3]),
                }
            }
            _ => panic!("unknown dump line {line:?}"),
        })
    })
}

// -------------------------------------------------------------------------------------------
// Build and run
// -------------------------------------------------------------------------------------------

/// Build the interposer and the driver, run the driver once per canary.
fn run_driver(dir: &Path) -> Vec<String> {
    let so = wire_dump::build_interposer(dir, "pt_interposer", "passthrough interposer");
    // Bind every symbol at start-up: the first call through a lazy PLT entry runs the
    // dynamic linker's resolver on the stack the canary was painted on (it zeroes its xsave
    // area there), which would hide uninitialised bytes.
    let exe = wire_dump::build_driver(
        dir,
        "pt_driver",
        "passthrough driver (links Debian's libxenctrl)",
        &["-Wl,-z,now"],
        &["xenctrl", "xencall"],
    );
    CANARIES
        .iter()
        .map(|canary| {
            let dump = dir.join(format!("dump-{canary:02x}.txt"));
            cc::run(
                "passthrough driver",
                Command::new(&exe)
                    .env("LD_PRELOAD", &so)
                    .env("LD_BIND_NOW", "1") // for libxenctrl's own calls into libxencall
                    .env("PT_DUMP", &dump)
                    .env("PT_CANARY", format!("{canary:#x}")),
            );
            std::fs::read_to_string(&dump)
                .unwrap_or_else(|e| panic!("no dump at {}: {e}", dump.display()))
        })
        .collect()
}

/// The two runs' dumps, parsed (the driver runs once per test binary).
fn recorded() -> &'static [Vec<Call>] {
    static RUNS: OnceLock<Vec<Vec<Call>>> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = cc::ScratchDir::new(Path::new(env!("CARGO_TARGET_TMPDIR")), "abi_wire_pt");
        run_driver(dir.path())
            .iter()
            .map(|d| parse_dump(d))
            .collect()
    })
}

fn ret_str(r: i64) -> String {
    match r {
        r if r >= 0 => r.to_string(),
        r if r == -E2BIG => "-E2BIG".into(),
        r if r == -EPERM => "-EPERM".into(),
        r => r.to_string(),
    }
}
