//! The ACPI reader: what the host's (or any) FADT, DSDT and SSDTs say about the PM1 blocks, the
//! reset register, hardware-reduced sleep registers and the \_S3/\_S4/\_S5 sleep types.
//!
//! No hypervisor code: this reads bytes. [`inspect_dir`] reads a directory of table files
//! (sysfs names `FACP`, `DSDT`, `SSDT1`... or acpixtract names `facp.dat`, `dsdt.dat`,
//! `ssdt1.dat`...); [`inspect_tables`] does the same on tables in memory.

pub mod aml;
pub mod fadt;
pub mod gas;
pub mod tables;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

pub use aml::{SleepAnalysis, SleepObject};
pub use fadt::Fadt;
pub use gas::{AddressSpace, Gas};
pub use tables::RawTable;

/// Where Linux exposes the firmware's ACPI tables.
pub const DEFAULT_TABLE_DIR: &str = "/sys/firmware/acpi/tables";

/// Why the tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No FADT among the tables.
    #[error("no FADT in {dir} (expected a file named FACP or facp.dat)")]
    FadtMissing {
        /// Where it was looked for.
        dir: PathBuf,
    },
    /// The FADT is not usable.
    #[error("{file}: malformed FADT: {reason}")]
    FadtMalformed {
        /// The FADT's file (or table name).
        file: String,
        /// What is wrong.
        reason: String,
    },
}

/// The reset register: RESET_REG with RESET_VALUE, present only when RESET_REG_SUP is set and
/// the register's address is not 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ResetRegister {
    /// Address space.
    pub space: AddressSpace,
    /// Address.
    pub addr: u64,
    /// Width in bits as declared.
    pub bit_width: u8,
    /// RESET_VALUE (`None` when the FADT is too short to hold it).
    pub value: Option<u8>,
}

impl ResetRegister {
    /// The register as a GAS.
    pub fn gas(&self) -> Gas {
        Gas {
            space: self.space,
            addr: self.addr,
            bit_width: self.bit_width,
            bit_offset: 0,
            access_size: 0,
        }
    }
}

/// \_S3, \_S4, \_S5. Serializes as `{"S3": ..., "S4": ..., "S5": ...}`, each `[a, b]`,
/// `"dynamic"` or `null`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SleepStates {
    /// \_S3 (suspend to RAM).
    pub s3: SleepObject,
    /// \_S4 (suspend to disk).
    pub s4: SleepObject,
    /// \_S5 (soft off).
    pub s5: SleepObject,
}

impl Serialize for SleepStates {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("S3", &self.s3)?;
        m.serialize_entry("S4", &self.s4)?;
        m.serialize_entry("S5", &self.s5)?;
        m.end()
    }
}

/// What pm-trap needs from the ACPI tables.
///
/// JSON (the first six keys are the contract with `check.py`; the rest are extra):
/// `{"pm1a_cnt": GAS|null, "pm1b_cnt": GAS|null, "reset": {"space","addr","bit_width","value"}|null,
/// "hw_reduced": bool, "sleep_control": GAS|null, "sleep": {"S3","S4","S5"}, "pm1a_evt", "pm1b_evt",
/// "sleep_status", "smi_cmd", "fadt_revision", "fadt_length", "sleep_detail", "tables", "aml_errors", "warnings"}`,
/// GAS = `{"space": "io"|"mem"|..., "addr": int, "bit_width": int}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AcpiInfo {
    /// PM1a control block (X_PM1a_CNT_BLK, else PM1a_CNT_BLK as I/O of PM1_CNT_LEN bytes).
    pub pm1a_cnt: Option<Gas>,
    /// PM1b control block.
    pub pm1b_cnt: Option<Gas>,
    /// Reset register.
    pub reset: Option<ResetRegister>,
    /// HW_REDUCED_ACPI: the PM1 blocks are not used, the sleep control register is.
    pub hw_reduced: bool,
    /// SLEEP_CONTROL_REG (null when absent or address 0).
    pub sleep_control: Option<Gas>,
    /// \_S3, \_S4, \_S5.
    pub sleep: SleepStates,
    /// PM1a event block (status + enable).
    pub pm1a_evt: Option<Gas>,
    /// PM1b event block.
    pub pm1b_evt: Option<Gas>,
    /// SLEEP_STATUS_REG (null when absent or address 0).
    pub sleep_status: Option<Gas>,
    /// SMI_CMD port (0: none).
    pub smi_cmd: u32,
    /// FADT revision.
    pub fadt_revision: u8,
    /// FADT length.
    pub fadt_length: u32,
    /// Every definition of `\_S3_`, `\_S4_`, `\_S5_` found, in load order.
    pub sleep_detail: Vec<aml::Definition>,
    /// The definition blocks walked, in load order.
    pub tables: Vec<String>,
    /// AML parse errors (each cut one block short; see [`aml`]).
    pub aml_errors: Vec<String>,
    /// Warnings (checksums, skipped tables, truncated tables).
    pub warnings: Vec<String>,
}

/// Read the tables of a directory (default [`DEFAULT_TABLE_DIR`]).
pub fn inspect_dir(dir: impl AsRef<Path>) -> Result<AcpiInfo, AcpiError> {
    let dir = dir.as_ref();
    let mut warnings = Vec::new();
    let loaded = tables::load_dir(dir, &mut warnings)?;
    let Some(fadt) = loaded.iter().find(|t| t.kind == tables::Kind::Fadt) else {
        return Err(AcpiError::FadtMissing { dir: dir.into() });
    };
    let blocks: Vec<RawTable<'_>> = loaded
        .iter()
        .filter(|t| t.kind != tables::Kind::Fadt)
        .map(|t| RawTable {
            name: &t.name,
            bytes: &t.bytes,
        })
        .collect();
    if !loaded.iter().any(|t| t.kind == tables::Kind::Dsdt) {
        tables::warn(
            &mut warnings,
            format!("{}: no DSDT (DSDT or dsdt.dat)", dir.display()),
        );
    }
    inspect_with(
        RawTable {
            name: &fadt.name,
            bytes: &fadt.bytes,
        },
        &blocks,
        warnings,
    )
}

/// Read tables in memory: the FADT, and the DSDT followed by the SSDTs in load order.
pub fn inspect_tables(
    fadt: RawTable<'_>,
    definition_blocks: &[RawTable<'_>],
) -> Result<AcpiInfo, AcpiError> {
    inspect_with(fadt, definition_blocks, Vec::new())
}

fn inspect_with(
    fadt_table: RawTable<'_>,
    blocks: &[RawTable<'_>],
    mut warnings: Vec<String>,
) -> Result<AcpiInfo, AcpiError> {
    let f = fadt::parse(fadt_table.name, fadt_table.bytes, &mut warnings).map_err(|reason| {
        AcpiError::FadtMalformed {
            file: fadt_table.name.to_owned(),
            reason,
        }
    })?;
    let analysis = aml::analyze(blocks, &mut warnings);
    for e in &analysis.errors {
        tracing::warn!("AML: {e}");
    }
    if analysis.error_count > analysis.errors.len() {
        tracing::warn!(
            "AML: {} more parse errors",
            analysis.error_count - analysis.errors.len()
        );
    }
    let reset = match (f.reset_reg_sup(), f.reset_reg.and_then(Gas::non_zero)) {
        (true, Some(g)) => Some(ResetRegister {
            space: g.space,
            addr: g.addr,
            bit_width: g.bit_width,
            value: f.reset_value,
        }),
        _ => None,
    };
    Ok(AcpiInfo {
        pm1a_cnt: f.pm1a_cnt,
        pm1b_cnt: f.pm1b_cnt,
        reset,
        hw_reduced: f.hw_reduced(),
        sleep_control: f.sleep_control.and_then(Gas::non_zero),
        sleep: SleepStates {
            s3: analysis.state(3),
            s4: analysis.state(4),
            s5: analysis.state(5),
        },
        pm1a_evt: f.pm1a_evt,
        pm1b_evt: f.pm1b_evt,
        sleep_status: f.sleep_status.and_then(Gas::non_zero),
        smi_cmd: f.smi_cmd,
        fadt_revision: f.revision,
        fadt_length: f.length,
        sleep_detail: analysis.definitions,
        tables: blocks.iter().map(|t| t.name.to_owned()).collect(),
        aml_errors: analysis.errors,
        warnings,
    })
}

fn opt(g: &Option<Gas>) -> String {
    g.map_or_else(|| "none".to_owned(), |g| g.to_string())
}

impl fmt::Display for AcpiInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "FADT revision {}, {} bytes{}",
            self.fadt_revision,
            self.fadt_length,
            if self.hw_reduced { ", HW-reduced" } else { "" }
        )?;
        writeln!(f, "  PM1a_EVT       {}", opt(&self.pm1a_evt))?;
        writeln!(f, "  PM1b_EVT       {}", opt(&self.pm1b_evt))?;
        writeln!(f, "  PM1a_CNT       {}", opt(&self.pm1a_cnt))?;
        writeln!(f, "  PM1b_CNT       {}", opt(&self.pm1b_cnt))?;
        match &self.reset {
            Some(r) => match r.value {
                Some(v) => writeln!(f, "  RESET_REG      {} value {v:#04x}", r.gas())?,
                None => writeln!(f, "  RESET_REG      {} (no RESET_VALUE field)", r.gas())?,
            },
            None => writeln!(f, "  RESET_REG      none")?,
        }
        writeln!(f, "  SLEEP_CONTROL  {}", opt(&self.sleep_control))?;
        writeln!(f, "  SLEEP_STATUS   {}", opt(&self.sleep_status))?;
        for (n, s) in [
            (3, &self.sleep.s3),
            (4, &self.sleep.s4),
            (5, &self.sleep.s5),
        ] {
            writeln!(f, "\\_S{n}  {s}")?;
            for d in self.sleep_detail.iter().filter(|d| d.state == n) {
                writeln!(
                    f,
                    "       defined in {}: {:?} {:?}",
                    d.table, d.kind, d.context
                )?;
            }
        }
        writeln!(
            f,
            "tables: {}",
            if self.tables.is_empty() {
                "none".to_owned()
            } else {
                self.tables.join(", ")
            }
        )?;
        for e in &self.aml_errors {
            writeln!(f, "AML error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
