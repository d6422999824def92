//! The parser of a function's sysfs `resource` file: one `start end flags` line in hex per
//! resource, lines 0-5 the BARs and line 6 the expansion ROM, the flags the kernel's
//! `IORESOURCE_*` bits (include/linux/ioport.h), turned into [`BarInfo`]s. Kept apart because
//! it is pure text parsing with no device behind it, and the VFIO backend reads its BARs
//! through it too.

use std::path::Path;

use crate::backend::{BarInfo, BarKind};
use crate::error::Error;

/// `IORESOURCE_IO`.
pub const IORESOURCE_IO: u64 = 0x0000_0100;
/// `IORESOURCE_MEM`.
pub const IORESOURCE_MEM: u64 = 0x0000_0200;
/// `IORESOURCE_PREFETCH`.
pub const IORESOURCE_PREFETCH: u64 = 0x0000_2000;
/// `IORESOURCE_MEM_64`.
pub const IORESOURCE_MEM_64: u64 = 0x0010_0000;
/// `IORESOURCE_DISABLED`.
pub const IORESOURCE_DISABLED: u64 = 0x1000_0000;
/// `IORESOURCE_UNSET`: no address assigned.
pub const IORESOURCE_UNSET: u64 = 0x2000_0000;

/// One parsed line of `resource`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourceLine {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// `IORESOURCE_*` flags.
    pub flags: u64,
}

impl ResourceLine {
    /// The BAR this line describes, if it is an assigned I/O or memory resource.
    pub fn bar_info(&self) -> Option<BarInfo> {
        if (self.start == 0 && self.end == 0) || self.end < self.start {
            return None;
        }
        if self.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED) != 0 {
            return None;
        }
        let kind = if self.flags & IORESOURCE_IO != 0 {
            BarKind::Io
        } else if self.flags & IORESOURCE_MEM != 0 {
            if self.flags & IORESOURCE_MEM_64 != 0 {
                BarKind::Mem64
            } else {
                BarKind::Mem32
            }
        } else {
            return None;
        };
        Some(BarInfo {
            kind,
            prefetchable: kind != BarKind::Io && self.flags & IORESOURCE_PREFETCH != 0,
            host_addr: self.start,
            size: (self.end - self.start).checked_add(1)?,
        })
    }
}

/// Parse the text of a `resource` file.
pub fn parse_resource(text: &str, path: &Path) -> Result<Vec<ResourceLine>, Error> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| {
            u64::from_str_radix(s.trim_start_matches("0x"), 16)
                .map_err(|_| Error::parse(path, format!("line {}: bad number {s:?}", n + 1)))
        };
        if fields.len() != 3 {
            return Err(Error::parse(
                path,
                format!("line {}: expected 3 fields", n + 1),
            ));
        }
        out.push(ResourceLine {
            start: num(fields[0])?,
            end: num(fields[1])?,
            flags: num(fields[2])?,
        });
    }
    Ok(out)
}

/// BARs 0-5 and the ROM from parsed `resource` lines. The slot after a 64-bit BAR is `None`.
pub fn bars_from_resource(lines: &[ResourceLine]) -> ([Option<BarInfo>; 6], Option<BarInfo>) {
    let mut bars = [None; 6];
    let mut i = 0;
    while i < 6 {
        let info = lines.get(i).and_then(ResourceLine::bar_info);
        if let Some(b) = info {
            if b.kind == BarKind::Mem64 {
                if i == 5 {
                    // A 64-bit BAR cannot start in the last slot: treat as unusable.
                    i += 1;
                    continue;
                }
                bars[i] = Some(b);
                i += 2;
                continue;
            }
            bars[i] = Some(b);
        }
        i += 1;
    }
    let rom = lines
        .get(6)
        .and_then(ResourceLine::bar_info)
        .filter(|r| r.is_mem());
    (bars, rom)
}
