//! The `xen` transport: /dev/xen/privcmd and /dev/xen/evtchn, pure Rust (raw ioctls; no C
//! library at run time). Request numbers and layouts are in [`xen_abi`] and checked against
//! Debian's headers by the layout test.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{Transport, TransportError, Waker};
use crate::shared::Mapping;
use xen_abi::dmop::{DmOp, DmOpOutput};
use xen_abi::passthrough::{Hypercall, PtOp};
use xen_abi::*;

/// Default device nodes.
pub const PRIVCMD: &str = "/dev/xen/privcmd";
/// See [`PRIVCMD`].
pub const EVTCHN: &str = "/dev/xen/evtchn";

/// Handles on a Xen dom0 for one guest.
pub struct XenTransport {
    privcmd: File,
    evtchn: File,
    domid: DomId,
    /// A locked page for hypercall arguments (passthrough only).
    hcall_buf: Option<Mapping>,
    /// Whether the hypervisor's domctl interface was checked (passthrough only).
    version_ok: bool,
    /// Local ports bound on `evtchn` (to unmask them all after a ring overflow).
    bound: Vec<u32>,
    /// The waker's loopback channel: (the unbound end, the end bound to it).
    loopback: Option<(u32, u32)>,
}

/// [`Waker`] of the xen transport: IOCTL_EVTCHN_NOTIFY on the loopback channel, through a
/// second handle of the same evtchn file (the driver checks the port belongs to that file,
/// drivers/xen/evtchn.c, evtchn_ioctl).
struct XenWaker {
    evtchn: File,
    port: u32,
}

impl Waker for XenWaker {
    fn wake(&self) -> Result<(), TransportError> {
        let mut arg = IoctlEvtchnNotify { port: self.port };
        request(&self.evtchn, &mut arg, || format!("{} (waker)", self.port))?;
        Ok(())
    }
}

/// `/dev/xen/hypercall`: locked pages for hypercall arguments (drivers/xen/privcmd-buf.c).
pub const HYPERCALL_BUF: &str = "/dev/xen/hypercall";

fn open(path: &str, nonblock: bool) -> Result<File, TransportError> {
    if !Path::new(path).exists() {
        return Err(TransportError::Missing {
            path: path.into(),
            hint: "this is not a Xen dom0 (or the xen-privcmd / xen-evtchn modules and xenfs are not loaded); \
                   to run against the simulated hypervisor use `--transport sim`"
                .into(),
        });
    }
    let mut o = OpenOptions::new();
    o.read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | if nonblock { libc::O_NONBLOCK } else { 0 });
    o.open(path)
        .map_err(|e| TransportError::io(format!("open {path}"), e))
}

/// The error for a call Xen (or the privcmd or evtchn driver) refused with `errno`: one
/// `map_err` for every call here. `what` names the call; it is built only when the call failed
/// (dm_op is on the ioreq path).
fn refused<S: Into<String>>(what: impl FnOnce() -> S) -> impl FnOnce(i32) -> TransportError {
    move |errno| TransportError::Hypervisor {
        what: what().into(),
        errno,
    }
}

/// An ioctl argument struct and the request number the privcmd or evtchn driver takes it
/// with, paired once, here, instead of at every call: each number encodes its struct's size
/// (`_IOC(_IOC_NONE, type, nr, sizeof(arg))`, [`xen_abi`]'s linux module), and the layout test
/// checks numbers and structs against the kernel headers.
trait Request {
    /// The request number.
    const NR: u64;
    /// Its name, for messages.
    const NAME: &'static str;
}

/// Pairs each struct with its number, and checks at compile time that the size the number
/// encodes (`_IOC_SIZE`, bits 16-29) is the struct's.
macro_rules! requests {
    ($($arg:ty => $nr:ident,)*) => {
        $(impl Request for $arg {
            const NR: u64 = $nr;
            const NAME: &'static str = stringify!($nr);
        }
        const _: () = assert!((($nr >> 16) & 0x3FFF) as usize == std::mem::size_of::<$arg>());)*
    };
}

requests! {
    PrivcmdHypercall => IOCTL_PRIVCMD_HYPERCALL,
    PrivcmdMmapbatchV2 => IOCTL_PRIVCMD_MMAPBATCH_V2,
    PrivcmdDmOp => IOCTL_PRIVCMD_DM_OP,
    PrivcmdRestrict => IOCTL_PRIVCMD_RESTRICT,
    PrivcmdMmapResource => IOCTL_PRIVCMD_MMAP_RESOURCE,
    IoctlEvtchnBindInterdomain => IOCTL_EVTCHN_BIND_INTERDOMAIN,
    IoctlEvtchnBindUnboundPort => IOCTL_EVTCHN_BIND_UNBOUND_PORT,
    IoctlEvtchnUnbind => IOCTL_EVTCHN_UNBIND,
    IoctlEvtchnNotify => IOCTL_EVTCHN_NOTIFY,
    IoctlEvtchnRestrictDomid => IOCTL_EVTCHN_RESTRICT_DOMID,
    EvtchnReset => IOCTL_EVTCHN_RESET,
}

/// `IOCTL_EVTCHN_RESET` takes no argument (size 0 in its number; drivers/xen/evtchn.c,
/// evtchn_ioctl, does not read `arg` for it): a zero-sized struct stands for none.
struct EvtchnReset;

/// `IOCTL_PRIVCMD_RESTRICT`'s argument, a bare `domid_t` (linux
/// include/uapi/xen/privcmd.h: `_IOC(_IOC_NONE, 'P', 6, sizeof(domid_t))`).
#[repr(transparent)]
struct PrivcmdRestrict(DomId);

/// `ioctl(fd, T::NR, arg)`: the non-negative result, or the errno.
fn ioctl<T: Request>(fd: RawFd, arg: &mut T) -> Result<i32, i32> {
    // The driver reads and writes only `*arg` and the buffers its fields point to, which the
    // callers keep alive across the call.
    let arg: *mut T = arg;
    // SAFETY: `T::NR` is the request the driver takes a `T` with (`requests!` pairs them); `arg`
    // is an exclusive borrow, outliving the call, of a live `T` laid out as the kernel's (repr(C);
    // transparent for the bare domid, zero-sized for the argument-less reset).
    let r = unsafe { libc::ioctl(fd, T::NR as libc::c_ulong, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

/// [`ioctl`] on `fd`, a refusal named by the request and `what` (built only on failure).
fn request<T: Request>(
    fd: &File,
    arg: &mut T,
    what: impl FnOnce() -> String,
) -> Result<i32, TransportError> {
    ioctl(fd.as_raw_fd(), arg).map_err(refused(|| match what() {
        w if w.is_empty() => T::NAME.to_string(),
        w => format!("{} {w}", T::NAME),
    }))
}

impl XenTransport {
    /// Open privcmd and evtchn for guest `domid`.
    pub fn open(domid: DomId) -> Result<Self, TransportError> {
        Ok(XenTransport {
            privcmd: open(PRIVCMD, false)?,
            // Blocking: wait() sleeps in read() (see there).
            evtchn: open(EVTCHN, false)?,
            domid,
            hcall_buf: None,
            version_ok: false,
            bound: Vec::new(),
            loopback: None,
        })
    }

    /// A second handle on the same open evtchn file (same ports), for the waker thread.
    fn clone_evtchn(&self) -> Result<File, TransportError> {
        self.evtchn
            .try_clone()
            .map_err(|e| TransportError::io("dup /dev/xen/evtchn", e))
    }

    /// Unmask `ports` with one write of their numbers (drivers/xen/evtchn.c, evtchn_write).
    fn unmask(&self, ports: &[u32]) -> Result<(), TransportError> {
        if ports.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = ports.iter().flat_map(|p| p.to_ne_bytes()).collect();
        (&self.evtchn)
            .write_all(&bytes)
            .map_err(|e| TransportError::io("unmask event channels", e))
    }

    /// `IOCTL_PRIVCMD_HYPERCALL`: the hypercall's return value, or its errno.
    fn hypercall(&self, op: u64, arg: [u64; 5]) -> Result<i32, i32> {
        let mut h = PrivcmdHypercall { op, arg };
        ioctl(self.privcmd.as_raw_fd(), &mut h)
    }

    /// The argument buffer: a page of /dev/xen/hypercall, as libxencall uses, or a locked
    /// anonymous page on kernels without it.
    fn hypercall_buffer(&mut self) -> Result<&Mapping, TransportError> {
        if self.hcall_buf.is_none() {
            let m = match OpenOptions::new()
                .read(true)
                .write(true)
                .open(HYPERCALL_BUF)
            {
                Ok(f) => Mapping::map_fd(f.as_fd(), 0, XEN_PAGE_SIZE),
                Err(_) => Mapping::anonymous_locked(XEN_PAGE_SIZE),
            };
            self.hcall_buf = Some(m.map_err(|e| TransportError::io("hypercall buffer", e))?);
        }
        Ok(self.hcall_buf.as_ref().expect("set above"))
    }

    /// Passthrough domctls are version-locked: only Xen 4.17 (domctl interface 0x15) is
    /// implemented, so anything else is refused before a single domctl is sent.
    fn check_domctl_version(&mut self) -> Result<(), TransportError> {
        if self.version_ok {
            return Ok(());
        }
        let v = self
            .hypercall(__HYPERVISOR_XEN_VERSION, [XENVER_VERSION, 0, 0, 0, 0])
            .map_err(refused(|| "xen_version"))?;
        let (major, minor) = (v >> 16, v & 0xFFFF);
        if (major, minor) != (4, 17) {
            return Err(TransportError::Protocol(format!(
                "this hypervisor is Xen {major}.{minor}; passthrough domctls are implemented for Xen 4.17 only \
                 (domctl interface version {XEN_DOMCTL_INTERFACE_VERSION_4_17:#x}, checked against Debian's 4.17 headers)"
            )));
        }
        self.version_ok = true;
        Ok(())
    }

    /// An empty privcmd VMA of `pages` pages, to be filled by MMAP_RESOURCE / MMAPBATCH_V2.
    fn privcmd_vma(&self, pages: u64) -> Result<Mapping, TransportError> {
        let len = usize::try_from(pages)
            .ok()
            .and_then(|p| p.checked_mul(XEN_PAGE_SIZE));
        let len =
            len.ok_or_else(|| TransportError::Protocol(format!("{pages} pages is too many")))?;
        Mapping::map_fd(self.privcmd.as_fd(), 0, len)
            .map_err(|e| TransportError::io("mmap /dev/xen/privcmd", e))
    }
}

impl Transport for XenTransport {
    fn domid(&self) -> DomId {
        self.domid
    }

    fn dm_op(&mut self, op: &DmOp) -> Result<DmOpOutput, TransportError> {
        let mut buf = op.encode();
        let mut bufs = [PrivcmdDmOpBuf {
            uptr: buf.as_mut_ptr().cast(),
            size: buf.len(),
        }];
        let mut arg = PrivcmdDmOp {
            dom: self.domid,
            num: 1,
            ubufs: bufs.as_mut_ptr(),
        };
        ioctl(self.privcmd.as_raw_fd(), &mut arg).map_err(refused(|| format!("dm_op {op:?}")))?;
        Ok(op.read_output(&buf))
    }

    fn map_resource(&mut self, id: IoservId, idx: u64, nr: u64) -> Result<Mapping, TransportError> {
        let map = self.privcmd_vma(nr)?;
        let mut arg = PrivcmdMmapResource {
            dom: self.domid,
            type_: XENMEM_RESOURCE_IOREQ_SERVER,
            id: u32::from(id),
            idx: u32::try_from(idx).map_err(|_| TransportError::Protocol("frame index".into()))?,
            num: nr,
            addr: map.addr() as u64,
        };
        request(&self.privcmd, &mut arg, || {
            format!("server {id} frame {idx}")
        })?;
        Ok(map)
    }

    fn bind_interdomain(&mut self, remote_port: u32) -> Result<u32, TransportError> {
        let mut arg = IoctlEvtchnBindInterdomain {
            remote_domain: u32::from(self.domid),
            remote_port,
        };
        let port = request(&self.evtchn, &mut arg, || format!("port {remote_port}"))?;
        self.bound.push(port as u32);
        Ok(port as u32)
    }

    fn unbind(&mut self, local_port: u32) -> Result<(), TransportError> {
        let mut arg = IoctlEvtchnUnbind { port: local_port };
        request(&self.evtchn, &mut arg, || local_port.to_string())?;
        self.bound.retain(|&p| p != local_port);
        Ok(())
    }

    fn waker(&mut self) -> Result<Box<dyn Waker>, TransportError> {
        // A loopback event channel on our own evtchn fd, so that one blocking read() waits for
        // the guest's ports and for the waker alike. Must happen before restrict():
        // drivers/xen/evtchn.c (evtchn_ioctl) refuses IOCTL_EVTCHN_BIND_UNBOUND_PORT, and
        // IOCTL_EVTCHN_BIND_INTERDOMAIN to any domain but the restricted one, with EACCES
        // once IOCTL_EVTCHN_RESTRICT_DOMID was issued; ports bound before keep working for
        // IOCTL_EVTCHN_NOTIFY and read() (the driver's commit adding the restriction: "Event
        // channels that are already bound continue to work for sending and receiving
        // notifications").
        if let Some((_, local)) = self.loopback {
            return Ok(Box::new(XenWaker {
                evtchn: self.clone_evtchn()?,
                port: local,
            }));
        }
        // The unbound end: the driver allocates it with dom = DOMID_SELF and our remote_dom;
        // xen/common/event_channel.c:351 (4.17, evtchn_alloc_unbound) turns a remote_dom of
        // DOMID_SELF into the caller's own domain id, the documented loopback
        // (xen/include/public/event_channel.h:74).
        let mut ub = IoctlEvtchnBindUnboundPort {
            remote_domain: u32::from(DOMID_SELF),
        };
        let unbound = request(&self.evtchn, &mut ub, || "(loopback)".into())? as u32;
        // The other end, in the same domain: event_channel.c:398 (evtchn_bind_interdomain)
        // resolves DOMID_SELF to ourselves through rcu_lock_domain_by_any_id
        // (xen/common/domain.c:914), lines 405-411 and 456 handle ld == rd, and line 425 only
        // asks that the unbound end accepts our domain, which line 351 made it do.
        let mut bi = IoctlEvtchnBindInterdomain {
            remote_domain: u32::from(DOMID_SELF),
            remote_port: unbound,
        };
        let local = match ioctl(self.evtchn.as_raw_fd(), &mut bi) {
            Ok(p) => p as u32,
            Err(errno) => {
                let mut u = IoctlEvtchnUnbind { port: unbound };
                let _ = ioctl(self.evtchn.as_raw_fd(), &mut u);
                return Err(TransportError::Hypervisor {
                    what: "IOCTL_EVTCHN_BIND_INTERDOMAIN (loopback)".into(),
                    errno,
                });
            }
        };
        // Notifying `local` sets `unbound` pending (event_channel.c:824, evtchn_send); the
        // bind itself sets `local` pending once (event_channel.c:447). wait() takes either as
        // the waker.
        self.loopback = Some((unbound, local));
        self.bound.extend([unbound, local]);
        Ok(Box::new(XenWaker {
            evtchn: self.clone_evtchn()?,
            port: local,
        }))
    }

    fn wait(&mut self, out: &mut Vec<u32>) -> Result<bool, TransportError> {
        // drivers/xen/evtchn.c (evtchn_read): the fd is blocking, so read() sleeps until the
        // ring holds at least one port and then returns every queued port that fits (whole
        // u32s). The ports stay masked until written back, which we do at once, in one write
        // (QEMU unmasks before handling, too). No poll/epoll before it: that would be a fourth
        // syscall per ioreq.
        let mut buf = [0u8; 4 * 64];
        let n = loop {
            match (&self.evtchn).read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                    // Ring overflow: the kernel queued nothing more and left every port that
                    // fired masked (evtchn_interrupt sets enabled = false); IOCTL_EVTCHN_RESET
                    // empties the ring but unmasks nothing. So reset, then unmask every bound
                    // port (the loopback too); the caller rescans every slot anyway.
                    request(&self.evtchn, &mut EvtchnReset, String::new)?;
                    self.unmask(&self.bound.clone())?;
                    let lb = self.loopback;
                    out.extend(
                        self.bound
                            .iter()
                            .copied()
                            .filter(|p| lb.is_none_or(|(a, b)| *p != a && *p != b)),
                    );
                    return Ok(true);
                }
                Err(e) => return Err(TransportError::io("read /dev/xen/evtchn", e)),
            }
        };
        let ports: Vec<u32> = buf[..n - n % 4]
            .chunks_exact(4)
            .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        self.unmask(&ports)?;
        let mut woken = false;
        for p in ports {
            match self.loopback {
                Some((a, b)) if p == a || p == b => woken = true,
                _ => out.push(p),
            }
        }
        Ok(woken)
    }

    fn notify(&mut self, local_port: u32) -> Result<(), TransportError> {
        let mut arg = IoctlEvtchnNotify { port: local_port };
        request(&self.evtchn, &mut arg, || local_port.to_string())?;
        Ok(())
    }

    fn map_guest_page(&mut self, gfn: u64) -> Result<Mapping, TransportError> {
        let map = self.privcmd_vma(1)?;
        let arr = [gfn];
        let mut err = [0i32];
        let mut arg = PrivcmdMmapbatchV2 {
            num: 1,
            dom: self.domid,
            addr: map.addr() as u64,
            arr: arr.as_ptr(),
            err: err.as_mut_ptr(),
        };
        let what = || format!("gfn {gfn:#x}");
        request(&self.privcmd, &mut arg, what)?;
        if err[0] != 0 {
            return Err(TransportError::Hypervisor {
                what: format!("{} {}", PrivcmdMmapbatchV2::NAME, what()),
                errno: -err[0],
            });
        }
        Ok(map)
    }

    fn passthrough(&mut self, op: &PtOp) -> Result<u64, TransportError> {
        self.check_domctl_version()?;
        let what = format!("{op:?}");
        let (hop, arg0, bytes) = match op.encode_4_17(self.domid) {
            Hypercall::Domctl(b) => (__HYPERVISOR_DOMCTL, None, b),
            Hypercall::Physdev { cmd, arg } => (__HYPERVISOR_PHYSDEV_OP, Some(cmd), arg),
        };
        let ptr = {
            let buf = self.hypercall_buffer()?;
            buf.write_bytes(0, &bytes);
            buf.addr() as u64
        };
        let args = match arg0 {
            Some(cmd) => [cmd, ptr, 0, 0, 0],
            None => [ptr, 0, 0, 0, 0],
        };
        let rc = self
            .hypercall(hop, args)
            .map_err(refused(|| what.clone()))?;
        let mut out = vec![0u8; bytes.len()];
        self.hypercall_buffer()?.read_bytes(0, &mut out);
        op.decode_result(self.domid, rc.max(0) as u64, &out)
            .map_err(TransportError::Protocol)
    }

    fn restrict(&mut self) -> Result<(), TransportError> {
        request(&self.privcmd, &mut PrivcmdRestrict(self.domid), String::new)?;
        let mut arg = IoctlEvtchnRestrictDomid { domid: self.domid };
        request(&self.evtchn, &mut arg, String::new)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_unbound_port_request_number() {
        // include/uapi/xen/evtchn.h: _IOC(_IOC_NONE, 'E', 2, sizeof(struct
        // ioctl_evtchn_bind_unbound_port)), as xen-abi.md section 6 lists it.
        assert_eq!(IOCTL_EVTCHN_BIND_UNBOUND_PORT, 0x0004_4502);
    }
}
