//! The unlinker: the root helper forked before the chroot that removes the socket paths at
//! the clean end (the [sandbox module's documentation](super) says why and how).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use seccompiler::BpfProgram;

use super::seccomp::compile;
use super::{sys, SandboxError};

pub(super) fn unlinker_filter() -> Result<BpfProgram, SandboxError> {
    let p = |n: libc::c_long| (n, Vec::new());
    compile(
        vec![
            p(libc::SYS_read),
            p(libc::SYS_unlink),
            p(libc::SYS_exit),
            p(libc::SYS_exit_group),
            p(libc::SYS_restart_syscall),
        ],
        "unlinker filter",
    )
}

/// The root helper that removes the socket paths at the clean end (the sandbox module's
/// documentation).
#[derive(Debug)]
pub(super) struct Unlinker {
    pid: libc::pid_t,
    tx: OwnedFd,
}

impl Unlinker {
    pub(super) fn spawn(
        paths: &[&PathBuf],
        name: &str,
        max_fd: u64,
    ) -> Result<Unlinker, SandboxError> {
        let cpaths: Vec<CString> = paths
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| SandboxError::Check("a socket path contains NUL".into()))?;
        // "unlink-NAME", cut to the 15 bytes of a comm (prctl(2) PR_SET_NAME): the prefix
        // survives the cut, so `ps` and the rig tell the helper from its process even for
        // pci-host-bridge, whose name alone fills the 15 bytes.
        let comm: Vec<u8> = format!("unlink-{name}").bytes().take(15).collect();
        let comm = CString::new(comm).unwrap_or_default();
        let filter = unlinker_filter()?;
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe2"))?;
        let max_fd = i32::try_from(max_fd).unwrap_or(i32::MAX);
        // SAFETY: fork in a process that may have other threads: the child only makes the
        // async-signal-safe system calls of `unlinker_child` (close, prctl, setpgid, seccomp, read,
        // unlink, _exit) on data prepared before the fork, and never returns.
        match unsafe { libc::fork() } {
            -1 => Err(SandboxError::Sys(
                "fork (the unlinker)".into(),
                std::io::Error::last_os_error(),
            )),
            0 => unlinker_child(rx.as_raw_fd(), &cpaths, &filter, max_fd, &comm),
            pid => {
                drop(rx);
                Ok(Unlinker { pid, tx })
            }
        }
    }

    pub(super) fn finish(self) {
        let _ = nix::unistd::write(&self.tx, &[1]);
        drop(self.tx);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(self.pid), None);
    }
}

fn unlinker_child(
    rx: i32,
    paths: &[CString],
    filter: &BpfProgram,
    max_fd: i32,
    comm: &CString,
) -> ! {
    // SAFETY: runs in the forked child only: raw system calls on descriptors and buffers that
    // were prepared before the fork; no allocation, no lock.
    unsafe {
        for fd in 0..max_fd {
            if fd != rx {
                libc::close(fd);
            }
        }
        libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0);
        // A process group of its own: a supervisor that kills the device model's group
        // (SIGKILL) must find the group empty once the device model is gone, not a zombie
        // helper waiting for init to reap it. The helper ends by itself when the pipe closes.
        libc::setpgid(0, 0);
        if seccompiler::apply_filter(filter).is_err() {
            libc::_exit(1);
        }
        let mut b = [0u8; 1];
        loop {
            let n = libc::read(rx, b.as_mut_ptr().cast(), 1);
            if n == 1 {
                for p in paths {
                    libc::unlink(p.as_ptr());
                }
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break;
        }
        libc::_exit(0)
    }
}
