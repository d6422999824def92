//! System description table headers, checksums, and loading a directory of table files.
//!
//! Header layout (ACPI 6.0, 5.2.6 "System Description Table Header", Table 5-29): Signature
//! (4), Length (4), Revision (1), Checksum (1), OEMID (6), OEM Table ID (8), OEM Revision (4),
//! Creator ID (4), Creator Revision (4): 36 bytes. The whole table, header included, sums to 0
//! modulo 256.

use std::path::{Path, PathBuf};

use super::AcpiError;

/// Length of the common table header.
pub const HEADER_LEN: usize = 36;

/// Largest table file read (ACPI tables of real machines are well under 1 MiB).
pub const MAX_TABLE_FILE: u64 = 16 << 20;

/// One table in memory, named for messages (`dsdt.dat`, `SSDT3`, ...).
#[derive(Clone, Copy, Debug)]
pub struct RawTable<'a> {
    /// File or table name, used in messages.
    pub name: &'a str,
    /// The table bytes, header included.
    pub bytes: &'a [u8],
}

/// A table header after validation, and the bytes the header's length covers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Checked<'a> {
    pub signature: [u8; 4],
    pub revision: u8,
    /// `bytes[..len]` where `len` is the header length clamped to the bytes available.
    pub table: &'a [u8],
}

/// Validate a table header. Problems that still leave a usable table (checksum, a length field
/// longer than the data) are pushed to `warnings` and logged; a table shorter than its header,
/// or whose length field is smaller than the header, is an error (`Err(reason)`).
pub(crate) fn check<'a>(
    name: &str,
    bytes: &'a [u8],
    warnings: &mut Vec<String>,
) -> Result<Checked<'a>, String> {
    if bytes.len() < HEADER_LEN {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte table header",
            bytes.len()
        ));
    }
    let signature = [bytes[0], bytes[1], bytes[2], bytes[3]];
    let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if declared < HEADER_LEN {
        return Err(format!(
            "header length {declared} is smaller than the table header"
        ));
    }
    let len = if declared > bytes.len() {
        warn(
            warnings,
            format!(
                "{name}: header length {declared} exceeds the {} bytes present; using those",
                bytes.len()
            ),
        );
        bytes.len()
    } else {
        if declared < bytes.len() {
            tracing::debug!(
                "{name}: {} bytes after the table's declared length {declared} ignored",
                bytes.len() - declared
            );
        }
        declared
    };
    let table = &bytes[..len];
    let sum = table.iter().fold(0u8, |s, b| s.wrapping_add(*b));
    if sum != 0 {
        warn(
            warnings,
            format!("{name}: checksum mismatch (bytes sum to {sum:#04x}, not 0)"),
        );
    }
    Ok(Checked {
        signature,
        revision: bytes[8],
        table,
    })
}

pub(crate) fn warn(warnings: &mut Vec<String>, msg: String) {
    tracing::warn!("{msg}");
    // Bounded: hostile input must not grow this without limit.
    if warnings.len() < 64 {
        warnings.push(msg);
    }
}

/// What a file in a table directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Fadt,
    Dsdt,
    /// SSDT with its number (`SSDT` / `ssdt.dat` alone is 0).
    Ssdt(u32),
}

/// Classify a file name: sysfs names (`FACP`, `DSDT`, `SSDT1`, ...) and acpixtract names
/// (`facp.dat`, `dsdt.dat`, `ssdt1.dat`, ...), case-insensitively.
pub(crate) fn classify(file_name: &str) -> Option<Kind> {
    let lower = file_name.to_ascii_lowercase();
    let base = lower.strip_suffix(".dat").unwrap_or(&lower);
    match base {
        "facp" => Some(Kind::Fadt),
        "dsdt" => Some(Kind::Dsdt),
        _ => {
            let digits = base.strip_prefix("ssdt")?;
            if digits.is_empty() {
                Some(Kind::Ssdt(0))
            } else if digits.bytes().all(|b| b.is_ascii_digit()) {
                digits.parse().ok().map(Kind::Ssdt)
            } else {
                None
            }
        }
    }
}

/// A table file read from disk.
#[derive(Debug)]
pub(crate) struct LoadedTable {
    pub kind: Kind,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Read the FADT, DSDT and SSDTs of a directory, in load order (FADT, DSDT, SSDTs by number).
/// Subdirectories (sysfs `dynamic/`, tables loaded at run time by methods) are not read.
pub(crate) fn load_dir(
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<LoadedTable>, AcpiError> {
    let io = |path: &Path| {
        let path: PathBuf = path.into();
        move |source| AcpiError::Io { path, source }
    };
    let mut found: Vec<(Kind, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Some(kind) = classify(&name) else {
            continue;
        };
        // Follow symlinks, skip directories and special files.
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if !meta.is_file() {
            continue;
        }
        found.push((kind, path));
    }
    found.sort();
    let mut out: Vec<LoadedTable> = Vec::new();
    for (kind, path) in found {
        if matches!(kind, Kind::Fadt | Kind::Dsdt) && out.iter().any(|t| t.kind == kind) {
            warn(
                warnings,
                format!(
                    "{}: a second {kind:?} table; only the first one is used",
                    path.display()
                ),
            );
            continue;
        }
        let bytes = read_bounded(&path).map_err(io(&path))?;
        out.push(LoadedTable {
            kind,
            name: path.display().to_string(),
            bytes,
        });
    }
    Ok(out)
}

fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_TABLE_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_TABLE_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {MAX_TABLE_FILE} bytes, not an ACPI table"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(classify("FACP"), Some(Kind::Fadt));
        assert_eq!(classify("facp.dat"), Some(Kind::Fadt));
        assert_eq!(classify("DSDT"), Some(Kind::Dsdt));
        assert_eq!(classify("SSDT12"), Some(Kind::Ssdt(12)));
        assert_eq!(classify("ssdt2.dat"), Some(Kind::Ssdt(2)));
        assert_eq!(classify("ssdt.dat"), Some(Kind::Ssdt(0)));
        assert_eq!(classify("ssdtx.dat"), None);
        assert_eq!(classify("APIC"), None);
        assert_eq!(classify("ssdt99999999999999999999"), None);
        let mut k = [Kind::Ssdt(10), Kind::Ssdt(2), Kind::Dsdt, Kind::Fadt];
        k.sort();
        assert_eq!(k, [Kind::Fadt, Kind::Dsdt, Kind::Ssdt(2), Kind::Ssdt(10)]);
    }

    #[test]
    fn header_checks() {
        let mut w = Vec::new();
        assert!(check("t", &[0u8; 10], &mut w).is_err());
        let mut t = vec![0u8; 40];
        t[..4].copy_from_slice(b"SSDT");
        t[4] = 40;
        let sum = t.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        let c = check("t", &t, &mut w).unwrap();
        assert_eq!(c.table.len(), 40);
        assert!(w.is_empty());
        t[4] = 200; // longer than the data: clamped, checksum now off too
        assert_eq!(check("t", &t, &mut w).unwrap().table.len(), 40);
        assert!(!w.is_empty());
        t[4] = 3;
        assert!(check("t", &t, &mut w).is_err());
    }
}
