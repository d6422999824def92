//! Launch a simulated guest: xen-sim in-process with a fresh domain, the guest's config,
//! device-model processes against it; everything cleaned up (children killed) on drop.
//! Used by `xen-sim demo` and by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::{Sim, SimOptions};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A simulated guest with its device-model processes.
pub struct Harness {
    /// The hypervisor.
    pub sim: Sim,
    /// Domain id of the guest.
    pub domid: u16,
    /// Scratch directory (sockets, config).
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    keep: bool,
}

impl Harness {
    /// A sim with domain `domid` of `vcpus` vCPUs and 16 MiB of RAM; ioreqs time out after
    /// `timeout`.
    pub fn new(domid: u16, vcpus: u32, timeout: Duration) -> Harness {
        Self::try_new(domid, vcpus, timeout).expect("start xen-sim")
    }

    /// Like [`Harness::new`], returning errors instead of panicking.
    pub fn try_new(domid: u16, vcpus: u32, timeout: Duration) -> std::io::Result<Harness> {
        Self::with_domain(
            domid,
            &crate::DomainConfig {
                vcpus,
                ..Default::default()
            },
            timeout,
        )
    }

    /// A sim with domain `domid` created as `cfg` says (IOMMU context, on_poweroff, RAM).
    pub fn with_domain(
        domid: u16,
        cfg: &crate::DomainConfig,
        timeout: Duration,
    ) -> std::io::Result<Harness> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("pvh-dm-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let sim = Sim::start(SimOptions {
            socket: dir.join("sim.sock"),
            ioreq_timeout: timeout,
        })?;
        sim.create_domain_with(domid, cfg)?;
        Ok(Harness {
            sim,
            domid,
            dir,
            children: Vec::new(),
            keep: false,
        })
    }

    /// Write the guest config (transport sim, this sim's socket, control sockets in the
    /// scratch dir) plus `sections`; returns its path.
    pub fn write_config(&self, sections: &str) -> PathBuf {
        let p = self.dir.join("guest.toml");
        let text = format!(
            "domid = {}\ntransport = \"sim\"\n\n[sim]\nsocket = \"{}\"\n\n[control]\ndir = \"{}\"\n\n{sections}\n",
            self.domid,
            self.dir.join("sim.sock").display(),
            self.dir.join("control").display()
        );
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The control socket of process `name`.
    pub fn control_socket(&self, name: &str) -> PathBuf {
        self.dir
            .join("control")
            .join(self.domid.to_string())
            .join(format!("{name}.sock"))
    }

    /// Spawn a device-model process with `--config CONFIG` and `extra` arguments.
    pub fn spawn(&mut self, exe: &Path, config: &Path, extra: &[&str]) -> u32 {
        self.try_spawn(exe, config, extra)
            .unwrap_or_else(|e| panic!("spawn {}: {e}", exe.display()))
    }

    /// Like [`Harness::spawn`], returning errors instead of panicking.
    pub fn try_spawn(&mut self, exe: &Path, config: &Path, extra: &[&str]) -> std::io::Result<u32> {
        let child = Command::new(exe)
            .arg("--config")
            .arg(config)
            .args(extra)
            .env(
                "PVH_DM_LOG",
                std::env::var("PVH_DM_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()?;
        let pid = child.id();
        self.children.push((exe.display().to_string(), child));
        Ok(pid)
    }

    /// Keep the scratch directory after drop (for inspection).
    pub fn keep_dir(&mut self) {
        self.keep = true;
    }

    /// Wait until each named process answers `status` on its control socket (it is bound at
    /// the end of setup, so the process is then fully serving).
    pub fn wait_ready(&self, names: &[&str]) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        names.iter().all(|n| loop {
            let ok = ioreq_server::control::request(
                &self.control_socket(n),
                &serde_json::json!({"cmd": "status"}),
            )
            .is_ok_and(|r| r["ok"] == true);
            if ok {
                break true;
            }
            if std::time::Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_micros(200));
        })
    }

    /// Send SIGTERM to every child and wait for them; returns their exit codes.
    pub fn stop_all(&mut self) -> Vec<Option<i32>> {
        let mut codes = Vec::new();
        for (_, c) in &mut self.children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (_, c) in &mut self.children {
            codes.push(wait_timeout(c, Duration::from_secs(10)));
        }
        self.children.clear();
        codes
    }

    /// Kill child process `pid` with SIGKILL.
    pub fn kill(&mut self, pid: u32) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    /// Wait for child `pid` to exit on its own; its exit code (None if it did not exit in time
    /// or died by a signal).
    pub fn wait_exit(&mut self, pid: u32, timeout: Duration) -> Option<i32> {
        let i = self.children.iter().position(|(_, c)| c.id() == pid)?;
        let (_, mut c) = self.children.remove(i);
        let r = wait_timeout(&mut c, timeout);
        if r.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        r
    }
}

fn wait_timeout(c: &mut Child, t: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + t;
    loop {
        if let Ok(Some(st)) = c.try_wait() {
            return st.code();
        }
        if std::time::Instant::now() >= deadline {
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.sim.stop();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
