//! The PM1 trap: ACPI PM1a/PM1b event and control blocks, the reset register and the
//! HW-reduced sleep registers, emulated the way a chipset does, turning the guest's sleep
//! requests into [`Action::Shutdown`].
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

use ioreq_server::device::{Action, Actions, Device, Range, ShutdownReason, Space};
use serde::Serialize;
use serde_json::json;

use crate::config::{Block, ConfigError, TrapSetup};
use crate::regs::{cf9, pm1_cnt, pm1_en, pm1_sts, sleep_control, sleep_status};
use ioreq_server::guest_warn as limited_warn;
use ioreq_server::ratelimit::RateLimit;

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

fn all_ones(size: u8) -> u64 {
    match size {
        0 => 0,
        s if s >= 8 => u64::MAX,
        s => (1u64 << (8 * s as u32)) - 1,
    }
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

    /// The region holding `[addr, addr + size)` and the offset of `addr` in it.
    fn locate(&self, space: Space, addr: u64, size: u8) -> Option<(usize, u64)> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return None;
        }
        let last = addr.checked_add(size as u64 - 1)?;
        self.regions.iter().enumerate().find_map(|(i, r)| {
            let b = &r.block;
            // `validate` guarantees that base + len - 1 does not overflow.
            (b.space == space && addr >= b.base && last <= b.base + (b.len - 1))
                .then(|| (i, addr - b.base))
        })
    }

    fn read_reg(&self, reg: Reg) -> u64 {
        match reg {
            Reg::Sts(h) => self.pm1[h].sts as u64,
            Reg::En(h) => self.pm1[h].en as u64,
            Reg::Cnt(h) => {
                let sci = if h == 0 { pm1_cnt::SCI_EN.mask() } else { 0 };
                (self.pm1[h].cnt as u32 | sci) as u64
            }
            Reg::Reset | Reg::SleepCtl => 0,
            Reg::SleepSts => self.sleep_sts as u64,
        }
    }

    fn read_byte(&self, region: &Region, off: u64) -> Option<u8> {
        let s = region
            .spans
            .iter()
            .flatten()
            .find(|s| off >= s.start && off < s.start + s.len)?;
        let shift = 8 * (off - s.start);
        // Registers are at most 32 bits wide; bytes beyond are reserved and read 0.
        Some(if shift < 64 {
            (self.read_reg(s.reg) >> shift) as u8
        } else {
            0
        })
    }

    fn write_reg(
        &mut self,
        name: &'static str,
        reg: Reg,
        val: u64,
        mask: u64,
        actions: &mut Actions,
    ) {
        let (val, mask) = (val as u32, mask as u32);
        let written = val & mask;
        match reg {
            Reg::Sts(h) => {
                // Write-1-to-clear (ACPI 6.0, 4.8.3.1.1).
                self.pm1[h].sts &= !(written as u16);
                if h == 0 && pm1_sts::WAK_STS.is_set(written) {
                    self.woke();
                }
            }
            Reg::En(h) => {
                let en = (self.pm1[h].en as u32 & !mask) | written;
                self.pm1[h].en = (en & pm1_en::DEFINED) as u16;
            }
            Reg::Cnt(h) => {
                let cnt = (self.pm1[h].cnt as u32 & !mask) | (written & pm1_cnt::READ_WRITE);
                self.pm1[h].cnt = cnt as u16;
                if pm1_cnt::GBL_RLS.is_set(written) {
                    tracing::debug!("{name}: GBL_RLS written (no firmware to notify)");
                }
                if pm1_cnt::SLP_EN.is_set(written) {
                    // SLP_EN and SLP_TYP share the high byte: a write carrying SLP_EN carries SLP_TYP.
                    let typ = pm1_cnt::SLP_TYP.get(written) as u8;
                    self.slp_en(h, typ, actions);
                }
            }
            Reg::Reset => {
                if mask & 0xFF == 0 {
                    return;
                }
                let v = (written & 0xFF) as u8;
                self.counters.reset_writes += 1;
                let Some(r) = self.setup.reset else { return };
                // ACPI: RESET_VALUE written to RESET_REG resets. At port 0xCF9 also honour the
                // chipset's own rule (any write with RST_CPU set), which Linux's reboot=pci uses
                // (value 0x0E for a cold reset).
                let cf9 = r.block.space == Space::Port && r.block.base == cf9::PORT;
                if v == r.value || (cf9 && cf9::RST_CPU.is_set(v as u32)) {
                    self.shutdown(
                        ShutdownReason::Reboot,
                        &format!("{name} written with {v:#04x}"),
                        actions,
                    );
                } else {
                    tracing::debug!(
                        "{name}: {v:#04x} written (reset value is {:#04x}): no reset",
                        r.value
                    );
                }
            }
            Reg::SleepCtl => {
                if sleep_control::SLP_EN.is_set(written) {
                    let typ = sleep_control::SLP_TYPX.get(written) as u8;
                    self.sleep_request(Source::SleepControl, typ, None, actions);
                }
            }
            Reg::SleepSts => {
                if sleep_status::WAK_STS.is_set(written) {
                    self.sleep_sts &= !(sleep_status::WAK_STS.mask() as u8);
                    self.woke();
                }
            }
        }
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

    /// The guest cleared WAK_STS: after a suspend, it has resumed.
    fn woke(&mut self) {
        if self.latched == Some(ShutdownReason::Suspend) {
            tracing::info!("guest cleared WAK_STS after suspend: resumed");
            self.latched = None;
        }
    }

    /// SLP_EN written to PM1 half `h` with SLP_TYP `typ`.
    fn slp_en(&mut self, h: usize, typ: u8, actions: &mut Actions) {
        if self.setup.pm1b_cnt.is_none() {
            self.sleep_request(Source::Pm1, typ, None, actions);
            return;
        }
        self.pending[h] = Some(typ);
        if let [Some(a), Some(b)] = self.pending {
            self.pending = [None; 2];
            self.sleep_request(Source::Pm1, a, Some(b), actions);
        }
    }

    fn match_state(&self, a: u8, b: Option<u8>) -> Option<SleepState> {
        let s = &self.setup.sleep;
        [
            (SleepState::S5, s.s5),
            (SleepState::S4, s.s4),
            (SleepState::S3, s.s3),
        ]
        .into_iter()
        .find_map(|(st, v)| {
            let [va, vb] = v?;
            let b_matches = match b {
                None => true,
                Some(b) => vb & 7 == b,
            };
            (va & 7 == a && b_matches).then_some(st)
        })
    }

    fn set_wak_sts(&mut self, source: Source) {
        match source {
            Source::Pm1 => self.pm1[0].sts |= pm1_sts::WAK_STS.mask() as u16,
            Source::SleepControl => self.sleep_sts |= sleep_status::WAK_STS.mask() as u8,
        }
    }

    fn sleep_request(&mut self, source: Source, a: u8, b: Option<u8>, actions: &mut Actions) {
        self.counters.sleep_requests += 1;
        let what = match b {
            Some(b) => format!("SLP_EN with SLP_TYPa={a} SLP_TYPb={b}"),
            None => format!("SLP_EN with SLP_TYP={a}"),
        };
        if let Some(prev) = self.latched {
            self.counters.ignored_after_shutdown += 1;
            tracing::debug!("{what}: shutdown ({prev:?}) already requested, ignored");
            return;
        }
        match self.match_state(a, b) {
            Some(st @ (SleepState::S5 | SleepState::S4)) => self.shutdown(
                ShutdownReason::Poweroff,
                &format!("{what} ({st:?})"),
                actions,
            ),
            Some(SleepState::S3) if self.setup.allow_s3 => {
                self.set_wak_sts(source);
                self.shutdown(ShutdownReason::Suspend, &format!("{what} (S3)"), actions);
            }
            Some(SleepState::S3) => {
                self.counters.refused_s3 += 1;
                limited_warn!(
                    self.limit,
                    "guest asked for S3 ({what}) but allow_s3 is off: refused"
                );
                self.set_wak_sts(source);
            }
            None => {
                self.counters.unmatched += 1;
                limited_warn!(
                    self.limit,
                    "{what} matches no \\_S3/\\_S4/\\_S5 value: ignored"
                );
                self.set_wak_sts(source);
            }
        }
    }

    fn shutdown(&mut self, reason: ShutdownReason, why: &str, actions: &mut Actions) {
        if let Some(prev) = self.latched {
            self.counters.ignored_after_shutdown += 1;
            tracing::debug!("{why}: shutdown ({prev:?}) already requested, ignored");
            return;
        }
        tracing::info!("{why}: requesting shutdown ({reason:?})");
        self.latched = Some(reason);
        self.counters.shutdowns += 1;
        actions.push(Action::Shutdown { reason });
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
    fn control(
        &mut self,
        cmd: &str,
        _request: &serde_json::Value,
    ) -> Option<Result<serde_json::Value, String>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PmTrapConfig, ResetSetup, SleepValues, GUEST_S5};

    const SLP_EN: u64 = 1 << 13;

    fn typ(t: u8) -> u64 {
        (t as u64) << 10
    }

    fn shutdowns(a: &Actions) -> Vec<ShutdownReason> {
        a.as_slice()
            .iter()
            .filter_map(|x| match x {
                Action::Shutdown { reason } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    fn guest(extra: &str) -> PmTrap {
        let c = PmTrapConfig::from_guest_toml(&format!("[pm_trap]\n{extra}")).unwrap();
        PmTrap::new(c.setup().unwrap()).unwrap()
    }

    /// HP dc7800 (80DC1538C4FA, FADT rev 1): PM1a_EVT 0xF800, PM1a_CNT 0xF804, PM1b_CNT 0x460
    /// (no PM1b event block), \_S3/\_S4/\_S5 = {0, 5} / {0, 6} / {0, 7}.
    fn dc7800() -> PmTrap {
        PmTrap::new(TrapSetup {
            pm1a_evt: Some(Block::port(0xF800, 4)),
            pm1b_evt: None,
            pm1a_cnt: Some(Block::port(0xF804, 2)),
            pm1b_cnt: Some(Block::port(0x460, 2)),
            reset: None,
            sleep_control: None,
            sleep_status: None,
            sleep: SleepValues {
                s3: Some([0, 5]),
                s4: Some([0, 6]),
                s5: Some([0, 7]),
            },
            allow_s3: false,
        })
        .unwrap()
    }

    fn rd(d: &mut PmTrap, port: u64, size: u8) -> u64 {
        d.read(Space::Port, port, size, &mut Actions::new())
    }

    /// What ACPICA's AcpiHwLegacySleep does (Linux acpi_power_off -> S5): clear WAK_STS and all
    /// fixed status bits, read PM1 control (a | b), write SLP_TYPa / SLP_TYPb, then the same
    /// with SLP_EN to PM1a then PM1b, and for S4/S5 after 10 s SLP_EN alone to both halves.
    fn acpica_sleep(
        d: &mut PmTrap,
        evt: [Option<u64>; 2],
        cnt: [Option<u64>; 2],
        a: u8,
        b: u8,
    ) -> Actions {
        let mut acts = Actions::new();
        for e in evt.into_iter().flatten() {
            d.write(Space::Port, e, 2, 0x8000, &mut acts); // WAK_STS
            d.write(Space::Port, e, 2, 0x8731, &mut acts); // ACPI_BITMASK_ALL_FIXED_STATUS
        }
        let ctl = cnt
            .iter()
            .flatten()
            .fold(0, |v, p| v | d.read(Space::Port, *p, 2, &mut acts));
        let ctl = ctl & !(typ(7) | SLP_EN);
        let vals = [ctl | typ(a), ctl | typ(b)];
        for v in [vals, vals.map(|v| v | SLP_EN)] {
            for (p, v) in cnt.iter().zip(v) {
                if let Some(p) = p {
                    d.write(Space::Port, *p, 2, v, &mut acts);
                }
            }
        }
        // "We wanted to sleep > S3, but it didn't happen": stall 10 s, write SLP_EN again.
        for p in cnt.iter().flatten() {
            let v = d.read(Space::Port, *p, 2, &mut acts) & (1 << 9);
            d.write(Space::Port, *p, 2, v | SLP_EN, &mut acts);
        }
        acts
    }

    #[test]
    fn acpica_s5_with_pm1b_dc7800() {
        let mut d = dc7800();
        let acts = acpica_sleep(
            &mut d,
            [Some(0xF800), None],
            [Some(0xF804), Some(0x460)],
            0,
            7,
        );
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
        assert_eq!(acts.as_slice().len(), 1);
        assert_eq!(d.shutdown_requested(), Some(ShutdownReason::Poweroff));
    }

    #[test]
    fn acpica_s5_pm1a_only_guest() {
        let mut d = guest("");
        let acts = acpica_sleep(
            &mut d,
            [Some(0xB000), None],
            [Some(0xB004), None],
            GUEST_S5[0],
            GUEST_S5[1],
        );
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
        assert_eq!(acts.as_slice().len(), 1);
    }

    #[test]
    fn pm1b_halves_in_either_order_and_pairs_must_match() {
        let mut d = dc7800();
        let mut acts = Actions::new();
        d.write(Space::Port, 0x460, 2, typ(7) | SLP_EN, &mut acts);
        assert!(acts.is_empty(), "half a request does nothing");
        d.write(Space::Port, 0xF804, 2, typ(0) | SLP_EN, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
        // (7, 0) is not \_S5 = (0, 7): no match, no action, WAK_STS set.
        let mut d = dc7800();
        let mut acts = Actions::new();
        d.write(Space::Port, 0xF804, 2, typ(7) | SLP_EN, &mut acts);
        d.write(Space::Port, 0x460, 2, typ(0) | SLP_EN, &mut acts);
        assert!(acts.is_empty());
        assert_eq!(rd(&mut d, 0xF800, 2) & 0x8000, 0x8000);
    }

    #[test]
    fn s4_powers_off() {
        let mut d = guest("");
        let acts = acpica_sleep(&mut d, [Some(0xB000), None], [Some(0xB004), None], 6, 0);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
    }

    #[test]
    fn byte_wise_write_to_the_high_byte() {
        let mut d = guest("");
        let mut acts = Actions::new();
        // SLP_TYP written alone first (low byte untouched), then SLP_EN in a one-byte write.
        d.write(Space::Port, 0xB005, 1, 7 << 2, &mut acts);
        assert!(acts.is_empty());
        assert_eq!(
            rd(&mut d, 0xB004, 2),
            typ(7) | 1,
            "SLP_TYP reads back, SCI_EN set"
        );
        d.write(Space::Port, 0xB005, 1, (7 << 2) | 0x20, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
        assert_eq!(rd(&mut d, 0xB005, 1), 7 << 2, "SLP_EN reads 0");
        // A low-byte write never carries SLP_EN.
        let mut d = guest("");
        let mut acts = Actions::new();
        d.write(Space::Port, 0xB004, 1, 0xFF, &mut acts);
        assert!(acts.is_empty());
        assert_eq!(
            rd(&mut d, 0xB004, 1),
            0x03,
            "BM_RLD read/write, GBL_RLS write-only, SCI_EN 1"
        );
    }

    #[test]
    fn repeated_slp_en_gives_one_action_until_reset() {
        let mut d = guest("");
        let mut acts = Actions::new();
        for _ in 0..5 {
            d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN | 1, &mut acts);
        }
        d.write(Space::Port, 0xCF9, 1, 6, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
        d.reset();
        assert_eq!(d.shutdown_requested(), None);
        d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN, &mut acts);
        assert_eq!(
            shutdowns(&acts),
            [ShutdownReason::Poweroff, ShutdownReason::Poweroff]
        );
    }

    #[test]
    fn reset_register() {
        let mut d = guest("");
        let mut acts = Actions::new();
        d.write(Space::Port, 0xCF9, 1, 0x02, &mut acts);
        assert!(acts.is_empty(), "SYS_RST alone does not reset");
        assert_eq!(rd(&mut d, 0xCF9, 1), 0);
        d.write(Space::Port, 0xCF9, 1, 0x06, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
        // Linux reboot=pci cold reset writes 0x0E: RST_CPU set, chipset resets.
        let mut d = guest("");
        let mut acts = Actions::new();
        d.write(Space::Port, 0xCF9, 1, 0x0E, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
        // A generic (non-CF9) reset register needs the exact value.
        let mut d = PmTrap::new(TrapSetup {
            reset: Some(ResetSetup {
                block: Block {
                    space: Space::Memory,
                    base: 0xFED0_0000,
                    len: 1,
                },
                value: 0x0E,
            }),
            ..TrapSetup::default()
        })
        .unwrap();
        let mut acts = Actions::new();
        d.write(Space::Memory, 0xFED0_0000, 1, 0x06, &mut acts);
        assert!(acts.is_empty());
        d.write(Space::Memory, 0xFED0_0000, 1, 0x0E, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
        assert_eq!(d.ranges(), [Range::new(Space::Memory, 0xFED0_0000, 1)]);
    }

    #[test]
    fn hw_reduced_sleep_control() {
        // 3FE302D11C0A: SLEEP_CONTROL 0x405, SLEEP_STATUS 0x401, \_S5 = {7, 0}.
        let setup = TrapSetup {
            sleep_control: Some(Block::port(0x405, 1)),
            sleep_status: Some(Block::port(0x401, 1)),
            sleep: SleepValues {
                s3: None,
                s4: None,
                s5: Some([7, 0]),
            },
            ..TrapSetup::default()
        };
        let mut d = PmTrap::new(setup).unwrap();
        let mut acts = Actions::new();
        d.write(Space::Port, 0x401, 1, 0x80, &mut acts); // clear WAK_STS
        d.write(Space::Port, 0x405, 1, 3 << 2 | 0x20, &mut acts); // unknown type: wake at once
        assert!(acts.is_empty());
        assert_eq!(rd(&mut d, 0x401, 1), 0x80);
        d.write(Space::Port, 0x401, 1, 0x80, &mut acts);
        assert_eq!(rd(&mut d, 0x401, 1), 0);
        d.write(Space::Port, 0x405, 1, 7 << 2, &mut acts);
        assert!(acts.is_empty(), "SLP_TYP without SLP_EN");
        d.write(Space::Port, 0x405, 1, 7 << 2 | 0x20, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Poweroff]);
        assert_eq!(rd(&mut d, 0x405, 1), 0, "write-only");
    }

    #[test]
    fn status_is_write_one_to_clear_and_enable_read_write() {
        let mut d = guest("");
        let mut acts = Actions::new();
        d.write(Space::Port, 0xB004, 2, typ(1) | SLP_EN, &mut acts); // S1: no match
        assert_eq!(rd(&mut d, 0xB000, 2), 0x8000);
        d.write(Space::Port, 0xB000, 2, 0x0000, &mut acts);
        assert_eq!(rd(&mut d, 0xB000, 2), 0x8000, "writing 0 keeps the bit");
        d.write(Space::Port, 0xB000, 1, 0xFF, &mut acts);
        assert_eq!(
            rd(&mut d, 0xB000, 2),
            0x8000,
            "low byte does not touch WAK_STS"
        );
        d.write(Space::Port, 0xB001, 1, 0x80, &mut acts);
        assert_eq!(rd(&mut d, 0xB000, 2), 0);
        d.write(Space::Port, 0xB002, 2, 0xFFFF, &mut acts);
        assert_eq!(
            rd(&mut d, 0xB002, 2),
            0x4721,
            "only defined enable bits stick"
        );
        // A dword write covering status and enable.
        d.write(Space::Port, 0xB000, 4, 0x0100_FFFF, &mut acts);
        assert_eq!(rd(&mut d, 0xB000, 4), 0x0100_0000);
        assert!(acts.is_empty());
    }

    #[test]
    fn s3_refused_unless_allowed_and_resume_releases_the_latch() {
        let mut d = guest("");
        let mut acts = Actions::new();
        d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
        assert!(acts.is_empty());
        assert_eq!(
            rd(&mut d, 0xB000, 2) & 0x8000,
            0x8000,
            "refused S3 wakes at once"
        );
        let mut d = guest("allow_s3 = true\n");
        let mut acts = Actions::new();
        d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
        d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
        d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Suspend]);
        // Resumed: the guest sees WAK_STS, clears it, and can suspend again.
        assert_eq!(rd(&mut d, 0xB000, 2) & 0x8000, 0x8000);
        d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
        assert_eq!(d.shutdown_requested(), None);
        d.write(Space::Port, 0xB004, 2, typ(5) | SLP_EN, &mut acts);
        assert_eq!(
            shutdowns(&acts),
            [ShutdownReason::Suspend, ShutdownReason::Suspend]
        );
        // Clearing WAK_STS does not release a poweroff latch.
        d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
        d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN, &mut acts);
        d.write(Space::Port, 0xB000, 2, 0x8000, &mut acts);
        d.write(Space::Port, 0xB004, 2, typ(7) | SLP_EN, &mut acts);
        assert_eq!(
            shutdowns(&acts),
            [
                ShutdownReason::Suspend,
                ShutdownReason::Suspend,
                ShutdownReason::Poweroff
            ]
        );
    }

    #[test]
    fn bad_sizes_offsets_and_holes() {
        let mut d = guest("");
        let mut acts = Actions::new();
        assert_eq!(
            d.read(Space::Port, 0xB006, 1, &mut acts),
            0xFF,
            "outside every range"
        );
        assert_eq!(
            d.read(Space::Port, 0xB003, 2, &mut acts),
            0xFFFF,
            "crosses the end of a range"
        );
        assert_eq!(
            d.read(Space::Port, 0xB004, 3, &mut acts),
            0xFF_FFFF,
            "size 3"
        );
        assert_eq!(d.read(Space::Port, 0xB004, 0, &mut acts), 0);
        assert_eq!(
            d.read(Space::Memory, 0xB004, 2, &mut acts),
            0xFFFF,
            "wrong space"
        );
        assert_eq!(d.read(Space::Port, u64::MAX, 8, &mut acts), u64::MAX);
        d.write(Space::Port, u64::MAX - 1, 8, u64::MAX, &mut acts);
        d.write(Space::Port, 0xB004, 3, u64::MAX, &mut acts);
        assert!(acts.is_empty());
        // Every size at every offset of every range, reads and writes: no panic, and a read
        // of a register byte never returns all-ones for the control register.
        let mut d = dc7800();
        let ranges = d.ranges();
        for r in &ranges {
            for addr in r.start.saturating_sub(2)..=r.end + 2 {
                for size in [1u8, 2, 4, 8, 3, 0, 16] {
                    let _ = d.read(Space::Port, addr, size, &mut acts);
                    d.write(Space::Port, addr, size, 0x5A5A_5A5A_5A5A_5A5A, &mut acts);
                    d.write(Space::Port, addr, size, 0, &mut acts);
                }
            }
        }
        // A 4-byte control block: the upper bytes are reserved bits and read 0; an 8-byte
        // event block splits into 4-byte status and enable halves.
        let mut d = guest("pm1_cnt_len = 4\npm1a_cnt = 0xB008\npm1_evt_len = 8\n");
        assert_eq!(rd(&mut d, 0xB008, 4), 1);
        assert_eq!(rd(&mut d, 0xB004, 4), 0, "enable half of the 8-byte block");
        assert_eq!(d.status()["counters"]["bad_accesses"], json!(0));
    }

    #[test]
    fn block_at_the_top_of_memory() {
        let top = u64::MAX;
        let mut d = PmTrap::new(TrapSetup {
            reset: Some(ResetSetup {
                block: Block {
                    space: Space::Memory,
                    base: top,
                    len: 1,
                },
                value: 1,
            }),
            sleep_control: Some(Block {
                space: Space::Memory,
                base: top - 1,
                len: 1,
            }),
            ..TrapSetup::default()
        })
        .unwrap();
        assert_eq!(
            d.ranges()[0],
            Range {
                space: Space::Memory,
                start: top,
                end: top
            }
        );
        let mut acts = Actions::new();
        assert_eq!(d.read(Space::Memory, top, 1, &mut acts), 0);
        assert_eq!(
            d.read(Space::Memory, top - 1, 2, &mut acts),
            0xFFFF,
            "spans two blocks"
        );
        d.write(Space::Memory, top, 1, 1, &mut acts);
        assert_eq!(shutdowns(&acts), [ShutdownReason::Reboot]);
    }

    #[test]
    fn power_button_sets_pwrbtn_sts_until_the_guest_clears_it() {
        let mut d = guest("");
        let sts = d.setup().pm1a_evt.unwrap().base;
        assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 0);
        let r = d
            .control("power_button", &serde_json::Value::Null)
            .unwrap()
            .unwrap();
        assert_eq!(r["pwrbtn_sts"], true);
        assert_eq!(r["pwrbtn_en"], false);
        assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 1 << 8);
        // Writing another status bit leaves it; writing it back clears it.
        let mut a = Actions::new();
        d.write(Space::Port, sts, 2, 1 << 15, &mut a);
        assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 1 << 8);
        d.write(Space::Port, sts, 2, 1 << 8, &mut a);
        assert_eq!(rd(&mut d, sts, 2) & (1 << 8), 0);
        assert!(a.is_empty(), "a button press is no shutdown by itself");
        assert!(d.control("no_such_cmd", &serde_json::Value::Null).is_none());
    }

    #[test]
    fn ranges_and_status() {
        let d = dc7800();
        assert_eq!(
            d.ranges(),
            [
                Range::new(Space::Port, 0xF800, 4),
                Range::new(Space::Port, 0xF804, 2),
                Range::new(Space::Port, 0x460, 2),
            ]
        );
        assert_eq!(d.name(), "pm-trap");
        let s = d.status();
        assert_eq!(s["shutdown_requested"], json!(null));
        assert_eq!(s["setup"]["sleep"]["s5"], json!([0, 7]));
        assert!(all_ones(1) == 0xFF && all_ones(4) == 0xFFFF_FFFF && all_ones(8) == u64::MAX);
    }
}
