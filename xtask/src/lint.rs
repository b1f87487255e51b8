//! `cargo xtask lint`: rustfmt, clippy on the workspace, clippy on the eBPF crate for the BPF
//! target (it is not a default member and only builds there), as aya does, and the module
//! graph check ([`crate::modgraph`]: no import cycles, no edges up a declared layer order).

use anyhow::{bail, Result};

use crate::{modgraph, setup, util};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print every crate's module graphs (each edge with the first reference that makes it)
    /// and run only the module-graph check.
    #[arg(long)]
    pub graph: bool,
}

/// The cargo steps, by name.
const CARGO_STEPS: [(&str, &[&str]); 3] = [
    ("rustfmt", &["fmt", "--all", "--", "--check"]),
    // Host members only, as util::HOST_WORKSPACE explains.
    (
        "clippy (workspace)",
        &[
            "clippy",
            "--workspace",
            "--exclude",
            "probe-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    ),
    (
        "clippy (probe-ebpf, bpfel-unknown-none)",
        &[
            "+nightly",
            "clippy",
            "-p",
            "probe-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
    ),
];

const MODULES_STEP: &str = "module graph (import cycles, layer order)";

pub fn run(args: &Args) -> Result<()> {
    if args.graph {
        return match modules(true) {
            Ok(()) => Ok(()),
            Err(e) => bail!("lint: {MODULES_STEP}: {e:#}"),
        };
    }
    setup::for_build()?;
    // Run every step so one report shows everything to fix.
    let mut failed = Vec::new();
    for (name, args) in CARGO_STEPS {
        println!("lint: {name}");
        if let Err(e) = util::run(util::cargo().args(args)) {
            eprintln!("lint: {name} failed: {e:#}");
            failed.push(name);
        }
    }
    println!("lint: {MODULES_STEP}");
    if let Err(e) = modules(false) {
        eprintln!("lint: {MODULES_STEP} failed: {e:#}");
        failed.push(MODULES_STEP);
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("lint: all clean");
    Ok(())
}

/// The module-graph check over [`modgraph::CRATES`]; `print` adds every graph's edges.
fn modules(print: bool) -> Result<()> {
    let mut dirty = Vec::new();
    for spec in modgraph::CRATES {
        let findings = modgraph::check_dir(&util::repo_root(), spec)?;
        if print {
            modgraph::print_graphs(&findings);
        }
        if !modgraph::report(&findings) {
            dirty.push(spec.dir);
        }
    }
    if !dirty.is_empty() {
        bail!("cycles or upward edges in {}", dirty.join(", "));
    }
    Ok(())
}
