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
//! - [`bars`]: fully virtual BARs (sizing, guest placement, the map/unmap actions);
//! - [`binding`]: which MSI / MSI-X vectors are bound in Xen, and the bind/unbind actions;
//! - [`intx`]: INTx forwarding to the IOAPIC process, and the `_PRT` swizzle;
//! - [`sriov`]: a VF's IDs and BARs derived from its PF's SR-IOV capability;
//! - [`assign`]: the permission and assignment hypercalls around a function's life;
//! - [`function`]: one passed-through function (layout + BARs + interrupts + backend);
//! - [`host_bridge`]: the emulated 00:00.0;
//! - [`bridge`]: [`PciHostBridge`], the [`ioreq_server::device::Device`] implementation;
//! - [`backend`]: the [`HostDevice`] trait with the `sysfs` and `snapshot` backends;
//! - [`list`] and [`pci_ids`]: the host's PCI functions as a PF/VF tree with names;
//! - [`testing`]: invariant checks and pseudo-random guest access sequences shared by the tests
//!   and the fuzz target.
//!
//! Nothing here talks to Xen: BAR mapping is returned as
//! [`Action::MapMemory`](ioreq_server::device::Action::MapMemory) /
//! [`Action::MapIoPorts`](ioreq_server::device::Action::MapIoPorts), interrupt binding as
//! [`Action::BindMsi`](ioreq_server::device::Action::BindMsi) /
//! [`Action::UnbindMsi`](ioreq_server::device::Action::UnbindMsi), assignment as
//! [`Action::Passthrough`](ioreq_server::device::Action::Passthrough).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod assign;
pub mod backend;
pub mod bars;
pub mod binding;
pub mod bridge;
pub mod caps;
pub mod config;
pub mod config_space;
pub mod error;
pub mod function;
pub mod header;
pub mod host_bridge;
pub mod intx;
pub mod list;
pub mod msi;
pub mod msix;
pub mod pci_ids;
pub mod sriov;
pub mod testing;
pub mod topology;
mod warn;

pub use backend::{BarInfo, BarKind, HostDevice};
pub use bridge::PciHostBridge;
pub use config::{BackendKind, PciConfig, PciDeviceConfig};
pub use error::Error;
pub use topology::PciAddress;
