//! SR-IOV: what a VF's raw config space lacks, synthesized from its PF.
//!
//! A Virtual Function's own config space reads Vendor ID and Device ID as 0xFFFF and its BARs
//! as 0 (PCIe Base Specification 5.0, 9.3.4.1.1, 9.3.4.1.2 and 9.3.4.1.11: "VF BARs are
//! read-only zero"); it has no INTx (Interrupt Pin is 0, 9.3.4.1.14). The real values live in
//! the PF's SR-IOV Extended Capability (9.3.3):
//! - Vendor ID: the PF's Vendor ID;
//! - Device ID: `VF Device ID` at +0x1A;
//! - the VF's routing ID: `PF RID + First VF Offset + n * VF Stride` (+0x14, +0x16), so
//!   `n = (VF RID - PF RID - First VF Offset) / VF Stride`;
//! - BARs: `VF BARi` at +0x24 + 4i holds the base of an aperture of NumVFs slices; VF `n`'s
//!   BARi is `VF BARi base + n * size`, where `size` is what sizing the VF BARi register
//!   (writing all-ones, 9.3.3.14) returns. A backend cannot size a register it must not write,
//!   so the size is given: the sysfs backend reads it from the kernel (which did the sizing:
//!   the PF's `resource` lines 7-12 cover `size * TotalVFs`), the snapshot backend from the
//!   PF snapshot's `vf_bars`.
//!
//! [`VfIdentity::derive`] is the one place that does this arithmetic.

use serde::Serialize;

use crate::backend::{BarInfo, BarKind};
use crate::caps::{walk_extended, EXT_SRIOV};
use crate::error::Error;
use crate::topology::PciAddress;

/// SR-IOV Control (+0x08, 16 bits).
pub const CONTROL: u16 = 0x08;
/// SR-IOV Control: VF Enable (9.3.3.3.1).
pub const CONTROL_VF_ENABLE: u16 = 0x0001;
/// SR-IOV Control: VF Memory Space Enable (9.3.3.3.4).
pub const CONTROL_VF_MSE: u16 = 0x0008;
/// InitialVFs (+0x0C, 16 bits).
pub const INITIAL_VFS: u16 = 0x0C;
/// TotalVFs (+0x0E, 16 bits).
pub const TOTAL_VFS: u16 = 0x0E;
/// NumVFs (+0x10, 16 bits).
pub const NUM_VFS: u16 = 0x10;
/// First VF Offset (+0x14, 16 bits, 9.3.3.9).
pub const FIRST_VF_OFFSET: u16 = 0x14;
/// VF Stride (+0x16, 16 bits, 9.3.3.10).
pub const VF_STRIDE: u16 = 0x16;
/// VF Device ID (+0x1A, 16 bits, 9.3.3.11).
pub const VF_DEVICE_ID: u16 = 0x1A;
/// VF BAR0 (+0x24); VF BARi at `VF_BAR0 + 4 * i` up to +0x3B (9.3.3.14).
pub const VF_BAR0: u16 = 0x24;
/// Length of the SR-IOV capability.
pub const LEN: u16 = 0x40;

/// The SR-IOV capability of a PF, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SriovCap {
    /// Config offset of the capability.
    pub offset: u16,
    /// SR-IOV Control.
    pub control: u16,
    /// TotalVFs.
    pub total_vfs: u16,
    /// NumVFs.
    pub num_vfs: u16,
    /// First VF Offset.
    pub first_vf_offset: u16,
    /// VF Stride.
    pub vf_stride: u16,
    /// VF Device ID.
    pub vf_device_id: u16,
    /// The six VF BAR registers as read.
    pub vf_bars: [u32; 6],
}

fn word(c: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*c.get(o)?, *c.get(o + 1)?]))
}

fn dword(c: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes([
        *c.get(o)?,
        *c.get(o + 1)?,
        *c.get(o + 2)?,
        *c.get(o + 3)?,
    ]))
}

impl SriovCap {
    /// Find and decode the SR-IOV capability in a PF's raw 4 KiB config space.
    pub fn find(config: &[u8]) -> Option<Self> {
        let (off, _, _) = walk_extended(config)
            .into_iter()
            .find(|&(_, id, _)| id == EXT_SRIOV)?;
        let o = usize::from(off);
        if o + usize::from(LEN) > config.len() {
            return None;
        }
        let mut vf_bars = [0u32; 6];
        for (i, b) in vf_bars.iter_mut().enumerate() {
            *b = dword(config, o + usize::from(VF_BAR0) + 4 * i)?;
        }
        Some(SriovCap {
            offset: off,
            control: word(config, o + usize::from(CONTROL))?,
            total_vfs: word(config, o + usize::from(TOTAL_VFS))?,
            num_vfs: word(config, o + usize::from(NUM_VFS))?,
            first_vf_offset: word(config, o + usize::from(FIRST_VF_OFFSET))?,
            vf_stride: word(config, o + usize::from(VF_STRIDE))?,
            vf_device_id: word(config, o + usize::from(VF_DEVICE_ID))?,
            vf_bars,
        })
    }

    /// The index `n` of the VF at routing ID `vf` of the PF at routing ID `pf`
    /// (`(VF RID - PF RID - First VF Offset) / VF Stride`), if it is one of the enabled VFs.
    pub fn vf_index(&self, pf: PciAddress, vf: PciAddress) -> Option<u16> {
        if pf.segment != vf.segment {
            return None;
        }
        let rid = |a: PciAddress| u32::from(a.bus) << 8 | u32::from(a.devfn());
        let delta = rid(vf)
            .checked_sub(rid(pf))?
            .checked_sub(u32::from(self.first_vf_offset))?;
        let n = match self.vf_stride {
            // A single VF may have stride 0 (9.3.3.10: "unused if NumVFs is 0 or 1").
            0 if delta == 0 => 0,
            0 => return None,
            s if delta % u32::from(s) == 0 => delta / u32::from(s),
            _ => return None,
        };
        (n < u32::from(self.num_vfs)).then_some(n as u16)
    }

    /// VF BARi as the PF describes it (kind, prefetchable, aperture base), `None` for an unused
    /// slot, an I/O slot (VF BARs are memory only, 9.3.3.14) or the upper half of a 64-bit BAR.
    pub fn vf_bar_base(&self, i: usize) -> Option<(BarKind, bool, u64)> {
        let lo = *self.vf_bars.get(i)?;
        // Slots taken by the upper half of a 64-bit BAR (type bits 2:1 = 10b) read as unused.
        let mut j = 0;
        while j < i {
            j += if self.vf_bars[j] & 0x7 == 0x4 { 2 } else { 1 };
        }
        if j != i {
            return None;
        }
        if lo & 1 != 0 {
            return None;
        }
        let kind = match (lo >> 1) & 3 {
            0 => BarKind::Mem32,
            2 if i < 5 => BarKind::Mem64,
            _ => return None,
        };
        let hi = if kind == BarKind::Mem64 {
            u64::from(self.vf_bars[i + 1])
        } else {
            0
        };
        let base = hi << 32 | u64::from(lo & !0xF);
        Some((kind, lo & 0x8 != 0, base))
    }
}

/// What a VF's own config space lacks, derived from its PF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VfIdentity {
    /// The PF's address.
    pub pf: PciAddress,
    /// The VF's index `n` (0-based).
    pub index: u16,
    /// Vendor ID (the PF's).
    pub vendor: u16,
    /// Device ID (the PF's VF Device ID).
    pub device: u16,
    /// The VF's BARs.
    pub bars: [Option<BarInfo>; 6],
}

impl VfIdentity {
    /// Derive VF `vf`'s identity from its PF at `pf` with raw config space `pf_config`;
    /// `vf_bar_sizes[i]` is the per-VF size of VF BARi (0 = unused).
    pub fn derive(
        pf: PciAddress,
        pf_config: &[u8],
        vf: PciAddress,
        vf_bar_sizes: &[u64; 6],
    ) -> Result<Self, Error> {
        let bad = |m: String| Error::Unsupported {
            device: vf.to_string(),
            message: m,
        };
        let cap = SriovCap::find(pf_config)
            .ok_or_else(|| bad(format!("its PF {pf} has no SR-IOV capability")))?;
        if cap.control & CONTROL_VF_ENABLE == 0 || cap.num_vfs == 0 {
            return Err(bad(format!(
                "its PF {pf} has no VFs enabled (SR-IOV VF Enable / NumVFs)"
            )));
        }
        let index = cap.vf_index(pf, vf).ok_or_else(|| {
            bad(format!(
                "not a VF of {pf}: First VF Offset {:#x}, VF Stride {:#x}, NumVFs {}",
                cap.first_vf_offset, cap.vf_stride, cap.num_vfs
            ))
        })?;
        let vendor = word(pf_config, 0).unwrap_or(0xFFFF);
        let mut bars = [None; 6];
        for (i, slot) in bars.iter_mut().enumerate() {
            let size = vf_bar_sizes[i];
            let Some((kind, prefetchable, base)) = cap.vf_bar_base(i) else {
                if size != 0 {
                    return Err(bad(format!("VF BAR{i} has a size but is not a memory BAR")));
                }
                continue;
            };
            if size == 0 {
                continue;
            }
            if base == 0 {
                return Err(bad(format!("VF BAR{i} has a size but no address assigned")));
            }
            if !size.is_power_of_two() {
                return Err(bad(format!(
                    "VF BAR{i} size {size:#x} is not a power of two"
                )));
            }
            let host_addr = u64::from(index)
                .checked_mul(size)
                .and_then(|o| base.checked_add(o))
                .ok_or_else(|| bad(format!("VF BAR{i} overflows")))?;
            *slot = Some(BarInfo {
                kind,
                prefetchable,
                host_addr,
                size,
            });
        }
        Ok(VfIdentity {
            pf,
            index,
            vendor,
            device: cap.vf_device_id,
            bars,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PF at 03:00.0 with SR-IOV at 0x160: 8 VFs, offset 0x10, stride 1, VF device 0x154c,
    /// VF BAR0 64-bit prefetchable at 0x38_0000_0000, VF BAR3 64-bit at 0x38_0010_0000.
    fn pf() -> Vec<u8> {
        let mut c = vec![0u8; 4096];
        c[0..4].copy_from_slice(&[0x86, 0x80, 0x72, 0x15]);
        c[0x100..0x104].copy_from_slice(&(0x0010u32 | 1 << 16).to_le_bytes());
        let s = 0x100;
        c[s + 8] = 0x19;
        c[s + 0x0E] = 64;
        c[s + 0x10] = 8;
        c[s + 0x14] = 0x10;
        c[s + 0x16] = 1;
        c[s + 0x1A..s + 0x1C].copy_from_slice(&0x154cu16.to_le_bytes());
        c[s + 0x24..s + 0x28].copy_from_slice(&0x0000_000Cu32.to_le_bytes());
        c[s + 0x28..s + 0x2C].copy_from_slice(&0x38u32.to_le_bytes());
        c[s + 0x30..s + 0x34].copy_from_slice(&0x0010_000Cu32.to_le_bytes());
        c[s + 0x34..s + 0x38].copy_from_slice(&0x38u32.to_le_bytes());
        c
    }

    #[test]
    fn vf_index_ids_and_bars() {
        let pfa = PciAddress::new(0, 3, 0, 0);
        let sizes = [0x1_0000, 0, 0, 0x4000, 0, 0];
        let v = VfIdentity::derive(pfa, &pf(), PciAddress::new(0, 3, 2, 2), &sizes).unwrap();
        assert_eq!((v.index, v.vendor, v.device), (2, 0x8086, 0x154c));
        let b0 = v.bars[0].unwrap();
        assert_eq!((b0.kind, b0.prefetchable), (BarKind::Mem64, true));
        assert_eq!(b0.host_addr, 0x38_0002_0000);
        assert_eq!(v.bars[3].unwrap().host_addr, 0x38_0010_8000);
        assert!(v.bars[1].is_none() && v.bars[4].is_none());
        // Not a VF of this PF: before the first VF, past NumVFs, other segment.
        for a in [
            PciAddress::new(0, 3, 1, 7),
            PciAddress::new(0, 3, 3, 0),
            PciAddress::new(1, 3, 2, 0),
        ] {
            assert!(VfIdentity::derive(pfa, &pf(), a, &sizes).is_err(), "{a}");
        }
        // VFs disabled.
        let mut c = pf();
        c[0x108] = 0;
        assert!(VfIdentity::derive(pfa, &c, PciAddress::new(0, 3, 2, 0), &sizes).is_err());
        // A size for an unused VF BAR is refused.
        let bad = [0x1_0000, 0, 0x1000, 0x4000, 0, 0];
        assert!(VfIdentity::derive(pfa, &pf(), PciAddress::new(0, 3, 2, 0), &bad).is_err());
    }

    #[test]
    fn stride_and_upper_halves() {
        let mut c = pf();
        c[0x116] = 2;
        let cap = SriovCap::find(&c).unwrap();
        let pfa = PciAddress::new(0, 3, 0, 0);
        assert_eq!(cap.vf_index(pfa, PciAddress::new(0, 3, 2, 4)), Some(2));
        assert_eq!(cap.vf_index(pfa, PciAddress::new(0, 3, 2, 3)), None);
        assert!(cap.vf_bar_base(1).is_none(), "upper half of VF BAR0");
        assert!(cap.vf_bar_base(4).is_none(), "upper half of VF BAR3");
        assert!(
            cap.vf_bar_base(2).is_some(),
            "slot 2 is an (unused) 32-bit BAR"
        );
    }
}
