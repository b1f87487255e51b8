//! `cargo xtask demo`: build a release kpath and record the reference server under a
//! close-per-request load into `runs/demo`.
//!
//! The server (mmap per request, one epoll loop per core, keep-alive 1: the classic small-server
//! pattern whose close path runs tcp_close and eventpoll_release_file on every request) is started
//! by `kpath record`, so only it is traced; `kpath load` drives it from its own process.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{setup, util};

const ADDR: &str = "127.0.0.1:18090";
const RECORD_SECS: &str = "8";
const LOAD_SECS: &str = "5";

pub fn run() -> Result<()> {
    setup::for_run()?;
    util::run(util::cargo().args(["build", "--release", "-p", "kpath"]))?;
    let run_dir = util::repo_root().join("runs/demo");
    record_demo(&run_dir)?;
    println!(
        "\ndemo run written to {} (run.json; re-render with: target/release/kpath report {})",
        run_dir.display(),
        run_dir.display()
    );
    Ok(())
}

/// The demo itself; the one place to change when it becomes `kpath bench`.
fn record_demo(run_dir: &Path) -> Result<()> {
    let kpath = util::target_dir().join("release/kpath");
    let www = util::repo_root().join("runs/demo-www");
    std::fs::create_dir_all(&www)?;
    // A 1.4 KB page, the size the benchmarks use.
    std::fs::write(www.join("index.html"), "<p>kpath demo</p>\n".repeat(78))?;

    println!(
        "recording `kpath serve --io mmap --model epoll --keepalive 1` for {RECORD_SECS} s \
         while `kpath load` drives it for {LOAD_SECS} s ..."
    );
    let mut record = Command::new(&kpath)
        .current_dir(util::repo_root())
        .args(["record", "-F", "999", "-d", RECORD_SECS, "-o"])
        .arg(run_dir)
        .arg("--")
        .arg(&kpath)
        .args([
            "serve",
            "--io",
            "mmap",
            "--model",
            "epoll",
            "--keepalive",
            "1",
            "--addr",
            ADDR,
        ])
        .arg("--root")
        .arg(&www)
        .spawn()
        .context("starting kpath record")?;
    let served = wait_for_port(Duration::from_secs(20)).and_then(|()| {
        util::run(Command::new(&kpath).args([
            "load",
            &format!("http://{ADDR}/index.html"),
            "-c",
            "32",
            "-d",
            LOAD_SECS,
        ]))
    });
    let status = record.wait()?;
    served.context("driving the demo server")?;
    if !status.success() {
        bail!("the demo recording failed: {status}");
    }
    Ok(())
}

fn wait_for_port(timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect(ADDR).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the demo server did not listen on {ADDR} within {timeout:?}")
}
