//! An uncompressed cpio archive in the "newc" format (`070701`), as Linux's initramfs and its
//! early ACPI table upgrade read it (Documentation/driver-api/early-userspace/buffer-format.rst,
//! lib/earlycpio.c).
//!
//! Each entry is a 110-byte ASCII header (magic and 13 fields of 8 hex digits: ino, mode, uid,
//! gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize including
//! the NUL, check), the name with its NUL padded to a multiple of 4, then the data padded to a
//! multiple of 4. The archive ends with an entry named `TRAILER!!!`. The writer pads the whole
//! archive to a multiple of 512 bytes (as `cpio -o` does); Linux skips the zero bytes between
//! concatenated archives. Owner, group and mtime are 0 so that the same tables give the same
//! bytes.

use std::io::{self, Write};

/// `S_IFDIR`.
pub const S_IFDIR: u32 = 0o040000;
/// `S_IFREG`.
pub const S_IFREG: u32 = 0o100000;
/// The trailer entry's name.
pub const TRAILER: &str = "TRAILER!!!";
/// Length of a newc header.
pub const HEADER_LEN: usize = 110;

/// Writes a newc archive to `W`.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

impl<W: Write> Writer<W> {
    /// A new archive.
    pub fn new(out: W) -> Self {
        Writer {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, data: &[u8]) -> io::Result<()> {
        if name.is_empty() || name.contains('\0') || name.starts_with('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio entry name {name:?} must be relative and non-empty"),
            ));
        }
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "cpio newc files are < 4 GiB")
        })?;
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let namesize = name.len() as u32 + 1;
        let header = format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
            0, 0, 0, 0, 0, 0, 0, 0
        );
        debug_assert_eq!(header.len(), HEADER_LEN);
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        let p = pad4(self.written);
        self.put(&[0; 3][..p])?;
        self.put(data)?;
        let p = pad4(self.written);
        self.put(&[0; 3][..p])
    }

    /// A directory entry (mode 0755).
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, 2, &[])
    }

    /// A regular file (mode 0644).
    pub fn file(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | 0o644, 1, data)
    }

    /// Write the trailer, pad to 512 bytes, and return the sink and the archive's length.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.entry(TRAILER, 0, 1, &[])?;
        let p = ((512 - (self.written % 512)) % 512) as usize;
        self.put(&vec![0; p])?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

/// One entry read back by [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name.
    pub name: String,
    /// Mode (type and permissions).
    pub mode: u32,
    /// Contents.
    pub data: Vec<u8>,
}

/// Read a newc archive back (up to and excluding its trailer); for tests and `--dry-run`
/// checks. Returns the entries and the offset just after the trailer's padding.
pub fn parse(b: &[u8]) -> Result<(Vec<Entry>, usize), String> {
    let mut pos = 0usize;
    let mut out = Vec::new();
    let field = |h: &[u8], i: usize| -> Result<u32, String> {
        let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).map_err(|e| e.to_string())?;
        u32::from_str_radix(s, 16).map_err(|e| format!("field {i}: {e}"))
    };
    loop {
        let h = b
            .get(pos..pos + HEADER_LEN)
            .ok_or_else(|| format!("truncated header at {pos}"))?;
        if &h[..6] != b"070701" {
            return Err(format!("bad magic at {pos}"));
        }
        let mode = field(h, 1)?;
        let size = field(h, 6)? as usize;
        let namesize = field(h, 11)? as usize;
        let name_start = pos + HEADER_LEN;
        let name = b
            .get(name_start..name_start + namesize)
            .ok_or("truncated name")?;
        if name.last() != Some(&0) {
            return Err(format!("name at {name_start} is not NUL-terminated"));
        }
        let name = String::from_utf8_lossy(&name[..namesize - 1]).into_owned();
        let mut p = name_start + namesize;
        p += pad4(p as u64);
        let data = b.get(p..p + size).ok_or("truncated data")?.to_vec();
        p += size;
        p += pad4(p as u64);
        pos = p;
        if name == TRAILER {
            return Ok((out, pos));
        }
        out.push(Entry { name, mode, data });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let mut w = Writer::new(Vec::new());
        w.dir("kernel").unwrap();
        w.file("kernel/a", b"12345").unwrap();
        w.file("kernel/bb", b"").unwrap();
        let (v, len) = w.finish().unwrap();
        assert_eq!(v.len() as u64, len);
        assert_eq!(len % 512, 0);
        let (entries, end) = parse(&v).unwrap();
        assert!(end <= v.len() && v[end..].iter().all(|&b| b == 0));
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].mode, S_IFDIR | 0o755);
        assert_eq!(entries[1].name, "kernel/a");
        assert_eq!(entries[1].data, b"12345");
        assert_eq!(entries[2].data, b"");
        // The header of the first entry, byte for byte.
        let want = [
            "070701", "00000001", "000041ED", "00000000", "00000000", "00000002", "00000000",
            "00000000", "00000000", "00000000", "00000000", "00000000", "00000007", "00000000",
        ]
        .concat();
        assert_eq!(&v[..HEADER_LEN], want.as_bytes());
        assert_eq!(&v[HEADER_LEN..HEADER_LEN + 7], b"kernel\0");
        // 110 + 7 = 117 -> padded to 120.
        assert_eq!(&v[117..120], &[0, 0, 0]);
        assert_eq!(&v[120..126], b"070701");
    }

    #[test]
    fn refuses_absolute_names() {
        let mut w = Writer::new(Vec::new());
        assert!(w.file("/etc/x", b"").is_err());
    }
}
