//! Manual pages (section 1) of the project's installed binaries, generated with `clap_mangen`
//! from the clap definitions the binaries themselves parse (each crate's `cli` module): one
//! page per binary and one per visible subcommand (`pvh-dm.1`, `pvh-dm-create.1`, ...).
//!
//! `cargo run -p man --bin gen-man -- OUTDIR` writes them; `scripts/install-man` installs them
//! into `$PREFIX/share/man/man1`. The test binaries of the `tests` crate (`bench`,
//! `scratch-dm`) are not installed and get no page.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

/// Section of every page.
pub const SECTION: &str = "1";

/// What writing the pages can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating the directory or writing a page failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory or page.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The command of every installed binary, as the binary parses it.
pub fn commands() -> Vec<clap::Command> {
    vec![
        pvh_dm::cli::command(),
        pci_host_bridge::cli::command(),
        ioapic::cli::command(),
        pm_trap::cli::command(),
        pvh_acpi::cli::command(),
        xen_sim::cli::command(),
    ]
}

/// `cmd` and, recursively, its visible subcommands, built (global arguments propagated,
/// subcommands named `BINARY-SUB`), one entry per page. The `help` subcommand clap adds is
/// left out: `--help` is on every page.
pub fn pages_of(cmd: clap::Command) -> Vec<clap::Command> {
    fn walk(cmd: clap::Command, out: &mut Vec<clap::Command>) {
        let subs: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        out.push(cmd);
        for sub in subs {
            walk(sub, out);
        }
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out);
    out
}

/// The file name of `page` (one of [`pages_of`]'s): `NAME.1`.
pub fn file_name(page: &clap::Command) -> String {
    let name = page.get_display_name().unwrap_or_else(|| page.get_name());
    format!("{name}.{SECTION}")
}

/// Render one page as roff. `version` is the binary's, shown in the footer.
pub fn render(page: &clap::Command, version: &str) -> Vec<u8> {
    let binary = page
        .get_bin_name()
        .and_then(|b| b.split_whitespace().next())
        .unwrap_or_else(|| page.get_name());
    let mut out = Vec::new();
    clap_mangen::Man::new(page.clone())
        .section(SECTION)
        .source(format!("{binary} {version}"))
        .manual("pvh-dm manual")
        .render(&mut out)
        .expect("rendering into a Vec cannot fail");
    out
}

/// Write the page of every binary and subcommand into `dir` (created if missing); returns the
/// files written.
pub fn generate(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for cmd in commands() {
        let version = cmd.get_version().unwrap_or_default().to_string();
        for page in pages_of(cmd) {
            let path = dir.join(file_name(&page));
            std::fs::write(&path, render(&page, &version)).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            written.push(path);
        }
    }
    Ok(written)
}
