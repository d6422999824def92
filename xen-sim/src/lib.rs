//! xen-sim: a simulated Xen hypervisor that speaks the real ioreq protocol to unmodified
//! device-model processes (their `sim` transport), so that every scenario runs on a machine
//! without Xen.
//!
//! It behaves like Xen where it matters (xen/common/ioreq.c, xen/arch/x86/hvm/ioreq.c,
//! xen/arch/x86/hvm/dm.c; facts in ../shared/xen-abi.md):
//! - servers with per-vCPU slots in a shared frame, event channels per vCPU, buffered ring;
//! - range registration with Xen's errors and limits (overlap -EEXIST, 8 servers -ENOSPC,
//!   256 ranges per type -ENOSPC, unmap of a range not held -ENOENT, non-emulator -EPERM);
//! - Xen's server selection order (ids counted down) and its null handler for unclaimed
//!   accesses (reads all-ones, writes dropped);
//! - 0xCF8 latched only on 4-byte writes, 0xCFC-0xCFF turned into PCI_CONFIG for claimed
//!   SBDFs (AMD extended register bits optional);
//! - Xen's state-machine checks: a slot not NONE when a request is posted, or a state going
//!   backwards, crashes the guest with Xen's message;
//! - a guest API per vCPU ([`Vcpu`]) that blocks until answered, with a timeout (a stuck vCPU
//!   is reported, never hangs the caller);
//! - a record of every DM op and domctl, with MSIs decoded as the guest's LAPIC sees them;
//! - Xen 4.17's passthrough rules (module `passthrough`, each citing the Xen source line it
//!   models): partial `memory_mapping`, host-function ownership and quarantine, the IOMMU
//!   context, `prepare_msix`, the msixtbl intercept of bound MSI-X entries, rebinding, and
//!   delivery of bound device interrupts only with the device's Enable bit set.
#![deny(missing_docs)]

pub mod cli;
mod domain;
mod guest;
pub mod host;
mod hypervisor;
pub mod launch;
mod passthrough;

pub use domain::{DecodedMsi, DomainReport};
pub use guest::{GuestError, Vcpu};
pub use host::{HostBar, HostPciDevice, MsixLayout, Owner};
pub use hypervisor::{DomainConfig, DomainView, Sim, SimOptions};
pub use passthrough::MAP_MMIO_MAX_ITER;
