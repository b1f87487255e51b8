//! `cargo xtask bench-unwind`: what `--call-graph dwarf` costs against `fp`. Debian's nginx
//! (one worker, keep-alive) is driven by wrk while `kpath record -p WORKER --probes oncpu,sched
//! -F 199 --bpf-stats` takes its stacks one way or the other, in interleaved rounds. Reported
//! per method (medians): nginx requests/s (goal: dwarf >= 0.95 of fp), BPF run time per on-CPU
//! sample of the worker and per sched event, and the walks' complete share; and the unwind
//! tables of the first dwarf round (rows, build time, cache hits, map memory). The published
//! anchor for the walker's cost: Parca's former BPF unwinder, P50 285 ns for a 90-frame stack.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::bench_servers::{wait_listening, wrk_rps};
use crate::proc::Proc;
use crate::record::build_release_kpath;
use crate::stats::median;
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of wrk load per measurement.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Interleaved rounds of (dwarf, fp); medians are compared.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// A kpath binary to use instead of building the release one.
    #[arg(long)]
    pub kpath: Option<PathBuf>,
}

const PORT: u16 = 18_493;
const GOAL: f64 = 0.95;
const METHODS: [&str; 2] = ["dwarf", "fp"];

/// One recording's figures.
#[derive(Debug, Default, Clone)]
struct Round {
    rps: f64,
    /// BPF ns per on-CPU sample of the worker (the program's whole run time over its samples).
    oncpu_ns_per_sample: f64,
    sched_ns_per_event: f64,
    /// Walks that reached the root, percent (dwarf only).
    complete_pct: Option<f64>,
}

pub fn run(args: &Args) -> Result<()> {
    let kpath = match &args.kpath {
        Some(k) => k.clone(),
        None => build_release_kpath()?,
    };
    let work = util::target_dir().join("bench-unwind");
    let www = work.join("www");
    std::fs::create_dir_all(work.join("logs"))?;
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("f.bin"), vec![b'x'; 1400])?;
    let (_nginx, worker) = nginx(&work, &www)?;
    let url = format!("http://127.0.0.1:{PORT}/f.bin");
    let mut rounds: Vec<(usize, &str, Round)> = Vec::new();
    let mut tables: Option<Value> = None;
    for r in 0..args.rounds {
        for m in METHODS {
            let dir = work.join(format!("run-{m}-{r}"));
            let (round, run) = record_round(&kpath, worker, m, &dir, args, &url)
                .with_context(|| format!("round {r}, --call-graph {m}"))?;
            println!(
                "round {r} {m:<5}: {:>8.0} req/s, oncpu {:>6.0} ns/sample, sched {:>5.0} ns/event{}",
                round.rps,
                round.oncpu_ns_per_sample,
                round.sched_ns_per_event,
                round
                    .complete_pct
                    .map(|p| format!(", {p:.1}% of walks complete"))
                    .unwrap_or_default()
            );
            if m == "dwarf" && tables.is_none() {
                tables = run.get("unwind").cloned();
            }
            rounds.push((r, m, round));
        }
    }
    let med = |m: &str, f: fn(&Round) -> f64| {
        let v: Vec<f64> = rounds
            .iter()
            .filter(|(_, x, _)| *x == m)
            .map(|(_, _, r)| f(r))
            .collect();
        median(&v).unwrap_or(f64::NAN)
    };
    println!("\n| --call-graph | nginx req/s | oncpu BPF ns/sample | sched BPF ns/event |");
    println!("|---|---|---|---|");
    for m in METHODS {
        println!(
            "| {m} | {:.0} | {:.0} | {:.0} |",
            med(m, |r| r.rps),
            med(m, |r| r.oncpu_ns_per_sample),
            med(m, |r| r.sched_ns_per_event)
        );
    }
    let ratio = med("dwarf", |r| r.rps) / med("fp", |r| r.rps);
    println!(
        "\ndwarf / fp requests/s: {ratio:.3} (goal >= {GOAL}){}",
        if ratio >= GOAL { "" } else { ": MISSED" }
    );
    if let Some(u) = tables {
        print_tables(&u);
    }
    Ok(())
}

/// nginx with one worker on [`PORT`]; returns it and the worker's pid.
fn nginx(work: &Path, www: &Path) -> Result<(Proc, u32)> {
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "user root;\nworker_processes 1;\npid {pid};\nerror_log {log};\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 1000000;\n  \
             server {{ listen 127.0.0.1:{PORT}; root {www}; }}\n}}\n",
            pid = work.join("nginx.pid").display(),
            log = work.join("logs/error.log").display(),
            www = www.display(),
        ),
    )?;
    let master = Proc::spawn(
        Command::new("nginx")
            .arg("-c")
            .arg(&conf)
            .arg("-p")
            .arg(work)
            .args(["-g", "daemon off;"]),
    )?;
    wait_listening(PORT)?;
    let id = master.id();
    let worker = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))?
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .context("nginx has no worker process")?;
    Ok((master, worker))
}

fn record_round(
    kpath: &Path,
    worker: u32,
    method: &str,
    dir: &Path,
    args: &Args,
    url: &str,
) -> Result<(Round, Value)> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let ready = dir.join("record.ready");
    let mut cmd = Command::new(kpath);
    cmd.args(["record", "-p", &worker.to_string()])
        .args(["--probes", "oncpu,sched", "-F", "199", "--bpf-stats"])
        .args(["--call-graph", method])
        .args(["-d", &(args.duration + 60).to_string()])
        .arg("--ready-file")
        .arg(&ready)
        .arg("-o")
        .arg(dir.join("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut rec = Proc::spawn(&mut cmd)?.with_grace(Duration::from_secs(20));
    rec.wait_for_file(
        &ready,
        "kpath record",
        Duration::from_millis(20),
        Duration::from_secs(30),
    )?;
    let rps = wrk_rps(1, args.connections, args.duration, url, false)?;
    rec.stop(libc::SIGINT)?;
    let path = dir.join("run/run.json");
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let fam = |f: &str, k: &str| run["overhead"]["families"][f][k].as_f64().unwrap_or(0.0);
    let samples = run["oncpu"]["samples"].as_f64().unwrap_or(0.0).max(1.0);
    let outcomes = &run["unwind"]["outcomes"];
    let complete_pct = outcomes.as_object().map(|o| {
        let walks: f64 = o
            .iter()
            .filter(|(k, _)| k.as_str() != "fp_steps")
            .filter_map(|(_, v)| v.as_f64())
            .sum();
        100.0 * outcomes["complete"].as_f64().unwrap_or(0.0) / walks.max(1.0)
    });
    let round = Round {
        rps,
        oncpu_ns_per_sample: fam("oncpu", "bpf_run_ns") / samples,
        sched_ns_per_event: fam("sched", "ns_per_event"),
        complete_pct,
    };
    Ok((round, run))
}

fn print_tables(u: &Value) {
    println!("\nunwind tables (first dwarf round):");
    for b in u["binaries"].as_array().into_iter().flatten() {
        println!(
            "  {:>7} rows  {:>7.1} ms{}  {}",
            b["rows"].as_u64().unwrap_or(0),
            b["build_ms"].as_f64().unwrap_or(0.0),
            if b["from_cache"].as_bool() == Some(true) {
                " (cache)"
            } else {
                ""
            },
            b["path"].as_str().unwrap_or("?")
        );
    }
    println!(
        "  {} rows in all, row array {} entries, {:.1} MiB of unwind maps",
        u["rows"].as_u64().unwrap_or(0),
        u["rows_capacity"].as_u64().unwrap_or(0),
        u["map_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    );
}
