//! `status`, `shutdown`, `destroy`, `install-unit`: acting on the guests recorded in the
//! runtime directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::dm;
use crate::exit;
use crate::runtime::{self, State};
use crate::xl::{DomainState, Xl};

/// The unit file, with `@PVH_DM@` for the binary's path.
pub const UNIT: &str = include_str!("../systemd/pvh-dm@.service");

/// Whether `pid` is a live pvh-dm process (not a recycled pid).
fn supervisor_alive(pid: Option<u32>) -> Option<u32> {
    let pid = pid?;
    if !runtime::pid_alive(pid) {
        return None;
    }
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let a0 = cmd.split(|&b| b == 0).next()?;
    let a0 = String::from_utf8_lossy(a0);
    Path::new(a0.as_ref())
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("pvh-dm"))
        .then_some(pid)
}

/// Find the guest `target` names: a domid, an xl config path, or a guest name.
fn resolve(run: &Path, target: &str) -> Result<(PathBuf, State), String> {
    let all = runtime::list(run);
    let found = if let Ok(d) = target.parse::<u32>() {
        all.into_iter()
            .find(|(_, s)| s.as_ref().is_ok_and(|s| s.domid == d))
    } else if target.contains('/') || target.ends_with(".cfg") {
        let want = std::fs::canonicalize(target).unwrap_or_else(|_| PathBuf::from(target));
        all.into_iter()
            .find(|(_, s)| s.as_ref().is_ok_and(|s| s.xl_config == want))
    } else {
        all.into_iter()
            .find(|(_, s)| s.as_ref().is_ok_and(|s| s.name == target))
    };
    match found {
        Some((dir, Ok(st))) => Ok((dir, st)),
        _ => Err(format!(
            "{target}: not a guest pvh-dm runs (no matching {}/DOMID/state.json)",
            run.display()
        )),
    }
}

fn dm_summary(v: &serde_json::Value) -> String {
    let s = &v["status"];
    let mut out = format!("uptime {:.0} s", s["uptime_s"].as_f64().unwrap_or(0.0));
    if let Some(stats) = s.get("stats") {
        if let Some(t) = stats.get("ioreqs_by_type") {
            out.push_str(&format!(", ioreqs {t}"));
        }
    }
    out
}

/// `pvh-dm status [DOMID] [--json]`.
pub fn status(run: &Path, domid: Option<u32>, json: bool) -> i32 {
    let mut rows = Vec::new();
    let mut human = String::new();
    for (dir, st) in runtime::list(run) {
        let st = match st {
            Ok(s) => s,
            Err(e) => {
                human.push_str(&format!("{}: unreadable state: {e}\n", dir.display()));
                continue;
            }
        };
        if domid.is_some_and(|d| d != st.domid) {
            continue;
        }
        let sup = supervisor_alive(st.supervisor);
        let sup_text = match (st.supervisor, sup) {
            (None, _) => "detached (no supervisor)".to_string(),
            (Some(p), Some(_)) => format!("supervisor pid {p}"),
            (Some(p), None) => format!(
                "supervisor pid {p} GONE (orphaned: `pvh-dm destroy {}` cleans up)",
                st.domid
            ),
        };
        human.push_str(&format!(
            "domid {} {} {} {}{}\n",
            st.domid,
            st.name,
            serde_json::to_value(st.phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            sup_text,
            if st.devices.is_empty() {
                String::new()
            } else {
                format!(", devices {}", st.devices.join(" "))
            }
        ));
        let mut dms = Vec::new();
        for rec in &st.device_models {
            let alive = runtime::pid_alive(rec.pid) && runtime::is_same_dm(rec, st.domid);
            let answer = if alive {
                dm::status(&rec.socket)
            } else {
                Err("not running".into())
            };
            human.push_str(&format!(
                "  {:<16} pid {:<7} {}\n",
                rec.name,
                rec.pid,
                match &answer {
                    Ok(v) => dm_summary(v),
                    Err(e) => format!("NO ANSWER: {e}"),
                }
            ));
            dms.push(serde_json::json!({
                "record": rec,
                "running": alive,
                "status": answer.as_ref().ok().map(|v| v["status"].clone()),
                "error": answer.err(),
            }));
        }
        rows.push(serde_json::json!({
            "state": st,
            "supervisor_alive": sup.is_some(),
            "device_models": dms,
        }));
    }
    if json {
        println!("{}", serde_json::Value::Array(rows.clone()));
    } else if human.is_empty() {
        println!("no guests in {}", run.display());
    } else {
        print!("{human}");
    }
    if let (Some(d), true) = (domid, rows.is_empty()) {
        eprintln!("pvh-dm: domid {d} is not a guest pvh-dm runs");
        return exit::ERROR;
    }
    exit::OK
}

fn wait_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(every);
    }
    f()
}

const OFTEN: Duration = Duration::from_millis(100);
/// Between `xl list` calls (each one a process; slow under emulation).
const XL_POLL: Duration = Duration::from_millis(500);

/// Stop what an unsupervised guest left: its device models (reverse order), the bridge's
/// functions if it died without handing them back (the domain is destroyed by now), its dir.
/// What the supervisor would do at the end, for a guest nobody supervises: pause the domain
/// (nothing it does then meets a half-stopped device model), stop the device models, then
/// destroy it — in this order because on the rig `xl destroy` of a PVH guest with a VF did not
/// return while its device models still ran (see create.rs, `Supervisor::end`) — and reclaim
/// the devices of a bridge that died without handing them back. Returns whether the domain
/// is gone (or was not to be destroyed).
fn cleanup_unsupervised(dir: &Path, st: &State, xl: &Xl) -> bool {
    let alive = !matches!(xl.state(st.domid), Ok(DomainState::Gone));
    if alive {
        if let Err(e) = xl.pause(st.domid) {
            eprintln!("pvh-dm: {e}");
        }
    }
    let ends = dm::stop_recorded(dir, st, Duration::from_secs(10));
    for e in &ends {
        eprintln!("pvh-dm: {} (pid {}): {}", e.rec.name, e.rec.pid, e.how);
    }
    let mut gone = true;
    if alive {
        match xl.destroy(&st.domid.to_string()) {
            Ok(()) => eprintln!("pvh-dm: domain {} ({}) destroyed", st.domid, st.name),
            Err(e) => {
                gone = matches!(xl.state(st.domid), Ok(DomainState::Gone));
                if gone {
                    eprintln!("pvh-dm: domain {} was already gone", st.domid);
                } else {
                    eprintln!("pvh-dm: {e}");
                }
            }
        }
    }
    if dm::bridge_needs_reclaim(st, &ends) {
        let devices = st.devices.join(", ");
        match dm::reclaim(st) {
            Some(Ok(())) => eprintln!(
                "pvh-dm: pci-host-bridge had died without handing back {devices}: reclaimed"
            ),
            Some(Err(e)) => eprintln!("pvh-dm: reclaiming {devices}: {e}"),
            None => {}
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("pvh-dm: removing {}: {e}", dir.display());
    }
    gone
}

/// `pvh-dm destroy TARGET`.
pub fn destroy(run: &Path, xl: &Xl, target: &str) -> i32 {
    let (dir, st) = match resolve(run, target) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("pvh-dm: {e}");
            return exit::ERROR;
        }
    };
    let mut rc = exit::OK;
    if let Some(pid) = supervisor_alive(st.supervisor) {
        // libxl removes the domain's xenstore directory first: the supervisor sees that,
        // stops the device models, and the destruction completes.
        match xl.destroy(&st.domid.to_string()) {
            Ok(()) => eprintln!("pvh-dm: domain {} ({}) destroyed", st.domid, st.name),
            Err(e) => {
                if matches!(xl.state(st.domid), Ok(DomainState::Gone)) {
                    eprintln!("pvh-dm: domain {} was already gone", st.domid);
                } else {
                    eprintln!("pvh-dm: {e}");
                    rc = exit::ERROR;
                }
            }
        }
        if wait_until(Duration::from_secs(60), OFTEN, || !dir.exists()) {
            eprintln!("pvh-dm: supervisor {pid} stopped the device models");
            return rc;
        }
        eprintln!("pvh-dm: supervisor {pid} did not clean up within 60 s: doing it here");
    }
    if !cleanup_unsupervised(&dir, &st, xl) {
        rc = exit::ERROR;
    }
    rc
}

/// `pvh-dm shutdown TARGET`.
pub fn shutdown(run: &Path, xl: &Xl, target: &str, timeout: Duration) -> i32 {
    let (dir, st) = match resolve(run, target) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("pvh-dm: {e}");
            return exit::ERROR;
        }
    };
    if let Some(pid) = supervisor_alive(st.supervisor) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        eprintln!(
            "pvh-dm: asked supervisor {pid} of {} (domid {}) to shut the guest down",
            st.name, st.domid
        );
        // Its own --shutdown-timeout applies; allow for it and the device models' stop.
        if wait_until(timeout + Duration::from_secs(30), OFTEN, || {
            supervisor_alive(Some(pid)).is_none()
        }) {
            return exit::OK;
        }
        eprintln!("pvh-dm: supervisor {pid} still runs: destroying");
        return destroy(run, xl, target);
    }
    crate::dm::press_power_button(&st.device_models);
    if let Err(e) =
        crate::xenstore::Xenstore::open(None).and_then(|mut xs| xs.request_poweroff(st.domid))
    {
        eprintln!(
            "pvh-dm: cannot write domain {}'s control/shutdown ({e}): destroying",
            st.domid
        );
        return destroy(run, xl, target);
    }
    let down = wait_until(timeout, XL_POLL, || {
        matches!(
            xl.state(st.domid),
            Ok(DomainState::Gone | DomainState::Shutdown(_) | DomainState::Dying)
        )
    });
    if !down {
        eprintln!(
            "pvh-dm: {} did not shut down within {} s: destroying",
            st.name,
            timeout.as_secs()
        );
    }
    cleanup_unsupervised(&dir, &st, xl);
    if down {
        exit::OK
    } else {
        exit::FORCED
    }
}

/// `pvh-dm install-unit`.
pub fn install_unit(dir: &Path, print: bool) -> i32 {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .unwrap_or_else(|| PathBuf::from("/usr/local/sbin/pvh-dm"));
    let unit = UNIT.replace("@PVH_DM@", &exe.to_string_lossy());
    if print {
        print!("{unit}");
        return exit::OK;
    }
    let path = dir.join("pvh-dm@.service");
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, unit)) {
        eprintln!("pvh-dm: writing {}: {e}", path.display());
        return exit::ERROR;
    }
    println!(
        "wrote {}; now: systemctl daemon-reload && systemctl start pvh-dm@GUEST (reads /etc/xen/GUEST.cfg and /etc/xen/GUEST.toml)",
        path.display()
    );
    exit::OK
}
