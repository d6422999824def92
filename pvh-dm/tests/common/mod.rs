//! Fixtures for pvh-dm's integration tests: a temp dir with a fake `xl` that records its
//! arguments, a fake sysfs tree, a fake Linux bzImage and ramdisk, device-model symlinks to
//! the `fake-dm` example, and helpers to run `pvh-dm`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A directory removed on drop.
///
/// pci-host-bridge/tests/common has its own, on purpose: the two crates share no test-only
/// crate, and a scratch directory is not worth making one for.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("pvh-dm-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake xl: every call appends one line `ARGS | PVH_DM_IOMMU=.. LD_PRELOAD=..` to
/// `$DIR/xl.log`. Behaviour from files in `$DIR/xl/`: `fail-create`, `fail-unpause`;
/// `domain` exists while the domain does; `state` holds the xl list state column and
/// reason code (default `-b---- -`); `create` copies the config's ramdisk to
/// `$DIR/xl/initrd-seen` (no `shutdown`: pvh-dm writes control/shutdown to xenstore, see
/// [`fake_xenstored`]); `destroy` and `pause` also
/// append `xl destroy|pause DOMID` to `$DIR/dm.log`, where the fake device models log their
/// SIGTERMs, so that a test sees the order; every call appends the signal mask it was started
/// with (`SigBlk:` of /proc/self/status) to `$DIR/xl-sigmask`.
pub const FAKE_XL: &str = r#"#!/bin/bash
D="$(dirname "$0")/xl"
echo "$* | PVH_DM_IOMMU=${PVH_DM_IOMMU:-} LD_PRELOAD=${LD_PRELOAD:-}" >> "$(dirname "$0")/xl.log"
grep SigBlk /proc/self/status >> "$(dirname "$0")/xl-sigmask"
case "$1" in
  create)
    [ -e "$D/fail-create" ] && { echo "libxl: error: fake create failure" >&2; exit 1; }
    cfg="${@: -1}"
    echo "Parsing config from $cfg" >&2
    [ "${PVH_DM_IOMMU:-}" = 1 ] && [ ! -e "$D/no-cdf" ] && echo "cdf-iommu: PVH_DM_IOMMU=1: added XEN_DOMCTL_CDF_iommu, createdomain flags 0x17 iommu_opts 0" >&2
    rd=$(sed -n 's/^ramdisk = "\(.*\)"$/\1/p' "$cfg")
    [ -n "$rd" ] && cp "$rd" "$D/initrd-seen"
    cp "$cfg" "$D/cfg-seen"
    touch "$D/domain"; exit 0 ;;
  domid) [ -e "$D/domain" ] && { echo 7; exit 0; }; echo "fake: no domain $2" >&2; exit 1 ;;
  unpause)
    [ -e "$D/fail-unpause" ] && { echo "libxl: error: fake unpause failure" >&2; exit 1; }
    exit 0 ;;
  destroy) rm -f "$D/domain"; echo "xl destroy $2" >> "$(dirname "$0")/dm.log"; exit 0 ;;
  pause) echo "xl pause $2" >> "$(dirname "$0")/dm.log"; exit 0 ;;
  list)
    id="${@: -1}"
    [ -e "$D/domain" ] || { echo "Error: Domain '$id' does not exist." >&2; exit 1; }
    st=$(cat "$D/state" 2>/dev/null || echo "-b---- -")
    echo "Name                                        ID   Mem VCPUs	State	Time(s)   UUID                            Reason-Code	Security Label"
    echo "guest1                                       $id   256     2     ${st% *}       0.6 3f0c1c5e-0000-0000-0000-000000000000 ${st#* }                -"
    exit 0 ;;
  info) echo "xen_version            : 4.17.7"; echo "virt_caps              : pv hvm hvm_directio pv_directio hap"; exit 0 ;;
  *) echo "fake xl: unknown $1" >&2; exit 1 ;;
esac
"#;

pub struct Rig {
    pub tmp: TempDir,
}

pub const XL_CFG: &str = r#"# a guest for pvh-dm's tests
name = "guest1"
type = "pvh"
kernel = "KERNEL"
ramdisk = "RAMDISK"
cmdline = "console=hvc0"
memory = 256
vcpus = 2
on_poweroff = "destroy"
"#;

pub const TOML_BASE: &str = r#"domid = 0
transport = "xen"
[control]
dir = "RUNDIR"
[pm_trap]
mode = "guest"
"#;

fn fake_bzimage() -> Vec<u8> {
    let mut b = vec![0u8; 0x400];
    b[0x1FE] = 0x55;
    b[0x1FF] = 0xAA;
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b
}

impl Rig {
    pub fn new(tag: &str) -> Rig {
        let tmp = TempDir::new(tag);
        let r = Rig { tmp };
        let d = r.dir();
        std::fs::write(d.join("xl-bin"), FAKE_XL).unwrap();
        std::fs::set_permissions(d.join("xl-bin"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir_all(d.join("xl")).unwrap();
        std::fs::create_dir_all(d.join("run")).unwrap();
        std::fs::create_dir_all(d.join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(d.join("sys/bus/pci/drivers/nvme")).unwrap();
        std::fs::write(d.join("vmlinuz"), fake_bzimage()).unwrap();
        std::fs::write(d.join("base.cpio"), b"ORIGINAL-RAMDISK-BYTES").unwrap();
        std::fs::write(d.join("cdf-iommu.so"), b"").unwrap();
        // Device models: symlinks to the fake-dm example.
        let bins = d.join("bin");
        std::fs::create_dir_all(&bins).unwrap();
        let fake = fake_dm();
        for n in ["pm-trap", "ioapic", "pci-host-bridge"] {
            std::os::unix::fs::symlink(&fake, bins.join(n)).unwrap();
        }
        r.write_xl(XL_CFG);
        r.write_toml("");
        r
    }

    pub fn dir(&self) -> &Path {
        &self.tmp.0
    }

    pub fn xl_cfg(&self) -> PathBuf {
        self.dir().join("guest1.cfg")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir().join("run")
    }

    pub fn write_xl(&self, text: &str) {
        let t = text
            .replace("KERNEL", &self.dir().join("vmlinuz").to_string_lossy())
            .replace("RAMDISK", &self.dir().join("base.cpio").to_string_lossy());
        std::fs::write(self.xl_cfg(), t).unwrap();
    }

    /// guest1.toml = the base ([control] in the rig's run dir, [pm_trap]) + `extra`.
    pub fn write_toml(&self, extra: &str) {
        let t = TOML_BASE.replace("RUNDIR", &self.run_dir().to_string_lossy()) + extra;
        std::fs::write(self.dir().join("guest1.toml"), t).unwrap();
    }

    /// A host function in the fake sysfs, bound to `driver` if given.
    pub fn add_function(&self, addr: &str, driver: Option<&str>) {
        let d = self.dir().join("sys/bus/pci/devices").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), "0x1b36\n").unwrap();
        std::fs::write(d.join("device"), "0x0010\n").unwrap();
        std::fs::write(d.join("class"), "0x010802\n").unwrap();
        if let Some(drv) = driver {
            let dd = self.dir().join("sys/bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&dd).unwrap();
            std::os::unix::fs::symlink(&dd, d.join("driver")).unwrap();
        }
    }

    pub fn xl_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("xl.log")).unwrap_or_default()
    }

    pub fn dm_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("dm.log")).unwrap_or_default()
    }

    /// What pvh-dm wrote to the fake xenstored ("PATH VALUE" lines).
    pub fn xs_writes(&self) -> String {
        std::fs::read_to_string(self.dir().join("xl").join("xs-writes")).unwrap_or_default()
    }

    pub fn touch(&self, name: &str) {
        std::fs::write(self.dir().join("xl").join(name), b"").unwrap();
    }

    pub fn set_state(&self, s: &str) {
        std::fs::write(self.dir().join("xl/state"), s).unwrap();
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvh-dm"));
        c.arg("--run-dir")
            .arg(self.run_dir())
            .arg("--xl")
            .arg(self.dir().join("xl-bin"))
            .arg("--sysfs")
            .arg(self.dir().join("sys"))
            .args(args)
            .env("FAKE_DM_LOG", self.dir().join("dm.log"))
            .env("PVH_DM_BIN_DIR", self.dir().join("bin"))
            .env_remove("NOTIFY_SOCKET")
            .env_remove("PVH_DM_RUN_DIR")
            .env_remove("PVH_DM_XL")
            .env("PVH_DM_LOG", "info");
        c
    }

    /// `pvh-dm create guest1.cfg ARGS` with the fake wrapper path.
    pub fn create_cmd(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(&["create"]);
        c.arg(self.xl_cfg())
            .arg("--iommu-wrapper")
            .arg(self.dir().join("cdf-iommu.so"))
            .arg("--dm-timeout")
            .arg("10")
            .arg("--dm-stop-timeout")
            .arg("3")
            .args(args);
        c
    }

    pub fn create(&self, args: &[&str]) -> Output {
        self.create_cmd(args).output().unwrap()
    }

    /// Names in the run dir (without `ended/`, the outcome records).
    pub fn run_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.run_dir())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "ended")
            .collect();
        v.sort();
        v
    }
}

/// The fake-dm example binary (built by `cargo test` next to the test binaries).
pub fn fake_dm() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_pvh-dm"));
    let p = exe.parent().unwrap().join("examples/fake-dm");
    assert!(
        p.exists(),
        "{} not built (cargo test builds examples)",
        p.display()
    );
    p
}

/// pids in the fake-dm log lines `NAME start DOMID pid=N`.
pub fn started_pids(log: &str) -> Vec<u32> {
    log.lines()
        .filter(|l| l.contains(" start "))
        .filter_map(|l| l.rsplit("pid=").next()?.trim().parse().ok())
        .collect()
}

/// The device models in the order the fake-dm log says they got SIGTERM.
pub fn sigterm_order(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("sigterm"))
        .map(|l| l.split(' ').next().unwrap())
        .collect()
}

pub fn alive(pid: u32) -> bool {
    // A zombie has an empty cmdline; a reaped process has no /proc entry.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

// ---- a fake xenstored ---------------------------------------------------------------------

fn read_msg(s: &mut UnixStream) -> Option<(u32, u32, Vec<u8>)> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut p = vec![0u8; w(12) as usize];
    s.read_exact(&mut p).ok()?;
    Some((w(0), w(4), p))
}

fn write_msg(s: &mut UnixStream, ty: u32, req: u32, p: &[u8]) {
    let mut b = Vec::new();
    for v in [ty, req, 0, p.len() as u32] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    b.extend_from_slice(p);
    let _ = s.write_all(&b);
}

/// A fake xenstored on a Unix socket: answers each XS_WATCH with OK plus the initial event
/// (reported on `watched` as "PATH TOKEN"), each XS_READ with an empty value (every path
/// exists: the guest's /local/domain/N directory stays), each XS_WRITE with OK (appended to
/// `$DIR/xl/xs-writes` as "PATH VALUE"; a write of control/shutdown also does what the fake
/// xl's `shutdown` does: touch `shutdown-requested`, and with `obey-shutdown` set the state to
/// shut down), and sends one more `@releaseDomain` event per message on `fire`.
pub struct FakeXenstored {
    pub path: PathBuf,
    pub fire: mpsc::Sender<()>,
    pub watched: mpsc::Receiver<String>,
}

pub fn fake_xenstored(dir: &Path) -> FakeXenstored {
    let path = dir.join("xenstored.sock");
    let l = UnixListener::bind(&path).unwrap();
    let (fire, fire_rx) = mpsc::channel::<()>();
    let (w_tx, watched) = mpsc::channel::<String>();
    let xl_dir = dir.join("xl");
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        let writer = std::sync::Arc::new(std::sync::Mutex::new(s.try_clone().unwrap()));
        let release = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (w2, rel2) = (writer.clone(), release.clone());
        let mut r = s;
        std::thread::spawn(move || {
            while let Some((ty, req, p)) = read_msg(&mut r) {
                let parts: Vec<String> = p
                    .split(|&b| b == 0)
                    .map(|x| String::from_utf8_lossy(x).into_owned())
                    .collect();
                let mut w = w2.lock().unwrap();
                match ty {
                    4 => {
                        // XS_WATCH: OK, then the event every watch fires at registration.
                        let (wpath, token) = (parts[0].clone(), parts[1].clone());
                        let _ = w_tx.send(format!("{wpath} {token}"));
                        write_msg(&mut w, 4, req, b"OK\0");
                        write_msg(&mut w, 15, 0, format!("{wpath}\0{token}\0").as_bytes());
                        if wpath == "@releaseDomain" {
                            rel2.lock().unwrap().push(token);
                        }
                    }
                    2 => write_msg(&mut w, 2, req, b""), // XS_READ: exists, empty
                    11 => {
                        // XS_WRITE: "path\0value"
                        let value = parts[1..].join("\0");
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(xl_dir.join("xs-writes"))
                            .unwrap();
                        let _ = writeln!(f, "{} {value}", parts[0]);
                        if parts[0].ends_with("/control/shutdown") {
                            let _ = std::fs::write(xl_dir.join("shutdown-requested"), b"");
                            if xl_dir.join("obey-shutdown").exists() {
                                let _ = std::fs::write(xl_dir.join("state"), b"---s-- 0\n");
                            }
                        }
                        write_msg(&mut w, 11, req, b"OK\0");
                    }
                    _ => write_msg(&mut w, 16, req, b"EINVAL\0"),
                }
            }
        });
        while fire_rx.recv().is_ok() {
            let tokens = release.lock().unwrap().clone();
            let mut w = writer.lock().unwrap();
            for t in tokens {
                write_msg(&mut w, 15, 0, format!("@releaseDomain\0{t}\0").as_bytes());
            }
        }
    });
    FakeXenstored {
        path,
        fire,
        watched,
    }
}

/// Read the first stdout line of a child (the domid), with a timeout.
pub fn first_line(child: &mut Child, timeout: Duration) -> Option<String> {
    let out = child.stdout.take()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = std::io::BufReader::new(out);
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut r, &mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(timeout).ok().map(|l| l.trim().to_string())
}

/// Wait for a child with a timeout (killing it if it overstays).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

pub fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

/// `RUN/ended/NAME.json`.
pub fn ended(r: &Rig, name: &str) -> serde_json::Value {
    let p = r.run_dir().join("ended").join(format!("{name}.json"));
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}
