//! pci-host-bridge library: a minimal PCI host bridge for a Xen PVH guest and the
//! config-space virtualization of the host PCI functions passed through to it.
//!
//! The guest sees one PCI segment with a neutral host bridge at 00:00.0 and each passed-through
//! host function at the slot its configuration names. Config space arrives two ways (both are
//! claimed, see [`PciHostBridge::ranges`](ioreq_server::device::Device::ranges)):
//! - `IOREQ_TYPE_PCI_CONFIG` for CF8/CFC accesses, which Xen decodes itself
//!   (`addr = SBDF << 32 | reg`, xen-abi.md 1.5);
//! - plain MMIO to the ECAM window (`base + (bus << 20 | dev << 15 | fn << 12 | reg)`).
//!
//! Modules, one job each:
//! - [`config`]: the `[pci]` section of the per-guest TOML file;
//! - [`topology`]: PCI addresses, SBDF and ECAM decoding;
//! - [`config_space`]: the register-descriptor model (emulated / read-only / pass-through masks)
//!   and the per-function byte layout built from it; [`header`], [`caps`], [`msi`], [`msix`] hold
//!   the const descriptor tables of the type-0 header and of each exposed capability;
//! - [`bars`]: fully virtual BARs (sizing, guest placement, the mappings they imply);
//! - [`binding`]: which MSI / MSI-X vectors are bound in Xen, reconciled with the guest's;
//! - [`intx`]: INTx forwarding to the IOAPIC process, and the `_PRT` swizzle;
//! - [`sriov`]: a VF's IDs and BARs derived from its PF's SR-IOV capability;
//! - [`lifecycle`]: the assignment lifecycle (what pciback did), with rollback from every step;
//! - [`function`]: one passed-through function (layout + BARs + interrupts + backend);
//! - [`host_bridge`]: the emulated 00:00.0;
//! - [`bridge`]: [`PciHostBridge`], the [`ioreq_server::device::Device`] implementation;
//! - [`broker`]: the privileged broker of a bridge with passed-through functions and the
//!   worker's side of it (its request enum, the checks against what the config assigned, both
//!   ends of the socketpair, the hand-back); the binary runs the two as two processes;
//! - [`backend`]: the [`HostDevice`] trait with the `sysfs` and `snapshot` backends;
//! - [`cli`]: the binary's command line;
//! - [`list`] and [`pci_ids`]: the host's PCI functions as a PF/VF tree with names (the
//!   `pci-ids` crate's embedded database under the host's own pci.ids);
//! - the test oracle (a Xen-like fake behind the passthrough executor, the invariant checker,
//!   pseudo-random guest access sequences) is crate `pci-host-bridge-testing`, a
//!   dev-dependency; feature `testing` only adds the copy and state helpers it builds on.
//!
//! Nothing here talks to Xen directly: what Xen may refuse or do partly (BAR mapping, MSI /
//! MSI-X binding, assignment and the rest of the lifecycle) is a synchronous call on the
//! [`ioreq_server::executor::PassthroughExecutor`] the bridge is given, whose result the
//! function acts on.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backend;
pub mod bars;
pub mod binding;
pub mod bridge;
pub mod broker;
pub mod caps;
pub mod cli;
pub mod config;
pub mod config_space;
pub mod error;
pub mod function;
pub mod header;
pub mod host_bridge;
pub mod intx;
pub mod lifecycle;
pub mod list;
pub mod msi;
pub mod msix;
pub mod pci_ids;
pub mod sriov;
pub mod topology;

pub use backend::{BarInfo, BarKind, HostDevice};
pub use bridge::PciHostBridge;
pub use config::{BackendKind, PciConfig, PciDeviceConfig};
pub use error::Error;
pub use topology::PciAddress;
