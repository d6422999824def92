//! Invariant checkers that run arbitrary operation sequences: shared by the fuzz targets
//! (`ioapic/fuzz`) and the randomized stable tests. A violated invariant panics.
//!
//! Invariants checked after every operation:
//! - nothing panics, and reads return no more than `size` bytes;
//! - every MSI has address 0xFEExxxxx with only destination and destination-mode bits, data
//!   with trigger = edge, delivery mode fixed or lowest priority and a vector of 16 or more;
//! - Remote IRR is never set on an edge entry and delivery status always reads 0;
//! - a level pin sends at most one MSI between two EOIs, and Remote IRR is set after it;
//! - no lost interrupt: an unmasked level pin whose input is asserted has Remote IRR set,
//!   unless its entry cannot be delivered (vector below 16, unsupported delivery mode);
//! - with sources ([`pins`], [`device_protocol`]): every pin's input equals the wired-OR of its
//!   sources;
//! - snapshots round-trip: every time in memory, and the first time in a run also through
//!   JSON (a later state's JSON is checked by the run without the earlier snapshots, whose
//!   first snapshot is there; JSON every time made it most of a fuzz run's cost).

use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use ioreq_server::device::{Action, Actions, Device, Space};
use irq_line::{Frame, IrqLineServer, LineTracker, SourceId};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

use crate::chip::{Ioapic, IrqOutput, Msi, Version};
use crate::device::IoapicDevice;
use crate::regs::*;

/// What a run did, so that tests can tell that random inputs reach deliveries and EOIs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// MSIs delivered.
    pub msis: usize,
    /// EOIs that cleared Remote IRR.
    pub eois: usize,
    /// Operations performed (guest accesses, pin changes, socket messages): what a fuzz
    /// campaign counts.
    pub ops: usize,
}

/// Reads operation arguments from fuzz input; running out yields zeros and ends the run.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    fn size(&mut self) -> u8 {
        [1, 2, 4, 8][usize::from(self.u8() & 3)]
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// What the state machine reported during one operation.
#[derive(Debug)]
enum Event {
    Inject(u8, Msi),
    Eoi(u8),
}

/// Records effects; with a tracker it behaves like the device (EOI releases the pin).
struct Recorder<'a> {
    events: &'a mut Vec<Event>,
    tracker: Option<&'a mut LineTracker>,
}

impl IrqOutput for Recorder<'_> {
    fn inject(&mut self, pin: u8, msi: Msi) {
        self.events.push(Event::Inject(pin, msi));
    }

    fn eoi(&mut self, pin: u8, asserted: bool) -> bool {
        self.events.push(Event::Eoi(pin));
        match self.tracker.as_deref_mut() {
            Some(t) => {
                t.release_pin(pin);
                t.level(pin)
            }
            None => asserted,
        }
    }
}

/// Checks one MSI against what Xen's `inject_msi` accepts and what the entry allows.
pub fn check_msi(msi: Msi) {
    assert_eq!(
        msi.addr & !0x000F_F004,
        0xFEE0_0000,
        "MSI address {:#x}",
        msi.addr
    );
    assert_eq!(
        msi.data & !0x7FF,
        0,
        "MSI data {:#x}: only vector and delivery mode",
        msi.data
    );
    assert!(
        msi.data & 0xFF >= 16,
        "MSI vector below 16: {:#x}",
        msi.data
    );
    assert!(
        (msi.data >> 8) & 7 <= 1,
        "MSI delivery mode not fixed/lowest: {:#x}",
        msi.data
    );
}

fn deliverable(e: RedirectionEntry) -> bool {
    matches!(
        e.delivery_mode(),
        DeliveryMode::Fixed | DeliveryMode::LowestPriority
    ) && e.vector() >= 16
}

/// Per-pin bookkeeping of MSIs since the last EOI.
struct Ledger {
    since_eoi: Vec<u32>,
    events: Vec<Event>,
    stats: Stats,
}

impl Ledger {
    fn new(pins: u8) -> Self {
        Ledger {
            since_eoi: vec![0; usize::from(pins)],
            events: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Consumes the events of one operation and checks the state afterwards.
    fn check(&mut self, ioapic: &Ioapic, tracker: Option<&LineTracker>) {
        for ev in self.events.drain(..) {
            match ev {
                Event::Inject(pin, msi) => {
                    check_msi(msi);
                    let e = ioapic.entry(pin).expect("MSI for a pin that exists");
                    assert_eq!(
                        msi,
                        Msi::from_entry(e),
                        "MSI matches the entry of pin {pin}"
                    );
                    self.since_eoi[usize::from(pin)] += 1;
                    self.stats.msis += 1;
                }
                Event::Eoi(pin) => {
                    self.since_eoi[usize::from(pin)] = 0;
                    self.stats.eois += 1;
                }
            }
        }
        for pin in 0..ioapic.pins() {
            let e = ioapic.entry(pin).unwrap();
            let p = usize::from(pin);
            assert!(!e.delivery_status(), "delivery status set on pin {pin}");
            if e.is_level() {
                assert!(
                    self.since_eoi[p] <= 1,
                    "level pin {pin}: {} MSIs without EOI",
                    self.since_eoi[p]
                );
                if self.since_eoi[p] == 1 {
                    assert!(
                        e.remote_irr(),
                        "level pin {pin} delivered but Remote IRR clear"
                    );
                }
                if !e.masked() && ioapic.is_asserted(pin) && deliverable(e) {
                    assert!(
                        e.remote_irr(),
                        "lost interrupt: level pin {pin} asserted, unmasked, idle"
                    );
                }
            } else {
                assert!(!e.remote_irr(), "Remote IRR on edge pin {pin}");
                self.since_eoi[p] = 0;
            }
            if let Some(t) = tracker {
                assert_eq!(
                    ioapic.is_asserted(pin),
                    t.level(pin),
                    "pin {pin} input vs wired-OR"
                );
            }
        }
    }
}

fn header(input: &mut Input<'_>) -> Ioapic {
    let b = input.u8();
    let pins = [1, 4, 24, MAX_PINS][usize::from(b & 3)];
    let version = if b & 4 == 0 {
        Version::V20
    } else {
        Version::V11
    };
    Ioapic::new(pins, version, (b >> 3) & ID_MASK).expect("valid parameters")
}

/// A redirection entry low half with values that make interrupts happen often.
fn useful_low(input: &mut Input<'_>) -> u32 {
    let b = input.u8();
    let c = input.u8();
    let vector = if c & 0x80 != 0 { c } else { 16 + (c & 7) };
    let mode: u32 = if b & 0x30 == 0x30 {
        u32::from(b >> 6) << 9
    } else {
        u32::from(b >> 6 & 1)
    };
    u32::from(vector)
        | mode << 8
        | u32::from(b & 1) << 11
        | u32::from(b >> 1 & 1) << 13
        | u32::from(b >> 2 & 1) << 15
        | u32::from(b >> 3 & 1) << 16
}

/// Snapshot, restore and carry on with the restored chip; through JSON unless `json_done`
/// (which is set).
fn snapshot_round_trip(ioapic: &mut Ioapic, json_done: &mut bool) {
    let s = ioapic.snapshot();
    let back = if *json_done {
        s.clone()
    } else {
        *json_done = true;
        let json = serde_json::to_string(&s).expect("snapshot serializes");
        let back: crate::Snapshot = serde_json::from_str(&json).expect("snapshot deserializes");
        assert_eq!(back, s);
        back
    };
    let restored = Ioapic::restore(back).expect("own snapshot restores");
    assert_eq!(restored.snapshot(), s);
    *ioapic = restored;
}

/// One operation shared by [`mmio`] and [`pins`]; returns false if `op` is not one of them.
fn common_op(
    op: u8,
    input: &mut Input<'_>,
    ioapic: &mut Ioapic,
    out: &mut Recorder<'_>,
    json_done: &mut bool,
) -> bool {
    let pins = ioapic.pins();
    match op {
        0 => {
            let (offset, size) = (u64::from(input.u8()), input.size());
            let v = ioapic.mmio_read(offset, size);
            if size < 8 {
                assert!(
                    v < 1u64 << (8 * u32::from(size)),
                    "read of {size} bytes returned {v:#x}"
                );
            }
        }
        1 => {
            let (offset, size, data) = (u64::from(input.u8()), input.size(), input.u64());
            let data = if size < 8 {
                data & ((1u64 << (8 * u32::from(size))) - 1)
            } else {
                data
            };
            ioapic.mmio_write(offset, size, data, out);
        }
        2 => {
            // A register write through IOREGSEL/IOWIN, aimed at the redirection table.
            let index = REG_REDTBL + input.u8() % (2 * pins).max(1);
            let value = if index & 1 == 0 {
                useful_low(input)
            } else {
                input.u32()
            };
            ioapic.mmio_write(IOREGSEL, 4, index.into(), out);
            ioapic.mmio_write(IOWIN, 4, value.into(), out);
        }
        3 => {
            let (index, value) = (input.u8(), input.u32());
            ioapic.mmio_write(IOREGSEL, 1, index.into(), out);
            ioapic.mmio_write(IOWIN, 4, value.into(), out);
            let read = ioapic.mmio_read(IOWIN, 4) as u32;
            match index {
                REG_VER => assert_eq!(
                    read,
                    u32::from(ioapic.version().value()) | u32::from(pins - 1) << 16
                ),
                REG_ID | REG_ARB => assert_eq!(read & !0x0F00_0000, 0),
                _ => {}
            }
        }
        4 => {
            let b = input.u8();
            let vector = if b & 0x80 != 0 { b } else { 16 + (b & 7) };
            ioapic.mmio_write(EOI, 4, vector.into(), out);
        }
        5 => {
            // The 0x11 EOI: mask + edge, then the entry as it was.
            let pin = input.u8() % pins;
            let low = ioapic.entry(pin).unwrap().low();
            let index = REG_REDTBL + 2 * pin;
            let edge = (low | RTE_MASK as u32) & !(RTE_TRIGGER_LEVEL as u32);
            ioapic.write_register(index, edge, out);
            ioapic.write_register(index, low, out);
        }
        6 => snapshot_round_trip(ioapic, json_done),
        _ => return false,
    }
    true
}

/// The MMIO surface: arbitrary reads and writes of any size and offset, guided register
/// writes, EOIs, and pin levels driven directly (electrical or logical).
pub fn mmio(data: &[u8]) -> Stats {
    drive(data, 9, false, |op, b, pin, ioapic, out| {
        if op == 7 {
            ioapic.set_line(pin, b & 1 != 0, out);
        } else {
            ioapic.set_asserted(pin, b & 1 != 0, out);
        }
    })
}

/// The pin protocol as the device sees it, without sockets: sources assert and deassert
/// (wired-OR in a [`LineTracker`]), EOIs release the pin, mixed with MMIO.
pub fn pins(data: &[u8]) -> Stats {
    drive(data, 10, true, |_, b, pin, ioapic, out| {
        let source = SourceId(u64::from(b >> 1 & 3));
        let change = out
            .tracker
            .as_deref_mut()
            .and_then(|t| t.set(source, pin, b & 1 != 0));
        if let Some(level) = change {
            ioapic.set_asserted(pin, level, out);
        }
    })
}

/// The loop of [`mmio`] and [`pins`]: an IOAPIC from the input's header, then up to 4096 ops
/// (`input.u8() % ops`): those [`common_op`] knows, else `own(op, b, pin)` with a byte `b` and a
/// pin drawn next; the ledger checked after each, against a [`LineTracker`] when
/// `with_tracker` (the sources' wired-OR of [`pins`]).
fn drive(
    data: &[u8],
    ops: u8,
    with_tracker: bool,
    mut own: impl FnMut(u8, u8, u8, &mut Ioapic, &mut Recorder<'_>),
) -> Stats {
    let mut input = Input { data };
    let mut ioapic = header(&mut input);
    let mut tracker = with_tracker.then(|| LineTracker::new(usize::from(ioapic.pins())));
    let mut ledger = Ledger::new(ioapic.pins());
    let mut json_done = false;
    for _ in 0..4096 {
        if input.done() {
            break;
        }
        ledger.stats.ops += 1;
        let op = input.u8() % ops;
        {
            let mut out = Recorder {
                events: &mut ledger.events,
                tracker: tracker.as_mut(),
            };
            if !common_op(op, &mut input, &mut ioapic, &mut out, &mut json_done) {
                let b = input.u8();
                let pin = input.u8() % ioapic.pins();
                own(op, b, pin, &mut ioapic, &mut out);
            }
        }
        ledger.check(&ioapic, tracker.as_ref());
    }
    ledger.stats
}

/// A source of [`device_protocol`]: the stream the device reads (`theirs`, handed to each
/// input's device as a duplicate), the harness's end (`ours`), and the two eventfds it
/// registers with.
struct PooledSource {
    ours: UnixStream,
    theirs: UnixStream,
    trigger: EventFd,
    resample: EventFd,
    pin: u8,
}

/// The sockets and eventfds of [`device_protocol`], made once per thread. Creating and closing
/// them for each input was most of an input's cost (4 socketpairs, 6 eventfds and ~20 closes of
/// last references: half the process's time, in the kernel). Each input's device is new and
/// gets duplicates of the device-side ends, so closing them at the end of the input releases
/// nothing; what the objects themselves carry from one input to the next is only what is
/// queued in them, and [`Pool::drain`] empties that (bytes and `SCM_RIGHTS` in both directions
/// of every stream, every eventfd's count) and checks that nothing is left, so that an input
/// starts as it would on new objects.
struct Pool {
    /// Two well-behaved sources on pin 3 (their wired-OR) and one on pin 5.
    sources: Vec<PooledSource>,
    /// A peer that never registers and sends arbitrary bytes.
    raw_ours: UnixStream,
    raw_theirs: UnixStream,
}

impl Pool {
    fn new() -> Pool {
        let pair = || {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            // Never block the harness: with the pool holding the device's end open, a
            // connection the device dropped is never closed, and its buffer could fill up.
            ours.set_nonblocking(true).expect("nonblocking");
            theirs.set_nonblocking(true).expect("nonblocking");
            (ours, theirs)
        };
        let eventfd = || EventFd::from_flags(EfdFlags::EFD_NONBLOCK).expect("eventfd");
        let sources = [3u8, 3, 5]
            .into_iter()
            .map(|pin| {
                let (ours, theirs) = pair();
                PooledSource {
                    ours,
                    theirs,
                    trigger: eventfd(),
                    resample: eventfd(),
                    pin,
                }
            })
            .collect();
        let (raw_ours, raw_theirs) = pair();
        Pool {
            sources,
            raw_ours,
            raw_theirs,
        }
    }

    /// Empties every queue an input left and checks that none has anything left: a stream
    /// read (bytes, and `SCM_RIGHTS` the reader did not take, which the kernel closes) and
    /// an eventfd read (its count back to 0) until `poll` shows nothing readable. A pool
    /// that cannot be emptied is a harness bug: it panics rather than let the next input
    /// start from another state.
    fn drain(&self) {
        let mut fds: Vec<BorrowedFd<'_>> = vec![self.raw_ours.as_fd(), self.raw_theirs.as_fd()];
        for s in &self.sources {
            fds.extend([
                s.ours.as_fd(),
                s.theirs.as_fd(),
                s.trigger.as_fd(),
                s.resample.as_fd(),
            ]);
        }
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            let mut polled: Vec<PollFd<'_>> = fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            if poll(&mut polled, PollTimeout::ZERO).expect("poll") == 0 {
                return;
            }
            for p in &polled {
                let revents = p.revents().unwrap_or(PollFlags::empty());
                assert!(
                    revents.difference(PollFlags::POLLIN).is_empty(),
                    "pooled fd {revents:?}"
                );
                if !revents.is_empty() {
                    // An eventfd read takes 8 bytes; a stream read as much as there is.
                    let _ = nix::unistd::read(p.as_fd().as_raw_fd(), &mut buf);
                }
            }
        }
        panic!("pooled sockets still readable after 64 rounds of draining");
    }
}

/// Which of the device's fds a harness operation made readable.
enum Wake {
    Nothing,
    Fd(std::os::fd::RawFd),
    Every,
}

thread_local! {
    static POOL: Pool = Pool::new();
}

/// The device's pin-protocol surface with real sockets and eventfds: registered sources and a
/// raw peer that sends arbitrary bytes, trigger writes, deasserts, guest MMIO and EOIs.
///
/// Each input has a new device, whose fds are duplicates of a per-thread [`Pool`]'s, drained
/// when the input ends. After each peer write, the device handles the fd the write made
/// readable, as the serving loop does when epoll names it; a write of 0 to a trigger (which
/// makes nothing readable) instead wakes the device on every fd it watches: spurious events.
pub fn device_protocol(data: &[u8]) -> Stats {
    POOL.with(|pool| {
        let stats = device_protocol_on(pool, data);
        pool.drain();
        stats
    })
}

fn device_protocol_on(pool: &Pool, data: &[u8]) -> Stats {
    let mut input = Input { data };
    let ioapic = Ioapic::new(8, Version::V20, 0).expect("valid parameters");
    let server = IrqLineServer::unbound(8).expect("valid pin count");
    let mut dev = IoapicDevice::from_parts(ioapic, DEFAULT_BASE, Some(server));
    let mut actions = Actions::new();
    let mut stats = Stats::default();

    // The device's end of a pooled stream: a duplicate, which the device closes when it ends.
    let adopt = |dev: &mut IoapicDevice, theirs: &UnixStream| {
        let dup = theirs.try_clone().expect("dup");
        let fd = dup.as_raw_fd();
        dev.lines_mut().unwrap().adopt(dup).expect("adopt");
        fd
    };
    // The well-behaved sources, registered (no waiting for the answer): each as (its
    // pooled fds, its connection and trigger fds in the device, triggers written).
    let mut sources = Vec::new();
    for s in &pool.sources {
        let conn = adopt(&mut dev, &s.theirs);
        let frame = Frame::Register { pin: s.pin }.encode();
        let fds = [s.trigger.as_raw_fd(), s.resample.as_raw_fd()];
        sendmsg::<UnixAddr>(
            s.ours.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .expect("sendmsg");
        let before = dev.event_fds();
        dev.on_event(conn, &mut actions);
        // The one fd registration adds to the watched set: the device's copy of the trigger.
        let trigger = dev
            .event_fds()
            .into_iter()
            .find(|fd| !before.contains(fd))
            .expect("a registered source's trigger is watched");
        sources.push((s, conn, trigger, 0u64));
    }
    let raw_conn = adopt(&mut dev, &pool.raw_theirs);
    let mut raw_peer = &pool.raw_ours;

    let mut irr = [false; 8];
    for _ in 0..512 {
        if input.done() {
            break;
        }
        stats.ops += 1;
        let op = input.u8() % 7;
        let woken = match op {
            0 => {
                let n = usize::from(input.u8() % 40);
                let _ = raw_peer.write(input.bytes(n));
                Wake::Fd(raw_conn)
            }
            1 => {
                let s = usize::from(input.u8()) % sources.len();
                let _ = sources[s].0.trigger.write(1);
                sources[s].3 += 1;
                Wake::Fd(sources[s].2)
            }
            2 => {
                let s = usize::from(input.u8()) % sources.len();
                let (source, conn, _, triggers) = sources[s];
                let frame = Frame::Deassert {
                    pin: source.pin,
                    triggers,
                };
                let _ = (&source.ours).write(&frame.encode());
                Wake::Fd(conn)
            }
            3 => {
                // The guest programs a pin (level or edge, mostly deliverable).
                let pin = input.u8() % 8;
                let low = useful_low(&mut input);
                dev.write(
                    Space::Memory,
                    DEFAULT_BASE + IOREGSEL,
                    4,
                    u64::from(REG_REDTBL + 2 * pin),
                    &mut actions,
                );
                dev.write(
                    Space::Memory,
                    DEFAULT_BASE + IOWIN,
                    4,
                    low.into(),
                    &mut actions,
                );
                Wake::Nothing
            }
            4 => {
                let vector = 16 + input.u8() % 8;
                dev.write(
                    Space::Memory,
                    DEFAULT_BASE + EOI,
                    4,
                    vector.into(),
                    &mut actions,
                );
                Wake::Nothing
            }
            5 => {
                let (offset, size, value) = (u64::from(input.u8()), input.size(), input.u32());
                dev.write(
                    Space::Memory,
                    DEFAULT_BASE + offset,
                    size,
                    value.into(),
                    &mut actions,
                );
                let _ = dev.read(Space::Memory, DEFAULT_BASE + offset, size, &mut actions);
                Wake::Nothing
            }
            _ => {
                let s = usize::from(input.u8()) % sources.len();
                let n = input.u64() % 4;
                let _ = sources[s].0.trigger.write(n);
                if n == 0 {
                    Wake::Every
                } else {
                    Wake::Fd(sources[s].2)
                }
            }
        };
        // Only a peer's write (ops 0, 1, 2, 6) makes one of the device's fds readable (guest
        // MMIO and EOIs write resample eventfds, which the sources read): the device handles
        // that fd, or, after a write of 0 to a trigger, every fd it watches (spurious events).
        match woken {
            Wake::Nothing => {}
            Wake::Fd(fd) => dev.on_event(fd, &mut actions),
            Wake::Every => {
                for fd in dev.event_fds() {
                    dev.on_event(fd, &mut actions);
                }
            }
        }
        let ioapic = dev.ioapic();
        let irr_before = std::mem::take(&mut irr);
        for pin in 0..8u8 {
            irr[usize::from(pin)] = ioapic.entry(pin).is_some_and(|e| e.remote_irr());
        }
        for a in actions.drain() {
            let Action::InjectMsi { addr, data } = a else {
                panic!("unexpected action {a:?}")
            };
            check_msi(Msi { addr, data });
            stats.msis += 1;
        }
        let tracker = dev.lines().unwrap().tracker();
        for pin in 0..8u8 {
            let e = ioapic.entry(pin).unwrap();
            assert!(
                !e.remote_irr() || e.is_level(),
                "Remote IRR on edge pin {pin}"
            );
            assert_eq!(
                ioapic.is_asserted(pin),
                tracker.level(pin),
                "pin {pin} input vs wired-OR"
            );
            if irr_before[usize::from(pin)] && !e.remote_irr() {
                stats.eois += 1;
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything an input can leave queued in the pool (bytes either way on every stream,
    /// `SCM_RIGHTS` nobody received, eventfd counts) is gone after [`Pool::drain`].
    #[test]
    fn drain_empties_every_queue() {
        let pool = Pool::new();
        let leftovers = |pool: &Pool| {
            let mut fds: Vec<PollFd<'_>> = [&pool.raw_ours, &pool.raw_theirs]
                .into_iter()
                .chain(pool.sources.iter().flat_map(|s| [&s.ours, &s.theirs]))
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.extend(pool.sources.iter().flat_map(|s| {
                [s.trigger.as_fd(), s.resample.as_fd()].map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            }));
            poll(&mut fds, PollTimeout::ZERO).expect("poll")
        };
        assert_eq!(leftovers(&pool), 0);
        (&pool.raw_ours).write_all(&[0xAB; 10_000]).unwrap();
        (&pool.raw_theirs).write_all(b"reply").unwrap();
        for s in &pool.sources {
            s.trigger.write(3).unwrap();
            s.resample.write(1).unwrap();
            (&s.theirs).write_all(b"ack").unwrap();
            let fds = [s.trigger.as_raw_fd()];
            sendmsg::<UnixAddr>(
                s.ours.as_raw_fd(),
                &[IoSlice::new(b"x")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .unwrap();
        }
        assert_eq!(leftovers(&pool), 14, "every pooled fd readable");
        pool.drain();
        assert_eq!(leftovers(&pool), 0);
    }
}
