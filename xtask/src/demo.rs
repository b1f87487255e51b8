//! `cargo xtask demo`: build a release kpath and record the demo into `runs/demo`.

use anyhow::{Context, Result};

use crate::{setup, util};

pub fn run() -> Result<()> {
    setup::for_run()?;
    util::run(util::cargo().args(["build", "--release", "-p", "kpath"]))?;
    let run_dir = util::repo_root().join("runs/demo");
    record_demo(&run_dir)?;
    println!("demo run written to {}", run_dir.display());
    Ok(())
}

fn kpath_bin() -> std::path::PathBuf {
    util::target_dir().join("release/kpath")
}

/// The demo itself; the one place to change when it becomes `kpath bench` on the reference server.
fn record_demo(run_dir: &std::path::Path) -> Result<()> {
    let kpath = kpath_bin();
    util::run(
        std::process::Command::new(&kpath)
            .current_dir(util::repo_root())
            .args(["record", "-d", "10", "-o"])
            .arg(run_dir)
            .arg("--")
            .arg(&kpath)
            .arg("workload"),
    )
    .context("the demo recording failed")
}
