//! MSI / MSI-X vectors: mapping pirqs, binding them to guest vectors (rebinding, rolling back
//! a failed bind), unbinding and unmapping them.

use tracing::warn;

use super::{MsiBind, PassthroughExecutor, Pirq, PtError};
use xen_abi::passthrough::{MsiMap, PtOp};

impl PassthroughExecutor {
    /// Map (if needed) and bind an MSI / MSI-X vector (block); returns the first pirq.
    /// A vector already mapped with the same size and table keeps its pirq and is rebound
    /// (Xen updates gvec/gflags of a bound pirq, hvm.c:344-356); a changed `gtable` is unbound
    /// first, since Xen registers the guest table only on the first bind. If binding fails,
    /// a pirq mapped by this call is unmapped again.
    pub fn bind_msi(&mut self, b: MsiBind) -> Result<u32, PtError> {
        let key = (b.sbdf, b.entry);
        let nvec = b.nvec.max(1);
        let b = MsiBind { nvec, ..b };
        if let Some(p) = self.pirqs.get(&key).copied() {
            if p.bind.nvec != nvec || p.bind.table_base != b.table_base {
                self.unbind_msi(b.sbdf, b.entry)?;
            } else if p.bound && p.bind.gtable != b.gtable {
                self.unbind_vectors(key)?;
            }
        }
        let fresh = !self.pirqs.contains_key(&key);
        let pirq = match self.pirqs.get(&key) {
            Some(p) => p.pirq,
            None => {
                let v = self.call(&PtOp::MapPirqMsi(MsiMap {
                    sbdf: b.sbdf,
                    entry: b.entry,
                    table_base: b.table_base,
                    nvec,
                }))?;
                let pirq = u32::try_from(v)
                    .map_err(|_| PtError::Invalid(format!("map_pirq returned {v}")))?;
                self.pirqs.insert(
                    key,
                    Pirq {
                        pirq,
                        bind: b,
                        bound: false,
                    },
                );
                pirq
            }
        };
        // Multi-message MSI: vector i of the block is pirq + i, delivered as gvec + i (the
        // guest's base vector is aligned to nvec), as Xen's own vPCI binds them.
        for i in 0..nvec {
            let op = PtOp::BindPtIrqMsi {
                pirq: pirq + i,
                gvec: b.gvec.wrapping_add(i as u8),
                gflags: b.gflags,
                gtable: b.gtable,
            };
            if let Err(e) = self.call(&op) {
                if fresh {
                    for j in 0..i {
                        let _ = self.call(&PtOp::UnbindPtIrqMsi {
                            pirq: pirq + j,
                            gvec: b.gvec.wrapping_add(j as u8),
                            gflags: b.gflags,
                            gtable: b.gtable,
                        });
                    }
                    if let Err(e2) = self.call(&PtOp::UnmapPirq { pirq }) {
                        warn!(pirq, "unmapping after a failed bind also failed: {e2}");
                    } else {
                        self.pirqs.remove(&key);
                    }
                }
                return Err(e);
            }
        }
        self.pirqs.insert(
            key,
            Pirq {
                pirq,
                bind: b,
                bound: true,
            },
        );
        Ok(pirq)
    }

    fn unbind_vectors(&mut self, key: (u32, u32)) -> Result<(), PtError> {
        let Some(p) = self.pirqs.get(&key).copied() else {
            return Ok(());
        };
        if !p.bound {
            return Ok(());
        }
        for i in 0..p.bind.nvec {
            self.call(&PtOp::UnbindPtIrqMsi {
                pirq: p.pirq + i,
                gvec: p.bind.gvec.wrapping_add(i as u8),
                gflags: p.bind.gflags,
                gtable: p.bind.gtable,
            })?;
        }
        if let Some(p) = self.pirqs.get_mut(&key) {
            p.bound = false;
        }
        Ok(())
    }

    /// Unbind every vector of `(sbdf, entry)` and unmap its pirq block.
    pub fn unbind_msi(&mut self, sbdf: u32, entry: u32) -> Result<(), PtError> {
        let key = (sbdf, entry);
        self.unbind_vectors(key)?;
        let Some(p) = self.pirqs.get(&key).copied() else {
            return Ok(());
        };
        self.call(&PtOp::UnmapPirq { pirq: p.pirq })?;
        self.pirqs.remove(&key);
        Ok(())
    }

    /// The pirq of `(sbdf, entry)` if mapped, and whether it is bound.
    pub fn pirq(&self, sbdf: u32, entry: u32) -> Option<(u32, bool)> {
        self.pirqs.get(&(sbdf, entry)).map(|p| (p.pirq, p.bound))
    }

    /// Every pirq of function `sbdf` unbound and unmapped (best effort: the first error is
    /// returned after trying them all).
    pub fn unbind_all(&mut self, sbdf: u32) -> Result<(), PtError> {
        let keys: Vec<_> = self.pirqs.keys().filter(|k| k.0 == sbdf).copied().collect();
        let mut first = None;
        for (s, e) in keys {
            if let Err(err) = self.unbind_msi(s, e) {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
