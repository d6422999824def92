//! What the fuzz targets share: the count of guest accesses a fuzzing process has made.
//!
//! libFuzzer counts inputs (`exec/s`); a campaign is measured in guest accesses (an input
//! holds from one to thousands of them), so each target reports what it performed here,
//! and every 2^16 accesses a line `#accesses N` goes to stderr, into libFuzzer's log.
//! `scripts/fuzz-short` and `scripts/fuzz-campaign` read the last such line (a lower bound:
//! the accesses since it are not shown).
#![deny(missing_docs)]

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ACCESSES: AtomicU64 = AtomicU64::new(0);

/// Granularity of the `#accesses` lines (2^16: a 15 s CI run of the slowest target still
/// prints a few).
const REPORT_SHIFT: u32 = 16;

/// Count `n` guest accesses performed by this process.
pub fn accesses(n: usize) {
    let n = n as u64;
    let before = ACCESSES.fetch_add(n, Relaxed);
    let after = before + n;
    if before >> REPORT_SHIFT != after >> REPORT_SHIFT {
        eprintln!("#accesses {after}");
    }
}

/// The PCI targets' shared frame: a prepared bridge per set-up, an input run on a copy of it.
pub mod pci {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use pci_host_bridge::backend::snapshot::SnapshotDevice;
    use pci_host_bridge::PciHostBridge;
    use pci_host_bridge_testing::{Op, Template};

    /// The embedded snapshots (JSON) as devices.
    pub fn snapshots(json: &[&str]) -> Vec<SnapshotDevice> {
        json.iter()
            .map(|j| SnapshotDevice::from_json(j, "embedded").expect("embedded snapshot"))
            .collect()
    }

    /// `t` after checking the state its prologue left (once per template, not per input).
    pub fn checked(t: Template) -> Template {
        let (bridge, checker) = t.parts();
        if let Err(e) = checker.check_state(bridge) {
            panic!("after the prologue: {e}");
        }
        t
    }

    thread_local! {
        static TEMPLATES: RefCell<HashMap<u8, Template>> = RefCell::new(HashMap::new());
    }

    /// The selector bit that asks for the checked stop at the end of an input (clear: stop).
    /// A stop (unbinding, unmapping and handing back every function) costs as much as a few
    /// dozen accesses and is the same for every input that leaves the same state, so the
    /// fuzzer chooses it, as it chooses everything else: about half its inputs end with one.
    /// None of the targets' keys uses this bit.
    pub const NO_STOP: u8 = 0x40;

    /// One input: its first byte picks the set-up (`key` of it names the template, built by
    /// `template` on first use) and whether the input ends with a stop ([`NO_STOP`]), the rest
    /// is decoded into accesses by `decode`; each access is applied and checked, then a
    /// checked stop must leave nothing in Xen.
    pub fn run(
        data: &[u8],
        key: fn(u8) -> u8,
        template: fn(u8) -> Template,
        decode: fn(&PciHostBridge, &[u8]) -> Vec<Op>,
    ) {
        let Some((&sel, rest)) = data.split_first() else {
            return;
        };
        let k = key(sel);
        let (mut bridge, mut checker) = TEMPLATES.with_borrow_mut(|t| {
            t.entry(k)
                .or_insert_with(|| template(k))
                .fork()
                .expect("fork")
        });
        let ops = decode(&bridge, rest);
        crate::accesses(ops.len());
        for op in ops {
            if let Err(e) = checker.apply(&mut bridge, op) {
                panic!("{e}");
            }
        }
        // Whatever the guest did, the hand-back leaves nothing in Xen.
        if sel & NO_STOP == 0 {
            if let Err(e) = checker.stop_and_check(&mut bridge) {
                panic!("stop: {e}");
            }
        }
    }
}
