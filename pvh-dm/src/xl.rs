//! Calling `xl`, the toolstack's command line, for what a launcher may do with it: create a
//! domain paused, look up its domid, unpause, shut down, destroy, read its state, read the
//! host's `xl info`.
//!
//! Every call is logged at debug level with its arguments; a failure names the command line,
//! its exit status and the last lines of its stderr.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// An `xl` call that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum XlError {
    /// `xl` could not be started.
    #[error("cannot run {xl}: {source}")]
    Spawn {
        /// The binary.
        xl: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `xl` ran and failed.
    #[error("`{cmdline}` failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    Failed {
        /// The command line.
        cmdline: String,
        /// Exit status.
        status: String,
        /// The end of its stderr.
        stderr: String,
    },
    /// `xl` printed something pvh-dm does not understand.
    #[error("`{cmdline}`: unexpected output: {output}")]
    Output {
        /// The command line.
        cmdline: String,
        /// What it printed.
        output: String,
    },
}

pub use xen_abi::ShutdownReason;

/// The reason for a letter of `xl list`'s state column (`-rscwS`: poweroff is `-`).
pub fn reason_from_letter(c: char) -> Option<ShutdownReason> {
    Some(match c {
        '-' => ShutdownReason::Poweroff,
        'r' => ShutdownReason::Reboot,
        's' => ShutdownReason::Suspend,
        'c' => ShutdownReason::Crash,
        'w' => ShutdownReason::Watchdog,
        'S' => ShutdownReason::SoftReset,
        _ => return None,
    })
}

/// A domain's state as `xl list -v DOMID` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// No such domain.
    Gone,
    /// Being destroyed (`d`), no shutdown reason.
    Dying,
    /// Shut down with this reason (`s`); it stays until destroyed.
    Shutdown(ShutdownReason),
    /// Running, blocked or paused.
    Alive,
}

/// Parse `xl list -v` output for `domid` (see tools/xl/xl_info.c `list_domains`: name, id,
/// mem, vcpus, state `rbpsRd` where R is the reason letter, time, uuid, reason code in hex
/// when shut down, security label). The state column is found by its shape and the domid
/// must be the token three before it, so a name or memory size that looks like the domid
/// cannot mislead it.
pub fn parse_list_verbose(out: &str, domid: u32) -> Option<DomainState> {
    let id = domid.to_string();
    let is_state = |w: &str| {
        let c: Vec<char> = w.chars().collect();
        c.len() == 6
            && matches!(c[0], 'r' | '-')
            && matches!(c[1], 'b' | '-')
            && matches!(c[2], 'p' | '-')
            && matches!(c[3], 's' | '-')
            && matches!(c[4], '-' | 'r' | 's' | 'c' | 'w' | 'S' | '?')
            && matches!(c[5], 'd' | '-')
    };
    for line in out.lines().skip(1) {
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(si) = (3..t.len()).find(|&i| is_state(t[i]) && t[i - 3] == id) else {
            continue;
        };
        let s: Vec<char> = t[si].chars().collect();
        if s[3] == 's' {
            let code = t
                .get(si + 3)
                .and_then(|c| u32::from_str_radix(c, 16).ok())
                .map(ShutdownReason::from_code);
            let r = code
                .or_else(|| reason_from_letter(s[4]))
                .unwrap_or(ShutdownReason::Other(u32::MAX));
            return Some(DomainState::Shutdown(r));
        }
        if s[5] == 'd' {
            return Some(DomainState::Dying);
        }
        return Some(DomainState::Alive);
    }
    None
}

/// The `xl` binary and the environment pvh-dm runs it with.
#[derive(Clone, Debug)]
pub struct Xl {
    /// Path or name of `xl`.
    pub bin: PathBuf,
}

/// The result of one `xl` call.
pub struct Output {
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

impl Xl {
    /// `xl` at `bin`.
    pub fn new(bin: PathBuf) -> Self {
        Xl { bin }
    }

    fn cmdline(&self, args: &[OsString], env: &[(&str, OsString)]) -> String {
        let mut s = String::new();
        for (k, v) in env {
            s.push_str(&format!("{k}={} ", v.to_string_lossy()));
        }
        s.push_str(&self.bin.to_string_lossy());
        for a in args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Run `xl ARGS` with extra environment `env`; stdout and stderr are captured.
    pub fn run(&self, args: &[OsString], env: &[(&str, OsString)]) -> Result<Output, XlError> {
        let cmdline = self.cmdline(args, env);
        tracing::debug!(%cmdline, "xl");
        let mut c = Command::new(&self.bin);
        // xl's libxl waits for its own children through SIGCHLD, which pvh-dm blocks.
        ioreq_server::signals::with_default_signals(&mut c);
        c.args(args)
            .stdin(Stdio::null())
            .env_remove("NOTIFY_SOCKET");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().map_err(|source| XlError::Spawn {
            xl: self.bin.clone(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(XlError::Failed {
                cmdline,
                status: crate::describe_status(out.status),
                stderr: tail(&stderr, 4),
            });
        }
        Ok(Output { stdout, stderr })
    }

    fn run_args(&self, args: &[&str]) -> Result<Output, XlError> {
        let a: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.run(&a, &[])
    }

    /// `xl create -p [-e] CONFIG` (through the IOMMU wrapper when `iommu_wrapper` is set:
    /// `PVH_DM_IOMMU=1 LD_PRELOAD=WRAPPER`). Returns xl's stderr (its progress lines).
    pub fn create_paused(
        &self,
        config: &Path,
        no_monitor: bool,
        iommu_wrapper: Option<&Path>,
    ) -> Result<String, XlError> {
        let mut args: Vec<OsString> = vec!["create".into(), "-p".into()];
        if no_monitor {
            args.push("-e".into());
        }
        args.push(config.into());
        let mut env: Vec<(&str, OsString)> = Vec::new();
        if let Some(w) = iommu_wrapper {
            env.push(("PVH_DM_IOMMU", "1".into()));
            env.push(("LD_PRELOAD", w.into()));
        }
        let o = self.run(&args, &env)?;
        Ok(o.stderr)
    }

    /// `xl domid NAME`.
    pub fn domid(&self, name: &str) -> Result<u32, XlError> {
        let o = self.run_args(&["domid", name])?;
        o.stdout.trim().parse().map_err(|_| XlError::Output {
            cmdline: format!("{} domid {name}", self.bin.display()),
            output: o.stdout.trim().to_string(),
        })
    }

    /// `xl pause DOMID`.
    pub fn pause(&self, domid: u32) -> Result<(), XlError> {
        self.run_args(&["pause", &domid.to_string()]).map(|_| ())
    }

    /// `xl unpause DOMID`.
    pub fn unpause(&self, domid: u32) -> Result<(), XlError> {
        self.run_args(&["unpause", &domid.to_string()]).map(|_| ())
    }

    /// `xl destroy DOMID|NAME`.
    pub fn destroy(&self, target: &str) -> Result<(), XlError> {
        self.run_args(&["destroy", target]).map(|_| ())
    }

    /// The domain's state from `xl list -v DOMID`; a failing `xl list` for this domid means
    /// it is gone.
    pub fn state(&self, domid: u32) -> Result<DomainState, XlError> {
        match self.run_args(&["list", "-v", &domid.to_string()]) {
            Ok(o) => Ok(parse_list_verbose(&o.stdout, domid).unwrap_or(DomainState::Gone)),
            Err(XlError::Failed { stderr, .. })
                if stderr.contains("not exist")
                    || stderr.contains("invalid domain")
                    || stderr.contains("not found") =>
            {
                Ok(DomainState::Gone)
            }
            Err(e) => Err(e),
        }
    }

    /// `xl info` as key/value pairs.
    pub fn info(&self) -> Result<BTreeMap<String, String>, XlError> {
        let o = self.run_args(&["info"])?;
        Ok(parse_info(&o.stdout))
    }

    /// `xl dmesg` (Xen's console ring).
    pub fn dmesg(&self) -> Result<String, XlError> {
        Ok(self.run_args(&["dmesg"])?.stdout)
    }
}

/// `key : value` lines of `xl info`.
pub fn parse_info(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Whether `xl info`'s `virt_caps` says Xen can pass devices through to HVM/PVH guests
/// (`hvm_directio`, printed when the IOMMU is enabled: tools/xl/xl_info.c).
pub fn iommu_enabled(info: &BTreeMap<String, String>) -> Option<bool> {
    info.get("virt_caps")
        .map(|c| c.split_whitespace().any(|w| w == "hvm_directio"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &str =
        "Name                                        ID   Mem VCPUs\tState\tTime(s)   UUID                            Reason-Code\tSecurity Label\n";

    #[test]
    fn list_states() {
        let run = format!("{HDR}g1                                           5   256     2     -b----       0.6 3f0c1c5e-0000-0000-0000-000000000000        -                -\n");
        assert_eq!(parse_list_verbose(&run, 5), Some(DomainState::Alive));
        assert_eq!(parse_list_verbose(&run, 6), None);
        let off = format!("{HDR}g1  5   256     2     ---s--       0.6 3f0c1c5e-0000-0000-0000-000000000000        0                -\n");
        assert_eq!(
            parse_list_verbose(&off, 5),
            Some(DomainState::Shutdown(ShutdownReason::Poweroff))
        );
        let reboot = format!("{HDR}g1  5   256     2     ---sr-       0.6 3f0c1c5e-0000-0000-0000-000000000000        1                -\n");
        assert_eq!(
            parse_list_verbose(&reboot, 5),
            Some(DomainState::Shutdown(ShutdownReason::Reboot))
        );
        let crash = format!("{HDR}g1  5   256     2     ---sc-       0.6\n");
        assert_eq!(
            parse_list_verbose(&crash, 5),
            Some(DomainState::Shutdown(ShutdownReason::Crash))
        );
        let dying = format!("{HDR}(null)  5   0     2     -----d       0.6 3f0c1c5e-0000-0000-0000-000000000000        -                -\n");
        assert_eq!(parse_list_verbose(&dying, 5), Some(DomainState::Dying));
        // A guest named like its domid, with a memory size like it too.
        let odd = format!("{HDR}256  256   256     2     ---sr-       0.6 3f0c1c5e-0000-0000-0000-000000000000        1                -\n");
        assert_eq!(
            parse_list_verbose(&odd, 256),
            Some(DomainState::Shutdown(ShutdownReason::Reboot))
        );
    }

    #[test]
    fn info_and_iommu() {
        let i = parse_info(
            "host : rig\nxen_version : 4.17.7\nvirt_caps : pv hvm hvm_directio pv_directio hap\n",
        );
        assert_eq!(i["xen_version"], "4.17.7");
        assert_eq!(iommu_enabled(&i), Some(true));
        let i = parse_info("virt_caps              : pv hvm hap\n");
        assert_eq!(iommu_enabled(&i), Some(false));
    }
}
