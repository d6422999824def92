//! The watcher thread: everything the event loop waits for that is not an event channel.
//!
//! The main thread blocks in [`Transport::wait`](crate::transport::Transport::wait) (on Xen a
//! plain `read()` of /dev/xen/evtchn), so that an ioreq costs no poll call. The signalfd, the
//! control socket and its clients, the devices' fds and the retry timer sit in an epoll set
//! owned by this thread instead. When any of them becomes ready the thread queues its token and
//! fires the transport's [`Waker`]; the main thread then takes the queue and handles the fds
//! itself, without blocking. Device and control state never leave the main thread: this thread
//! only learns tokens.
//!
//! The set is mio's, hence edge-triggered: every fd is reported once per new readiness and the
//! main thread drains what it is told about (as it did when it polled them itself), so nothing
//! spins while an event waits to be handled. The main thread registers and deregisters fds
//! through a clone of the set's [`Registry`] (epoll_ctl is safe against a concurrent
//! epoll_wait).
//!
//! Idle, the thread sleeps in `epoll_wait` without a timeout; the retry timer is a timerfd,
//! armed only while a failed action waits for its retry. Dropping the [`Watcher`] stops and
//! joins the thread; if the thread ends on its own (an error, a panic) it says so through the
//! waker and [`Watcher::take_ready`] fails.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, TimerSetTimeFlags};
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
use tracing::error;

use crate::transport::Waker;

/// The token of the retry timer.
pub const TOKEN_TIMER: Token = Token(2);
/// The token of the thread's own stop eventfd (never handed to the main thread).
const TOKEN_STOP: Token = Token(3);

#[derive(Default)]
struct Shared {
    /// Tokens that became ready since the main thread last looked.
    ready: Mutex<Vec<Token>>,
    /// Why the thread ended on its own.
    failed: Mutex<Option<String>>,
    /// The main thread asked the thread to end.
    stopping: AtomicBool,
}

/// The running watcher thread (see the module docs).
pub struct Watcher {
    registry: Registry,
    shared: Arc<Shared>,
    stop: mio::Waker,
    timer: TimerFd,
    armed: Option<Instant>,
    /// The epoll set and the waker until the thread takes them.
    idle: Option<(Poll, Box<dyn Waker>)>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// The watcher's epoll set, stop eventfd and retry timerfd, created now (at setup: a
    /// sandbox applied afterwards need not allow creating them); its thread starts with
    /// [`Watcher::start`].
    pub fn new(waker: Box<dyn Waker>) -> std::io::Result<Watcher> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let stop = mio::Waker::new(poll.registry(), TOKEN_STOP)?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        registry.register(
            &mut SourceFd(&timer.as_fd().as_raw_fd()),
            TOKEN_TIMER,
            Interest::READABLE,
        )?;
        Ok(Watcher {
            registry,
            shared: Arc::new(Shared::default()),
            stop,
            timer,
            armed: None,
            idle: Some((poll, waker)),
            thread: None,
        })
    }

    /// Start the thread (named `NAME-watch`); it fires the waker whenever something is
    /// ready. Started when the loop starts, after any sandbox: the thread inherits its
    /// credentials, capabilities and seccomp filter like the main thread's.
    pub fn start(&mut self, name: &str) -> std::io::Result<()> {
        let Some((poll, waker)) = self.idle.take() else {
            return Ok(());
        };
        let s = self.shared.clone();
        self.thread = Some(
            std::thread::Builder::new()
                .name(format!("{name}-watch"))
                .spawn(move || watch(poll, waker, s))?,
        );
        Ok(())
    }

    /// Where the main thread registers the fds to watch.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Move the tokens that became ready into `out` (each once, in order); an error if the
    /// thread ended on its own.
    pub fn take_ready(&self, out: &mut Vec<Token>) -> Result<(), String> {
        if let Some(e) = self
            .shared
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return Err(e);
        }
        out.clear();
        std::mem::swap(
            out,
            &mut self
                .shared
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let mut seen = std::collections::HashSet::new();
        out.retain(|t| seen.insert(*t));
        Ok(())
    }

    /// Fire the timer at `due` (None: disarm). A system call only when the deadline changes.
    pub fn set_deadline(&mut self, due: Option<Instant>) -> std::io::Result<()> {
        if due == self.armed {
            return Ok(());
        }
        match due {
            None => self.timer.unset()?,
            Some(d) => {
                // A zero it_value would disarm the timer: a due time already past fires in 1 ns.
                let left = d
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_nanos(1));
                self.timer.set(
                    Expiration::OneShot(TimeSpec::from_duration(left)),
                    TimerSetTimeFlags::empty(),
                )?;
            }
        }
        self.armed = due;
        Ok(())
    }

    /// The timer fired: consume its expiry count and forget the deadline.
    pub fn timer_fired(&mut self) {
        // Non-blocking read of the expiration count; EAGAIN when it was re-armed meanwhile.
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(self.timer.as_fd().as_raw_fd(), &mut b);
        if self.armed.is_some_and(|d| d <= Instant::now()) {
            self.armed = None;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if self.thread.is_none() {
            return;
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.stop.wake() {
            // Without the wake the join below would hang: better leak the thread.
            error!("cannot stop the watcher thread: {e}");
            return;
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                error!("the watcher thread panicked");
            }
        }
    }
}

/// Says through the waker that the thread ended, unless the main thread asked it to.
struct ExitNotice<'a> {
    shared: &'a Shared,
    waker: &'a dyn Waker,
    why: Option<String>,
}

impl Drop for ExitNotice<'_> {
    fn drop(&mut self) {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let why = self.why.take().unwrap_or_else(|| {
            if std::thread::panicking() {
                "the watcher thread panicked".into()
            } else {
                "the watcher thread ended".into()
            }
        });
        error!("{why}");
        *self
            .shared
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the event loop: {e}");
        }
    }
}

fn watch(mut poll: Poll, waker: Box<dyn Waker>, shared: Arc<Shared>) {
    let mut notice = ExitNotice {
        shared: &shared,
        waker: &*waker,
        why: None,
    };
    let mut events = Events::with_capacity(64);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            notice.why = Some(format!("watcher thread: epoll_wait: {e}"));
            return;
        }
        let mut any = false;
        {
            let mut q = shared.ready.lock().unwrap_or_else(PoisonError::into_inner);
            for ev in events.iter() {
                if ev.token() == TOKEN_STOP {
                    if shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    continue;
                }
                q.push(ev.token());
                any = true;
            }
        }
        if any {
            if let Err(e) = waker.wake() {
                notice.why = Some(format!("watcher thread: {e}"));
                return;
            }
        }
    }
}
