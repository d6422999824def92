//! Sleep requests and the shutdown latch of [`PmTrap`]: SLP_EN from PM1a/PM1b (pairing the
//! halves) or the HW-reduced sleep control register, matched against \_S3/\_S4/\_S5, the
//! WAK_STS completion, and the one [`Action::Shutdown`] issued per guest life (see the
//! module docs of [`crate::device`]).

use ioreq_server::device::{Action, Actions, ShutdownReason};
use ioreq_server::guest_warn as limited_warn;

use super::{PmTrap, SleepState, Source};
use crate::regs::{pm1_sts, sleep_status};

impl PmTrap {
    /// The guest cleared WAK_STS: after a suspend, it has resumed.
    pub(super) fn woke(&mut self) {
        if self.latched == Some(ShutdownReason::Suspend) {
            tracing::info!("guest cleared WAK_STS after suspend: resumed");
            self.latched = None;
        }
    }

    /// SLP_EN written to PM1 half `h` with SLP_TYP `typ`.
    pub(super) fn slp_en(&mut self, h: usize, typ: u8, actions: &mut Actions) {
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

    pub(super) fn match_state(&self, a: u8, b: Option<u8>) -> Option<SleepState> {
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

    pub(super) fn set_wak_sts(&mut self, source: Source) {
        match source {
            Source::Pm1 => self.pm1[0].sts |= pm1_sts::WAK_STS.mask() as u16,
            Source::SleepControl => self.sleep_sts |= sleep_status::WAK_STS.mask() as u8,
        }
    }

    pub(super) fn sleep_request(
        &mut self,
        source: Source,
        a: u8,
        b: Option<u8>,
        actions: &mut Actions,
    ) {
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

    pub(super) fn shutdown(&mut self, reason: ShutdownReason, why: &str, actions: &mut Actions) {
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
