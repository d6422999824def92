//! The PM1 trap: ACPI PM1a/PM1b event and control blocks, the reset register and the
//! HW-reduced sleep registers, emulated the way a chipset does, turning the guest's sleep
//! requests into [`Action::Shutdown`](ioreq_server::device::Action::Shutdown).
//!
//! Registers (see [`crate::regs`]):
//! - PM1x_EVT_BLK: status (first half, write-1-to-clear) and enable (second half,
//!   read/write, reserved bits read 0);
//! - PM1x_CNT_BLK: SCI_EN reads 1 (PM1a; the chipset is always in ACPI mode), BM_RLD and SLP_TYP
//!   read back, GBL_RLS and SLP_EN are write-only and read 0;
//! - RESET_REG: write-only (reads 0);
//! - SLEEP_CONTROL_REG (write-only) and SLEEP_STATUS_REG (WAK_STS, write-1-to-clear).
//!
//! Every access size the server loop delivers (1, 2, 4, 8) works at any offset of a block: a
//! write is split into the registers it covers, each with a byte mask, so a one-byte write to
//! the high byte of PM1_CNT carries SLP_TYP and SLP_EN. Bytes of a range that belong to no
//! register read all-ones and ignore writes (rate-limited warning).
//!
//! # Sleep requests
//! SLP_EN written to PM1a (and PM1b where configured) is one request. With a PM1b block the OS
//! writes SLP_TYPa to PM1a and SLP_TYPb to PM1b (ACPICA: both SLP_TYP values first, then
//! SLP_TYP|SLP_EN to PM1a, then PM1b); the device acts when SLP_EN has reached both halves, in
//! either order, and matches the pair (a, b) against the \_Sx values. Without PM1b it matches
//! `a` alone against the first element; the HW-reduced sleep control register likewise
//! (ACPICA uses SLP_TYPa there). Matching order S5, S4, S3; SLP_TYP is 3 bits.
//! - S5, S4 -> `Shutdown { Poweroff }`;
//! - S3 -> `Shutdown { Suspend }` when `allow_s3`, otherwise refused (warning);
//! - no match -> warning (rate-limited).
//!
//! A request that is not acted upon (refused S3, no match) completes at once as a wake-up:
//! WAK_STS is set, so that an OS spinning on WAK_STS after SLP_EN (ACPICA does) returns.
//! An allowed S3 sets WAK_STS too, for the OS to see when it is resumed.
//!
//! # Exactly one shutdown
//! After a `Shutdown` action has been issued, the device is latched: further SLP_EN writes and
//! reset-register writes issue nothing (they are logged at debug level). ACPICA itself repeats
//! SLP_EN after 10 s for S4/S5; the latch absorbs that. The latch is released only by
//! [`PmTrap::reset`] (a new guest life), or, after `Suspend`, when the guest clears WAK_STS —
//! which ACPICA does on its resume path (and before every new sleep attempt), so a resumed
//! guest can suspend again. The server loop, not the device, retries a failing DM op: the
//! action is issued exactly once.

use ioreq_server::device::{Actions, ControlReply, Device, Range, ShutdownReason, Space};
use serde::Serialize;
use serde_json::json;

use crate::config::{Block, ConfigError, TrapSetup};
use crate::regs::{pm1_en, pm1_sts};
use ioreq_server::guest_warn as limited_warn;
use ioreq_server::ratelimit::RateLimit;

mod access;
mod sleep;
#[cfg(test)]
mod tests;

use access::all_ones;

/// A sleep state the device acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SleepState {
    /// Suspend to RAM.
    S3,
    /// Suspend to disk (the guest has written its image: power off).
    S4,
    /// Soft off.
    S5,
}

/// One register inside a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reg {
    /// PM1 status of half 0 (a) or 1 (b).
    Sts(usize),
    /// PM1 enable.
    En(usize),
    /// PM1 control.
    Cnt(usize),
    Reset,
    SleepCtl,
    SleepSts,
}

/// `len` bytes at `start` of a block are register `reg`.
#[derive(Clone, Copy, Debug)]
struct Span {
    reg: Reg,
    start: u64,
    len: u64,
}

#[derive(Clone, Copy, Debug)]
struct Region {
    name: &'static str,
    block: Block,
    spans: [Option<Span>; 2],
}

/// Register state of one PM1 half.
#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Pm1Half {
    sts: u16,
    en: u16,
    /// The read/write bits of PM1_CNT (BM_RLD, SLP_TYP).
    cnt: u16,
}

/// Where a sleep request came from (which WAK_STS to set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Pm1,
    SleepControl,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
struct Counters {
    sleep_requests: u64,
    shutdowns: u64,
    ignored_after_shutdown: u64,
    refused_s3: u64,
    unmatched: u64,
    reset_writes: u64,
    bad_accesses: u64,
    power_button_presses: u64,
}

/// The pm-trap device. Build it with [`PmTrap::new`] from a [`TrapSetup`]
/// ([`crate::PmTrapConfig::setup`] or [`crate::from_acpi`]).
#[derive(Debug)]
pub struct PmTrap {
    setup: TrapSetup,
    regions: Vec<Region>,
    pm1: [Pm1Half; 2],
    /// SLP_TYP written with SLP_EN to each half, waiting for the other half (PM1b only).
    pending: [Option<u8>; 2],
    sleep_sts: u8,
    latched: Option<ShutdownReason>,
    counters: Counters,
    limit: RateLimit,
}

impl PmTrap {
    /// A device for this layout (validated: lengths, port range, no overlaps).
    pub fn new(setup: TrapSetup) -> Result<PmTrap, ConfigError> {
        setup.validate()?;
        let mut regions = Vec::new();
        let mut add =
            |name: &'static str, block: Option<Block>, spans: &dyn Fn(u64) -> [Option<Span>; 2]| {
                if let Some(block) = block {
                    regions.push(Region {
                        name,
                        block,
                        spans: spans(block.len),
                    });
                }
            };
        let evt = |h: usize| {
            move |len: u64| {
                let half = len / 2;
                [
                    Some(Span {
                        reg: Reg::Sts(h),
                        start: 0,
                        len: half,
                    }),
                    Some(Span {
                        reg: Reg::En(h),
                        start: half,
                        len: half,
                    }),
                ]
            }
        };
        let one = |reg: Reg| move |len: u64| [Some(Span { reg, start: 0, len }), None];
        add("PM1a_EVT", setup.pm1a_evt, &evt(0));
        add("PM1b_EVT", setup.pm1b_evt, &evt(1));
        add("PM1a_CNT", setup.pm1a_cnt, &one(Reg::Cnt(0)));
        add("PM1b_CNT", setup.pm1b_cnt, &one(Reg::Cnt(1)));
        add("RESET_REG", setup.reset.map(|r| r.block), &|_| {
            [
                Some(Span {
                    reg: Reg::Reset,
                    start: 0,
                    len: 1,
                }),
                None,
            ]
        });
        add("SLEEP_CONTROL_REG", setup.sleep_control, &|_| {
            [
                Some(Span {
                    reg: Reg::SleepCtl,
                    start: 0,
                    len: 1,
                }),
                None,
            ]
        });
        add("SLEEP_STATUS_REG", setup.sleep_status, &|_| {
            [
                Some(Span {
                    reg: Reg::SleepSts,
                    start: 0,
                    len: 1,
                }),
                None,
            ]
        });
        Ok(PmTrap {
            setup,
            regions,
            pm1: [Pm1Half::default(); 2],
            pending: [None; 2],
            sleep_sts: 0,
            latched: None,
            counters: Counters::default(),
            limit: RateLimit::default(),
        })
    }

    /// The layout the device was built from.
    pub fn setup(&self) -> &TrapSetup {
        &self.setup
    }

    /// The shutdown already issued, if any (see the latch rule in the module docs).
    pub fn shutdown_requested(&self) -> Option<ShutdownReason> {
        self.latched
    }

    /// Back to the power-on state: registers cleared, pending halves dropped, latch released.
    pub fn reset(&mut self) {
        self.pm1 = [Pm1Half::default(); 2];
        self.pending = [None; 2];
        self.sleep_sts = 0;
        self.latched = None;
    }

    /// A press of the fixed-feature power button (ACPI 6.5, 4.8.2.2.1.1 "Fixed Power Button"):
    /// PWRBTN_STS is set in PM1a_STS until the OS clears it (write-1-to-clear), which an OS
    /// sees when it reads PM1a_STS. This device has no interrupt line, so it raises no SCI even
    /// with PWRBTN_EN set: a guest that waits for the SCI (Linux) does not see the press, which
    /// is why pvh-dm also sends a shutdown request through xenstore when it stops a guest.
    pub fn press_power_button(&mut self) -> serde_json::Value {
        self.pm1[0].sts |= pm1_sts::PWRBTN_STS.mask() as u16;
        self.counters.power_button_presses += 1;
        let en = pm1_en::PWRBTN_EN.is_set(self.pm1[0].en as u32);
        tracing::info!(
            pwrbtn_en = en,
            "power button pressed: PWRBTN_STS set (no SCI: this device has no interrupt line)"
        );
        json!({"pwrbtn_sts": true, "pwrbtn_en": en, "sci": false})
    }
}

impl Device for PmTrap {
    fn name(&self) -> &str {
        "pm-trap"
    }

    fn ranges(&self) -> Vec<Range> {
        self.regions
            .iter()
            // Built by hand: `Range::new` computes `start + len - 1` via `start + len`, which
            // overflows for a block ending at the top of the address space.
            .map(|r| Range {
                space: r.block.space,
                start: r.block.base,
                end: r.block.base + (r.block.len - 1),
            })
            .collect()
    }

    fn read(&mut self, space: Space, addr: u64, size: u8, _actions: &mut Actions) -> u64 {
        let Some((i, off)) = self.locate(space, addr, size) else {
            self.counters.bad_accesses += 1;
            limited_warn!(
                self.limit,
                "read of {size} bytes at {space:?} {addr:#x}: not a pm-trap register"
            );
            return all_ones(size);
        };
        let region = self.regions[i];
        let mut v = 0u64;
        let mut hole = false;
        for k in 0..size as u64 {
            let b = self.read_byte(&region, off + k).unwrap_or_else(|| {
                hole = true;
                0xFF
            });
            v |= (b as u64) << (8 * k);
        }
        if hole {
            limited_warn!(
                self.limit,
                "{}: read of {size} bytes at offset {off} touches no register",
                region.name
            );
        }
        v
    }

    fn write(&mut self, space: Space, addr: u64, size: u8, data: u64, actions: &mut Actions) {
        let Some((i, off)) = self.locate(space, addr, size) else {
            self.counters.bad_accesses += 1;
            limited_warn!(
                self.limit,
                "write of {size} bytes at {space:?} {addr:#x}: not a pm-trap register, dropped"
            );
            return;
        };
        let region = self.regions[i];
        let end = off + size as u64;
        let mut covered = 0;
        for s in region.spans.into_iter().flatten() {
            let (lo, hi) = (off.max(s.start), end.min(s.start + s.len));
            if lo >= hi {
                continue;
            }
            let (mut val, mut mask) = (0u64, 0u64);
            for b in lo..hi {
                let shift = 8 * (b - s.start);
                if shift < 64 {
                    val |= ((data >> (8 * (b - off))) & 0xFF) << shift;
                    mask |= 0xFF << shift;
                }
            }
            covered += hi - lo;
            self.write_reg(region.name, s.reg, val, mask, actions);
        }
        if covered < size as u64 {
            limited_warn!(
                self.limit,
                "{}: write of {size} bytes at offset {off} touches no register",
                region.name
            );
        }
    }

    /// `{"cmd":"power_button"}` on the control socket: [`PmTrap::press_power_button`].
    fn control(&mut self, cmd: &str, _request: &serde_json::Value) -> ControlReply {
        match cmd {
            "power_button" => Some(Ok(self.press_power_button())),
            _ => None,
        }
    }

    fn status(&self) -> serde_json::Value {
        json!({
            "pm1a": self.pm1[0],
            "pm1b": self.setup.pm1b_cnt.map(|_| self.pm1[1]),
            "sleep_status": self.sleep_sts,
            "pending_slp_typ": self.pending,
            "shutdown_requested": self.latched,
            "counters": self.counters,
            "setup": self.setup,
        })
    }
}
