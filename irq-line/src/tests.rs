//! Tests of the frames, the tracker, and a client and server over real sockets.

use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::EventFd;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

use crate::*;
use std::io::Write;
use std::thread;

/// A change of `pin`'s wired-OR level to `level`.
fn change(pin: u8, level: bool) -> PinChange {
    PinChange { pin, level }
}

/// Runs the server's event handling until `done` or 5 s pass.
fn pump_until(
    server: &mut IrqLineServer,
    changes: &mut Vec<PinChange>,
    mut done: impl FnMut(&IrqLineServer) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(server) {
        assert!(Instant::now() < deadline, "timed out pumping the server");
        pump_once(server, changes, 20);
    }
}

fn pump_once(server: &mut IrqLineServer, changes: &mut Vec<PinChange>, timeout_ms: u16) {
    let raw = server.fds();
    let ready: Vec<RawFd> = {
        let borrowed = server.borrowed_fds();
        let mut pfds: Vec<PollFd<'_>> = borrowed
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        poll(&mut pfds, PollTimeout::from(timeout_ms)).unwrap();
        pfds.iter()
            .zip(&raw)
            .filter(|(p, _)| p.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, fd)| *fd)
            .collect()
    };
    for fd in ready {
        server.handle(fd, changes);
    }
}

fn connect_pair(server: &mut IrqLineServer, pin: u8) -> Result<IrqLine, IrqLineError> {
    let (a, b) = UnixStream::pair().unwrap();
    server.adopt(b).unwrap();
    let client = thread::spawn(move || IrqLine::register_on(a, pin, Duration::from_secs(5)));
    let mut changes = Vec::new();
    pump_until(server, &mut changes, |_| client.is_finished());
    client.join().unwrap()
}

#[test]
fn frame_round_trip_and_validation() {
    let frames = [
        Frame::Register { pin: 7 },
        Frame::Deassert {
            pin: 3,
            triggers: u64::MAX,
        },
        Frame::Accepted {
            pin: 0,
            source: SourceId(42),
        },
        Frame::Refused {
            pin: 200,
            reason: RefuseReason::BadPin,
        },
        Frame::Refused {
            pin: 1,
            reason: RefuseReason::Other(99),
        },
    ];
    for f in frames {
        assert_eq!(Frame::decode(&f.encode()), Ok(f));
    }
    let good = Frame::Register { pin: 1 }.encode();
    let mut b = good;
    b[0] ^= 1;
    assert!(matches!(Frame::decode(&b), Err(ProtocolError::BadMagic(_))));
    let mut b = good;
    b[4] = 2;
    assert_eq!(Frame::decode(&b), Err(ProtocolError::BadVersion(2)));
    let mut b = good;
    b[7] = 1;
    assert_eq!(Frame::decode(&b), Err(ProtocolError::Reserved(1)));
    let mut b = good;
    b[5] = 0x55;
    assert_eq!(Frame::decode(&b), Err(ProtocolError::UnknownKind(0x55)));
    let mut b = good;
    b[8] = 1;
    assert!(matches!(
        Frame::decode(&b),
        Err(ProtocolError::BadArgument { .. })
    ));
    assert_eq!(&good[0..4], b"IRQL");
}

#[test]
fn tracker_wired_or() {
    let mut t = LineTracker::new(4);
    let (a, b) = (SourceId(1), SourceId(2));
    assert_eq!(t.set(a, 2, true), Some(true));
    assert_eq!(t.set(b, 2, true), None);
    assert_eq!(t.set(a, 2, true), None);
    assert_eq!(t.set(a, 2, false), None);
    assert!(t.level(2));
    assert_eq!(t.set(b, 2, false), Some(false));
    assert!(!t.level(2));
    assert_eq!(
        t.set(a, 9, true),
        None,
        "pin outside the tracker is ignored"
    );
    t.set(a, 1, true);
    t.set(b, 1, true);
    t.set(b, 3, true);
    let mut released = t.release_pin(1);
    released.sort();
    assert_eq!(released, vec![a, b]);
    assert!(!t.level(1));
    assert!(t.level(3));
    assert!(t.release_pin(200).is_empty());
}

#[test]
fn assert_deassert_resample_over_a_real_socket() {
    let dir = std::env::temp_dir().join(format!("irqline-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ioapic.sock");
    let mut server = IrqLineServer::bind(&path, 24).unwrap();
    let p2 = path.clone();
    let client = thread::spawn(move || IrqLine::connect(&p2, 5));
    let mut changes = Vec::new();
    pump_until(&mut server, &mut changes, |_| client.is_finished());
    let mut line = client.join().unwrap().unwrap();
    assert_eq!(line.pin(), 5);
    assert_eq!(
        server.sources(),
        vec![SourceInfo {
            source: line.source(),
            pin: Some(5),
            asserted: false
        }]
    );

    line.assert().unwrap();
    pump_until(&mut server, &mut changes, |s| s.level(5));
    assert_eq!(changes, vec![change(5, true)]);
    changes.clear();

    line.deassert().unwrap();
    pump_until(&mut server, &mut changes, |s| !s.level(5));
    assert_eq!(changes, vec![change(5, false)]);
    changes.clear();

    // EOI while asserted: released, resample signalled, the source asserts again.
    line.assert().unwrap();
    pump_until(&mut server, &mut changes, |s| s.level(5));
    assert_eq!(server.release_pin(5), 1);
    assert!(!server.level(5));
    assert!(line.is_asserted());
    assert!(line.wait_resample(Some(Duration::from_secs(5))).unwrap());
    assert!(!line.is_asserted());
    assert!(
        !line.ack_resample().unwrap(),
        "one resample, acknowledged once"
    );
    line.assert().unwrap();
    changes.clear();
    pump_until(&mut server, &mut changes, |s| s.level(5));
    assert_eq!(changes, vec![change(5, true)]);

    // Closing the connection withdraws the contribution.
    drop(line);
    changes.clear();
    pump_until(&mut server, &mut changes, |s| {
        !s.level(5) && s.sources().is_empty()
    });
    assert_eq!(changes, vec![change(5, false)]);
    drop(server);
    assert!(!path.exists(), "socket file removed on drop");
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn stale_socket_is_replaced_live_one_is_not() {
    let dir = std::env::temp_dir().join(format!("irqline-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    drop(UnixListener::bind(&path).unwrap()); // leaves a stale socket file
    let live = IrqLineServer::bind(&path, 4).unwrap();
    assert!(IrqLineServer::bind(&path, 4).is_err());
    drop(live);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shared_pin_is_wired_or_and_all_sources_are_resampled() {
    let mut server = IrqLineServer::unbound(24).unwrap();
    let mut a = connect_pair(&mut server, 10).unwrap();
    let mut b = connect_pair(&mut server, 10).unwrap();
    let mut c = connect_pair(&mut server, 11).unwrap();
    let mut changes = Vec::new();
    a.assert().unwrap();
    b.assert().unwrap();
    pump_until(&mut server, &mut changes, |s| {
        s.tracker().is_asserted(b.source(), 10)
    });
    assert_eq!(changes, vec![change(10, true)]);
    changes.clear();
    a.deassert().unwrap();
    pump_until(&mut server, &mut changes, |s| {
        !s.tracker().is_asserted(a.source(), 10)
    });
    assert!(changes.is_empty(), "b still holds the line");
    assert!(server.level(10));
    assert_eq!(server.release_pin(10), 2, "both sources on pin 10 are told");
    assert!(a.wait_resample(Some(Duration::from_secs(5))).unwrap());
    assert!(b.wait_resample(Some(Duration::from_secs(5))).unwrap());
    assert!(!c.ack_resample().unwrap(), "pin 11 is not resampled");
    c.assert().unwrap();
    pump_until(&mut server, &mut changes, |s| s.level(11));
}

#[test]
fn deassert_then_assert_keeps_the_line_high() {
    let mut server = IrqLineServer::unbound(8).unwrap();
    let mut line = connect_pair(&mut server, 3).unwrap();
    let mut changes = Vec::new();
    // All three happen before the server looks: assert, deassert (frame), assert (eventfd).
    line.assert().unwrap();
    line.deassert().unwrap();
    line.assert().unwrap();
    // Let the stream (with the DEASSERT) be handled first: it drains the trigger eventfd,
    // seeing two triggers against a frame that counts one.
    let stream_fd = server.fds()[0];
    assert!(server.handle(stream_fd, &mut changes));
    assert!(server.level(3), "the line ends up asserted");
    assert_eq!(
        changes,
        vec![change(3, true), change(3, false), change(3, true)]
    );
    // And in the plain order it ends up low.
    line.deassert().unwrap();
    changes.clear();
    pump_until(&mut server, &mut changes, |s| !s.level(3));
}

#[test]
fn bad_pin_and_limits_are_refused() {
    let mut server = IrqLineServer::unbound(24).unwrap();
    match connect_pair(&mut server, 24) {
        Err(IrqLineError::Refused {
            pin: 24,
            reason: RefuseReason::BadPin,
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(server.sources().is_empty(), "refused connection is closed");
    server.set_max_sources(1);
    let _ok = connect_pair(&mut server, 0).unwrap();
    let (_a, b) = UnixStream::pair().unwrap();
    assert!(server.adopt(b).is_err());
}

/// Sends raw bytes (and fds) to a fresh connection and returns whether the server dropped it.
fn feed(bytes: &[u8], fds: &[RawFd]) -> (bool, Vec<PinChange>, Vec<u8>) {
    let mut server = IrqLineServer::unbound(24).unwrap();
    let (a, b) = UnixStream::pair().unwrap();
    let id = server.adopt(b).unwrap();
    if !bytes.is_empty() {
        let iov = [IoSlice::new(bytes)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        sendmsg::<UnixAddr>(a.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
    }
    let mut changes = Vec::new();
    let fd = server.fds()[0];
    server.handle(fd, &mut changes);
    let dropped = !server.sources().iter().any(|s| s.source == id);
    a.set_nonblocking(true).unwrap();
    let mut reply = Vec::new();
    let _ = (&a).read_to_end(&mut reply);
    (dropped, changes, reply)
}

#[test]
fn malformed_messages_close_the_peer() {
    let e1 = EventFd::new().unwrap();
    let e2 = EventFd::new().unwrap();
    let efds = [e1.as_raw_fd(), e2.as_raw_fd()];
    let reg = Frame::Register { pin: 1 }.encode();

    // Garbage.
    assert!(feed(&[0xAB; 16], &[]).0);
    // A valid REGISTER without fds, with one fd, with three.
    assert!(feed(&reg, &[]).0);
    assert!(feed(&reg, &efds[..1]).0);
    assert!(feed(&reg, &[efds[0], efds[1], efds[0]]).0);
    // Fds that are not eventfds.
    let (p1, p2) = nix::unistd::pipe().unwrap();
    let (dropped, _, reply) = feed(&reg, &[p1.as_raw_fd(), p2.as_raw_fd()]);
    assert!(dropped);
    assert_eq!(reply.len(), FRAME_LEN);
    assert_eq!(
        Frame::decode(reply[..16].try_into().unwrap()),
        Ok(Frame::Refused {
            pin: 1,
            reason: RefuseReason::Protocol
        })
    );
    // DEASSERT before REGISTER; REGISTER twice; DEASSERT for another pin.
    assert!(
        feed(
            &Frame::Deassert {
                pin: 1,
                triggers: 0
            }
            .encode(),
            &[]
        )
        .0
    );
    let mut twice = reg.to_vec();
    twice.extend_from_slice(&reg);
    assert!(feed(&twice, &efds).0);
    let mut other_pin = reg.to_vec();
    other_pin.extend_from_slice(
        &Frame::Deassert {
            pin: 2,
            triggers: 0,
        }
        .encode(),
    );
    assert!(feed(&other_pin, &efds).0);
    // A server-to-client frame sent by a client.
    assert!(
        feed(
            &Frame::Accepted {
                pin: 1,
                source: SourceId(1)
            }
            .encode(),
            &[]
        )
        .0
    );
    // A partial frame is kept, not an error.
    assert!(!feed(&reg[..7], &[]).0);
    // A good registration survives.
    let (dropped, _, reply) = feed(&reg, &efds);
    assert!(!dropped);
    assert!(matches!(
        Frame::decode(reply[..16].try_into().unwrap()),
        Ok(Frame::Accepted { pin: 1, .. })
    ));
}

/// The server never blocks on a peer's eventfd: one made blocking is set O_NONBLOCK (the flag
/// is the open file's, so the peer sees it too); one made non-blocking is left as it is.
#[test]
fn a_blocking_eventfd_is_made_nonblocking() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let nonblocking = |fd: &EventFd| {
        OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).unwrap())
            .contains(OFlag::O_NONBLOCK)
    };
    let (trigger, resample) = (EventFd::new().unwrap(), EventFd::new().unwrap());
    assert!(!nonblocking(&trigger) && !nonblocking(&resample));
    let reg = Frame::Register { pin: 1 }.encode();
    let (dropped, _, _) = feed(&reg, &[trigger.as_raw_fd(), resample.as_raw_fd()]);
    assert!(!dropped);
    assert!(nonblocking(&trigger) && nonblocking(&resample));
}

#[test]
fn fds_split_from_their_frame_are_refused() {
    let mut server = IrqLineServer::unbound(24).unwrap();
    let (mut a, b) = UnixStream::pair().unwrap();
    let id = server.adopt(b).unwrap();
    let reg = Frame::Register { pin: 1 }.encode();
    a.write_all(&reg[..4]).unwrap();
    let mut changes = Vec::new();
    let fd = server.fds()[0];
    server.handle(fd, &mut changes);
    assert!(
        server.sources().iter().any(|s| s.source == id),
        "a partial frame is kept"
    );
    let e1 = EventFd::new().unwrap();
    let fds = [e1.as_raw_fd(), e1.as_raw_fd()];
    let iov = [IoSlice::new(&reg[4..])];
    sendmsg::<UnixAddr>(
        a.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
    server.handle(fd, &mut changes);
    assert!(!server.sources().iter().any(|s| s.source == id));
}

#[test]
fn connect_times_out_without_an_answer_and_wait_resample_times_out() {
    let (a, b) = UnixStream::pair().unwrap();
    let t0 = Instant::now();
    match IrqLine::register_on(a, 1, Duration::from_millis(50)) {
        Err(IrqLineError::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(5));
    drop(b);

    let mut server = IrqLineServer::unbound(4).unwrap();
    let mut line = connect_pair(&mut server, 2).unwrap();
    assert!(!line.wait_resample(Some(Duration::from_millis(20))).unwrap());
    assert!(!line.ack_resample().unwrap());
}

#[test]
fn foreign_fd_is_not_handled() {
    let mut server = IrqLineServer::unbound(2).unwrap();
    let mut changes = Vec::new();
    assert!(!server.handle(12345, &mut changes));
    assert!(IrqLineServer::unbound(0).is_err());
    assert!(IrqLineServer::unbound(257).is_err());
}
