//! Guest memory for `data_is_ptr` requests: pages mapped on demand through the transport,
//! cached, and all dropped on `IOREQ_TYPE_INVALIDATE` (the guest gave memory back).

use std::collections::HashMap;
use std::ops::Range;

use crate::shared::Mapping;
use crate::transport::{Transport, TransportError};
use xen_abi::XEN_PAGE_SIZE;

/// At most this many pages stay mapped; past it the cache starts over.
pub const MAX_CACHED_PAGES: usize = 256;

/// Cached guest page mappings.
#[derive(Default)]
pub struct GuestMemory {
    pages: HashMap<u64, Mapping>,
}

impl GuestMemory {
    /// Forget every mapping (INVALIDATE).
    pub fn invalidate(&mut self) {
        self.pages.clear();
    }

    /// Number of pages mapped now.
    pub fn cached(&self) -> usize {
        self.pages.len()
    }

    fn page<'a>(
        &'a mut self,
        t: &mut dyn Transport,
        gfn: u64,
    ) -> Result<&'a Mapping, TransportError> {
        if !self.pages.contains_key(&gfn) {
            if self.pages.len() >= MAX_CACHED_PAGES {
                self.pages.clear();
            }
            let m = t.map_guest_page(gfn)?;
            self.pages.insert(gfn, m);
        }
        Ok(&self.pages[&gfn])
    }

    /// Copy `out.len()` bytes from guest-physical `gpa` (may cross pages).
    pub fn read(
        &mut self,
        t: &mut dyn Transport,
        gpa: u64,
        out: &mut [u8],
    ) -> Result<(), TransportError> {
        self.by_page(t, gpa, out.len(), |page, off, r| {
            page.read_bytes(off, &mut out[r])
        })
    }

    /// Copy `data` to guest-physical `gpa` (may cross pages).
    pub fn write(
        &mut self,
        t: &mut dyn Transport,
        gpa: u64,
        data: &[u8],
    ) -> Result<(), TransportError> {
        self.by_page(t, gpa, data.len(), |page, off, r| {
            page.write_bytes(off, &data[r])
        })
    }

    /// Walk `len` bytes from guest-physical `gpa` one page at a time, mapping each page as it
    /// comes: `copy(page, offset in the page, range of the caller's buffer)` for each piece
    /// (it answers whether the piece was inside the page, which it always is here). The walk
    /// of [`read`](Self::read) and [`write`](Self::write), which differ only in the copy.
    fn by_page(
        &mut self,
        t: &mut dyn Transport,
        gpa: u64,
        len: usize,
        mut copy: impl FnMut(&Mapping, usize, Range<usize>) -> bool,
    ) -> Result<(), TransportError> {
        let mut done = 0;
        while done < len {
            let a = gpa
                .checked_add(done as u64)
                .ok_or_else(|| TransportError::Protocol("guest address overflow".into()))?;
            let off = (a % XEN_PAGE_SIZE as u64) as usize;
            let n = (XEN_PAGE_SIZE - off).min(len - done);
            let ok = copy(self.page(t, a / XEN_PAGE_SIZE as u64)?, off, done..done + n);
            debug_assert!(ok);
            done += n;
        }
        Ok(())
    }
}
