//! What kind of kernel an xl config boots: pvh-dm delivers the guest's ACPI tables through
//! Linux's initrd table upgrade (`CONFIG_ACPI_TABLE_UPGRADE`), which only a Linux kernel
//! reads.
//!
//! A Linux bzImage has the x86 boot protocol's setup header: the boot flag 0xAA55 at 0x1FE and
//! the magic `HdrS` at 0x202; the version string sits at `0x200 + kernel_version` (u16 at
//! 0x20E) (Documentation/arch/x86/boot.rst). An uncompressed `vmlinux` ELF (which Xen can also
//! boot as PVH) is recognised by the `Linux version ` banner it carries.

use std::io::{self, Read};
use std::path::Path;

/// The kind of kernel image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// A Linux bzImage, with its version string if the header carries one.
    LinuxBzImage(Option<String>),
    /// A Linux `vmlinux` ELF.
    LinuxElf,
    /// An ELF that is not recognisably Linux.
    OtherElf,
    /// Anything else.
    Unknown,
}

impl KernelKind {
    /// Whether the kernel reads ACPI tables from its initrd.
    pub fn is_linux(&self) -> bool {
        matches!(self, KernelKind::LinuxBzImage(_) | KernelKind::LinuxElf)
    }
}

/// Classify the kernel image at `path`.
pub fn classify(path: &Path) -> io::Result<KernelKind> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; 0x10000];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    head.truncate(n);
    if head.len() >= 0x210 && head[0x1FE..0x200] == [0x55, 0xAA] && &head[0x202..0x206] == b"HdrS" {
        let off = u16::from_le_bytes([head[0x20E], head[0x20F]]) as usize;
        let version = (off != 0)
            .then(|| head.get(0x200 + off..))
            .flatten()
            .map(|s| {
                let end = s.iter().position(|&b| b == 0).unwrap_or(s.len()).min(120);
                String::from_utf8_lossy(&s[..end]).into_owned()
            })
            .filter(|s| !s.is_empty());
        return Ok(KernelKind::LinuxBzImage(version));
    }
    if head.starts_with(b"\x7fELF") {
        // Search the whole file for the banner, in overlapping chunks.
        const NEEDLE: &[u8] = b"Linux version ";
        let mut buf = head;
        loop {
            if buf.windows(NEEDLE.len()).any(|w| w == NEEDLE) {
                return Ok(KernelKind::LinuxElf);
            }
            let keep = buf.len().saturating_sub(NEEDLE.len());
            buf.drain(..keep);
            let mut chunk = vec![0u8; 1 << 20];
            let r = f.read(&mut chunk)?;
            if r == 0 {
                return Ok(KernelKind::OtherElf);
            }
            buf.extend_from_slice(&chunk[..r]);
        }
    }
    Ok(KernelKind::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, b: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("pvh-dm-kernel-{}-{name}", std::process::id()));
        std::fs::write(&p, b).unwrap();
        p
    }

    /// A minimal fake bzImage header.
    fn fake_bzimage(version: &str) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0x1FE] = 0x55;
        b[0x1FF] = 0xAA;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        b[0x300..0x300 + version.len()].copy_from_slice(version.as_bytes());
        b
    }

    #[test]
    fn kinds() {
        let p = tmp(
            "bz",
            &fake_bzimage("6.1.0-56-amd64 (debian-kernel@lists.debian.org)"),
        );
        assert_eq!(
            classify(&p).unwrap(),
            KernelKind::LinuxBzImage(Some(
                "6.1.0-56-amd64 (debian-kernel@lists.debian.org)".into()
            ))
        );
        let mut elf = b"\x7fELF".to_vec();
        elf.resize(0x20000, 0);
        elf.extend_from_slice(b"Linux version 6.1");
        let p2 = tmp("elf", &elf);
        assert_eq!(classify(&p2).unwrap(), KernelKind::LinuxElf);
        let p3 = tmp("other", b"\x7fELF xen unikernel");
        assert_eq!(classify(&p3).unwrap(), KernelKind::OtherElf);
        let p4 = tmp("junk", b"MZ");
        assert_eq!(classify(&p4).unwrap(), KernelKind::Unknown);
        for p in [p, p2, p3, p4] {
            let _ = std::fs::remove_file(p);
        }
    }
}
