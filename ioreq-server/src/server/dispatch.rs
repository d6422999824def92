//! From one `ioreq_t` to device accesses: type, size, count, direction flag and `data_is_ptr`
//! decoded and checked; every request gets an answer, a bad one the null handler's
//! (reads all-ones, writes dropped) with a rate-limited warning.

use super::guest_mem::GuestMemory;
use super::ranges::RangeTable;
use super::stats::Stats;
use crate::device::{Actions, Device, Space};
use crate::guest_warn;
use crate::ratelimit::RateLimit;
use crate::transport::Transport;
use xen_abi::*;

/// More repetitions than this in one request is absurd (Xen caps a rep batch well below it).
pub const MAX_REP_COUNT: u32 = 1 << 16;

/// Mask of the low `size` bytes.
pub fn size_mask(size: u32) -> u64 {
    match size {
        1..=7 => (1u64 << (size * 8)) - 1,
        _ => u64::MAX,
    }
}

/// Devices, their ranges, and what dispatch needs around them.
pub struct Dispatcher {
    /// The devices this process serves.
    pub devices: Vec<Box<dyn Device>>,
    /// Who owns which range.
    pub ranges: RangeTable,
    /// Counters.
    pub stats: Stats,
    /// Guest pages for `data_is_ptr`.
    pub guest_mem: GuestMemory,
    limit: RateLimit,
}

enum Bad {
    Size,
    Count,
    Overflow,
    Unclaimed,
    Type,
}

impl Dispatcher {
    /// Serve `devices` over `ranges` (built by the caller from [`Device::ranges`]).
    pub fn new(devices: Vec<Box<dyn Device>>, ranges: RangeTable, vcpus: u32) -> Self {
        let stats = Stats {
            ioreqs_by_vcpu: vec![0; vcpus as usize],
            ..Default::default()
        };
        Dispatcher {
            devices,
            ranges,
            stats,
            guest_mem: GuestMemory::default(),
            limit: RateLimit::guest(),
        }
    }

    /// Handle one synchronous request. Returns the value for the slot's `data` field when the
    /// request needs one (a read without `data_is_ptr`).
    pub fn handle(
        &mut self,
        req: &Ioreq,
        vcpu: u32,
        t: &mut dyn Transport,
        actions: &mut Actions,
    ) -> Option<u64> {
        self.stats.ioreqs_by_type.count(req.type_);
        if let Some(c) = self.stats.ioreqs_by_vcpu.get_mut(vcpu as usize) {
            *c += 1;
        }
        let result = match req.type_ {
            IOREQ_TYPE_PIO => self.access(Space::Port, req, t, actions),
            IOREQ_TYPE_COPY => self.access(Space::Memory, req, t, actions),
            IOREQ_TYPE_PCI_CONFIG => self.access(Space::PciConfig, req, t, actions),
            IOREQ_TYPE_INVALIDATE => {
                self.guest_mem.invalidate();
                Ok(None)
            }
            IOREQ_TYPE_TIMEOFFSET => Ok(None),
            _ => Err(Bad::Type),
        };
        match result {
            Ok(v) => v,
            Err(why) => {
                self.stats.bad_requests += u64::from(!matches!(why, Bad::Unclaimed));
                self.stats.unclaimed += u64::from(matches!(why, Bad::Unclaimed));
                let what = match why {
                    Bad::Size => "bad size",
                    Bad::Count => "bad count",
                    Bad::Overflow => "address overflow",
                    Bad::Unclaimed => "unclaimed address",
                    Bad::Type => "unknown type",
                };
                guest_warn!(
                    self.limit,
                    vcpu,
                    type_ = req.type_,
                    addr = format_args!("{:#x}", req.addr),
                    size = req.size,
                    count = req.count,
                    read = req.is_read(),
                    data_is_ptr = req.data_is_ptr(),
                    "guest request answered as {what}"
                );
                (req.is_read() && !req.data_is_ptr()).then(|| size_mask(req.size))
            }
        }
    }

    /// Handle one buffered request (always a write, count 1, no pointer).
    pub fn handle_buffered(
        &mut self,
        type_: u8,
        addr: u64,
        size: u32,
        data: u64,
        t: &mut dyn Transport,
        actions: &mut Actions,
    ) {
        self.stats.buffered += 1;
        let req = Ioreq::single(type_, addr, size, IOREQ_WRITE, data);
        let space = match type_ {
            IOREQ_TYPE_PIO => Space::Port,
            IOREQ_TYPE_COPY => Space::Memory,
            IOREQ_TYPE_TIMEOFFSET => return,
            _ => {
                self.stats.bad_requests += 1;
                guest_warn!(
                    self.limit,
                    type_,
                    "buffered request of unknown type dropped"
                );
                return;
            }
        };
        if self.access(space, &req, t, actions).is_err() {
            self.stats.bad_requests += 1;
            guest_warn!(
                self.limit,
                addr = format_args!("{addr:#x}"),
                size,
                "buffered write dropped"
            );
        }
    }

    fn access(
        &mut self,
        space: Space,
        req: &Ioreq,
        t: &mut dyn Transport,
        actions: &mut Actions,
    ) -> Result<Option<u64>, Bad> {
        let size = req.size;
        let size_ok = match space {
            Space::Memory => matches!(size, 1 | 2 | 4 | 8),
            Space::Port | Space::PciConfig => matches!(size, 1 | 2 | 4),
        };
        if !size_ok {
            return Err(Bad::Size);
        }
        if req.count == 0
            || req.count > MAX_REP_COUNT
            || (space == Space::PciConfig && req.count != 1)
        {
            return Err(Bad::Count);
        }
        let span = u64::from(req.count - 1) * u64::from(size);
        // The address space the lookup is done in: SBDF for config requests.
        let (first, last) = if space == Space::PciConfig {
            let reg = req.addr & 0xFFFF_FFFF;
            if reg + u64::from(size) > 4096 {
                return Err(Bad::Overflow);
            }
            (req.addr >> 32, req.addr >> 32)
        } else if space == Space::Port {
            // REP INS/OUTS: every item goes to the same port; only the guest buffer moves
            // (QEMU cpu_ioreq_pio; Xen selects the server on [addr, addr + size - 1]).
            match req.addr.checked_add(u64::from(size) - 1) {
                Some(hi) => (req.addr, hi),
                None => return Err(Bad::Overflow),
            }
        } else {
            let (lo, hi) = if req.df() {
                (
                    req.addr.checked_sub(span),
                    req.addr.checked_add(u64::from(size) - 1),
                )
            } else {
                (
                    Some(req.addr),
                    req.addr.checked_add(span + u64::from(size) - 1),
                )
            };
            match (lo, hi) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => return Err(Bad::Overflow),
            }
        };
        if space == Space::Port && last > 0xFFFF {
            return Err(Bad::Overflow);
        }
        let dev = self
            .ranges
            .lookup(space, first, last)
            .ok_or(Bad::Unclaimed)?;
        if req.data_is_ptr() {
            let gspan_ok = if req.df() {
                req.data.checked_sub(span).is_some()
            } else {
                req.data.checked_add(span + u64::from(size)).is_some()
            };
            if !gspan_ok {
                return Err(Bad::Overflow);
            }
        }
        let mask = size_mask(size);
        let mut last_read = None;
        // A port access without a guest buffer is done once, whatever `count` says (QEMU
        // cpu_ioreq_pio); MMIO without one repeats at advancing addresses (REP STOS).
        let items = if space == Space::Port && !req.data_is_ptr() {
            1
        } else {
            u64::from(req.count)
        };
        for i in 0..items {
            let step = i * u64::from(size);
            let addr = match space {
                Space::Port | Space::PciConfig => req.addr,
                Space::Memory if req.df() => req.addr - step,
                Space::Memory => req.addr + step,
            };
            let gpa = if req.df() {
                req.data.wrapping_sub(step)
            } else {
                req.data.wrapping_add(step)
            };
            let device = &mut self.devices[dev];
            if req.is_read() {
                let v = device.read(space, addr, size as u8, actions) & mask;
                if req.data_is_ptr() {
                    if let Err(e) = self
                        .guest_mem
                        .write(t, gpa, &v.to_le_bytes()[..size as usize])
                    {
                        guest_warn!(
                            self.limit,
                            gpa = format_args!("{gpa:#x}"),
                            "rep read: cannot write guest memory: {e}"
                        );
                        break;
                    }
                } else {
                    last_read = Some(v);
                }
            } else {
                let v = if req.data_is_ptr() {
                    let mut b = [0u8; 8];
                    if let Err(e) = self.guest_mem.read(t, gpa, &mut b[..size as usize]) {
                        guest_warn!(
                            self.limit,
                            gpa = format_args!("{gpa:#x}"),
                            "rep write: cannot read guest memory: {e}"
                        );
                        break;
                    }
                    u64::from_le_bytes(b)
                } else {
                    req.data & mask
                };
                device.write(space, addr, size as u8, v, actions);
            }
        }
        Ok(if req.is_read() && !req.data_is_ptr() {
            Some(last_read.unwrap_or(mask))
        } else {
            None
        })
    }
}
