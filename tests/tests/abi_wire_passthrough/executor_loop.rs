//! `PassthroughExecutor`'s memory_mapping loop over a fake channel scripted as
//! pt_interposer.c scripts libxenctrl's, against the calls libxenctrl made (deliberate
//! differences in `KNOWN_LOOP_DIFFERENCES`).

use super::*;

// -------------------------------------------------------------------------------------------
// The executor's memory_mapping loop against libxenctrl's
// -------------------------------------------------------------------------------------------

/// What the executor is asked to do in a loop case.
#[derive(Clone, Copy, Debug)]
enum LoopAction {
    /// `map_memory(gfn, mfn, nr)`.
    Map { gfn: u64, mfn: u64, nr: u64 },
    /// `unmap_memory(gfn)` of a run mapped before (with every call answered 0).
    Unmap { gfn: u64, mfn: u64, nr: u64 },
}

/// The `memory_mapping/*` calls of pt_driver.c: label, what the executor does for the same
/// libxenctrl call, and the script (verbatim from pt_driver.c's `SCRIPT(...)`).
fn loop_cases() -> Vec<(&'static str, LoopAction, Vec<i64>)> {
    use LoopAction::*;
    vec![
        (
            "memory_mapping/add",
            Map {
                gfn: 0xf0000,
                mfn: 0xe0000,
                nr: 16,
            },
            vec![],
        ),
        (
            "memory_mapping/remove",
            Unmap {
                gfn: 0xf0000,
                mfn: 0xe0000,
                nr: 16,
            },
            vec![],
        ),
        (
            "memory_mapping/partial",
            Map {
                gfn: G,
                mfn: M,
                nr: 200,
            },
            vec![64, 64, -E2BIG, -E2BIG, 10, 0, 0],
        ),
        (
            "memory_mapping/add_fails",
            Map {
                gfn: G,
                mfn: M,
                nr: 200,
            },
            vec![64, -EPERM, 0],
        ),
        (
            "memory_mapping/remove_fails",
            Unmap {
                gfn: G,
                mfn: M,
                nr: 130,
            },
            vec![64, -EPERM, 0],
        ),
        (
            "memory_mapping/e2big",
            Map {
                gfn: G,
                mfn: M,
                nr: 3,
            },
            vec![-E2BIG, -E2BIG],
        ),
    ]
}

/// Where the executor deliberately does not do what libxenctrl does: (label, why). For these
/// the calls up to the first error must still be the same; what follows is printed.
const KNOWN_LOOP_DIFFERENCES: [(&str, &str); 1] = [(
    "memory_mapping/add_fails",
    "rollback: libxenctrl removes the whole range it was asked to map (xc_domain.c \
     xc_domain_memory_mapping's undo pass, 200 frames here, including frames it never mapped); \
     the executor removes only the frames Xen reported done (64)",
)];

/// One memory_mapping hypercall: (first_gfn, first_mfn, nr_mfns, add, answer).
type MmCall = (u64, u64, u64, bool, i64);

fn mm_str(c: &MmCall) -> String {
    format!(
        "({:#x}, {:#x}, {}{}) -> {}",
        c.0,
        c.1,
        c.2,
        if c.3 { "" } else { ", remove" },
        ret_str(c.4)
    )
}

/// The memory_mapping domctls libxenctrl sent in one recorded call, read from its bytes.
fn libxenctrl_mm_calls(call: &Call) -> Vec<MmCall> {
    let p = XEN_DOMCTL_PAYLOAD_OFFSET;
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    call.hcalls()
        .into_iter()
        .filter(|h| {
            h.op == __HYPERVISOR_DOMCTL
                && h.input.len() > p + 28
                && h.input[0..4] == XEN_DOMCTL_MEMORY_MAPPING.to_le_bytes()
        })
        .map(|h| {
            let b = &h.input;
            let add = u32::from_le_bytes(b[p + 24..p + 28].try_into().expect("4 bytes"));
            (
                u64_at(b, p),
                u64_at(b, p + 8),
                u64_at(b, p + 16),
                add != 0,
                h.ret,
            )
        })
        .collect()
}

/// A fake channel answering memory_mapping from a script (as pt_interposer.c does) and
/// everything else with 0, logging the calls.
struct ScriptedChannel {
    script: Rc<RefCell<VecDeque<i64>>>,
    log: Rc<RefCell<Vec<MmCall>>>,
}

impl PtChannel for ScriptedChannel {
    fn domid(&self) -> DomId {
        DOM
    }
    fn call(&mut self, op: &PtOp) -> Result<u64, TransportError> {
        let ret = match *op {
            PtOp::MemoryMapping { gfn, mfn, nr, add } => {
                let ret = self.script.borrow_mut().pop_front().unwrap_or(0);
                self.log.borrow_mut().push((gfn, mfn, nr, add, ret));
                ret
            }
            _ => 0,
        };
        if ret < 0 {
            Err(TransportError::Hypervisor {
                what: format!("{op:?}"),
                errno: -ret as i32,
            })
        } else {
            Ok(ret as u64)
        }
    }
}

/// Run one loop case on a `PassthroughExecutor` over the scripted channel.
fn executor_mm_calls(action: LoopAction, script: &[i64]) -> (Vec<MmCall>, String) {
    let sc = Rc::new(RefCell::new(VecDeque::new()));
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut ex = PassthroughExecutor::new(Box::new(ScriptedChannel {
        script: sc.clone(),
        log: log.clone(),
    }));
    let result = match action {
        LoopAction::Map { gfn, mfn, nr } => {
            sc.borrow_mut().extend(script.iter().copied());
            ex.map_memory(gfn, mfn, nr)
        }
        LoopAction::Unmap { gfn, mfn, nr } => {
            ex.map_memory(gfn, mfn, nr)
                .expect("mapping the run to remove (every call answered 0)");
            log.borrow_mut().clear();
            sc.borrow_mut().extend(script.iter().copied());
            ex.unmap_memory(gfn)
        }
    };
    let calls = log.borrow().clone();
    (calls, format!("{result:?}"))
}

#[test]
fn executor_memory_mapping_loop_matches_libxenctrl() {
    let runs = recorded();
    let mut bad: Vec<String> = Vec::new();
    let cases = loop_cases();
    let driver_mm_labels: Vec<&str> = runs[0]
        .iter()
        .map(|c| c.label.as_str())
        .filter(|l| l.starts_with("memory_mapping/"))
        .collect();
    let ours: Vec<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(
        driver_mm_labels, ours,
        "pt_driver.c's memory_mapping calls and loop_cases() are out of step"
    );
    println!("xc_domain_memory_mapping vs PassthroughExecutor (first_gfn, first_mfn, nr_mfns) -> answer:");
    for (label, action, script) in &cases {
        let call = runs[0]
            .iter()
            .find(|c| c.label == *label)
            .expect("recorded call");
        let c = libxenctrl_mm_calls(call);
        let (r, result) = executor_mm_calls(*action, script);
        let show = |v: &[MmCall]| v.iter().map(mm_str).collect::<Vec<_>>().join("; ");
        println!("  {label} (script {script:?}):");
        println!("    libxenctrl: {}", show(&c));
        println!("    executor:   {} => {result}", show(&r));
        // libxenctrl's outcome (rc) and the executor's must agree: success or failure.
        let c_ok = call.result("rc") == Some(0);
        if c_ok != result.starts_with("Ok") {
            bad.push(format!(
                "{label}: libxenctrl returned {:?}, the executor {result}",
                call.result("rc")
            ));
        }
        if let Some((_, why)) = KNOWN_LOOP_DIFFERENCES.iter().find(|k| k.0 == *label) {
            // Same calls up to and including the first error.
            let upto = |v: &[MmCall]| {
                let n = v.iter().position(|x| x.4 < 0).map_or(v.len(), |i| i + 1);
                v[..n].to_vec()
            };
            if upto(&c) != upto(&r) {
                bad.push(format!(
                    "{label}: the calls up to the first error differ:\n      libxenctrl {}\n      executor   {}",
                    show(&upto(&c)),
                    show(&upto(&r))
                ));
            }
            if c == r {
                bad.push(format!(
                    "{label}: listed in KNOWN_LOOP_DIFFERENCES but the sequences are now equal"
                ));
            }
            println!("    (known difference: {why})");
        } else if c != r {
            let first = c
                .iter()
                .zip(&r)
                .position(|(a, b)| a != b)
                .unwrap_or(c.len().min(r.len()));
            bad.push(format!(
                "{label}: script {script:?}: the executor's memory_mapping calls differ from libxenctrl's from call #{first}:\n      libxenctrl {}\n      executor   {}",
                show(&c),
                show(&r)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "PassthroughExecutor does not loop like libxenctrl's xc_domain_memory_mapping:\n  {}",
        bad.join("\n  ")
    );
}
