//! Guest memory for `data_is_ptr` requests: pages mapped on demand through the transport,
//! cached, and all dropped on `IOREQ_TYPE_INVALIDATE` (the guest gave memory back).

use std::collections::HashMap;

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
        let mut done = 0;
        while done < out.len() {
            let a = gpa
                .checked_add(done as u64)
                .ok_or_else(|| TransportError::Protocol("guest address overflow".into()))?;
            let off = (a % XEN_PAGE_SIZE as u64) as usize;
            let n = (XEN_PAGE_SIZE - off).min(out.len() - done);
            let ok = self
                .page(t, a / XEN_PAGE_SIZE as u64)?
                .read_bytes(off, &mut out[done..done + n]);
            debug_assert!(ok);
            done += n;
        }
        Ok(())
    }

    /// Copy `data` to guest-physical `gpa` (may cross pages).
    pub fn write(
        &mut self,
        t: &mut dyn Transport,
        gpa: u64,
        data: &[u8],
    ) -> Result<(), TransportError> {
        let mut done = 0;
        while done < data.len() {
            let a = gpa
                .checked_add(done as u64)
                .ok_or_else(|| TransportError::Protocol("guest address overflow".into()))?;
            let off = (a % XEN_PAGE_SIZE as u64) as usize;
            let n = (XEN_PAGE_SIZE - off).min(data.len() - done);
            let ok = self
                .page(t, a / XEN_PAGE_SIZE as u64)?
                .write_bytes(off, &data[done..done + n]);
            debug_assert!(ok);
            done += n;
        }
        Ok(())
    }
}
