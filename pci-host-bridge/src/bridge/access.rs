//! Where a guest access to the bridge goes: config space by SBDF (CF8/CFC as Xen decoded it),
//! the ECAM window split at function boundaries, and the BAR windows, offered to each function
//! in turn; plus the remap that a config write (a BAR moved, decode toggled) can call for.
//!
//! Apart from `mod.rs` (construction, views, the [`Device`](ioreq_server::device::Device)
//! implementation) because this is the per-access path, read on its own when a guest access
//! misbehaves.

use std::collections::BTreeMap;

use ioreq_server::guest_warn;

use super::PciHostBridge;
use crate::topology::PciAddress;

impl PciHostBridge {
    /// A config read of `len` (1..=8) bytes at `reg` of function `addr`. Reads crossing the end
    /// of the function's 4 KiB, and reads of functions that do not exist, return all-ones.
    pub fn config_read(&mut self, addr: PciAddress, reg: u16, len: usize) -> u64 {
        let len = len.clamp(1, 8);
        if usize::from(reg) + len > 4096 || !self.on_root_bus(addr) {
            return u64::MAX;
        }
        if addr.device == 0 && addr.function == 0 {
            return self.host_bridge.read(reg, len);
        }
        match self.functions.get_mut(&addr.devfn()) {
            Some(f) => f.config_read(reg, len),
            None => u64::MAX,
        }
    }

    /// A config write; see [`PciHostBridge::config_read`].
    pub fn config_write(&mut self, addr: PciAddress, reg: u16, len: usize, data: u64) {
        let len = len.clamp(1, 8);
        if usize::from(reg) + len > 4096 || !self.on_root_bus(addr) {
            return;
        }
        if addr.device == 0 && addr.function == 0 {
            self.host_bridge.write(reg, len, data);
            return;
        }
        let Some(exec) = self.exec.as_mut() else {
            // No executor means no start: nothing of the device is the guest's yet.
            guest_warn!(
                self.warn,
                "config write to a passed-through function before the bridge started: dropped"
            );
            return;
        };
        let remap = match self.functions.get_mut(&addr.devfn()) {
            Some(f) => f.config_write(reg, len, data, exec),
            None => false,
        };
        if remap {
            self.remap();
        }
    }

    /// Recompute every function's mappings. A BAR whose guest range overlaps another decoded
    /// BAR (of any function, same address space) is not mapped at all while the overlap lasts:
    /// two host ranges cannot share guest frames, and unmapping one would tear down the other.
    fn remap(&mut self) {
        let all: Vec<(u8, u8, bool, u64, u64)> = self
            .functions
            .iter()
            .flat_map(|(&devfn, f)| {
                f.decoded_ranges()
                    .into_iter()
                    .map(move |(bar, io, s, l)| (devfn, bar, io, s, l))
            })
            .collect();
        let mut blocked: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                if a.2 == b.2 && a.3 < b.3.saturating_add(b.4) && b.3 < a.3.saturating_add(a.4) {
                    for x in [a, b] {
                        blocked.entry(x.0).or_default().push(x.1);
                    }
                    guest_warn!(self.warn, "guest BARs overlap ({:02x}.{} BAR{} at {:#x} and {:02x}.{} BAR{} at {:#x}): neither is mapped",
                            a.0 >> 3,
                            a.0 & 7,
                            a.1,
                            a.3,
                            b.0 >> 3,
                            b.0 & 7,
                            b.1,
                            b.3);
                }
            }
        }
        let Some(exec) = self.exec.as_mut() else {
            return;
        };
        for (devfn, f) in self.functions.iter_mut() {
            f.update_mappings(blocked.get(devfn).map_or(&[][..], Vec::as_slice), exec);
        }
    }

    /// Split an ECAM access at 4 KiB function boundaries: `(function, reg, byte index, len)`.
    fn ecam_pieces(&self, addr: u64, len: usize) -> Vec<(PciAddress, u16, usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < len {
            let a = addr + i as u64;
            let Some((f, reg)) = self.ecam.decode(a) else {
                out.push((PciAddress::new(0xFFFF, 0, 0, 0), 0, i, len - i));
                break;
            };
            let n = (len - i).min(4096 - usize::from(reg));
            out.push((f, reg, i, n));
            i += n;
        }
        out
    }

    pub(super) fn ecam_read(&mut self, addr: u64, len: usize) -> u64 {
        let mut v = 0u64;
        for (f, reg, i, n) in self.ecam_pieces(addr, len) {
            let part = if f.segment != 0 {
                u64::MAX
            } else {
                self.config_read(f, reg, n)
            };
            let mask = if n >= 8 {
                u64::MAX
            } else {
                (1u64 << (8 * n)) - 1
            };
            v |= (part & mask) << (8 * i);
        }
        v
    }

    pub(super) fn ecam_write(&mut self, addr: u64, len: usize, data: u64) {
        for (f, reg, i, n) in self.ecam_pieces(addr, len) {
            if f.segment != 0 {
                continue;
            }
            self.config_write(f, reg, n, data >> (8 * i));
        }
    }

    pub(super) fn mmio_read(&mut self, addr: u64, len: usize) -> u64 {
        for f in self.functions.values_mut() {
            if let Some(v) = f.mmio_read(addr, len) {
                return v;
            }
        }
        u64::MAX
    }

    pub(super) fn mmio_write(&mut self, addr: u64, len: usize, data: u64) {
        if let Some(exec) = self.exec.as_mut() {
            for f in self.functions.values_mut() {
                if f.mmio_write(addr, len, data, exec) {
                    return;
                }
            }
        }
        guest_warn!(
            self.warn,
            "MMIO write at {addr:#x} hits no decoded BAR: dropped"
        );
    }
}
