//! Building and running the small C programs of the ABI conformance tests (`tests/c/`) with
//! the system C compiler, against Debian's Xen headers and libraries.
//!
//! A missing compiler, header or library is a test failure whose message names the Debian
//! package to install (CI installs them); it never turns into a silent pass.
//!
//! Not a module of the `tests` library: the ABI tests include it with `#[path] mod cc;`
//! (tests/tests/abi_wire.rs, and abi_layout/main.rs and abi_wire_passthrough/main.rs one
//! directory further down).
#![forbid(unsafe_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `tests/c/`, where the C sources live.
pub fn c_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c")
}

/// A fresh scratch directory `<base>/<name>-<pid>`, removed again when dropped (also when
/// the test panics).
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Create it (removing a leftover of the same name first).
    pub fn new(base: &Path, name: &str) -> ScratchDir {
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        ScratchDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The C compiler: `$CC` if set, else `cc`.
fn compiler() -> String {
    std::env::var("CC")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cc".to_string())
}

/// Which Debian package provides a header or library named in a compiler/loader error.
fn package_for(missing: &str) -> &'static str {
    match missing {
        // Linux uapi headers (the kernel's include/uapi/xen/).
        "xen/privcmd.h" | "xen/evtchn.h" | "linux/types.h" | "linux/ioctl.h" | "asm/ioctl.h" => {
            "linux-libc-dev"
        }
        m if m.starts_with("xen/") || m.starts_with("xen") => "libxen-dev",
        m if m.contains("xendevicemodel") || m.contains("xencall") || m.contains("xentoolcore") => {
            "libxen-dev"
        }
        _ => "libc6-dev (or build-essential)",
    }
}

/// Names of missing headers/libraries found in compiler or loader output.
fn missing_items(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in stderr.lines() {
        // gcc/clang: "foo.c:3:10: fatal error: xen/xen.h: No such file or directory"
        //            "fatal error: 'xen/xen.h' file not found"
        if let Some(i) = line.find("fatal error: ") {
            let rest = &line[i + "fatal error: ".len()..];
            if rest.contains("No such file") || rest.contains("file not found") {
                let name = rest.split(": ").next().unwrap_or(rest);
                let name = name
                    .trim_end_matches(" file not found")
                    .trim_matches(|c| c == '\'' || c == '"');
                out.push(name.to_string());
            }
        }
        // ld: "cannot find -lxendevicemodel"
        if let Some(i) = line.find("cannot find -l") {
            out.push(format!(
                "lib{}",
                line[i + "cannot find -l".len()..]
                    .trim()
                    .trim_end_matches(':')
            ));
        }
        // ld.so: "error while loading shared libraries: libxendevicemodel.so.1: cannot open ..."
        if let Some(i) = line.find("error while loading shared libraries: ") {
            let rest = &line[i + "error while loading shared libraries: ".len()..];
            out.push(rest.split(':').next().unwrap_or(rest).to_string());
        }
    }
    out
}

fn install_hint(stderr: &str) -> String {
    let items = missing_items(stderr);
    if items.is_empty() {
        return String::new();
    }
    let mut pkgs: Vec<&str> = items.iter().map(|m| package_for(m)).collect();
    pkgs.dedup();
    format!(
        "\nmissing: {}\n=> install with: apt-get install -y {}",
        items.join(", "),
        pkgs.join(" ")
    )
}

/// Run the C compiler with `args`; panic with the compiler output and an apt hint on failure.
pub fn compile<S: AsRef<OsStr>>(what: &str, args: &[S]) {
    let cc = compiler();
    let out = Command::new(&cc).args(args).output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run the C compiler `{cc}`: {e}\n=> install with: apt-get install -y gcc libc6-dev \
             (the ABI tests also need libxen-dev and linux-libc-dev)"
        )
    });
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let cmdline: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        panic!(
            "{what}: `{cc} {}` failed ({}):\n{stderr}{}",
            cmdline.join(" "),
            out.status,
            install_hint(&stderr)
        );
    }
}

/// Run a built program; panic with its output (and an apt hint for a missing shared library)
/// unless it exits 0.
pub fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        panic!(
            "{what}: {cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{stderr}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            install_hint(&stderr)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_package() {
        let gcc = "abi_layout.c:27:10: fatal error: xen/xen.h: No such file or directory";
        assert_eq!(missing_items(gcc), ["xen/xen.h"]);
        assert!(install_hint(gcc).contains("apt-get install -y libxen-dev"));
        let clang = "x.c:1:10: fatal error: 'xen/privcmd.h' file not found";
        assert!(install_hint(clang).contains("linux-libc-dev"));
        let ld = "/usr/bin/ld: cannot find -lxendevicemodel: No such file or directory";
        assert!(install_hint(ld).contains("libxen-dev"));
    }
}
