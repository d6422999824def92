//! The launcher lives in xen-sim (the demo uses it too); tests add where cargo put the
//! binaries.

use std::path::PathBuf;

pub use xen_sim::launch::Harness;

/// Where cargo put the workspace's binaries (next to the test executable's `deps/`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        p.display()
    );
    p
}
