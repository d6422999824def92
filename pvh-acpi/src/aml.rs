//! A small AML encoder: exactly the terms the guest fragment needs, each a function that
//! returns the encoded bytes.
//!
//! Section numbers refer to the ACPI Specification 6.4, chapter 20 "ACPI Machine Language (AML)
//! Specification" (the grammar is unchanged since ACPI 2.0 for everything used here).

use crate::Error;

/// `NameOp` (20.2.5.1 "Namespace Modifier Objects Encoding").
pub const NAME_OP: u8 = 0x08;
/// `ScopeOp` (20.2.5.1).
pub const SCOPE_OP: u8 = 0x10;
/// `BufferOp` (20.2.5.4 "Expression Opcodes Encoding").
pub const BUFFER_OP: u8 = 0x11;
/// `PackageOp` (20.2.5.4).
pub const PACKAGE_OP: u8 = 0x12;
/// `ExtOpPrefix` (20.2.5.2 "Named Objects Encoding").
pub const EXT_OP_PREFIX: u8 = 0x5B;
/// `DeviceOp` after `ExtOpPrefix` (20.2.5.2).
pub const DEVICE_OP: u8 = 0x82;
/// `ZeroOp` (20.2.3 "Data Objects Encoding").
pub const ZERO_OP: u8 = 0x00;
/// `OneOp` (20.2.3).
pub const ONE_OP: u8 = 0x01;
/// `BytePrefix` (20.2.3).
pub const BYTE_PREFIX: u8 = 0x0A;
/// `WordPrefix` (20.2.3).
pub const WORD_PREFIX: u8 = 0x0B;
/// `DWordPrefix` (20.2.3).
pub const DWORD_PREFIX: u8 = 0x0C;
/// `StringPrefix` (20.2.3).
pub const STRING_PREFIX: u8 = 0x0D;
/// `QWordPrefix` (20.2.3).
pub const QWORD_PREFIX: u8 = 0x0E;
/// `RootChar` `\` (20.2.2 "Name Objects Encoding").
pub const ROOT_CHAR: u8 = b'\\';
/// `ParentPrefixChar` `^` (20.2.2).
pub const PARENT_PREFIX_CHAR: u8 = b'^';
/// `DualNamePrefix` (20.2.2).
pub const DUAL_NAME_PREFIX: u8 = 0x2E;
/// `MultiNamePrefix` (20.2.2).
pub const MULTI_NAME_PREFIX: u8 = 0x2F;
/// Largest value a `PkgLength` encodes: 28 bits (20.2.4 "Package Length Encoding").
pub const PKG_LENGTH_MAX: usize = (1 << 28) - 1;

/// `PkgLength` for `body_len` bytes that follow it (20.2.4): the encoded value counts the
/// `PkgLength` bytes themselves. One byte holds up to 63 (bits 0-5); otherwise bits 7-6 of the
/// lead byte give the number of following bytes (1-3), bits 3-0 the low nibble, and each
/// following byte 8 more bits.
pub fn pkg_length(body_len: usize) -> Result<Vec<u8>, Error> {
    if body_len < 0x3F {
        return Ok(vec![(body_len + 1) as u8]);
    }
    for extra in 1..=3usize {
        let total = body_len + 1 + extra;
        if total < 1 << (4 + 8 * extra) {
            let mut v = vec![((extra as u8) << 6) | (total & 0x0F) as u8];
            for i in 0..extra {
                v.push((total >> (4 + 8 * i)) as u8);
            }
            return Ok(v);
        }
    }
    Err(Error::TooLarge {
        what: "AML package",
        len: body_len,
        max: PKG_LENGTH_MAX,
    })
}

/// One `NameSeg` (20.2.2): a lead character `A-Z` or `_`, then up to three of `A-Z 0-9 _`,
/// padded to four with `_`.
pub fn name_seg(seg: &str) -> Result<[u8; 4], Error> {
    let b = seg.as_bytes();
    let bad = || Error::BadName(seg.to_owned());
    if b.is_empty() || b.len() > 4 {
        return Err(bad());
    }
    if !(b[0].is_ascii_uppercase() || b[0] == b'_') {
        return Err(bad());
    }
    if !b[1..]
        .iter()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
    {
        return Err(bad());
    }
    let mut out = [b'_'; 4];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// A `NameString` (20.2.2) from ASL path syntax: `\_SB.PCI0`, `_S5`, `^FOO`.
pub fn name_string(path: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut rest = path;
    if let Some(r) = rest.strip_prefix('\\') {
        out.push(ROOT_CHAR);
        rest = r;
    } else {
        while let Some(r) = rest.strip_prefix('^') {
            out.push(PARENT_PREFIX_CHAR);
            rest = r;
        }
    }
    let segs: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('.').collect()
    };
    match segs.len() {
        0 => out.push(0x00), // NullName
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n if n <= 255 => {
            out.push(MULTI_NAME_PREFIX);
            out.push(n as u8);
        }
        _ => return Err(Error::BadName(path.to_owned())),
    }
    for s in segs {
        out.extend_from_slice(&name_seg(s)?);
    }
    Ok(out)
}

/// An integer in the shortest encoding (20.2.3): `ZeroOp`, `OneOp`, `ByteConst`, `WordConst`,
/// `DWordConst` or `QWordConst` (the last needs a definition block of revision 2 or higher).
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xFF => vec![BYTE_PREFIX, v as u8],
        0x100..=0xFFFF => {
            let mut o = vec![WORD_PREFIX];
            o.extend_from_slice(&(v as u16).to_le_bytes());
            o
        }
        0x1_0000..=0xFFFF_FFFF => dword(v as u32),
        _ => {
            let mut o = vec![QWORD_PREFIX];
            o.extend_from_slice(&v.to_le_bytes());
            o
        }
    }
}

/// A `DWordConst` (20.2.3), whatever the value (used for `_HID`/`_CID` EISA IDs and `_PRT`
/// addresses, which ASL compilers also emit as DWords).
pub fn dword(v: u32) -> Vec<u8> {
    let mut o = vec![DWORD_PREFIX];
    o.extend_from_slice(&v.to_le_bytes());
    o
}

/// A `String` (20.2.3): `StringPrefix`, ASCII characters 0x01-0x7F, `NullChar`.
pub fn string(s: &str) -> Result<Vec<u8>, Error> {
    if !s.bytes().all(|c| (0x01..=0x7F).contains(&c)) {
        return Err(Error::BadName(s.to_owned()));
    }
    let mut o = vec![STRING_PREFIX];
    o.extend_from_slice(s.as_bytes());
    o.push(0);
    Ok(o)
}

/// The 32-bit compressed EISA ID of a PNP ID like `PNP0A08` (ACPI 6.4, 6.1.5 "_HID", and the
/// ASL `EISAID` macro, 19.6.35): three letters of 5 bits (`c - 0x40`) packed into a big-endian
/// 16-bit word, then four hex digits as two bytes; the DWord is stored little-endian, so
/// `PNP0A08` is 0x080AD041.
pub fn eisa_id(id: &str) -> Result<u32, Error> {
    let b = id.as_bytes();
    let bad = || Error::BadEisaId(id.to_owned());
    if b.len() != 7 || !b[..3].iter().all(|c| c.is_ascii_uppercase()) {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&b[3..]).map_err(|_| bad())?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let digits = u16::from_str_radix(hex, 16).map_err(|_| bad())?;
    let letters =
        (u16::from(b[0] - 0x40) << 10) | (u16::from(b[1] - 0x40) << 5) | u16::from(b[2] - 0x40);
    let bytes = [
        (letters >> 8) as u8,
        letters as u8,
        (digits >> 8) as u8,
        digits as u8,
    ];
    Ok(u32::from_le_bytes(bytes))
}

/// `DefName := NameOp NameString DataRefObject` (20.2.5.1).
pub fn name(path: &str, value: &[u8]) -> Result<Vec<u8>, Error> {
    let mut o = vec![NAME_OP];
    o.extend(name_string(path)?);
    o.extend_from_slice(value);
    Ok(o)
}

/// `DefScope := ScopeOp PkgLength NameString TermList` (20.2.5.1).
pub fn scope(path: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut inner = name_string(path)?;
    inner.extend_from_slice(body);
    let mut o = vec![SCOPE_OP];
    o.extend(pkg_length(inner.len())?);
    o.extend(inner);
    Ok(o)
}

/// `DefDevice := DeviceOp PkgLength NameString TermList`, `DeviceOp := ExtOpPrefix 0x82`
/// (20.2.5.2).
pub fn device(path: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
    let mut inner = name_string(path)?;
    inner.extend_from_slice(body);
    let mut o = vec![EXT_OP_PREFIX, DEVICE_OP];
    o.extend(pkg_length(inner.len())?);
    o.extend(inner);
    Ok(o)
}

/// `DefPackage := PackageOp PkgLength NumElements PackageElementList` (20.2.5.4);
/// `NumElements` is one byte, so at most 255 elements.
pub fn package(elements: &[Vec<u8>]) -> Result<Vec<u8>, Error> {
    let n = u8::try_from(elements.len()).map_err(|_| Error::TooLarge {
        what: "AML Package (NumElements is one byte)",
        len: elements.len(),
        max: 255,
    })?;
    let mut inner = vec![n];
    for e in elements {
        inner.extend_from_slice(e);
    }
    let mut o = vec![PACKAGE_OP];
    o.extend(pkg_length(inner.len())?);
    o.extend(inner);
    Ok(o)
}

/// `DefBuffer := BufferOp PkgLength BufferSize ByteList` (20.2.5.4), `BufferSize` an integer.
pub fn buffer(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    let mut inner = integer(bytes.len() as u64);
    inner.extend_from_slice(bytes);
    let mut o = vec![BUFFER_OP];
    o.extend(pkg_length(inner.len())?);
    o.extend(inner);
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkg_length_boundaries() {
        assert_eq!(pkg_length(0).unwrap(), vec![1]);
        assert_eq!(pkg_length(62).unwrap(), vec![63]);
        // 63 bytes of body: 65 with a two-byte PkgLength = 0x41 -> lead 0x41, next 0x04.
        assert_eq!(pkg_length(63).unwrap(), vec![0x41, 0x04]);
        let v = pkg_length(3000).unwrap();
        assert_eq!(v.len(), 2);
        let total = (v[0] & 0x0F) as usize | (v[1] as usize) << 4;
        assert_eq!(total, 3002);
        // Two bytes hold at most 4095 (12 bits).
        let v = pkg_length(5000).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0] >> 6, 2);
        let total = (v[0] & 0x0F) as usize | (v[1] as usize) << 4 | (v[2] as usize) << 12;
        assert_eq!(total, 5003);
        assert!(pkg_length(PKG_LENGTH_MAX).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name_string("\\_S5").unwrap(), b"\\_S5_".to_vec());
        assert_eq!(
            name_string("\\_SB.PCI0").unwrap(),
            [&[b'\\', DUAL_NAME_PREFIX][..], b"_SB_PCI0"].concat()
        );
        assert_eq!(name_string("PCI0").unwrap(), b"PCI0".to_vec());
        assert!(name_string("pci0").is_err());
        assert!(name_string("TOOLONG").is_err());
        assert!(name_string("0ABC").is_err());
    }

    #[test]
    fn integers_and_eisa() {
        assert_eq!(integer(0), vec![0]);
        assert_eq!(integer(1), vec![1]);
        assert_eq!(integer(7), vec![0x0A, 7]);
        assert_eq!(integer(0x1234), vec![0x0B, 0x34, 0x12]);
        assert_eq!(integer(0xF000_0000), vec![0x0C, 0, 0, 0, 0xF0]);
        assert_eq!(integer(1 << 32)[0], QWORD_PREFIX);
        assert_eq!(eisa_id("PNP0A08").unwrap(), 0x080A_D041);
        assert_eq!(eisa_id("PNP0A03").unwrap(), 0x030A_D041);
        assert_eq!(eisa_id("PNP0C02").unwrap(), 0x020C_D041);
        assert!(eisa_id("pnp0a03").is_err());
        assert!(eisa_id("PNP0A0G").is_err());
    }
}
