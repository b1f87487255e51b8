//! `cargo xtask bench-overhead`: what attaching kpath costs a busy server. The reference server
//! (cached, epoll, keep-alive) is driven by wrk in interleaved rounds: untraced; with the
//! kernel's floor for syscall tracing (empty BPF programs on sys_enter/sys_exit, [`floor`]);
//! with `kpath record -p` attached for each probe set asked for (by default all five families,
//! then each alone); and with each of kpath's peers attached instead ([`Peer`]: bpftrace with a
//! comparable program, `perf record -g -F 99`, `perf trace -s`). The goals: with every family,
//! keep at least 0.95 of the untraced requests/s, at least the floor's less 0.03, and at least
//! bpftrace's plus 0.10.
//!
//! Besides requests/s, each condition reports CPU time per request of the server, of wrk and of
//! the tracer itself (`kpath record` or the peer; from /proc, so background load on the 2 cores skews it less than
//! throughput): the traced minus the floor condition is what kpath's own programs cost.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::bench_servers::{wait_listening, wrk_run};
use crate::floor::EmptyRawTracepoints;
use crate::peers::Peer;
use crate::proc::{self, Proc};
use crate::record::{build_release_kpath, RecordSpec, Recording, ALL_FAMILIES as ALL};
use crate::stats::median;
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds of wrk load per measurement.
    #[arg(long, default_value_t = 3)]
    pub duration: u64,
    /// Interleaved rounds over all conditions; medians are compared.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Probe sets to attach (kpath record --probes), one condition each; repeat the option for
    /// several. Default: all five families, then each alone.
    #[arg(long = "probes")]
    pub probes: Vec<String>,
    /// Leave out the floor condition (empty programs on the syscall tracepoints).
    #[arg(long)]
    pub no_floor: bool,
    /// Leave out the peers (bpftrace, perf record, perf trace).
    #[arg(long)]
    pub no_peers: bool,
}

const PORT: u16 = 18_482;
const GOAL: f64 = 0.95;
/// Kept throughput with every family: at least the floor's less this...
const FLOOR_MARGIN: f64 = 0.03;
/// ... and at least bpftrace's plus this.
const BPFTRACE_LEAD: f64 = 0.10;

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Untraced,
    /// Empty BPF programs on the sys_enter/sys_exit raw tracepoints.
    Floor,
    Record(String),
    /// `kpath record --call-graph fp` with these probes: the DWARF unwinder's share of the
    /// default (`--call-graph dwarf`) beside it.
    RecordFp(String),
    Peer(Peer),
}

impl Condition {
    fn label(&self) -> String {
        match self {
            Condition::Untraced => "untraced".into(),
            Condition::Floor => "floor: empty programs on sys_enter/exit".into(),
            Condition::Record(p) if p == ALL => "kpath record, all five families".into(),
            Condition::Record(p) => format!("kpath record --probes {p}"),
            Condition::RecordFp(p) if p == ALL => "kpath record, all five, --call-graph fp".into(),
            Condition::RecordFp(p) => format!("kpath record --probes {p} --call-graph fp"),
            Condition::Peer(p) => p.label().into(),
        }
    }
}

fn conditions(args: &Args) -> Vec<Condition> {
    let mut v = vec![Condition::Untraced];
    if !args.no_floor {
        v.push(Condition::Floor);
    }
    if args.probes.is_empty() {
        v.push(Condition::Record(ALL.to_string()));
        v.push(Condition::RecordFp(ALL.to_string()));
        v.extend(ALL.split(',').map(|p| Condition::Record(p.to_string())));
    } else {
        v.extend(args.probes.iter().cloned().map(Condition::Record));
    }
    if !args.no_peers {
        v.extend(
            Peer::ALL
                .into_iter()
                .filter(|p| p.available())
                .map(Condition::Peer),
        );
    }
    v
}

/// One wrk run under one condition.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    requests_per_sec: f64,
    /// CPU µs per request.
    server_us: f64,
    wrk_us: f64,
    /// `kpath record`'s or the peer's.
    tracer_us: f64,
}

impl Sample {
    fn total_us(&self) -> f64 {
        self.server_us + self.wrk_us + self.tracer_us
    }
}

pub fn run(args: &Args) -> Result<()> {
    if !util::is_root() {
        bail!("bench-overhead loads BPF programs: run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let kpath = build_release_kpath()?;
    let work = util::target_dir().join("bench-overhead");
    let www = work.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "x".repeat(1400))?;

    let server = Proc::spawn(
        Command::new(&kpath)
            .args(["serve", "--io", "cached", "--model", "epoll"])
            .args(["--addr", &format!("127.0.0.1:{PORT}"), "--root"])
            .arg(&www)
            .stderr(Stdio::null()),
    )?;
    let conds = conditions(args);
    let result = measure(args, &conds, &kpath, &work, server.id());
    drop(server);
    let samples = result?;
    print_table(args, &conds, &samples);
    Ok(())
}

fn measure(
    args: &Args,
    conds: &[Condition],
    kpath: &Path,
    work: &Path,
    pid: u32,
) -> Result<Vec<Vec<Sample>>> {
    wait_listening(PORT)?;
    let url = format!("http://127.0.0.1:{PORT}/index.html");
    let mut samples = vec![Vec::new(); conds.len()];
    for round in 1..=args.rounds {
        for (i, cond) in conds.iter().enumerate() {
            eprintln!("round {round}/{}: {}", args.rounds, cond.label());
            samples[i].push(one(args, cond, kpath, work, pid, &url)?);
        }
    }
    Ok(samples)
}

fn one(
    args: &Args,
    cond: &Condition,
    kpath: &Path,
    work: &Path,
    pid: u32,
    url: &str,
) -> Result<Sample> {
    let mut floor = None;
    let mut rec = None;
    let mut peer = None;
    match cond {
        Condition::Untraced => {}
        Condition::Floor => {
            floor = Some(
                EmptyRawTracepoints::attach(&["sys_enter", "sys_exit"])
                    .context("attaching the floor programs")?,
            );
        }
        Condition::Record(probes) | Condition::RecordFp(probes) => {
            let fp = matches!(cond, Condition::RecordFp(_));
            let mut recording = Recording::start(&RecordSpec {
                kpath,
                pid,
                probes,
                secs: "600",
                dir: work,
                extra: if fp { &["--call-graph", "fp"] } else { &[] },
            })?;
            recording.wait_attached(Duration::from_millis(20))?;
            rec = Some(recording);
        }
        Condition::Peer(p) => {
            peer = Some(
                p.attach(pid, &work.join("peer"))
                    .with_context(|| format!("attaching {}", p.label()))?,
            );
        }
    }
    let rec_pid = rec
        .as_ref()
        .map(Recording::id)
        .or(peer.as_ref().map(|p| p.id()));
    let before = (
        proc::cpu_secs(pid)?,
        proc::children_cpu_secs()?,
        rec_pid.map(proc::cpu_secs).transpose()?,
    );
    let wrk = wrk_run(1, args.connections, args.duration, url, false);
    let after = (
        proc::cpu_secs(pid)?,
        proc::children_cpu_secs()?,
        rec_pid.map(proc::cpu_secs).transpose()?,
    );
    if let Some(recording) = rec {
        recording.stop()?;
    }
    if let Some(p) = peer {
        p.stop()?;
    }
    drop(floor);
    let wrk = wrk?;
    if wrk.requests == 0 {
        bail!("wrk completed no requests under {}", cond.label());
    }
    let per_req = |secs: f64| secs * 1e6 / wrk.requests as f64;
    Ok(Sample {
        requests_per_sec: wrk.requests_per_sec,
        server_us: per_req(after.0 - before.0),
        wrk_us: per_req(after.1 - before.1),
        tracer_us: per_req(after.2.unwrap_or(0.0) - before.2.unwrap_or(0.0)),
    })
}

fn print_table(args: &Args, conds: &[Condition], samples: &[Vec<Sample>]) {
    let med = |i: usize, f: fn(&Sample) -> f64| {
        median(&samples[i].iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
    };
    let base_rps = med(0, |s| s.requests_per_sec);
    let base_cpu = med(0, Sample::total_us);
    println!(
        "\nkpath serve --io cached --model epoll (keep-alive), wrk -t1 -c{} -d{}s, {} interleaved \
         rounds, medians; CPU µs per request from /proc",
        args.connections, args.duration, args.rounds
    );
    println!(
        "{:<44} {:>10} {:>7}   {:>6} {:>6} {:>6} {:>6} {:>7}",
        "condition", "req/s", "ratio", "server", "wrk", "tracer", "total", "cost"
    );
    for (i, cond) in conds.iter().enumerate() {
        let rps = med(i, |s| s.requests_per_sec);
        let total = med(i, Sample::total_us);
        println!(
            "{:<44} {:>10.0} {:>7.3}   {:>6.2} {:>6.2} {:>6.2} {:>6.2} {:>7.3}",
            cond.label(),
            rps,
            rps / base_rps,
            med(i, |s| s.server_us),
            med(i, |s| s.wrk_us),
            med(i, |s| s.tracer_us),
            total,
            base_cpu / total,
        );
    }
    println!(
        "ratio: requests/s vs untraced; cost: untraced CPU per request / this condition's (what the \
         ratio would be on a machine where only CPU time limits throughput)"
    );
    let ratio_of = |c: &Condition| {
        conds
            .iter()
            .position(|x| x == c)
            .map(|i| med(i, |s| s.requests_per_sec) / base_rps)
    };
    let all = ratio_of(&Condition::Record(ALL.into()));
    let floor = ratio_of(&Condition::Floor);
    let bpftrace = ratio_of(&Condition::Peer(Peer::Bpftrace));
    if let Some(i) = conds.iter().position(|c| *c == Condition::Floor) {
        println!(
            "floor: {:.3} of untraced requests/s with nothing but empty programs on the syscall \
             tracepoints (every task takes the kernel's syscall-tracing slow path)",
            med(i, |s| s.requests_per_sec) / base_rps
        );
    }
    for line in goal_lines(all, floor, bpftrace) {
        println!("{line}");
    }
    if let Some(fp) = ratio_of(&Condition::RecordFp(ALL.into())) {
        println!(
            "with --call-graph fp instead of the default dwarf: {fp:.3} (the DWARF unwinder's share: \
             {:+.3})",
            fp - all.unwrap_or(fp)
        );
    }
}

/// The goals on the all-families ratio, each with its measured bound and verdict.
fn goal_lines(all: Option<f64>, floor: Option<f64>, bpftrace: Option<f64>) -> Vec<String> {
    let Some(all) = all else {
        return Vec::new();
    };
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    let mut v = vec![format!(
        "all families: {all:.3} of untraced requests/s (goal >= {GOAL}): {}",
        verdict(all >= GOAL)
    )];
    if let Some(f) = floor {
        let bound = f - FLOOR_MARGIN;
        v.push(format!(
            "all families vs floor: {all:.3} (goal >= floor {f:.3} - {FLOOR_MARGIN} = {bound:.3}): {}",
            verdict(all >= bound)
        ));
    }
    if let Some(b) = bpftrace {
        let bound = b + BPFTRACE_LEAD;
        v.push(format!(
            "all families vs bpftrace: {all:.3} (goal >= bpftrace {b:.3} + {BPFTRACE_LEAD} = {bound:.3}): {}",
            verdict(all >= bound)
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(probes: &[&str], no_floor: bool) -> Args {
        Args {
            duration: 1,
            rounds: 1,
            connections: 1,
            probes: probes.iter().map(|p| p.to_string()).collect(),
            no_floor,
            no_peers: true,
        }
    }

    #[test]
    fn default_conditions_are_baseline_floor_all_with_both_unwinders_then_each_family() {
        let c = conditions(&args(&[], false));
        assert_eq!(c[0], Condition::Untraced);
        assert_eq!(c[1], Condition::Floor);
        assert_eq!(c[2], Condition::Record(ALL.into()));
        assert_eq!(c[3], Condition::RecordFp(ALL.into()));
        assert_eq!(c.len(), 4 + 5);
        assert_eq!(c[4], Condition::Record("syscalls".into()));
    }

    #[test]
    fn explicit_probe_sets_replace_the_defaults() {
        let c = conditions(&args(&["sched", "locks,oncpu"], true));
        assert_eq!(
            c,
            vec![
                Condition::Untraced,
                Condition::Record("sched".into()),
                Condition::Record("locks,oncpu".into())
            ]
        );
    }

    #[test]
    fn peers_follow_kpath_when_installed() {
        let mut a = args(&["sched"], true);
        a.no_peers = false;
        let c = conditions(&a);
        let peers: Vec<Peer> = Peer::ALL.into_iter().filter(|p| p.available()).collect();
        assert_eq!(c.len(), 2 + peers.len());
        for (cond, p) in c[2..].iter().zip(peers) {
            assert_eq!(*cond, Condition::Peer(p));
        }
    }

    #[test]
    fn goals_compare_with_the_floor_and_bpftrace() {
        assert!(goal_lines(None, Some(0.9), Some(0.6)).is_empty());
        let v = goal_lines(Some(0.88), Some(0.90), Some(0.60));
        assert_eq!(v.len(), 3);
        assert!(v[0].ends_with("NOT MET"), "{}", v[0]);
        assert!(
            v[1].contains("= 0.870") && v[1].ends_with(": met"),
            "{}",
            v[1]
        );
        assert!(
            v[2].contains("= 0.700") && v[2].ends_with(": met"),
            "{}",
            v[2]
        );
        let v = goal_lines(Some(0.80), Some(0.90), Some(0.75));
        assert!(
            v[1].ends_with("NOT MET") && v[2].ends_with("NOT MET"),
            "{v:?}"
        );
    }
}
