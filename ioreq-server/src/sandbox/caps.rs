//! The capability sets: reading them (`capget`) and clearing them all (`capset`, ambient
//! included) when the uid stays 0.

use super::SandboxError;

// capget/capset (capabilities(7)); version 3: two 32-bit words per set.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// effective, permitted, inheritable (64 bits each).
pub(super) fn capabilities() -> Result<[u64; 3], SandboxError> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget writes two CapData structs (version 3) into `d`, which has room for them;
    // `h` is a valid header for this thread (pid 0).
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    if r != 0 {
        return Err(SandboxError::Sys(
            "capget".into(),
            std::io::Error::last_os_error(),
        ));
    }
    let w = |f: fn(&CapData) -> u32| u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32);
    Ok([w(|c| c.effective), w(|c| c.permitted), w(|c| c.inheritable)])
}

pub(super) fn clear_capabilities() -> Result<(), SandboxError> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let d = [CapData::default(); 2];
    // SAFETY: capset reads two CapData structs (version 3) from `d`; `h` names this thread.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    if r != 0 {
        return Err(SandboxError::Sys(
            "capset (clear all)".into(),
            std::io::Error::last_os_error(),
        ));
    }
    // No ambient capabilities either (PR_CAP_AMBIENT_CLEAR_ALL).
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Ok(())
}
