//! Support for pci-host-bridge's tests and the fuzz targets: a Xen-like fake behind the
//! passthrough executor ([`XenLike`]), guest access sequences, and the invariants every
//! sequence must keep ([`Checker`]). A crate of its own (a dev-dependency of the bridge), so
//! no build of the device model contains it; it uses only the bridge's public interface
//! (plus the copy and state helpers of the bridge's `testing` feature).
//!
//! # The fake Xen
//! [`XenLike`] answers the executor's hypercalls as Xen 4.17 does, as far as these tests need:
//! `XEN_DOMCTL_memory_mapping` needs the guest's iomem permission for the whole range
//! (`EPERM`), does at most 64 frames a call and returns the number done (`map_mmio_regions`,
//! xen/arch/x86/mm/p2m.c:1670-1738), and unmaps any sub-range of what is mapped; `map_pirq` hands out fresh pirqs, refuses multi-vector MSI without interrupt
//! remapping (`EOPNOTSUPP`, xen/arch/x86/irq.c:2919-2923) and an MSI-X vector of a function
//! whose table Xen has not read (`ENODATA` without `prepare_msix`, msi.c:881-887);
//! `test_assign_device` / `assign_device` refuse a domain without an IOMMU context
//! (`EOPNOTSUPP`); `deassign_device` leaves the function quarantined with `DOMID_IO`
//! (pci.c:849-859) until it is deassigned from there. It keeps Xen's state (p2m, pirqs and
//! their bindings, assignments, permissions) and records every call with a sequence number
//! shared with the snapshot devices' event logs ([`pci_host_bridge::backend::snapshot::next_seq`]), and
//! every call a real Xen would refuse or that shows a DM bug (a `violation`).
//!
//! # Invariants ([`Checker::apply`], after each guest access)
//! The expected values are computed here from the guest's programming and the *device's raw*
//! config bytes and BARs (the MSI-X table BIR and offsets read by the checker itself), not
//! with the bridge's formulas:
//! 1. Device config writes: either inside the guest's access, only bytes with pass-through
//!    bits, changing no bit the table does not pass through; or the bridge's own register
//!    writes: Interrupt Disable (one byte at 0x05, only for functions forwarding INTx, to the
//!    state the function wants), MSI-X Message Control (exactly 2 bytes at cap+2, changing only
//!    Enable and Function Mask: Xen refuses any other dom0 write to the capability, msi.c:
//!    1253-1263), MSI Message Control (2 bytes at cap+2 changing only Enable). After an access
//!    that changed the guest's MSI-X Enable / Function Mask, the device has the guest's bits;
//!    the device's MSI Enable is set exactly while the MSI vector is bound in Xen.
//! 2. Reads agree with the table: bits that are not emulated equal the device's current
//!    config bytes; absent bytes read all-ones; hidden bytes read 0; emulated read-only bits
//!    (and the type bits of BARs) never change; unconfigured functions read all-ones. A read
//!    makes no hypercall.
//! 3. Mappings: every `memory_mapping` / `ioport_mapping` maps host frames/ports of one of the
//!    function's own BARs (never a page holding its MSI-X table or PBA, computed from the raw
//!    capability) to guest addresses inside the windows at the BAR's guest offset; Xen's p2m
//!    (as the fake keeps it, partial counts included) equals exactly what the guest's
//!    placement and decode ask for (every frame of every decoded, non-overlapping, page-sized
//!    BAR, minus the MSI-X pages), and the bridge's and executor's own lists.
//! 4. MMIO accesses never reach config space; forwarded BAR writes never touch a page of the
//!    MSI-X table or PBA.
//! 5. Interrupts: every `map_pirq` / `bind_pt_irq` matches the guest's programming: MSI with
//!    entry 0, `nvec = 2^MME`, `table_base` 0, vector `i` of the block as `gvec + i`; MSI-X
//!    with `table_base` = the host address of the BAR the raw BIR names (Xen adds the offset
//!    itself, msi.c:847-860), `gtable` = the guest address of the table, the entry's vector and
//!    flags. An MSI-X table access never unbinds (Xen's msixtbl owns the masks of bound
//!    entries), an address/data write never binds (latched until the unmask), an unmask write
//!    while MSI-X is enabled binds the entry (or, refused, it reads back masked). After every
//!    access the vectors bound in Xen equal the bridge's list; nothing of MSI-X is bound while
//!    MSI-X is disabled (and every entry reads masked right after a disable); the MSI vector is
//!    bound exactly while the guest's MSI Enable reads 1 (a refused bind reads back 0).
//!
//! Start and stop ([`Checker::check_start`], [`Checker::stop_and_check`]) are checked on the
//! same records: the lifecycle's order (test_assign, decode on, prepare_msix, reset, assign,
//! permissions for every BAR; Bus Master off before the first unmap, unbinds and unmaps before
//! the reset, reset before release_msix, release before deassign, deassign from the guest
//! and from `DOMID_IO`, decode off last) and that nothing is left in Xen after a stop.
#![deny(missing_docs)]

mod checker;
mod ops;
mod template;
mod xen_like;

pub use checker::{Checker, RawCaps, RawMsix};
pub use ops::{
    enumeration_ops, linux_msix_ops, linux_msix_ops_with, msi_ops_from_bytes, msix_ops_from_bytes,
    ops_from_bytes, placement_ops, random_irq_op, random_op, run_random, Op, Rng,
};
pub use template::{
    bridge_with_snapshots, bridge_with_xen, snapshot_device_config, unstarted_bridge, Template,
};
pub use xen_like::{
    lock, Bound, Fault, Intervals, LoggedOp, P2m, PirqBlock, Run, XenLike, XenLikeConfig, XenState,
    DOMID,
};
