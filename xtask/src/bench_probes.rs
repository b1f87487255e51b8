//! `cargo xtask bench-probes`: what kpath's syscall tracing costs, per traced enter+exit pair.
//!
//! A getpid loop (one raw syscall per iteration, glibc's cache bypassed) runs side by side, in
//! interleaved rounds, in seven conditions: untraced; with empty BPF programs on the sys_enter and
//! sys_exit raw tracepoints (the kernel's floor: every task takes the syscall-tracing slow path);
//! the same programs reading the clock (the least an exact latency needs at both ends: no design
//! of kpath's programs goes below it), and the clock and the thread's ids; as a bystander while
//! kpath traces another process (the floor plus kpath's filter); traced through BPF raw
//! tracepoints (kpath's default); traced through the raw_syscalls trace events (the fallback).
//! The loop reports its own ns per call; the difference to the untraced median is the cost per
//! enter+exit pair. One more run a round, with BPF run-time statistics on, reports the time
//! spent inside kpath's programs per event, as `kpath record` prints in its footer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::floor::{EmptyRawTracepoints, Helper};
use crate::proc::Proc;
use crate::record::{build_release_kpath, RecordSpec, Recording};
use crate::stats::median;
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// getpid calls per measurement.
    #[arg(long, default_value_t = 2_000_000)]
    pub calls: u64,
    /// Interleaved rounds; the median of each condition is reported.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// A second kpath binary (e.g. a release build of an earlier commit) traced the same way in
    /// the same rounds: before and after side by side.
    #[arg(long, value_name = "KPATH")]
    pub against: Option<PathBuf>,
}

/// The goal (issue 15): kpath's own cost above the floor, per traced enter+exit pair.
const GOAL_NS_PER_PAIR: f64 = 60.0;

const GETPID_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) syscall(SYS_getpid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.2f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
    return 0;
}
"#;

pub fn run(args: &Args) -> Result<()> {
    if !util::is_root() {
        bail!("bench-probes loads BPF programs: run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let kpath = build_release_kpath()?;
    let dir = util::target_dir().join("bench-probes");
    std::fs::create_dir_all(&dir)?;
    let getpid = build_getpid(&dir)?;
    let calls = args.calls.to_string();

    let mut names = vec![
        "untraced",
        "floor (empty programs)",
        "floor + clock",
        "floor + clock + ids",
        "bystander",
        "traced raw_tp",
        "traced raw_syscalls",
    ];
    if let Some(other) = &args.against {
        if !other.is_file() {
            bail!("--against {}: no such file", other.display());
        }
        names.push("traced raw_tp, --against");
    }
    // What the floor programs call in each hook: nothing; the clock (the least an exact
    // latency needs at both ends); the clock and the thread's ids.
    let floors: [&[Helper]; 3] = [
        &[],
        &[Helper::KtimeGetNs],
        &[Helper::KtimeGetNs, Helper::GetCurrentPidTgid],
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut bpf_ns_per_event = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        samples[0].push(loop_ns(Command::new(&getpid).arg(&calls))?);
        for (i, helpers) in floors.iter().enumerate() {
            let _floor = EmptyRawTracepoints::attach_calling(&["sys_enter", "sys_exit"], helpers)?;
            samples[1 + i].push(loop_ns(Command::new(&getpid).arg(&calls))?);
        }
        samples[4].push(bystander(&kpath, &getpid, &calls, &dir)?);
        for (i, method) in [(5, "raw_tp"), (6, "raw_syscalls")] {
            let mut cmd = record(&kpath, &dir, method, false, &getpid, &calls);
            samples[i].push(loop_ns(&mut cmd)?);
        }
        if let Some(other) = &args.against {
            let mut cmd = record(other, &dir, "raw_tp", false, &getpid, &calls);
            samples[7].push(loop_ns(&mut cmd)?);
        }
        let mut cmd = record(&kpath, &dir, "raw_tp", true, &getpid, &calls);
        loop_ns(&mut cmd)?;
        bpf_ns_per_event.push(bpf_ns(&dir.join("run/run.json"))?);
    }

    let medians: Vec<f64> = samples.iter().map(|v| median(v).unwrap_or(0.0)).collect();
    println!(
        "\ngetpid loop, {} calls x {} interleaved rounds (median ns per call)",
        args.calls, args.rounds
    );
    println!(
        "{:<26} {:>10} {:>14} {:>12} {:>9}",
        "condition", "ns/call", "added/pair", "above floor", "vs goal"
    );
    for (i, (name, m)) in names.iter().zip(&medians).enumerate() {
        let added = m - medians[0];
        let above = m - medians[1];
        let (above, vs) = if i < 2 {
            ("-".to_string(), "-".to_string())
        } else {
            (
                format!("{above:.1}"),
                format!("{:.1}x", above / GOAL_NS_PER_PAIR),
            )
        };
        println!("{name:<26} {m:>10.1} {added:>14.1} {above:>12} {vs:>9}");
    }
    let bpf_ns = median(&bpf_ns_per_event).unwrap_or(0.0);
    println!(
        "BPF program time per event (bpf_stats, raw_tp): {bpf_ns:.1} ns (x2 per pair = {:.1} ns)",
        2.0 * bpf_ns
    );
    println!(
        "goal: <= {GOAL_NS_PER_PAIR} ns above the floor per enter+exit pair; 'floor' is what any program on the \
         syscall tracepoints costs every task on this kernel; kpath's own share is the rest."
    );
    println!(
        "'floor + clock': the floor's programs each read the clock (bpf_ktime_get_ns), as any exact \
         latency needs at both ends: {:.1} ns above the floor per pair on this machine.",
        medians[2] - medians[1]
    );
    Ok(())
}

fn build_getpid(dir: &Path) -> Result<PathBuf> {
    let src = dir.join("getpid.c");
    let bin = dir.join("getpid");
    std::fs::write(&src, GETPID_C)?;
    util::run(Command::new("cc").args(["-O2", "-o"]).arg(&bin).arg(&src))?;
    Ok(bin)
}

/// `kpath record` of the getpid loop (`stats`: with --bpf-stats).
fn record(
    kpath: &Path,
    dir: &Path,
    method: &str,
    stats: bool,
    getpid: &Path,
    calls: &str,
) -> Command {
    let mut cmd = Command::new(kpath);
    cmd.args(["record", "--probes", "syscalls", "--method"])
        .arg(format!("syscalls={method}"));
    if stats {
        cmd.arg("--bpf-stats");
    }
    cmd.arg("-o")
        .arg(dir.join("run"))
        .arg("--")
        .arg(getpid)
        .arg(calls);
    cmd
}

/// Runs a command whose stdout's first line is the loop's ns per call.
fn loop_ns(cmd: &mut Command) -> Result<f64> {
    let out = cmd.stderr(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{} failed: {}", util::display(cmd), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    first
        .trim()
        .parse()
        .with_context(|| format!("{}: unexpected output {first:?}", util::display(cmd)))
}

/// The loop's cost while kpath traces a sleeping process: tracing is on, the filter says no.
fn bystander(kpath: &Path, getpid: &Path, calls: &str, dir: &Path) -> Result<f64> {
    let sleeper = Proc::spawn(Command::new("sleep").arg("600"))?;
    let mut rec = Recording::start(&RecordSpec {
        kpath,
        pid: sleeper.id(),
        probes: "syscalls",
        secs: "600",
        dir,
        extra: &[],
    })?;
    rec.wait_attached(Duration::from_millis(20))?;
    let ns = loop_ns(Command::new(getpid).arg(calls))?;
    rec.stop()?;
    Ok(ns)
}

/// The part of run.json read here: per-family BPF run time.
#[derive(Deserialize)]
struct RunJson {
    overhead: Overhead,
}

#[derive(Deserialize)]
struct Overhead {
    families: BTreeMap<String, FamilyOverhead>,
}

#[derive(Deserialize)]
struct FamilyOverhead {
    ns_per_event: f64,
}

/// ns per event of the syscalls family's programs, from a run.json.
fn bpf_ns(run_json: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(run_json)
        .with_context(|| format!("reading {}", run_json.display()))?;
    syscalls_ns_per_event(&text).with_context(|| format!("reading {}", run_json.display()))
}

fn syscalls_ns_per_event(json: &str) -> Result<f64> {
    let run: RunJson = serde_json::from_str(json)?;
    run.overhead
        .families
        .get("syscalls")
        .map(|f| f.ns_per_event)
        .context("run.json has no syscalls overhead")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_syscalls_ns_per_event() {
        let json = r#"{"version": 3, "overhead": {"bpf_stats_enabled": true, "families": {
            "sched": {"events": 1, "ns_per_event": 500.0},
            "syscalls": {"events": 9, "events_per_sec": 1.5, "ns_per_event": 127.25}}}}"#;
        assert_eq!(syscalls_ns_per_event(json).unwrap(), 127.25);
        let none = r#"{"overhead": {"families": {}}}"#;
        assert!(syscalls_ns_per_event(none).is_err());
        assert!(syscalls_ns_per_event("{").is_err());
    }
}
