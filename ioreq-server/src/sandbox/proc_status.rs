//! Reading `/proc/PID/status`: the fields the sandbox is judged by (and the address space in
//! use when the rlimits are set).

/// The fields of `/proc/PID/status` the sandbox is judged by.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProcStatus {
    /// Effective uid (second field of `Uid:`).
    pub uid: Option<u32>,
    /// `NoNewPrivs:`.
    pub no_new_privs: Option<u32>,
    /// `Seccomp:` (0 none, 1 strict, 2 filter).
    pub seccomp: Option<u32>,
    /// `CapEff:`.
    pub cap_eff: Option<u64>,
    /// `VmSize:` in KiB.
    #[serde(skip)]
    pub vm_size_kib: Option<u64>,
}

impl ProcStatus {
    /// Parse the text of a `/proc/PID/status` file.
    pub fn parse(text: &str) -> ProcStatus {
        let mut s = ProcStatus::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            let mut f = v.split_whitespace();
            match k {
                "Uid" => s.uid = f.nth(1).and_then(|x| x.parse().ok()),
                "NoNewPrivs" => s.no_new_privs = f.next().and_then(|x| x.parse().ok()),
                "Seccomp" => s.seccomp = f.next().and_then(|x| x.parse().ok()),
                "CapEff" => s.cap_eff = f.next().and_then(|x| u64::from_str_radix(x, 16).ok()),
                "VmSize" => s.vm_size_kib = f.next().and_then(|x| x.parse().ok()),
                _ => {}
            }
        }
        s
    }

    /// Read `/proc/PID/status`.
    pub fn read(pid: u32) -> std::io::Result<ProcStatus> {
        Ok(Self::parse(&std::fs::read_to_string(format!(
            "/proc/{pid}/status"
        ))?))
    }
}
