//! `cargo xtask build`: the kpath binary needs the eBPF toolchain pieces, so set up first.

use anyhow::Result;

use crate::{setup, util};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

pub fn run(args: &Args) -> Result<()> {
    setup::for_build()?;
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "kpath"]);
    if args.release {
        cmd.arg("--release");
    }
    util::run(&mut cmd)
}
