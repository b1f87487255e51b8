//! `cargo xtask lint`: rustfmt, clippy on the workspace, and clippy on the eBPF crate for the BPF
//! target (it is not a default member and only builds there), as aya does.

use anyhow::{bail, Result};

use crate::{setup, util};

pub fn run() -> Result<()> {
    setup::for_build()?;
    let checks: [(&str, &[&str]); 3] = [
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
    // Run every check so one report shows everything to fix.
    let mut failed = Vec::new();
    for (name, args) in checks {
        println!("lint: {name}");
        if let Err(e) = util::run(util::cargo().args(args)) {
            eprintln!("lint: {name} failed: {e:#}");
            failed.push(name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("lint: all clean");
    Ok(())
}
