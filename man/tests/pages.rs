//! Every installed binary and subcommand gets a page, and each page is roff that names its
//! command and documents each of its options. What to expect is read off the clap commands the
//! binaries parse, not listed here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("man-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// roff shows a `-` typed as `\-`.
fn roff(s: &str) -> String {
    s.replace('-', "\\-")
}

/// (page name, command) for a built command and its visible subcommands, named
/// `BINARY-SUB` after the path of names; clap's own `help` subcommand has no page.
fn expected_pages(name: String, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
    out.push((name.clone(), cmd.clone()));
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        expected_pages(format!("{name}-{}", sub.get_name()), sub, out);
    }
}

fn all_expected() -> Vec<(String, clap::Command)> {
    let mut out = Vec::new();
    for mut cmd in man::commands() {
        cmd.build();
        expected_pages(cmd.get_name().to_string(), &cmd, &mut out);
    }
    out
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn check_page(dir: &Path, name: &str, cmd: &clap::Command, top_level: bool) {
    let path = dir.join(format!("{name}.1"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}.1: {e}"));
    assert!(!text.trim().is_empty(), "{name}.1 is empty");
    // roff: requests at line starts, a title line naming the page and its section.
    assert!(
        text.starts_with('.'),
        "{name}.1 does not start with a request"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!(".TH {name} 1 "))),
        "{name}.1 has no .TH line for {name}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS"] {
        assert!(text.contains(section), "{name}.1 lacks {section}");
    }
    assert!(
        text.contains(&format!(".SH NAME\n{} \\- ", roff(name))),
        "{name}.1 does not name {name}"
    );
    if top_level {
        let version = cmd.get_version().expect("every binary has --version");
        assert!(text.contains(version), "{name}.1 lacks the version");
    }
    for arg in cmd.get_arguments() {
        let shown: Vec<String> = match (arg.get_long(), arg.get_short()) {
            (None, None) => {
                let value = arg
                    .get_value_names()
                    .and_then(|v| v.first().map(|n| n.to_string()))
                    .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
                vec![format!("\\fI{}\\fR", roff(&value))]
            }
            (long, short) => long
                .map(|l| format!("\\fB\\-\\-{}\\fR", roff(l)))
                .into_iter()
                .chain(short.map(|s| format!("\\fB\\-{s}\\fR")))
                .collect(),
        };
        for s in shown {
            if arg.is_hide_set() {
                assert!(!text.contains(&s), "{name}.1 shows the hidden {s}");
            } else {
                assert!(text.contains(&s), "{name}.1 lacks {s}");
            }
        }
    }
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            let reference = format!("{}(1)", roff(&format!("{name}-{}", sub.get_name())));
            assert!(text.contains(&reference), "{name}.1 lacks {reference}");
        }
    }
}

#[test]
fn every_binary_and_subcommand_has_a_page_with_its_options() {
    let t = TempDir::new("lib");
    let written = man::generate(&t.0).unwrap();
    let expected = all_expected();
    let names: BTreeSet<String> = expected.iter().map(|(n, _)| format!("{n}.1")).collect();
    assert_eq!(listing(&t.0), names);
    assert_eq!(written.len(), names.len());
    let tops: BTreeSet<String> = man::commands()
        .iter()
        .map(|c| c.get_name().to_string())
        .collect();
    // Each binary with subcommands gets pages for them too.
    assert!(expected.len() > tops.len());
    for (name, cmd) in &expected {
        check_page(&t.0, name, cmd, tops.contains(name));
    }
}

#[test]
fn gen_man_writes_the_pages_it_lists() {
    let t = TempDir::new("bin");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gen-man"))
        .arg(&t.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: BTreeSet<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            Path::new(l)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(listed, listing(&t.0));
    let expected: BTreeSet<String> = all_expected()
        .into_iter()
        .map(|(n, _)| format!("{n}.1"))
        .collect();
    assert_eq!(listed, expected);
}
