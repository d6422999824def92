//! What the two wire-conformance tests (abi_wire.rs, abi_wire_passthrough/) share: building
//! their LD_PRELOAD interposer and C driver from `tests/c/`, and reading the dump the two
//! write (`CALL <label>` lines from the driver, each followed by the interposer's and the
//! driver's records for that call).
//!
//! Included by each of them as `mod wire_dump;` (with `mod cc;` next to it; from
//! abi_wire_passthrough/main.rs through `#[path]`); not a test of its own.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::cc;

/// The flags every C file of the wire tests is compiled with.
const CFLAGS: [&str; 3] = ["-std=gnu11", "-Wall", "-D__XEN_TOOLS__"];

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Build `tests/c/<name>.c` into `<dir>/lib<name>.so`, an LD_PRELOAD interposer; its path.
pub fn build_interposer(dir: &Path, name: &str, what: &str) -> PathBuf {
    let so = dir.join(format!("lib{name}.so"));
    let mut args: Vec<String> = CFLAGS.map(String::from).to_vec();
    args.extend(["-shared", "-fPIC", "-o"].map(String::from));
    args.extend([
        s(&so),
        s(&cc::c_dir().join(format!("{name}.c"))),
        "-ldl".into(),
    ]);
    cc::compile(what, &args);
    so
}

/// Build `tests/c/<name>.c` into the program `<dir>/<name>`, with the linker flags `ldflags`
/// and the libraries `libs` (then `-ldl`); its path.
pub fn build_driver(
    dir: &Path,
    name: &str,
    what: &str,
    ldflags: &[&str],
    libs: &[&str],
) -> PathBuf {
    let exe = dir.join(name);
    let mut args: Vec<String> = CFLAGS.map(String::from).to_vec();
    args.extend(ldflags.iter().map(|a| a.to_string()));
    args.extend([
        "-o".into(),
        s(&exe),
        s(&cc::c_dir().join(format!("{name}.c"))),
    ]);
    args.extend(libs.iter().map(|l| format!("-l{l}")));
    args.push("-ldl".into());
    cc::compile(what, &args);
    exe
}

/// One call of the driver: its label and the records that followed its `CALL` line.
#[derive(Debug)]
pub struct Call<E> {
    pub label: String,
    pub events: Vec<E>,
}

/// Split a dump into its calls. `event` turns each line after a `CALL` line (split at
/// spaces: `w`) into a record of the current call, or returns `None` when it filed the line
/// itself (into an earlier record of `call`).
pub fn parse_dump<E>(
    text: &str,
    mut event: impl FnMut(&mut Call<E>, &[&str], &str) -> Option<E>,
) -> Vec<Call<E>> {
    let mut calls: Vec<Call<E>> = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        if w[0] == "CALL" {
            calls.push(Call {
                label: w[1].to_string(),
                events: Vec::new(),
            });
            continue;
        }
        let call = calls
            .last_mut()
            .unwrap_or_else(|| panic!("dump line before the first CALL: {line:?}"));
        if let Some(e) = event(call, &w, line) {
            call.events.push(e);
        }
    }
    calls
}

/// A number of the dump: hex with `0x`, else decimal.
pub fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|_| panic!("bad number {s:?} in the dump"))
}

/// The bytes of a hex string of the dump.
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() & 1 == 0, "odd hex string {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Bytes as a hex string, for messages.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Fail, naming them after `what`, unless every one of `all` (an enum's variants) is among
/// `exercised`.
pub fn assert_all_exercised<S: Borrow<str> + Ord>(
    all: &[&str],
    exercised: &BTreeSet<S>,
    what: &str,
) {
    let missing: Vec<&&str> = all.iter().filter(|v| !exercised.contains(**v)).collect();
    assert!(missing.is_empty(), "{what}: {missing:?}");
}
