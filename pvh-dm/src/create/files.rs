//! The runtime files of `create`: the staging dir's tables, initrd and derived xl config, and
//! the clean-up of what earlier runs left (staging dirs of creates that died, a stale runtime
//! dir of an earlier domain with the same domid).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::dm;
use crate::plan::Plan;
use crate::runtime::{self, State};
use crate::xlcfg::Value;

/// Remove staging dirs (`.create-NAME-PID`) of create runs that died.
pub(super) fn clear_dead_staging(run: &Path) {
    let Ok(rd) = std::fs::read_dir(run) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = n.strip_prefix(".create-") else {
            continue;
        };
        let pid = rest.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| p != std::process::id() && !runtime::pid_alive(p)) {
            warn!(dir = %e.path().display(), "removing the staging dir of a create that died");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Write the tables, the initrd and the derived xl config into `dir`; returns the config.
pub(super) fn prepare_files(plan: &Plan, dir: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut text = plan.xl.text().to_string();
    if let Some(t) = &plan.tables {
        let acpi = dir.join("acpi");
        let files = t.write_dir(&acpi)?;
        let initrd = dir.join("initrd.cpio");
        let out = std::fs::File::create(&initrd)
            .with_context(|| format!("creating {}", initrd.display()))?;
        let mut w = crate::cpio::Writer::new(std::io::BufWriter::new(out));
        w.dir("kernel")?;
        w.dir("kernel/firmware")?;
        w.dir("kernel/firmware/acpi")?;
        for f in &files {
            let name = f.file_name().unwrap().to_string_lossy();
            let bytes = std::fs::read(f)?;
            w.file(&format!("kernel/firmware/acpi/{name}"), &bytes)?;
        }
        let (mut out, len) = w.finish()?;
        let ramdisk = plan.ramdisk.as_ref().expect("checked by the plan");
        let mut r = std::fs::File::open(ramdisk)
            .with_context(|| format!("opening ramdisk {}", ramdisk.display()))?;
        let n = std::io::copy(&mut r, &mut out).with_context(|| {
            format!(
                "copying ramdisk {} into {}",
                ramdisk.display(),
                initrd.display()
            )
        })?;
        out.flush()?;
        info!(tables = files.len(), cpio_bytes = len, ramdisk_bytes = n, initrd = %initrd.display(), "ACPI tables in front of the ramdisk");
        // xl reads the ramdisk at create time, from the staging dir.
        text = plan.xl.with_setting(
            "ramdisk",
            &Value::Str(initrd.to_string_lossy().into_owned()),
        );
    }
    let cfg = dir.join("xl.cfg");
    let header = format!(
        "# Derived by pvh-dm from {} ({}).\n",
        plan.xl_path.display(),
        if plan.tables.is_some() {
            "ramdisk: ACPI tables + the original ramdisk"
        } else {
            "unchanged: no ACPI table upgrade"
        }
    );
    std::fs::write(&cfg, header + &text).with_context(|| format!("writing {}", cfg.display()))?;
    Ok(cfg)
}

/// Stop the device models of a stale directory (a previous guest with this domid whose
/// launcher was killed) and remove it.
pub(super) fn clear_stale(dir: &Path, domid: u32, timeout: Duration) {
    if !dir.exists() {
        return;
    }
    if let Ok(st) = State::load(dir) {
        for e in dm::stop_recorded(dir, &st, timeout) {
            warn!(dm = %e.rec.name, pid = e.rec.pid, "stale device model of an earlier domain {domid}: {}", e.how);
        }
    }
    warn!(dir = %dir.display(), "removing a stale runtime dir of an earlier domain {domid}");
    let _ = std::fs::remove_dir_all(dir);
}
