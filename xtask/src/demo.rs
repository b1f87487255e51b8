//! `cargo xtask demo`: build a release kpath and compare three ways of serving a file with
//! `kpath bench` into `runs/demo`.
//!
//! mmap (open, mmap, write, munmap, close per request), sendfile (open, sendfile, close under
//! TCP_CORK) and an in-memory cache, each behind one epoll loop per core with keep-alive 1 (the
//! close path runs tcp_close and eventpoll_release_file on every request). Each server runs in
//! its own process with every probe family attached; `kpath load` drives it from another.

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::{record, setup, util};

const LOAD_SECS: &str = "4";

pub fn run() -> Result<()> {
    setup::for_run()?;
    let kpath = record::build_release_kpath()?;
    let bench_dir = util::repo_root().join("runs/demo");
    record_demo(&kpath, &bench_dir)?;
    println!(
        "\ndemo written to {dir}:\n  open {dir}/report.html in a browser (tables, flame graphs, \
         differential graphs against mmap)\n  bench.json holds the numbers; each strategy's run \
         is under {dir}/runs/ (re-render one with: target/release/kpath report DIR)",
        dir = bench_dir.display()
    );
    Ok(())
}

/// The demo itself: one `kpath bench` over the three io strategies.
fn record_demo(kpath: &Path, bench_dir: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(bench_dir);
    println!(
        "benchmarking `kpath serve --io mmap|sendfile|cached --model epoll --keepalive 1`, \
         {LOAD_SECS} s of load each, all probes attached ..."
    );
    util::run(
        Command::new(kpath)
            .current_dir(util::repo_root())
            .args(["bench", "--io", "mmap,sendfile,cached", "--model", "epoll"])
            .args(["--keepalive", "1", "-d", LOAD_SECS, "-F", "999", "-o"])
            .arg(bench_dir),
    )
}
