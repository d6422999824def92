//! The undo of a failed `create` (step list in [`super`]): device models stopped and reaped,
//! `xl destroy`, runtime files removed, in reverse order; and the `setup_failed` record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dm::{self, RunningDm};
use crate::exit;
use crate::reap::Reaper;
use crate::runtime;
use crate::xl::Xl;

/// What has been done so far, to undo.
pub(super) struct Rollback<'a> {
    pub(super) xl: &'a Xl,
    pub(super) stop_timeout: Duration,
    pub(super) created_name: Option<String>,
    pub(super) domid: Option<u32>,
    pub(super) dms: Vec<RunningDm>,
    pub(super) dirs: Vec<PathBuf>,
    pub(super) extra_files: Vec<PathBuf>,
    /// Supervised: told [`crate::reap::DONE`] once the undo is finished.
    pub(super) reaper: Option<Reaper>,
}

impl Rollback<'_> {
    fn undo(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        if !self.dms.is_empty() {
            let r = dm::stop_all(&mut self.dms, self.stop_timeout);
            done.push(format!("device models stopped ({})", r.join(", ")));
            self.dms.clear();
        }
        let target = self
            .domid
            .map(|d| d.to_string())
            .or_else(|| self.created_name.clone());
        if let Some(t) = target {
            match self.xl.destroy(&t) {
                Ok(()) => done.push(format!("domain {t} destroyed")),
                Err(e) => done.push(format!("`xl destroy {t}` FAILED: {e}")),
            }
        }
        for f in self.extra_files.drain(..) {
            let _ = std::fs::remove_file(&f);
            // The device models' [control] dir/DOMID, if it is not ours and now empty.
            if let Some(d) = f.parent() {
                let _ = std::fs::remove_dir(d);
            }
        }
        for d in self.dirs.drain(..).rev() {
            if d.exists() {
                match std::fs::remove_dir_all(&d) {
                    Ok(()) => done.push(format!("{} removed", d.display())),
                    Err(e) => done.push(format!("removing {} FAILED: {e}", d.display())),
                }
            }
        }
        done
    }
}

/// Undo, say what failed and what was undone, record it in `RUN/ended/NAME.json`.
pub(super) fn setup_failed(rb: &mut Rollback<'_>, run: &Path, name: &str, what: &str) -> i32 {
    let domid = rb.domid;
    let undone = rb.undo();
    let undone_text = if undone.is_empty() {
        "nothing to undo".to_string()
    } else {
        undone.join("; ")
    };
    eprintln!("pvh-dm: {what}; undone: {undone_text}");
    runtime::record_end(
        run,
        name,
        &serde_json::json!({
            "name": name,
            "domid": domid,
            "exit_code": exit::SETUP_FAILED,
            "end": "setup_failed",
            "message": what,
            "undone": undone,
        }),
    );
    if let Some(r) = rb.reaper.take() {
        r.done();
    }
    exit::SETUP_FAILED
}
