//! ACPI resource descriptors for `_CRS` buffers (ACPI 6.4, 6.4 "Resource Data Types for ACPI").
//!
//! Each function returns one encoded descriptor; [`template`] concatenates them and appends the
//! End Tag, which is what an ASL `ResourceTemplate ()` compiles to.

/// Small resource item: I/O Port Descriptor, tag byte `0x47` = item name 0x08 << 3 | length 7
/// (6.4.2.5 "I/O Port Descriptor").
pub const IO_PORT_TAG: u8 = 0x47;
/// I/O Port Descriptor information byte, bit 0: the device decodes 16 address bits (6.4.2.5).
pub const IO_DECODE16: u8 = 0x01;
/// Small resource item: End Tag, `0x79` = item name 0x0F << 3 | length 1 (6.4.2.9 "End Tag").
pub const END_TAG: u8 = 0x79;
/// Large resource item: 32-Bit Fixed Memory Range Descriptor, `0x86` (6.4.3.4).
pub const MEMORY32_FIXED_TAG: u8 = 0x86;
/// Large resource item: DWord Address Space Descriptor, `0x87` (6.4.3.5.2).
pub const DWORD_ADDRESS_TAG: u8 = 0x87;
/// Large resource item: Word Address Space Descriptor, `0x88` (6.4.3.5.3).
pub const WORD_ADDRESS_TAG: u8 = 0x88;
/// Large resource item: QWord Address Space Descriptor, `0x8A` (6.4.3.5.1).
pub const QWORD_ADDRESS_TAG: u8 = 0x8A;

/// Address space descriptor Resource Type: memory range (6.4.3.5, Table 6.49 byte 3).
pub const RESOURCE_TYPE_MEMORY: u8 = 0;
/// Resource Type: I/O range.
pub const RESOURCE_TYPE_IO: u8 = 1;
/// Resource Type: bus number range.
pub const RESOURCE_TYPE_BUS: u8 = 2;

/// General Flags bit 3 `_MAF`: the maximum address is fixed (6.4.3.5, byte 4).
pub const FLAG_MAX_FIXED: u8 = 1 << 3;
/// General Flags bit 2 `_MIF`: the minimum address is fixed.
pub const FLAG_MIN_FIXED: u8 = 1 << 2;
/// General Flags bit 1 `_DEC`: 0 = positive decode (the bridge decodes the range).
pub const FLAG_SUBTRACTIVE_DECODE: u8 = 1 << 1;
/// General Flags bit 0: 1 = this device consumes the resource, 0 = it produces it for its
/// children (a root bridge's windows are produced).
pub const FLAG_CONSUMER: u8 = 1 << 0;

/// Memory Type Specific Flags bit 0 `_RW`: read-write (6.4.3.5.4 "Type Specific Attributes").
pub const MEM_READ_WRITE: u8 = 1 << 0;
/// Memory `_MEM` bits 2-1 = 0: non-cacheable.
pub const MEM_NON_CACHEABLE: u8 = 0 << 1;
/// I/O Type Specific Flags bits 1-0 `_RNG` = 3: the window covers the entire range
/// (ISA and non-ISA ports) (6.4.3.5.4).
pub const IO_RANGE_ENTIRE: u8 = 3;

fn large(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut o = vec![tag];
    o.extend_from_slice(&(body.len() as u16).to_le_bytes());
    o.extend_from_slice(body);
    o
}

/// `IO (Decode16, min, min, 1, len)`: a fixed I/O port range the device consumes (6.4.2.5).
pub fn io_port(min: u16, len: u8) -> Vec<u8> {
    let mut o = vec![IO_PORT_TAG, IO_DECODE16];
    o.extend_from_slice(&min.to_le_bytes());
    o.extend_from_slice(&min.to_le_bytes());
    o.push(1); // alignment
    o.push(len);
    o
}

/// `Memory32Fixed (ReadWrite, base, len)` (6.4.3.4): the device consumes this range.
pub fn memory32_fixed(base: u32, len: u32) -> Vec<u8> {
    let mut b = vec![MEM_READ_WRITE];
    b.extend_from_slice(&base.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    large(MEMORY32_FIXED_TAG, &b)
}

/// Which address space a Word/DWord/QWord descriptor describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// Memory (`*Memory`), non-cacheable read-write.
    Memory,
    /// I/O ports (`*IO`), entire range.
    Io,
    /// Bus numbers (`WordBusNumber`).
    Bus,
}

impl Space {
    fn type_and_flags(self) -> (u8, u8) {
        match self {
            Space::Memory => (RESOURCE_TYPE_MEMORY, MEM_READ_WRITE | MEM_NON_CACHEABLE),
            Space::Io => (RESOURCE_TYPE_IO, IO_RANGE_ENTIRE),
            Space::Bus => (RESOURCE_TYPE_BUS, 0),
        }
    }
}

/// The general flags of a window: fixed min and max, positive decode, and producer (a bridge
/// window) or consumer (a range the device itself decodes).
fn general_flags(consumer: bool) -> u8 {
    FLAG_MIN_FIXED | FLAG_MAX_FIXED | if consumer { FLAG_CONSUMER } else { 0 }
}

/// An Address Space Descriptor of `N`-byte fields: type, general and type-specific flags, then
/// granularity, minimum, maximum, translation offset and length (`fields`, little-endian). The
/// Word, DWord and QWord descriptors differ only in the width and the tag.
fn address_space<const N: usize>(
    tag: u8,
    space: Space,
    consumer: bool,
    fields: [[u8; N]; 5],
) -> Vec<u8> {
    let (ty, tflags) = space.type_and_flags();
    let mut b = vec![ty, general_flags(consumer), tflags];
    for v in fields {
        b.extend_from_slice(&v);
    }
    large(tag, &b)
}

/// The three Address Space Descriptors, one definition for the three widths: the descriptor
/// for `[min, max]`, granularity 0, no translation, length `max - min + 1`.
macro_rules! address_descriptor {
    ($(#[$doc:meta])* $name:ident: $int:ty, $tag:expr) => {
        $(#[$doc])*
        pub fn $name(space: Space, min: $int, max: $int, consumer: bool) -> Vec<u8> {
            let len = max.wrapping_sub(min).wrapping_add(1);
            let fields = [0, min, max, 0, len].map(<$int>::to_le_bytes);
            address_space($tag, space, consumer, fields)
        }
    };
}

address_descriptor!(
    /// Word Address Space Descriptor (6.4.3.5.3) for `[min, max]`.
    word_address: u16, WORD_ADDRESS_TAG
);
address_descriptor!(
    /// DWord Address Space Descriptor (6.4.3.5.2) for `[min, max]`.
    dword_address: u32, DWORD_ADDRESS_TAG
);
address_descriptor!(
    /// QWord Address Space Descriptor (6.4.3.5.1) for `[min, max]`.
    qword_address: u64, QWORD_ADDRESS_TAG
);

/// A memory window `[min, max]` in the smallest descriptor that holds it (DWord below 4 GiB,
/// QWord above), as ASL authors write it.
pub fn memory_window(min: u64, max: u64, consumer: bool) -> Vec<u8> {
    match (u32::try_from(min), u32::try_from(max)) {
        (Ok(a), Ok(b)) => dword_address(Space::Memory, a, b, consumer),
        _ => qword_address(Space::Memory, min, max, consumer),
    }
}

/// The descriptors followed by the End Tag with checksum 0 ("the checksum is treated as
/// correct", 6.4.2.9): the byte list of a `ResourceTemplate ()`.
pub fn template(descriptors: &[Vec<u8>]) -> Vec<u8> {
    let mut o: Vec<u8> = descriptors.concat();
    o.push(END_TAG);
    o.push(0);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(
            io_port(0xCF8, 8),
            vec![0x47, 1, 0xF8, 0x0C, 0xF8, 0x0C, 1, 8]
        );
        let w = word_address(Space::Bus, 0, 0, false);
        assert_eq!(w.len(), 3 + 13);
        assert_eq!(&w[..6], &[0x88, 13, 0, 2, 0x0C, 0]);
        assert_eq!(&w[w.len() - 2..], &[1, 0]); // length 1
        let d = dword_address(Space::Memory, 0xF100_0000, 0xFBFF_FFFF, false);
        assert_eq!(d.len(), 3 + 23);
        assert_eq!(&d[d.len() - 4..], &0x0B00_0000u32.to_le_bytes());
        let q = qword_address(Space::Memory, 1 << 36, (1 << 36) + 0xFFF, false);
        assert_eq!(q.len(), 3 + 43);
        assert_eq!(memory32_fixed(0xF000_0000, 0x10_0000).len(), 12);
        assert_eq!(template(&[]), vec![0x79, 0]);
    }
}
