//! The resolved register layout the device is built from ([`TrapSetup`]: the blocks, the
//! reset register, the \_Sx values) and its validation (lengths, port range, no overlaps).

use ioreq_server::device::Space;
use serde::Serialize;

use super::ConfigError;

/// One trapped register block: `len` bytes at `base` of `space`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Block {
    /// Port or memory.
    pub space: Space,
    /// First address.
    pub base: u64,
    /// Length in bytes (at least 1).
    pub len: u64,
}

impl Block {
    /// An I/O port block.
    pub fn port(base: u16, len: u64) -> Block {
        Block {
            space: Space::Port,
            base: base as u64,
            len,
        }
    }

    pub(super) fn overlaps(&self, o: &Block) -> bool {
        self.space == o.space
            && self.base < o.base.saturating_add(o.len)
            && o.base < self.base.saturating_add(self.len)
    }
}

/// The reset register and the value that resets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ResetSetup {
    /// Where (one byte).
    pub block: Block,
    /// RESET_VALUE.
    pub value: u8,
}

/// The \_Sx values the device matches SLP_TYP against (`None`: the state is never matched).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SleepValues {
    /// \_S3 `[SLP_TYPa, SLP_TYPb]`.
    pub s3: Option<[u8; 2]>,
    /// \_S4.
    pub s4: Option<[u8; 2]>,
    /// \_S5.
    pub s5: Option<[u8; 2]>,
}

/// The resolved layout: which registers to trap where, and the sleep values.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrapSetup {
    /// PM1a event block (status, enable halves).
    pub pm1a_evt: Option<Block>,
    /// PM1b event block.
    pub pm1b_evt: Option<Block>,
    /// PM1a control block.
    pub pm1a_cnt: Option<Block>,
    /// PM1b control block: when present, SLP_EN acts once both halves have been written.
    pub pm1b_cnt: Option<Block>,
    /// Reset register.
    pub reset: Option<ResetSetup>,
    /// HW-reduced sleep control register (one byte).
    pub sleep_control: Option<Block>,
    /// HW-reduced sleep status register (one byte).
    pub sleep_status: Option<Block>,
    /// \_Sx values.
    pub sleep: SleepValues,
    /// Whether S3 becomes `SHUTDOWN_suspend` (otherwise it is refused).
    pub allow_s3: bool,
}

impl TrapSetup {
    /// Every configured register block with its name.
    pub fn blocks(&self) -> Vec<(&'static str, Block)> {
        [
            ("PM1a_EVT", self.pm1a_evt),
            ("PM1b_EVT", self.pm1b_evt),
            ("PM1a_CNT", self.pm1a_cnt),
            ("PM1b_CNT", self.pm1b_cnt),
            ("RESET_REG", self.reset.map(|r| r.block)),
            ("SLEEP_CONTROL_REG", self.sleep_control),
            ("SLEEP_STATUS_REG", self.sleep_status),
        ]
        .into_iter()
        .filter_map(|(n, b)| b.map(|b| (n, b)))
        .collect()
    }

    /// Check the layout: lengths, port range, no overlaps, and that PM1b is not configured
    /// without PM1a.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let blocks = self.blocks();
        for (name, b) in &blocks {
            if b.len == 0 || b.len > 8 {
                return Err(ConfigError::Register {
                    register: name,
                    reason: format!("length {} (1 to 8 bytes)", b.len),
                });
            }
            let last = b.base.checked_add(b.len - 1);
            let limit = match b.space {
                Space::Port => 0xFFFF,
                Space::Memory => u64::MAX,
                Space::PciConfig => {
                    return Err(ConfigError::Register {
                        register: name,
                        reason: "PCI config space is not supported".into(),
                    })
                }
            };
            if !matches!(last, Some(l) if l <= limit) {
                return Err(ConfigError::Register {
                    register: name,
                    reason: format!("{:#x}+{} is outside the {:?} space", b.base, b.len, b.space),
                });
            }
        }
        for (i, (a, ba)) in blocks.iter().enumerate() {
            for (b, bb) in &blocks[i + 1..] {
                if ba.overlaps(bb) {
                    return Err(ConfigError::Overlap { a, b });
                }
            }
        }
        if self.pm1b_cnt.is_some() && self.pm1a_cnt.is_none() {
            return Err(ConfigError::Register {
                register: "PM1b_CNT",
                reason: "PM1b without PM1a".into(),
            });
        }
        Ok(())
    }
}
