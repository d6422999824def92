//! Typed access to the pages shared with the hypervisor: the per-vCPU ioreq slots and the
//! buffered ring. Both transports map the same layout (Xen: `IOCTL_PRIVCMD_MMAP_RESOURCE`;
//! xen-sim: a memfd), and xen-sim plays Xen's side through the same accessors.
//!
//! Ordering follows xen/common/ioreq.c and QEMU: the state byte is read with acquire before
//! the slot's other fields, and written with release after them.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use xen_abi::{
    BufIoreq, Ioreq, BUFFERED_SLOTS_OFFSET, BUFFERED_WRITE_POINTER_OFFSET, IOREQ_BUFFER_SLOT_NUM,
    IOREQ_FLAGS_OFFSET, XEN_PAGE_SIZE,
};

/// Size of one `ioreq_t` slot.
pub const IOREQ_SLOT_SIZE: usize = 32;
/// vCPU slots per 4 KiB ioreq frame.
pub const SLOTS_PER_PAGE: usize = XEN_PAGE_SIZE / IOREQ_SLOT_SIZE;

/// A shared mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through volatile/atomic
// operations below, which are sound from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: no interior references are handed out, only copies and atomics.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map `len` bytes of `fd` at `offset`, shared and read-write.
    pub fn map_fd(fd: BorrowedFd<'_>, offset: u64, len: usize) -> io::Result<Mapping> {
        let len_nz = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let off =
            i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh shared mapping chosen by the kernel (addr None); it aliases no Rust
        // object, and we only access it through the raw pointer with volatile/atomic operations.
        let p = unsafe {
            nix::sys::mman::mmap(
                None,
                len_nz,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                fd,
                off,
            )
        }?;
        Ok(Mapping { ptr: p.cast(), len })
    }

    /// An anonymous, private, locked (never paged out) mapping of `len` bytes: a hypercall
    /// argument buffer where /dev/xen/hypercall is not available (what libxencall falls back
    /// to).
    pub fn anonymous_locked(len: usize) -> io::Result<Mapping> {
        let len_nz = std::num::NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a fresh anonymous mapping chosen by the kernel; it aliases nothing.
        let p = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                len_nz,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }?;
        let m = Mapping { ptr: p.cast(), len };
        // SAFETY: locks pages of the mapping we just created and own.
        unsafe { nix::sys::mman::mlock(p, len) }?;
        Ok(m)
    }

    /// Adopt an existing mapping (used by the xen transport after MMAP_RESOURCE filled a VMA it
    /// created with `mmap` on privcmd).
    ///
    /// # Safety
    /// `ptr` must be the start of a live shared mapping of `len` bytes that nothing else unmaps.
    // SAFETY: the caller's contract above is what every access of the returned Mapping (and
    // its munmap on drop) relies on; the function itself only stores the two values.
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Mapping {
        Mapping { ptr, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a successful map).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address (for ioctls that take a user address).
    pub fn addr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn check(&self, off: usize, n: usize) -> bool {
        off.checked_add(n).is_some_and(|e| e <= self.len)
    }

    /// Copy bytes out of the mapping. Out-of-range reads return `false` and fill nothing.
    pub fn read_bytes(&self, off: usize, out: &mut [u8]) -> bool {
        if !self.check(off, out.len()) {
            return false;
        }
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: off + i < len (checked above); volatile because another party writes.
            *b = unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(off + i)) };
        }
        true
    }

    /// Copy bytes into the mapping. Out-of-range writes return `false` and write nothing.
    pub fn write_bytes(&self, off: usize, data: &[u8]) -> bool {
        if !self.check(off, data.len()) {
            return false;
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: off + i < len (checked above); volatile because another party reads.
            unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(off + i), *b) };
        }
        true
    }

    /// One device-register read of exactly `width` bytes (1, 2, 4 or 8) at `off`, naturally
    /// aligned, as a single volatile load: how a BAR mapped from sysfs `resourceN` must be
    /// read (a device register may act on the width of the access; a byte loop would not do).
    /// `None` when the access is out of range, unaligned or of another width.
    pub fn read_mmio(&self, off: usize, width: usize) -> Option<u64> {
        if !matches!(width, 1 | 2 | 4 | 8) || !off.is_multiple_of(width) || !self.check(off, width)
        {
            return None;
        }
        // SAFETY: in bounds and naturally aligned for `width` (checked above; the mapping is
        // page-aligned); a volatile load of that exact size from device memory we mapped.
        Some(unsafe {
            let p = self.ptr.as_ptr().add(off);
            match width {
                1 => u64::from(std::ptr::read_volatile(p)),
                2 => u64::from(std::ptr::read_volatile(p.cast::<u16>())),
                4 => u64::from(std::ptr::read_volatile(p.cast::<u32>())),
                _ => std::ptr::read_volatile(p.cast::<u64>()),
            }
        })
    }

    /// One device-register write of exactly `width` bytes, see [`Mapping::read_mmio`].
    /// Returns `false` (and writes nothing) for an access that is not allowed.
    pub fn write_mmio(&self, off: usize, width: usize, value: u64) -> bool {
        if !matches!(width, 1 | 2 | 4 | 8) || !off.is_multiple_of(width) || !self.check(off, width)
        {
            return false;
        }
        // SAFETY: in bounds and naturally aligned for `width` (checked above); a volatile
        // store of that exact size to device memory we mapped.
        unsafe {
            let p = self.ptr.as_ptr().add(off);
            match width {
                1 => std::ptr::write_volatile(p, value as u8),
                2 => std::ptr::write_volatile(p.cast::<u16>(), value as u16),
                4 => std::ptr::write_volatile(p.cast::<u32>(), value as u32),
                _ => std::ptr::write_volatile(p.cast::<u64>(), value),
            }
        }
        true
    }

    fn atomic_u8(&self, off: usize) -> &AtomicU8 {
        assert!(self.check(off, 1));
        // SAFETY: in bounds (asserted); AtomicU8 has alignment 1; the memory lives as long as
        // `self`, which the returned reference borrows.
        unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(off)) }
    }

    fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        assert!(self.check(off, 4) && off.is_multiple_of(4));
        // SAFETY: in bounds and 4-aligned (asserted; the mapping is page-aligned); lives as
        // long as `self`.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }

    fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        assert!(self.check(off, 8) && off.is_multiple_of(8));
        // SAFETY: in bounds and 8-aligned (asserted; the mapping is page-aligned); lives as
        // long as `self`.
        unsafe { AtomicU64::from_ptr(self.ptr.as_ptr().add(off).cast()) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping (created by map_fd or handed over by from_raw) and
        // nothing can use it after drop.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// The ioreq frame(s): one 32-byte slot per vCPU.
#[derive(Debug)]
pub struct IoreqPage {
    map: Mapping,
    vcpus: u32,
}

impl IoreqPage {
    /// Wrap a mapping that holds at least `vcpus` slots.
    pub fn new(map: Mapping, vcpus: u32) -> io::Result<Self> {
        if (vcpus as usize).saturating_mul(IOREQ_SLOT_SIZE) > map.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "ioreq mapping too small for the vCPUs",
            ));
        }
        Ok(IoreqPage { map, vcpus })
    }

    /// Number of vCPU slots.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    fn off(&self, vcpu: u32) -> usize {
        assert!(vcpu < self.vcpus, "vcpu index out of range");
        vcpu as usize * IOREQ_SLOT_SIZE
    }

    /// The slot's state, read with acquire ordering (everything Xen wrote before setting it is
    /// visible afterwards).
    pub fn state(&self, vcpu: u32) -> u8 {
        self.map
            .atomic_u8(self.off(vcpu) + IOREQ_FLAGS_OFFSET)
            .load(Ordering::Acquire)
            & 0x0F
    }

    /// Copy the slot (call after [`IoreqPage::state`] returned READY).
    pub fn read(&self, vcpu: u32) -> Ioreq {
        let mut b = [0u8; 32];
        self.map.read_bytes(self.off(vcpu), &mut b);
        Ioreq::from_bytes(&b)
    }

    /// Write the whole slot except that its state byte is published last, with release
    /// ordering (Xen's side: post a request).
    pub fn post(&self, vcpu: u32, req: &Ioreq) {
        let off = self.off(vcpu);
        let b = req.to_bytes();
        self.map.write_bytes(off, &b[..IOREQ_FLAGS_OFFSET]);
        self.map
            .write_bytes(off + IOREQ_FLAGS_OFFSET + 1, &b[IOREQ_FLAGS_OFFSET + 1..]);
        self.map
            .atomic_u8(off + IOREQ_FLAGS_OFFSET)
            .store(req.flags, Ordering::Release);
    }

    /// Write the slot's `data` field (before releasing the response).
    pub fn write_data(&self, vcpu: u32, data: u64) {
        self.map
            .write_bytes(self.off(vcpu) + 8, &data.to_le_bytes());
    }

    /// Set the state with release ordering, keeping the other bits of the bitfield byte.
    pub fn set_state(&self, vcpu: u32, state: u8) {
        let a = self.map.atomic_u8(self.off(vcpu) + IOREQ_FLAGS_OFFSET);
        let old = a.load(Ordering::Relaxed);
        a.store((old & !0x0F) | (state & 0x0F), Ordering::Release);
    }

    /// Set `vp_eport` of a slot (Xen does this when the server is enabled).
    pub fn set_vp_eport(&self, vcpu: u32, port: u32) {
        self.map
            .write_bytes(self.off(vcpu) + 24, &port.to_le_bytes());
    }
}

/// The buffered ioreq ring (`buffered_iopage`).
#[derive(Debug)]
pub struct BufferedPage {
    map: Mapping,
}

impl BufferedPage {
    /// Wrap a mapping of at least one page.
    pub fn new(map: Mapping) -> io::Result<Self> {
        if map.len() < XEN_PAGE_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffered page mapping too small",
            ));
        }
        Ok(BufferedPage { map })
    }

    /// Both pointers, read together as one 64-bit value so that Xen's atomic rebase
    /// (`HVM_IOREQSRV_BUFIOREQ_ATOMIC`) is never seen half done. Returns (read, write).
    pub fn pointers(&self) -> (u32, u32) {
        let v = self.map.atomic_u64(0).load(Ordering::Acquire);
        (v as u32, (v >> 32) as u32)
    }

    /// Slot `i % 511`.
    pub fn slot(&self, i: u32) -> BufIoreq {
        let off = BUFFERED_SLOTS_OFFSET + (i % IOREQ_BUFFER_SLOT_NUM) as usize * 8;
        let mut b = [0u8; 8];
        self.map.read_bytes(off, &mut b);
        BufIoreq {
            word0: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            data: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Consume `n` slots: an atomic add on `read_pointer` (never a plain store, so a
    /// concurrent rebase by Xen is not undone).
    pub fn advance_read(&self, n: u32) {
        self.map.atomic_u32(0).fetch_add(n, Ordering::AcqRel);
    }

    /// Xen's side: write slot `i % 511`.
    pub fn write_slot(&self, i: u32, s: BufIoreq) {
        let off = BUFFERED_SLOTS_OFFSET + (i % IOREQ_BUFFER_SLOT_NUM) as usize * 8;
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&s.word0.to_le_bytes());
        b[4..].copy_from_slice(&s.data.to_le_bytes());
        self.map.write_bytes(off, &b);
    }

    /// Xen's side: publish `n` new slots (release, after the slots were written).
    pub fn advance_write(&self, n: u32) {
        self.map
            .atomic_u32(BUFFERED_WRITE_POINTER_OFFSET)
            .fetch_add(n, Ordering::AcqRel);
    }

    /// Xen's side: the ATOMIC-mode rebase of both pointers by a multiple of 511, done with a
    /// 64-bit compare-and-swap on the pair (xen/common/ioreq.c `ioreq_send_buffered`).
    pub fn rebase(&self) {
        let a = self.map.atomic_u64(0);
        let mut cur = a.load(Ordering::Acquire);
        loop {
            let (r, w) = (cur as u32, (cur >> 32) as u32);
            if r < IOREQ_BUFFER_SLOT_NUM {
                return;
            }
            let n = (r / IOREQ_BUFFER_SLOT_NUM) * IOREQ_BUFFER_SLOT_NUM;
            let new = u64::from(r - n) | (u64::from(w - n) << 32);
            match a.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(c) => cur = c,
            }
        }
    }
}

/// A memfd of `len` bytes (xen-sim's stand-in for Xen-allocated frames and guest RAM).
pub fn memfd(name: &str, len: u64) -> io::Result<std::os::fd::OwnedFd> {
    let cname =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = nix::sys::memfd::memfd_create(&cname, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)?;
    nix::unistd::ftruncate(
        fd.as_fd(),
        i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xen_abi::*;

    #[test]
    fn slot_post_read_and_state_transitions() {
        let fd = memfd("t", 4096).unwrap();
        let p = IoreqPage::new(Mapping::map_fd(fd.as_fd(), 0, 4096).unwrap(), 4).unwrap();
        let mut r = Ioreq {
            addr: 0xB004,
            size: 2,
            count: 1,
            vp_eport: 9,
            ..Default::default()
        };
        r.set_dir(IOREQ_WRITE);
        r.set_state(STATE_IOREQ_READY);
        p.post(3, &r);
        assert_eq!(p.state(3), STATE_IOREQ_READY);
        assert_eq!(p.read(3), r);
        p.write_data(3, 7);
        p.set_state(3, STATE_IORESP_READY);
        assert_eq!(p.state(3), STATE_IORESP_READY);
        assert_eq!(p.read(3).data, 7);
        assert_eq!(p.read(3).dir(), IOREQ_WRITE);
        assert_eq!(p.state(0), STATE_IOREQ_NONE);
    }

    #[test]
    fn buffered_rebase_keeps_distance() {
        let fd = memfd("b", 4096).unwrap();
        let b = BufferedPage::new(Mapping::map_fd(fd.as_fd(), 0, 4096).unwrap()).unwrap();
        for i in 0..600 {
            b.write_slot(i, BufIoreq::new(0, 0, 0, i, i));
            b.advance_write(1);
            b.advance_read(1);
        }
        b.write_slot(600, BufIoreq::new(0, 0, 0, 1, 1));
        b.advance_write(1);
        b.rebase();
        let (r, w) = b.pointers();
        assert_eq!(w - r, 1);
        assert!(r < IOREQ_BUFFER_SLOT_NUM);
        assert_eq!(b.slot(r).data, 1);
    }
}
