//! Interrupt-line protocol between an interrupt source and the IOAPIC (irqfd/resamplefd pairs).
//!
//! An *interrupt source* is a process that drives one input pin of the IOAPIC (for example
//! `pci-host-bridge` forwarding a passed-through device's INTx). The IOAPIC process listens on a
//! Unix stream socket; a source opens one connection per pin it drives (a *registration*) and
//! hands over two eventfds with `SCM_RIGHTS`:
//!
//! - **trigger** (source → IOAPIC): writing `1` asserts the source's contribution to the pin;
//! - **resample** (IOAPIC → source): the IOAPIC writes `1` after an EOI released the pin.
//!
//! Several registrations may share a pin: the pin is the wired-OR of their contributions (it is
//! asserted while any source on it is asserted). A connection that closes (the source exited or
//! crashed) withdraws its contribution, so a dead source can never hold a line.
//!
//! # Line semantics: latched assert, released by EOI (the KVM irqfd "resample" model)
//!
//! A contribution is a latch:
//! - a **trigger** write sets it;
//! - an **EOI** that clears Remote IRR on the pin (EOI register, or the 0x11 edge/level toggle)
//!   *releases every contribution on the pin* and then signals **resample** to every source
//!   registered on the pin. A source whose condition still holds (a device that still requests
//!   service) asserts again, which delivers the next interrupt;
//! - an explicit **deassert** (a [`Frame::Deassert`] message on the socket) clears it.
//!
//! Why a latch released at EOI rather than a plain level: a passed-through INTx is masked at the
//! device (by the source) while the guest handles it, so the source cannot see when the guest
//! driver quietens the device. If the IOAPIC re-checked a plain level at EOI it would see the
//! stale "asserted" and inject a spurious second interrupt for every real one. Releasing the
//! latch at EOI and letting the source re-check (and unmask its device) is exactly the
//! irqfd/resamplefd contract of KVM and VFIO INTx, so a trigger/resample pair can also be wired
//! to a kernel producer that only knows that contract.
//!
//! Why deassert travels on the socket and not on a second eventfd: an eventfd only carries a
//! count, and two eventfds (assert/deassert) lose the order of the events between them, so the
//! IOAPIC could not tell "assert, deassert" (line low) from "deassert, assert" (line high). A
//! deassert message therefore carries the number of trigger writes the source made before it
//! (`triggers`). On receiving it the IOAPIC first drains the trigger eventfd (every trigger
//! written before the message is visible by then, since the source wrote it before sending);
//! if it has now consumed more triggers than the message counts, the source asserted again after
//! deasserting, and the IOAPIC applies "deassert, then assert". The client ([`IrqLine`]) writes
//! exactly `1` per assert, which keeps the counts exact.
//!
//! Edge-triggered pins see the same contributions: the rising edge of the wired-OR fires, so an
//! edge source must deassert before it can produce another edge ([`IrqLine::pulse`] does both).
//! An EOI never happens for an edge interrupt, so no resample either.
//!
//! # Wire format
//!
//! Every message is one 16-byte frame, all integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic [`MAGIC`] (`"IRQL"`) |
//! | 4 | 1 | protocol version [`PROTOCOL_VERSION`] (1) |
//! | 5 | 1 | kind (below) |
//! | 6 | 1 | pin |
//! | 7 | 1 | reserved, 0 |
//! | 8 | 8 | argument (depends on kind) |
//!
//! | kind | direction | argument | meaning |
//! |---|---|---|---|
//! | 1 `REGISTER` | source → IOAPIC | 0 | first and only first frame; carries exactly two fds (trigger, resample) |
//! | 2 `DEASSERT` | source → IOAPIC | trigger writes so far | clear this source's contribution (see above) |
//! | 0x81 `ACCEPTED` | IOAPIC → source | source id | reply to REGISTER |
//! | 0x82 `REFUSED` | IOAPIC → source | [`RefuseReason`] code | reply to REGISTER; the IOAPIC closes the connection |
//!
//! The IOAPIC validates everything: magic, version, reserved byte, kind, pin range (the pin of a
//! DEASSERT must be the registered pin), the number of fds (two with REGISTER, none otherwise),
//! that the fds are eventfds (where `/proc/self/fd` can tell), and every value read from a
//! trigger eventfd. A peer that breaks any rule is disconnected (its contribution withdrawn);
//! nothing a peer sends can make the IOAPIC panic.
//!
//! # Who uses what
//! - A source: [`IrqLine::connect`], then [`IrqLine::assert`] / [`IrqLine::deassert`]; watch
//!   [`IrqLine::resample_fd`] and, when it is readable, call [`IrqLine::ack_resample`] and assert
//!   again if its condition still holds.
//! - The IOAPIC: [`IrqLineServer`] (listener and connections) with a [`LineTracker`] inside; it
//!   hands out [`PinChange`]s to apply to the pins and [`IrqLineServer::release_pin`] is called
//!   on every EOI that clears Remote IRR.
//! - Who may connect to a server's socket: ioreq-server's `SocketAccess`, the same rule as the
//!   device models' control sockets (0600 by default, a group with `[control] group`).
//!
//! Module map: `wire` (frames and errors), `client` ([`IrqLine`]), `tracker` ([`LineTracker`]),
//! `server` ([`IrqLineServer`]), `swizzle` ([`pci_intx_gsi`]); everything is
//! re-exported at the crate root.
//!
//! The crate forbids `unsafe_code`: taking ownership of the fds an `SCM_RIGHTS` message carried is
//! ioreq-server's `seqpacket::recv_stream`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod client;
mod server;
mod swizzle;
mod tracker;
mod wire;

pub use client::*;
pub use server::*;
pub use swizzle::*;
pub use tracker::*;
pub use wire::*;

#[cfg(test)]
mod tests;
