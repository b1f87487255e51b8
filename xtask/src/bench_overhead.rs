//! `cargo xtask bench-overhead`: what attaching kpath costs a busy server. The reference server
//! (cached, epoll, keep-alive) is driven by wrk untraced and with `kpath record -p` attached
//! (every probe family, default sampling), in interleaved rounds; the goal is to keep at least
//! 0.95 of the untraced requests/s.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::bench_probes::{median, wait_attached};
use crate::bench_servers::{wait_listening, wrk_rps};
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of wrk load per measurement.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Interleaved rounds (untraced, traced); medians are compared.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Probe families to attach (kpath record --probes).
    #[arg(long, default_value = "syscalls,kpaths,sched,locks,oncpu")]
    pub probes: String,
}

const PORT: u16 = 18_482;
const GOAL: f64 = 0.95;

pub fn run(args: &Args) -> Result<()> {
    if !util::is_root() {
        bail!("bench-overhead loads BPF programs: run it as root");
    }
    util::run(util::cargo().args(["build", "--release", "-p", "kpath"]))?;
    let kpath = util::target_dir().join("release/kpath");
    let work = util::target_dir().join("bench-overhead");
    let www = work.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "x".repeat(1400))?;

    let mut server = Command::new(&kpath)
        .args(["serve", "--io", "cached", "--model", "epoll"])
        .args(["--addr", &format!("127.0.0.1:{PORT}"), "--root"])
        .arg(&www)
        .stderr(Stdio::null())
        .spawn()
        .context("starting kpath serve")?;
    let result = measure(args, &kpath, &work, server.id());
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let (untraced, traced) = result?;

    let (u, t) = (median(&untraced), median(&traced));
    println!(
        "\nkpath serve --io cached --model epoll (keep-alive), wrk -t1 -c{} -d{}s, {} rounds, medians",
        args.connections, args.duration, args.rounds
    );
    println!("{:<40} {:>12}", "condition", "requests/s");
    println!("{:<40} {:>12.0}", "untraced", u);
    println!(
        "{:<40} {:>12.0}",
        format!("kpath record -p --probes {}", args.probes),
        t
    );
    println!(
        "traced / untraced: {:.3} (goal >= {GOAL}){}",
        t / u,
        if t / u >= GOAL { "" } else { "  NOT MET" }
    );
    Ok(())
}

fn measure(args: &Args, kpath: &Path, work: &Path, pid: u32) -> Result<(Vec<f64>, Vec<f64>)> {
    wait_listening(PORT)?;
    let url = format!("http://127.0.0.1:{PORT}/index.html");
    let (mut untraced, mut traced) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        untraced.push(wrk_rps(1, args.connections, args.duration, &url, false)?);
        let mut rec = Command::new(kpath)
            .args(["record", "-d", "600", "--probes", &args.probes])
            .args(["-p", &pid.to_string(), "-o"])
            .arg(work.join("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kpath record")?;
        let r = wait_attached(&mut rec)
            .and_then(|()| wrk_rps(1, args.connections, args.duration, &url, false));
        stop(&mut rec);
        traced.push(r?);
    }
    Ok((untraced, traced))
}

fn stop(rec: &mut Child) {
    let _ = Command::new("kill")
        .args(["-INT", &rec.id().to_string()])
        .status();
    let _ = rec.wait();
}
