//! `gen-man OUTDIR`: write the manual pages of every installed binary and its subcommands into
//! OUTDIR, one file name per line on stdout. `scripts/install-man` runs it.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

/// Generate the project's manual pages (section 1) from the binaries' clap definitions.
#[derive(Parser)]
#[command(name = "gen-man", version)]
struct Args {
    /// Output directory (created if missing).
    out_dir: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for path in man::generate(&args.out_dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
