//! The emulated host bridge at 00:00.0 (on `bus_start`).
//!
//! A plain type-0 function of class 06/00/00 with the configured vendor/device ID, no BARs,
//! no capabilities and no interrupt. The guest may write the command register's I/O, memory
//! and bus-master bits, cache line size, latency timer and interrupt line (stored, no effect);
//! every other write is dropped. The extended space reads 0 (an empty extended capability
//! list).

/// The config space of the emulated host-bridge function 00:00.0 (the whole device, this
/// function and the passed-through ones behind it, is [`crate::PciHostBridge`]).
#[derive(Clone, Debug)]
pub struct HostBridgeFunction {
    regs: [u8; 64],
}

/// Guest-writable bits of the first 64 bytes.
const WRITABLE: [(usize, u8); 4] = [(0x04, 0x07), (0x0C, 0xFF), (0x0D, 0xFF), (0x3C, 0xFF)];

impl HostBridgeFunction {
    /// A host bridge with this identity.
    pub fn new(vendor: u16, device: u16) -> Self {
        let mut regs = [0u8; 64];
        regs[0..2].copy_from_slice(&vendor.to_le_bytes());
        regs[2..4].copy_from_slice(&device.to_le_bytes());
        // Revision 0, class 06 (bridge) / 00 (host bridge) / 00.
        regs[0x0B] = 0x06;
        // Subsystem IDs: same identity.
        regs[0x2C..0x2E].copy_from_slice(&vendor.to_le_bytes());
        regs[0x2E..0x30].copy_from_slice(&device.to_le_bytes());
        HostBridgeFunction { regs }
    }

    /// Read `len` (1..=8) bytes at `reg` (bytes past 4095 read all-ones).
    pub fn read(&self, reg: u16, len: usize) -> u64 {
        let mut v = 0u64;
        for i in 0..len.clamp(1, 8) {
            let off = usize::from(reg) + i;
            let b = match off {
                0..=63 => self.regs[off],
                64..=4095 => 0,
                _ => 0xFF,
            };
            v |= u64::from(b) << (8 * i);
        }
        v
    }

    /// Write `len` (1..=8) bytes at `reg`; only the writable bits stick.
    pub fn write(&mut self, reg: u16, len: usize, data: u64) {
        for i in 0..len.clamp(1, 8) {
            let off = usize::from(reg) + i;
            let d = (data >> (8 * i)) as u8;
            if let Some(&(_, m)) = WRITABLE.iter().find(|(o, _)| *o == off) {
                self.regs[off] = (self.regs[off] & !m) | (d & m);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_writes() {
        let mut h = HostBridgeFunction::new(0x1b36, 0x0008);
        assert_eq!(h.read(0, 4), 0x0008_1b36);
        assert_eq!(h.read(8, 4), 0x0600_0000);
        assert_eq!(h.read(0x0E, 1), 0);
        h.write(0x04, 2, 0xFFFF);
        assert_eq!(h.read(0x04, 2), 0x0007);
        h.write(0x10, 4, 0xFFFF_FFFF);
        assert_eq!(h.read(0x10, 4), 0);
        h.write(0x00, 4, 0);
        assert_eq!(h.read(0, 2), 0x1b36);
        assert_eq!(h.read(0x100, 4), 0);
        assert_eq!(h.read(0xFFE, 4), 0xFFFF_0000);
    }
}
