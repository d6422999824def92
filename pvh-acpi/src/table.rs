//! The System Description Table header and checksum (ACPI 6.4, 5.2.6 "System Description
//! Table Header", Table 5.4), and the three tables: SSDT (5.2.11.2), MADT (5.2.12) and MCFG
//! (PCI Firmware Specification 3.2, 4.1.2 "MCFG Table Description").

use crate::Error;

/// Length of the common header: Signature 4, Length 4, Revision 1, Checksum 1, OEMID 6, OEM Table
/// ID 8, OEM Revision 4, Creator ID 4, Creator Revision 4.
pub const HEADER_LEN: usize = 36;
/// Offset of the Length field.
pub const LENGTH_OFFSET: usize = 4;
/// Offset of the Checksum byte: the whole table sums to 0 modulo 256.
pub const CHECKSUM_OFFSET: usize = 9;

/// Header identity of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ident {
    /// Signature (`SSDT`, `APIC`, `MCFG`).
    pub signature: [u8; 4],
    /// Table revision (the table format's revision, not the OEM's).
    pub revision: u8,
    /// OEMID, NUL-padded to 6 bytes.
    pub oem_id: [u8; 6],
    /// OEM Table ID, NUL-padded to 8 bytes.
    pub oem_table_id: [u8; 8],
    /// OEM Revision. Linux replaces a firmware table with an initrd table of the same signature,
    /// OEMID and OEM Table ID only when this is strictly higher (drivers/acpi/tables.c
    /// `acpi_table_initrd_override`).
    pub oem_revision: u32,
    /// Creator ID (the tool that made the table).
    pub creator_id: [u8; 4],
    /// Creator revision.
    pub creator_revision: u32,
}

/// A string as a NUL-padded fixed field (`strncpy` semantics, as Xen's libacpi fills its
/// headers). Longer strings are an error, never truncated silently.
pub fn padded<const N: usize>(s: &str) -> Result<[u8; N], Error> {
    let b = s.as_bytes();
    if b.len() > N || !b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        return Err(Error::BadName(s.to_owned()));
    }
    let mut o = [0u8; N];
    o[..b.len()].copy_from_slice(b);
    Ok(o)
}

/// Header + body with the Length and Checksum fields filled in.
pub fn build(ident: &Ident, body: &[u8]) -> Result<Vec<u8>, Error> {
    let len = HEADER_LEN + body.len();
    let len32 = u32::try_from(len).map_err(|_| Error::TooLarge {
        what: "ACPI table",
        len,
        max: u32::MAX as usize,
    })?;
    let mut t = Vec::with_capacity(len);
    t.extend_from_slice(&ident.signature);
    t.extend_from_slice(&len32.to_le_bytes());
    t.push(ident.revision);
    t.push(0); // checksum, below
    t.extend_from_slice(&ident.oem_id);
    t.extend_from_slice(&ident.oem_table_id);
    t.extend_from_slice(&ident.oem_revision.to_le_bytes());
    t.extend_from_slice(&ident.creator_id);
    t.extend_from_slice(&ident.creator_revision.to_le_bytes());
    t.extend_from_slice(body);
    t[CHECKSUM_OFFSET] = checksum_byte(&t);
    Ok(t)
}

/// The byte that makes `table` (whose checksum byte is 0) sum to zero.
pub fn checksum_byte(table: &[u8]) -> u8 {
    0u8.wrapping_sub(table.iter().fold(0u8, |s, b| s.wrapping_add(*b)))
}

/// Whether `table` sums to zero modulo 256.
pub fn checksum_ok(table: &[u8]) -> bool {
    table.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
}

/// MADT (5.2.12, Table 5.19): Local Interrupt Controller Address (4), Flags (4).
pub const MADT_FLAGS_PCAT_COMPAT: u32 = 1 << 0;
/// MADT structure type 0: Processor Local APIC (5.2.12.2, Table 5.23), 8 bytes.
pub const MADT_TYPE_LOCAL_APIC: u8 = 0;
/// Length of a Processor Local APIC structure.
pub const MADT_LOCAL_APIC_LEN: u8 = 8;
/// Local APIC Flags bit 0: Enabled (5.2.12.2, Table 5.24).
pub const MADT_LOCAL_APIC_ENABLED: u32 = 1 << 0;
/// MADT structure type 1: I/O APIC (5.2.12.3, Table 5.25), 12 bytes.
pub const MADT_TYPE_IO_APIC: u8 = 1;
/// Length of an I/O APIC structure.
pub const MADT_IO_APIC_LEN: u8 = 12;

/// One Processor Local APIC structure.
pub fn madt_local_apic(processor_uid: u8, apic_id: u8, enabled: bool) -> Vec<u8> {
    let mut o = vec![
        MADT_TYPE_LOCAL_APIC,
        MADT_LOCAL_APIC_LEN,
        processor_uid,
        apic_id,
    ];
    let flags = if enabled { MADT_LOCAL_APIC_ENABLED } else { 0 };
    o.extend_from_slice(&flags.to_le_bytes());
    o
}

/// One I/O APIC structure.
pub fn madt_io_apic(id: u8, address: u32, gsi_base: u32) -> Vec<u8> {
    let mut o = vec![MADT_TYPE_IO_APIC, MADT_IO_APIC_LEN, id, 0];
    o.extend_from_slice(&address.to_le_bytes());
    o.extend_from_slice(&gsi_base.to_le_bytes());
    o
}

/// MCFG: 8 reserved bytes after the header, then 16-byte allocation structures (PCI Firmware
/// Specification 3.2, Table 4-3): Base Address (8), PCI Segment Group (2), Start Bus (1), End
/// Bus (1), Reserved (4).
pub const MCFG_RESERVED_LEN: usize = 8;

/// One MCFG allocation structure.
pub fn mcfg_allocation(base: u64, segment: u16, bus_start: u8, bus_end: u8) -> Vec<u8> {
    let mut o = Vec::with_capacity(16);
    o.extend_from_slice(&base.to_le_bytes());
    o.extend_from_slice(&segment.to_le_bytes());
    o.push(bus_start);
    o.push(bus_end);
    o.extend_from_slice(&[0; 4]);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_checksum() {
        let id = Ident {
            signature: *b"SSDT",
            revision: 2,
            oem_id: padded("Xen").unwrap(),
            oem_table_id: padded("HVM").unwrap(),
            oem_revision: 1,
            creator_id: *b"PVHA",
            creator_revision: 1,
        };
        let t = build(&id, &[1, 2, 3]).unwrap();
        assert_eq!(t.len(), 39);
        assert_eq!(&t[4..8], &39u32.to_le_bytes());
        assert_eq!(&t[10..16], b"Xen\0\0\0");
        assert!(checksum_ok(&t));
        assert!(padded::<6>("TOOLONGID").is_err());
    }
}
