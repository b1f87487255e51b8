//! `cargo xtask bench-agent [--minutes N]`: a long soak of `kpath agent` (all families,
//! `--window 10`) following `--comm true` while a new `/bin/true` starts every 50 ms, printing
//! the agent's VmRSS and CPU% (utime + stime over wall time, from /proc/PID/stat) per minute.
//! The agent is the dev-profile build (optimized, with debug info) `cargo build -p kpath` makes.
//!
//! A benchmark, not a test: it prints what it measured and asserts nothing.
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::proc::{self, Proc};
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Minutes to run.
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
}

pub fn run(args: &Args) -> Result<()> {
    if !util::is_root() {
        bail!("bench-agent loads BPF programs: run it as root");
    }
    if args.minutes == 0 {
        bail!("--minutes 0: run at least a minute");
    }
    util::run(util::cargo().args(["build", "-p", "kpath"]))?;
    let kpath = util::target_dir().join("debug/kpath");
    let dir = std::env::temp_dir().join(format!("kpath-bench-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ready = dir.join("ready");
    let mut agent = Proc::spawn(
        Command::new(&kpath)
            .args(["agent", "--comm", "true", "--window", "10", "--keep", "10"])
            .arg("-o")
            .arg(dir.join("windows"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    agent.wait_for_file(
        &ready,
        "kpath agent",
        Duration::from_millis(20),
        Duration::from_secs(30),
    )?;
    let pid = agent.id();
    println!("kpath agent (pid {pid}) following a new /bin/true every 50 ms, --window 10");
    println!(" minute | VmRSS kB | CPU% this minute | targets started");
    let start = Instant::now();
    let mut last = (Instant::now(), proc::cpu_secs(pid)?);
    let mut started = 0u64;
    let mut kids = Vec::new();
    for minute in 1..=args.minutes {
        let until = start + Duration::from_secs(60 * minute);
        while Instant::now() < until {
            kids.push(Command::new("/bin/true").spawn()?);
            started += 1;
            kids.retain_mut(|k: &mut std::process::Child| k.try_wait().ok().flatten().is_none());
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = (Instant::now(), proc::cpu_secs(pid)?);
        let cpu = (now.1 - last.1) / now.0.duration_since(last.0).as_secs_f64();
        last = now;
        println!(
            " {minute:>6} | {:>8} | {:>15.2}% | {started}",
            proc::rss_kb(pid).unwrap_or(0),
            cpu * 100.0
        );
    }
    for mut k in kids {
        let _ = k.wait();
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
