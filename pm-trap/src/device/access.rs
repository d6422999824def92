//! Register decoding for [`PmTrap`]: which block and offset an access hits, a register's
//! read value byte by byte, and a masked write applied to one register (the write-1-to-clear,
//! read/write and write-only rules of each register live here).

use ioreq_server::device::{Actions, ShutdownReason, Space};

use super::{PmTrap, Reg, Region, Source};
use crate::regs::{cf9, pm1_cnt, pm1_en, pm1_sts, sleep_control, sleep_status};

/// All-ones in `size` bytes: what a read of no register returns.
pub(super) fn all_ones(size: u8) -> u64 {
    match size {
        0 => 0,
        s if s >= 8 => u64::MAX,
        s => (1u64 << (8 * s as u32)) - 1,
    }
}

impl PmTrap {
    /// The region holding `[addr, addr + size)` and the offset of `addr` in it.
    pub(super) fn locate(&self, space: Space, addr: u64, size: u8) -> Option<(usize, u64)> {
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

    pub(super) fn read_reg(&self, reg: Reg) -> u64 {
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

    pub(super) fn read_byte(&self, region: &Region, off: u64) -> Option<u8> {
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

    pub(super) fn write_reg(
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
}
