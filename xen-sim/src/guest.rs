//! The guest side: what a vCPU does when it touches emulated hardware. Each access becomes
//! what Xen would do with it (null handler, p2m, or an ioreq to the selected server), and the
//! call blocks until the device model answers, with a timeout.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ioreq_server::server::dispatch::size_mask;
use xen_abi::dmop::Space;
use xen_abi::*;

use crate::domain::Domain;
use crate::hypervisor::{Sim, Watch};

/// A PCI function's bus, device and function numbers.
pub type Bdf = (u8, u8, u8);

/// Why a guest access did not complete.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// Xen crashed the domain (its message).
    #[error("domain crashed: {0}")]
    Crashed(String),
    /// The domain was shut down (by a device model's remote_shutdown).
    #[error("domain is shut down")]
    ShutDown,
    /// No answer within the timeout: the vCPU would stay blocked forever on Xen.
    #[error("vCPU {vcpu} stuck: server {server} did not answer the request at {addr:#x}")]
    Stuck {
        /// The vCPU.
        vcpu: u32,
        /// The server that holds the request.
        server: u16,
        /// The request's address.
        addr: u64,
    },
    /// No such domain or vCPU.
    #[error("no such domain or vCPU")]
    NoSuchVcpu,
}

/// How one access was completed.
enum Route {
    /// Answered by Xen itself (null handler or p2m): the value.
    Done(u64),
    /// Posted to a server: wait on this eventfd.
    Posted {
        server: u16,
        port: u32,
        wake: Option<OwnedFd>,
    },
}

/// One vCPU of a simulated guest.
pub struct Vcpu {
    sim: Sim,
    domid: u16,
    vcpu: u32,
    timeout: Duration,
    wake_fds: HashMap<u32, Arc<OwnedFd>>,
    watch: Arc<Watch>,
}

impl Vcpu {
    pub(crate) fn new(sim: Sim, domid: u16, vcpu: u32) -> Self {
        let timeout = sim.inner.opts.ioreq_timeout;
        let watch = Arc::new(Watch::default());
        sim.add_watch(&watch);
        Vcpu {
            sim,
            domid,
            vcpu,
            timeout,
            wake_fds: HashMap::new(),
            watch,
        }
    }

    /// Change how long this vCPU waits for an answer.
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// `in` of `size` bytes (1, 2, 4).
    pub fn pio_read(&mut self, port: u16, size: u32) -> Result<u64, GuestError> {
        self.submit(Self::req(
            IOREQ_TYPE_PIO,
            u64::from(port),
            size,
            IOREQ_READ,
            0,
        ))
    }

    /// `out` of `size` bytes.
    pub fn pio_write(&mut self, port: u16, size: u32, value: u64) -> Result<(), GuestError> {
        self.submit(Self::req(
            IOREQ_TYPE_PIO,
            u64::from(port),
            size,
            IOREQ_WRITE,
            value,
        ))
        .map(|_| ())
    }

    /// An MMIO read of `size` bytes (1, 2, 4, 8).
    pub fn mmio_read(&mut self, addr: u64, size: u32) -> Result<u64, GuestError> {
        self.submit(Self::req(IOREQ_TYPE_COPY, addr, size, IOREQ_READ, 0))
    }

    /// An MMIO write.
    pub fn mmio_write(&mut self, addr: u64, size: u32, value: u64) -> Result<(), GuestError> {
        self.submit(Self::req(IOREQ_TYPE_COPY, addr, size, IOREQ_WRITE, value))
            .map(|_| ())
    }

    /// A REP string operation (`rep ins`/`rep outs` for PIO, `rep movs` for MMIO): `count`
    /// items of `size` bytes between the device at `addr` and guest RAM at `gpa`, the way Xen
    /// sends it (`data_is_ptr` = 1, `df` for decrementing addresses).
    #[allow(clippy::too_many_arguments)]
    pub fn rep(
        &mut self,
        type_: u8,
        addr: u64,
        size: u32,
        count: u32,
        gpa: u64,
        read: bool,
        df: bool,
    ) -> Result<(), GuestError> {
        let mut r = Self::req(
            type_,
            addr,
            size,
            if read { IOREQ_READ } else { IOREQ_WRITE },
            gpa,
        );
        r.count = count;
        r.set_data_is_ptr(true);
        r.set_df(df);
        self.submit(r).map(|_| ())
    }

    /// A PCI config read of function `bdf` (bus, device, function) through 0xCF8/0xCFC, as a
    /// guest kernel does (`size` 1/2/4 at `reg`, which need not be 4-aligned).
    pub fn pci_cf8_read(&mut self, bdf: Bdf, reg: u16, size: u32) -> Result<u64, GuestError> {
        let data = self.cf8_select(bdf, reg)?;
        self.pio_read(data, size)
    }

    /// A PCI config write through 0xCF8/0xCFC.
    pub fn pci_cf8_write(
        &mut self,
        bdf: Bdf,
        reg: u16,
        size: u32,
        v: u64,
    ) -> Result<(), GuestError> {
        let data = self.cf8_select(bdf, reg)?;
        self.pio_write(data, size, v)
    }

    /// Write the config address of `reg` to 0xCF8, as both halves of a CF8/CFC access start;
    /// answers the data port that then reaches `reg` (0xCFC plus its offset in the dword).
    fn cf8_select(&mut self, (bus, dev, func): Bdf, reg: u16) -> Result<u16, GuestError> {
        self.pio_write(0xCF8, 4, u64::from(cf8(bus, dev, func, reg)))?;
        Ok(0xCFC + (reg & 3))
    }

    /// Broadcast `IOREQ_TYPE_INVALIDATE` to every enabled server (the guest gave memory back).
    pub fn invalidate(&mut self) -> Result<(), GuestError> {
        let ids: Vec<u16> = {
            let g = self.sim.inner.lock();
            let d = g.get(&self.domid).ok_or(GuestError::NoSuchVcpu)?;
            d.servers
                .iter()
                .filter(|(_, s)| s.enabled)
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            let mut r = Self::req(IOREQ_TYPE_INVALIDATE, 0, 4, IOREQ_WRITE, !0);
            r.count = 1;
            self.post_and_wait(Some(id), r)?;
        }
        Ok(())
    }

    /// A write Xen would buffer (only addresses below 1 MiB; stdvga-style): through the
    /// selected server's buffered ring when it has one and the ring has room, otherwise as
    /// a synchronous request. Returns whether it went through the ring.
    pub fn buffered_write(
        &mut self,
        type_: u8,
        addr: u64,
        size: u32,
        data: u64,
    ) -> Result<bool, GuestError> {
        let size_log2 = match size {
            1 => 0,
            2 => 1,
            4 => 2,
            8 => 3,
            _ => {
                return self
                    .submit(Self::req(type_, addr, size, IOREQ_WRITE, data))
                    .map(|_| false)
            }
        };
        {
            let mut g = self.sim.inner.lock();
            let d = g.get_mut(&self.domid).ok_or(GuestError::NoSuchVcpu)?;
            check_alive(d)?;
            let space = if type_ == IOREQ_TYPE_PIO {
                Space::Port
            } else {
                Space::Memory
            };
            let last = addr.saturating_add(u64::from(size) - 1);
            if let Some(id) = d.select(space, addr, last) {
                let s = d.servers.get(&id).expect("selected");
                if let (Some(bp), true) = (s.buf_port, addr < (1 << 20)) {
                    let qw = u32::from(size == 8);
                    let (r, w) = s.buffered.pointers();
                    if w.wrapping_sub(r) < IOREQ_BUFFER_SLOT_NUM - qw {
                        s.buffered.write_slot(
                            w,
                            BufIoreq::new(type_, IOREQ_WRITE, size_log2, addr as u32, data as u32),
                        );
                        if qw == 1 {
                            s.buffered.write_slot(
                                w.wrapping_add(1),
                                BufIoreq::new(
                                    type_,
                                    IOREQ_WRITE,
                                    size_log2,
                                    addr as u32,
                                    (data >> 32) as u32,
                                ),
                            );
                        }
                        s.buffered.advance_write(1 + qw);
                        if s.bufioreq == HVM_IOREQSRV_BUFIOREQ_ATOMIC {
                            s.buffered.rebase();
                        }
                        *d.report
                            .ioreqs_by_type
                            .entry("BUFFERED".into())
                            .or_default() += 1;
                        if let Some(ch) = d.channels.get_mut(&bp) {
                            ch.signal();
                        }
                        return Ok(true);
                    }
                }
            }
        }
        self.submit(Self::req(type_, addr, size, IOREQ_WRITE, data))
            .map(|_| false)
    }

    /// Submit a request exactly as given (any type, size, count, flags): routed the way Xen
    /// routes it, for tests that play a hostile or unusual guest.
    pub fn submit(&mut self, req: Ioreq) -> Result<u64, GuestError> {
        self.post_and_wait(None, req)
    }

    fn req(type_: u8, addr: u64, size: u32, dir: u8, data: u64) -> Ioreq {
        Ioreq::single(type_, addr, size, dir, data)
    }

    /// Route (or post to server `to`) and wait for the answer.
    /// Post `req` to server `id` directly, bypassing Xen's checks and routing (a test's way to
    /// hand a device model requests Xen itself would never send).
    pub fn submit_to_server(&mut self, id: u16, req: Ioreq) -> Result<u64, GuestError> {
        self.post_and_wait(Some(id), req)
    }

    fn post_and_wait(&mut self, to: Option<u16>, mut req: Ioreq) -> Result<u64, GuestError> {
        let route = {
            let mut g = self.sim.inner.lock();
            let m = &mut *g;
            let d = m
                .domains
                .get_mut(&self.domid)
                .ok_or(GuestError::NoSuchVcpu)?;
            if self.vcpu >= d.vcpus {
                return Err(GuestError::NoSuchVcpu);
            }
            check_alive(d)?;
            route(d, &m.host, self.vcpu, to, &mut req, &self.wake_fds)?
        };
        let (server, port, wake) = match route {
            Route::Done(v) => return Ok(v),
            Route::Posted { server, port, wake } => (server, port, wake),
        };
        if let Some(w) = wake {
            self.wake_fds.insert(port, Arc::new(w));
        }
        let wake = self
            .wake_fds
            .get(&port)
            .ok_or(GuestError::NoSuchVcpu)?
            .clone();
        let deadline = Instant::now() + self.timeout;
        *self.watch.wait.lock().unwrap_or_else(|p| p.into_inner()) = Some((deadline, wake.clone()));
        let result = self.wait_answer(&wake, server, deadline, &req);
        *self.watch.wait.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result
    }

    /// Sleep in one blocking read until the device model notifies (or the watchdog wakes us
    /// at the deadline), then look at the slot as Xen does.
    fn wait_answer(
        &mut self,
        wake: &OwnedFd,
        server: u16,
        deadline: Instant,
        req: &Ioreq,
    ) -> Result<u64, GuestError> {
        loop {
            let mut b = [0u8; 8];
            let _ = nix::unistd::read(wake.as_raw_fd(), &mut b);
            let mut g = self.sim.inner.lock();
            let d = g.get_mut(&self.domid).ok_or(GuestError::NoSuchVcpu)?;
            let Some(s) = d.servers.get(&server) else {
                // The server was destroyed under the request: Xen completes it as unhandled.
                return Ok(size_mask(req.size));
            };
            match s.ioreq.state(self.vcpu) {
                STATE_IORESP_READY => {
                    let r = s.ioreq.read(self.vcpu);
                    s.ioreq.set_state(self.vcpu, STATE_IOREQ_NONE);
                    // vcpu_ioreq_handle_completion -> msix_write_completion
                    // (xen/common/ioreq.c:226).
                    d.msix_write_completion(self.vcpu);
                    return Ok(if req.is_read() && !req.data_is_ptr() {
                        r.data & size_mask(req.size)
                    } else {
                        0
                    });
                }
                STATE_IOREQ_READY | STATE_IOREQ_INPROCESS => {}
                other => {
                    let msg = format!(
                        "Weird HVM ioreq state transition {} -> {other}",
                        STATE_IOREQ_READY
                    );
                    tracing::error!(
                        domid = self.domid,
                        vcpu = self.vcpu,
                        "sim: {msg}; crashing domain"
                    );
                    d.report.crashed = Some(msg.clone());
                    return Err(GuestError::Crashed(msg));
                }
            }
            if Instant::now() >= deadline {
                tracing::error!(
                    domid = self.domid,
                    vcpu = self.vcpu,
                    server,
                    addr = req.addr,
                    "sim: vCPU stuck waiting for a device model"
                );
                d.report.stuck.push(serde_json::json!({"vcpu": self.vcpu, "server": server, "addr": req.addr, "type": req.type_}));
                return Err(GuestError::Stuck {
                    vcpu: self.vcpu,
                    server,
                    addr: req.addr,
                });
            }
        }
    }
}

fn check_alive(d: &Domain) -> Result<(), GuestError> {
    if let Some(c) = &d.report.crashed {
        return Err(GuestError::Crashed(c.clone()));
    }
    if d.shut_down {
        return Err(GuestError::ShutDown);
    }
    Ok(())
}

/// `CONFIG_ADDRESS` for bus/dev/func/reg (enable bit 31; AMD extended register bits 27:24).
pub fn cf8(bus: u8, dev: u8, func: u8, reg: u16) -> u32 {
    0x8000_0000
        | (u32::from(reg & 0xF00) << 16)
        | (u32::from(bus) << 16)
        | (u32::from(dev & 0x1F) << 11)
        | (u32::from(func & 7) << 8)
        | u32::from(reg & 0xFC)
}

fn type_name(t: u8) -> &'static str {
    match t {
        IOREQ_TYPE_PIO => "PIO",
        IOREQ_TYPE_COPY => "MMIO",
        IOREQ_TYPE_PCI_CONFIG => "PCI_CONFIG",
        IOREQ_TYPE_INVALIDATE => "INVALIDATE",
        IOREQ_TYPE_TIMEOFFSET => "TIMEOFFSET",
        _ => "OTHER",
    }
}

/// Xen's path for one access: CF8 latch and CF8/CFC conversion, p2m, server selection, null
/// handler; or post to a server.
fn route(
    d: &mut Domain,
    host: &crate::host::Host,
    vcpu: u32,
    to: Option<u16>,
    req: &mut Ioreq,
    have: &HashMap<u32, Arc<OwnedFd>>,
) -> Result<Route, GuestError> {
    let null = |d: &mut Domain, req: &Ioreq| {
        d.report.unclaimed += 1;
        if req.is_read() && req.data_is_ptr() {
            // The null handler's reads produce all-ones in the guest buffer.
            let n = (u64::from(req.count) * u64::from(req.size)).min(1 << 20) as usize;
            let start = if req.df() {
                req.data.saturating_sub(n as u64 - u64::from(req.size))
            } else {
                req.data
            };
            if let Ok(s) = usize::try_from(start) {
                d.ram_map.write_bytes(s, &vec![0xFF; n]);
            }
        }
        Route::Done(if req.is_read() && !req.data_is_ptr() {
            size_mask(req.size)
        } else {
            0
        })
    };
    let server = match to {
        Some(id) => id,
        None => {
            let mut space = match req.type_ {
                IOREQ_TYPE_PIO => Space::Port,
                IOREQ_TYPE_COPY => Space::Memory,
                _ => return Ok(null(d, req)),
            };
            if req.type_ == IOREQ_TYPE_PIO {
                if req.addr == 0xCF8 && req.size == 4 && !req.is_read() && !req.data_is_ptr() {
                    d.cf8 = req.data as u32; // hvm_access_cf8: latched, then forwarded as usual
                } else if req.addr & !3 == 0xCFC && d.cf8 & 0x8000_0000 != 0 {
                    let cf8 = d.cf8;
                    let sbdf = u64::from((cf8 >> 8) & 0xFFFF);
                    let mut reg = u64::from(cf8 & 0xFC) | (req.addr & 3);
                    if d.amd_ext_cfg {
                        reg |= u64::from((cf8 >> 16) & 0xF00);
                    }
                    req.type_ = IOREQ_TYPE_PCI_CONFIG;
                    req.addr = (sbdf << 32) | reg;
                    space = Space::PciConfig;
                }
            }
            let span = u64::from(req.count.max(1) - 1).saturating_mul(u64::from(req.size));
            let (first, last) = match space {
                Space::PciConfig => (req.addr >> 32, req.addr >> 32),
                Space::Port => (
                    req.addr,
                    req.addr.saturating_add(u64::from(req.size).max(1) - 1),
                ),
                Space::Memory if req.df() => (
                    req.addr.saturating_sub(span),
                    req.addr.saturating_add(u64::from(req.size).max(1) - 1),
                ),
                Space::Memory => (
                    req.addr,
                    req.addr
                        .saturating_add(span)
                        .saturating_add(u64::from(req.size).max(1) - 1),
                ),
            };
            if space == Space::Port && d.ioport_mapped(req.addr, req.size) {
                // A port passed through with XEN_DOMCTL_ioport_mapping: Xen does the I/O on the
                // host port itself (xen/arch/x86/hvm/io.c:182-268); the sim has no host ports
                // (reads all-ones, writes dropped). No ioreq.
                d.report.ioport_passthrough_accesses += 1;
                return Ok(Route::Done(if req.is_read() {
                    size_mask(req.size)
                } else {
                    0
                }));
            }
            if space == Space::Memory && d.p2m_mapped(first, last) {
                // A p2m_mmio_direct frame: the access reaches the device without Xen or any
                // device model (no ioreq). The sim reads/writes the BAR's file when the test
                // registered one (HostPciDevice::bar_files), else reads 0 and drops writes.
                d.report.p2m_accesses += 1;
                return Ok(Route::Done(p2m_access(d, host, req)));
            }
            if space == Space::Memory && !req.data_is_ptr() && req.count <= 1 {
                // Xen's internal MMIO handlers run before any ioreq server
                // (hvm_io_intercept, xen/arch/x86/hvm/emulate.c:240-254); msixtbl is the one
                // that matters here (xen/arch/x86/hvm/vmsi.c:216-431).
                if let crate::passthrough::MsixtblResult::Done(v) =
                    d.msixtbl_access(vcpu, req.addr, req.size, !req.is_read(), req.data)
                {
                    d.report.msixtbl_accesses += 1;
                    d.msix_write_completion(vcpu);
                    return Ok(Route::Done(if req.is_read() {
                        v & size_mask(req.size)
                    } else {
                        0
                    }));
                }
            }
            match d.select(space, first, last) {
                Some(id) => id,
                None => {
                    let r = null(d, req);
                    d.msix_write_completion(vcpu);
                    return Ok(r);
                }
            }
        }
    };
    let s = d.servers.get(&server).ok_or(GuestError::NoSuchVcpu)?;
    let state = s.ioreq.state(vcpu);
    if state != STATE_IOREQ_NONE {
        let msg = format!("device model set bad IO state {state}");
        d.report.crashed = Some(msg.clone());
        return Err(GuestError::Crashed(msg));
    }
    let port = s.vcpu_ports[vcpu as usize];
    if let Some(v) = d.vcpu_io.get_mut(vcpu as usize) {
        v.blocked = true; // VPF_blocked_in_xen until the device model answers
    }
    let s = d.servers.get(&server).ok_or(GuestError::NoSuchVcpu)?;
    req.vp_eport = port;
    req.set_state(STATE_IOREQ_READY);
    s.ioreq.post(vcpu, req);
    *d.report
        .ioreqs_by_type
        .entry(type_name(req.type_).into())
        .or_default() += 1;
    let ch = d.channels.get_mut(&port).ok_or(GuestError::NoSuchVcpu)?;
    ch.signal();
    let wake = if have.contains_key(&port) {
        None
    } else {
        Some(ch.to_xen.try_clone().map_err(|_| GuestError::NoSuchVcpu)?)
    };
    Ok(Route::Posted { server, port, wake })
}

/// One access through a p2m mapping: the BAR file behind the host address, if any.
fn p2m_access(d: &Domain, host: &crate::host::Host, req: &Ioreq) -> u64 {
    let Some(haddr) = d.p2m_translate(req.addr) else {
        return 0;
    };
    let Some((file, off)) = host.bar_backing(haddr) else {
        return 0;
    };
    let n = (req.size as usize).min(8);
    if req.is_read() {
        let mut b = [0u8; 8];
        crate::host::read_file_at(&file, off, &mut b[..n]);
        u64::from_le_bytes(b)
    } else {
        crate::host::write_file_at(&file, off, &req.data.to_le_bytes()[..n]);
        0
    }
}
