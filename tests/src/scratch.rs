//! Scratch storage device: what is written reads back, in every space, at every size.

use ioreq_server::device::{Actions, Device, Range, Space};
use xen_abi::pci_sbdf;

/// Ports claimed.
pub const PORT_BASE: u64 = 0x500;
/// Number of ports.
pub const PORT_LEN: u64 = 16;
/// MMIO page claimed.
pub const MMIO_BASE: u64 = 0xFED0_0000;
/// MMIO length.
pub const MMIO_LEN: u64 = 4096;
/// A low MMIO page (below 1 MiB, where Xen may buffer writes, like stdvga's window).
pub const LOW_MMIO_BASE: u64 = 0xA_0000;
/// The PCI function claimed: 00:05.0.
pub const SBDF: u32 = pci_sbdf(0, 0, 5, 0);

/// The device.
pub struct Scratch {
    ports: [u8; PORT_LEN as usize],
    mmio: Vec<u8>,
    config: Vec<u8>,
    writes: u64,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    /// Zeroed storage; config space starts with vendor 0x1af4 device 0x1110 (a neutral id).
    pub fn new() -> Self {
        let mut config = vec![0u8; 4096];
        config[0..4].copy_from_slice(&0x1110_1af4u32.to_le_bytes());
        Scratch {
            ports: [0; PORT_LEN as usize],
            mmio: vec![0; MMIO_LEN as usize],
            config,
            writes: 0,
        }
    }

    fn store(&mut self, space: Space, addr: u64) -> Option<(&mut [u8], usize)> {
        let (buf, off): (&mut [u8], u64) = match space {
            Space::Port => (&mut self.ports, addr.checked_sub(PORT_BASE)?),
            Space::Memory if addr < MMIO_BASE => (&mut self.mmio, addr.checked_sub(LOW_MMIO_BASE)?),
            Space::Memory => (&mut self.mmio, addr.checked_sub(MMIO_BASE)?),
            Space::PciConfig => (&mut self.config, addr & 0xFFF),
        };
        Some((buf, usize::try_from(off).ok()?))
    }
}

impl Device for Scratch {
    fn name(&self) -> &str {
        "scratch"
    }
    fn ranges(&self) -> Vec<Range> {
        vec![
            Range::new(Space::Port, PORT_BASE, PORT_LEN),
            Range::new(Space::Memory, MMIO_BASE, MMIO_LEN),
            Range::new(Space::Memory, LOW_MMIO_BASE, MMIO_LEN),
            Range::pci_function(SBDF),
        ]
    }
    fn read(&mut self, space: Space, addr: u64, size: u8, _: &mut Actions) -> u64 {
        let Some((buf, off)) = self.store(space, addr) else {
            return u64::MAX;
        };
        let mut b = [0u8; 8];
        let n = usize::from(size).min(8);
        match buf.get(off..off + n) {
            Some(s) => b[..n].copy_from_slice(s),
            None => return u64::MAX,
        }
        u64::from_le_bytes(b)
    }
    fn write(&mut self, space: Space, addr: u64, size: u8, data: u64, _: &mut Actions) {
        self.writes += 1;
        let n = usize::from(size).min(8);
        if let Some((buf, off)) = self.store(space, addr) {
            if let Some(s) = buf.get_mut(off..off + n) {
                s.copy_from_slice(&data.to_le_bytes()[..n]);
            }
        }
    }
    fn status(&self) -> serde_json::Value {
        serde_json::json!({"writes": self.writes})
    }
}
