//! The privileged broker of a bridge with passed-through functions (issue 12, item 1). The
//! binary's `split` module runs it: the process the launcher started is the broker, and the
//! worker that serves is its child.
//!
//! The split it is built for: the bridge opens everything privileged (the unrestricted
//! privcmd handle passthrough needs, since the kernel refuses `IOCTL_PRIVCMD_HYPERCALL` on a
//! restricted one; the host functions' sysfs files), then splits in two. The broker keeps only those
//! and answers the worker — the serving process, which decodes every guest access — over a
//! `SOCK_SEQPACKET` socketpair. Its whole interface is [`proto::Request`]; each request is
//! checked by [`policy::BrokerPolicy`] against what the configuration assigned before
//! [`server::Broker`] executes it, and gets exactly one [`proto::Reply`]. A refused request
//! is logged (rate-limited `warn!`) and answered [`proto::Reply::Refused`], never executed:
//! - hypercalls only for the broker's domid;
//! - `memory_mapping` only of host frames inside one page-sized memory BAR of an assigned
//!   function, never the pages of its MSI-X table or PBA ([`crate::msix::MsixInfo::trapped_pages`]),
//!   to guest frames inside the configured BAR windows; `ioport_mapping` likewise with I/O
//!   BARs and the I/O window; permissions only for those BARs' frames and ports;
//! - `map_pirq` only for an assigned function's SBDF, within its MSI vector count or MSI-X
//!   table size, with `table_base` the host address of the table's BAR, once per entry;
//!   `bind_pt_irq`/`unbind_pt_irq`/`unmap_pirq` only for pirqs it mapped;
//!   `irq_permission` never (the bridge does not use it);
//! - config reads inside config space; config writes of one aligned 1/2/4-byte access that
//!   change only bits the function's register layout (the const tables) passes through or
//!   the bridge itself drives in the host (Interrupt Disable, MSI Enable, MSI-X Enable and
//!   Function Mask);
//! - BAR accesses of one 1/2/4/8-byte access inside the BAR (unaligned ones too: the bridge
//!   forwards the guest's as they come), no writes to the MSI-X table, the PBA or the ROM;
//! - sysfs operations (enable, reset, driver unbind / re-probe) only on assigned functions.
//!
//! The worker side: [`client::BrokerChannel`] is the [`ioreq_server::executor::PtChannel`]
//! of the worker's `PassthroughExecutor`, [`client::BrokerDevice`] the
//! [`crate::backend::HostDevice`] of each function. The sim and real-Xen paths take the same
//! code: the broker executes on whatever `PtChannel` and backends it is given.
//!
//! Processes: the **broker is the parent** and keeps the pid pvh-dm supervises (it lives
//! longest and holds the privileged state); the worker is its child, started with the
//! broker's socket as its standard input, `--exit-with-parent` the broker, and deprivileged
//! after setup (`ioreq_server::sandbox`: its own handles are restricted to the domid as
//! pm-trap's and ioapic's are). Worker exit = EOF on the socket: [`server::Broker::serve_one`]
//! says so and [`server::Broker::hand_back`] undoes whatever the worker's own teardown did
//! not (nothing after a clean stop; everything, from the broker's [`ledger::Ledger`], after a
//! crash); the broker then exits, non-zero if the worker failed or a step is left. SIGTERM /
//! SIGINT to the broker are passed on to the worker, whose teardown runs through the broker
//! as before the split. Broker death = EOF or an error on the worker's next request, which
//! fails the executor call and stops the serving loop; a worker blocked elsewhere gets its
//! parent-death SIGTERM. `kill -9` of the broker leaves what a killed bridge left before,
//! which pvh-dm reclaims as it did.
//!
//! Why the broker keeps root's uid and capabilities: it opens host sysfs files at run time by
//! path (`reset`, `driver/unbind`, `drivers_probe`: root's, mode 0200), and the `enable` file
//! it writes to turn the host's decode on and off checks `capable(CAP_SYS_ADMIN)` on every
//! write (Linux drivers/pci/pci-sysfs.c, `enable_store`: "this can crash the machine when done
//! on the 'wrong' device"), so neither another uid nor an empty capability set would do. What
//! keeps it small is its interface, one typed request at a time from one peer, each checked by
//! [`policy::BrokerPolicy`] before anything runs; and, once the worker runs, a seccomp
//! allow-list of its own with `PR_SET_NO_NEW_PRIVS` (`ioreq_server::sandbox::apply_broker_filter`,
//! installed by the binary's `split` module unless `--no-sandbox`): no exec, no new process, no
//! socket, no signal but SIGTERM to its worker. Pre-opening every file it may need and keeping
//! only CAP_SYS_ADMIN (and CAP_KILL) is the next step.
//!
//! Tested: `tests.rs` here (every kind of refused request reaches neither the channel nor the
//! backend; accepted ones reach them exactly once; the hand-back), `tests/broker_session.rs`
//! (whole bridge sessions over a socketpair need no refusal and keep every invariant of
//! `testing`; a worker gone mid-session is handed back until nothing is left in the fake Xen)
//! and the workspace's `tests/tests/bridge_broker.rs` (the two processes behind xen-sim).

pub mod client;
pub mod ledger;
pub mod policy;
pub mod proto;
pub mod server;
pub mod setup;

#[cfg(test)]
mod tests;

pub use client::{BrokerChannel, BrokerClient, BrokerDevice, DeviceFacts};
pub use ledger::Ledger;
pub use policy::{AssignedFunction, BrokerPolicy, Refusal};
pub use proto::{Envelope, Reply, Request, SysfsOp, VERSION};
pub use server::{Broker, BrokerStats};
pub use setup::policy_for;
