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
//! - a record of every DM op and domctl, with MSIs decoded as the guest's LAPIC sees them.
#![deny(missing_docs)]

mod domain;
mod guest;
mod hypervisor;
pub mod launch;

pub use domain::{DomainReport, Msi};
pub use guest::{GuestError, Vcpu};
pub use hypervisor::{DomainView, Sim, SimOptions};
