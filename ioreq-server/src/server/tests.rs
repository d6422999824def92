//! The event loop against a fake transport that counts every call: what an ioreq costs in
//! steady state, that an idle server makes no call at all, that the watcher thread carries the
//! control socket and the retry timer, and that a panic leaves neither the thread nor a slot
//! behind.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::device::{Actions, Device, Range, Space};
use crate::shared::Mapping;
use crate::transport::Waker;
use xen_abi::dmop::DmOp;
use xen_abi::{Ioreq, IOREQ_READ, IOREQ_TYPE_PIO, IOREQ_WRITE, STATE_IOREQ_NONE};

const VCPUS: u32 = 2;
const PORT: u64 = 0x510;
/// A write of this value makes the device ask for an MSI.
const MSI_PLEASE: u64 = 0xdead;
/// A read at PORT + 4 makes the device panic.
const PANIC_AT: u64 = PORT + 4;

enum Ev {
    Port(u32),
    Wake,
}

#[derive(Default)]
struct Counts {
    waits_entered: AtomicUsize,
    waits_returned: AtomicUsize,
    notifies: AtomicUsize,
    /// Events put on the fake's channel (port signals and wakes): when it
    /// equals `waits_returned`, none is still queued.
    sent: AtomicUsize,
    wakes: AtomicUsize,
    /// Every other transport call (dm_op, map, bind, ...).
    others: AtomicUsize,
    msis: AtomicUsize,
    /// InjectMsi calls still to fail.
    fail_msis: AtomicUsize,
    ops: Mutex<Vec<String>>,
}

impl Counts {
    fn snapshot(&self) -> [usize; 5] {
        [
            self.waits_entered.load(SeqCst),
            self.waits_returned.load(SeqCst),
            self.notifies.load(SeqCst),
            self.wakes.load(SeqCst),
            self.others.load(SeqCst),
        ]
    }
}

struct Fake {
    rx: mpsc::Receiver<Ev>,
    tx: mpsc::Sender<Ev>,
    frame: OwnedFd,
    c: Arc<Counts>,
}

struct FakeWaker(Mutex<mpsc::Sender<Ev>>, Arc<Counts>);

impl Waker for FakeWaker {
    fn wake(&self) -> Result<(), TransportError> {
        self.1.wakes.fetch_add(1, SeqCst);
        self.1.sent.fetch_add(1, SeqCst);
        self.0
            .lock()
            .unwrap()
            .send(Ev::Wake)
            .map_err(|_| TransportError::Protocol("test ended".into()))
    }
}

impl Transport for Fake {
    fn domid(&self) -> xen_abi::DomId {
        7
    }
    fn dm_op(&mut self, op: &DmOp) -> Result<xen_abi::dmop::DmOpOutput, TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        self.c.ops.lock().unwrap().push(format!("{op:?}"));
        let mut out = xen_abi::dmop::DmOpOutput::default();
        match op {
            DmOp::NrVcpus => out.vcpus = Some(VCPUS),
            DmOp::CreateIoreqServer { .. } => out.id = Some(1),
            DmOp::GetIoreqServerInfo { .. } => out.bufioreq_port = Some(0),
            DmOp::InjectMsi { .. } => {
                if self
                    .c
                    .fail_msis
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err(TransportError::Hypervisor {
                        what: "inject_msi".into(),
                        errno: libc::EBUSY,
                    });
                }
                self.c.msis.fetch_add(1, SeqCst);
            }
            _ => {}
        }
        Ok(out)
    }
    fn map_resource(&mut self, _: IoservId, _: u64, nr: u64) -> Result<Mapping, TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Mapping::map_fd(self.frame.as_fd(), 0, nr as usize * XEN_PAGE_SIZE)
            .map_err(|e| TransportError::io("mmap", e))
    }
    fn bind_interdomain(&mut self, remote_port: u32) -> Result<u32, TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Ok(remote_port + 100)
    }
    fn unbind(&mut self, _: u32) -> Result<(), TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Ok(())
    }
    fn waker(&mut self) -> Result<Box<dyn Waker>, TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Ok(Box::new(FakeWaker(
            Mutex::new(self.tx.clone()),
            self.c.clone(),
        )))
    }
    fn wait(&mut self, out: &mut Vec<u32>) -> Result<bool, TransportError> {
        self.c.waits_entered.fetch_add(1, SeqCst);
        let ev = self
            .rx
            .recv()
            .map_err(|_| TransportError::Protocol("test ended".into()));
        self.c.waits_returned.fetch_add(1, SeqCst);
        match ev? {
            Ev::Port(p) => {
                out.push(p);
                Ok(false)
            }
            Ev::Wake => Ok(true),
        }
    }
    fn notify(&mut self, _: u32) -> Result<(), TransportError> {
        self.c.notifies.fetch_add(1, SeqCst);
        Ok(())
    }
    fn map_guest_page(&mut self, _: u64) -> Result<Mapping, TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Err(TransportError::Protocol("no guest memory here".into()))
    }
    fn passthrough(&mut self, _: &xen_abi::passthrough::PtOp) -> Result<u64, TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Err(TransportError::Protocol("no passthrough here".into()))
    }
    fn restrict(&mut self) -> Result<(), TransportError> {
        self.c.others.fetch_add(1, SeqCst);
        Ok(())
    }
}

struct Reg(u64);

impl Device for Reg {
    fn name(&self) -> &str {
        "reg"
    }
    fn ranges(&self) -> Vec<Range> {
        vec![Range::new(Space::Port, PORT, 8)]
    }
    fn read(&mut self, _: Space, addr: u64, _: u8, _: &mut Actions) -> u64 {
        assert!(addr != PANIC_AT, "the test device panics as asked");
        self.0
    }
    fn write(&mut self, _: Space, _: u64, _: u8, data: u64, actions: &mut Actions) {
        if data == MSI_PLEASE {
            actions.push(Action::InjectMsi {
                addr: 0xfee0_0000,
                data: 0x31,
            });
        }
        self.0 = data;
    }
}

/// A server on a thread with the test's view of its ioreq page.
struct Rig {
    page: IoreqPage,
    tx: mpsc::Sender<Ev>,
    c: Arc<Counts>,
    done: mpsc::Receiver<std::thread::Result<Result<(), ServerError>>>,
    control: PathBuf,
}

impl Rig {
    fn start(name: &str) -> Rig {
        let frame = crate::shared::memfd("ioreq", XEN_PAGE_SIZE as u64).unwrap();
        let page = IoreqPage::new(
            Mapping::map_fd(frame.as_fd(), 0, XEN_PAGE_SIZE).unwrap(),
            VCPUS,
        )
        .unwrap();
        for v in 0..VCPUS {
            page.set_vp_eport(v, 10 + v);
        }
        let (tx, rx) = mpsc::channel();
        let c = Arc::new(Counts::default());
        let control =
            std::env::temp_dir().join(format!("ioreq-loop-test-{}-{name}/ctl", std::process::id()));
        let fake = Fake {
            rx,
            tx: tx.clone(),
            frame,
            c: c.clone(),
        };
        let opts = ServerOptions {
            name: name.into(),
            control_path: Some(control.clone()),
            handle_signals: false,
            retry_delay: Duration::from_millis(5),
            ..Default::default()
        };
        let (ready_tx, ready_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let s = Server::setup(fake, vec![Box::new(Reg(0x1234_5678))], opts);
                let _ = ready_tx.send(());
                s?.run()
            }));
            let _ = done_tx.send(r);
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        Rig {
            page,
            tx,
            c,
            done,
            control,
        }
    }

    /// Post one PIO request on `vcpu` as Xen does, signal its port, wait for the answer.
    fn ioreq(&self, vcpu: u32, addr: u64, dir: u8, data: u64) -> u64 {
        let mut r = Ioreq {
            addr,
            data,
            count: 1,
            size: 4,
            vp_eport: 10 + vcpu,
            type_: IOREQ_TYPE_PIO,
            ..Default::default()
        };
        r.set_dir(dir);
        r.set_state(STATE_IOREQ_READY);
        self.page.post(vcpu, &r);
        self.c.sent.fetch_add(1, SeqCst);
        self.tx.send(Ev::Port(110 + vcpu)).unwrap();
        let t0 = Instant::now();
        while self.page.state(vcpu) != STATE_IORESP_READY {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "no answer on vcpu {vcpu}"
            );
            std::thread::yield_now();
        }
        let data = self.page.read(vcpu).data;
        self.page.set_state(vcpu, STATE_IOREQ_NONE);
        data
    }

    fn control(&self, cmd: &str) -> serde_json::Value {
        let mut s = UnixStream::connect(&self.control).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        writeln!(s, "{{\"cmd\":\"{cmd}\"}}").unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    fn finish(self) -> std::thread::Result<Result<(), ServerError>> {
        let r = self.done.recv_timeout(Duration::from_secs(10)).unwrap();
        let _ = std::fs::remove_dir_all(self.control.parent().unwrap());
        r
    }
}

impl Counts {
    /// The loop is blocked in a wait and no event is queued for it. (A
    /// request posted before the loop's first pass is answered by that pass,
    /// and its port signal then makes one empty wait later: without the
    /// queue check that wait could land inside a measured window.)
    fn settled(&self) -> bool {
        let returned = self.waits_returned.load(SeqCst);
        self.waits_entered.load(SeqCst) == returned + 1 && self.sent.load(SeqCst) == returned
    }
}

/// Whether a thread named `comm` still exists in this process.
fn thread_alive(comm: &str) -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        std::fs::read_to_string(t.unwrap().path().join("comm")).is_ok_and(|c| c.trim_end() == comm)
    })
}

/// Wait (up to 10 s) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_ioreq_costs_one_wait_and_one_notify_and_idle_costs_nothing() {
    let rig = Rig::start("cost-t");
    // Warm up (the first wait may still be on its way in).
    assert_eq!(rig.ioreq(0, PORT, IOREQ_READ, 0), 0x1234_5678);
    eventually("the loop waits, nothing queued", || rig.c.settled());
    let before = rig.c.snapshot();
    const N: usize = 200;
    for i in 0..N {
        let v = (i % 2) as u32;
        if i % 3 == 0 {
            rig.ioreq(v, PORT, IOREQ_WRITE, i as u64);
        } else {
            rig.ioreq(v, PORT, IOREQ_READ, 0);
        }
    }
    eventually("the loop waits, nothing queued", || rig.c.settled());
    let after = rig.c.snapshot();
    let d: Vec<usize> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let (waits, notifies, wakes, others) = (d[1], d[2], d[3], d[4]);
    assert_eq!(waits, N, "one wait per ioreq");
    assert_eq!(notifies, N, "one notify per ioreq");
    assert_eq!(wakes, 0, "the watcher thread stayed asleep");
    assert_eq!(others, 0, "no other transport call on the hot path");
    // On Xen a wait is read() + the unmask write(), a notify one ioctl.
    let syscalls_per_ioreq = (2 * waits + notifies) as f64 / N as f64;
    assert!(
        syscalls_per_ioreq <= 3.0,
        "{syscalls_per_ioreq} syscalls per ioreq on Xen"
    );

    // Idle: not a single call, the loop stays blocked in its one wait.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.c.snapshot(), after, "something ran while idle");

    // The control socket works through the watcher; a status costs wake-ups, not ioreqs.
    let st = rig.control("status");
    assert_eq!(st["ok"], true, "{st}");
    assert_eq!(st["status"]["name"], "cost-t");
    assert!(
        rig.c.wakes.load(SeqCst) > after[3],
        "the watcher woke the loop"
    );
    assert_eq!(rig.c.notifies.load(SeqCst), after[2]);
    assert_eq!(rig.control("shutdown")["ok"], true);
    rig.finish().expect("no panic").expect("clean shutdown");
    assert!(
        !thread_alive("cost-t-watch"),
        "the watcher thread was joined"
    );
}

#[test]
fn a_failed_action_is_retried_by_the_timer_and_then_the_loop_sleeps() {
    let rig = Rig::start("retry-t");
    rig.c.fail_msis.store(2, SeqCst);
    // The vCPU is answered at once; the MSI goes to the retry queue.
    rig.ioreq(1, PORT, IOREQ_WRITE, MSI_PLEASE);
    eventually("the MSI is delivered by its retries", || {
        rig.c.msis.load(SeqCst) == 1
    });
    eventually("the loop waits, nothing queued", || rig.c.settled());
    let settled = rig.c.snapshot();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        rig.c.snapshot(),
        settled,
        "the retry timer is disarmed once nothing waits"
    );
    assert_eq!(rig.control("shutdown")["ok"], true);
    let c = rig.c.clone();
    rig.finish().expect("no panic").expect("clean shutdown");
    let ops = c.ops.lock().unwrap();
    assert_eq!(ops.iter().filter(|o| o.starts_with("InjectMsi")).count(), 3);
}

#[test]
fn a_panicking_device_leaves_no_watcher_and_no_blocked_vcpu() {
    let rig = Rig::start("panic-t");
    assert_eq!(rig.ioreq(0, PORT, IOREQ_READ, 0), 0x1234_5678);
    // This request panics in the device: teardown must still answer it (all-ones).
    assert_eq!(rig.ioreq(1, PANIC_AT, IOREQ_READ, 0), 0xffff_ffff);
    assert!(rig.finish().is_err(), "the panic propagates");
    assert!(
        !thread_alive("panic-t-watch"),
        "the watcher thread was joined"
    );
}
