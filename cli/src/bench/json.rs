//! `bench.json`: one row per strategy, every figure normalized per request so that strategies
//! that served different request counts compare directly.
//!
//! Field names are a contract like `run.json`'s: add freely, never rename.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use servers::serve::{Io, Model};

use crate::run::{KernelInfo, KpathRow, Run};

/// Bumped when a field changes meaning.
pub const BENCH_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Bench {
    pub format_version: u32,
    pub kpath_version: String,
    pub kernel: KernelInfo,
    /// Load per strategy, seconds.
    pub duration_secs: u64,
    pub connections: usize,
    pub file_size: usize,
    /// CPUs the server, the load generator and kpath shared (0: unknown).
    #[serde(default)]
    pub cpus: usize,
    /// Name of the run every other run is compared with (the first).
    pub baseline: String,
    pub runs: Vec<BenchRun>,
    /// The findings engine over each strategy's run, with the load generator's request
    /// counts (each finding names its `strategy`).
    #[serde(default)]
    pub findings: Vec<crate::run::Finding>,
}

/// One server strategy, as `kpath serve` takes it, and the files the load spreads over. Bench
/// runs a list of them; a scenario that compares strategies is a fixed list of them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Strategy {
    /// `kpath serve --io`, by its command-line name (`sendfile-nocork`).
    #[serde(with = "by_name")]
    pub io: Io,
    /// `kpath serve --model`, by its command-line name.
    #[serde(with = "by_name")]
    pub model: Model,
    /// Requests per connection; `None` is unlimited.
    pub keepalive: Option<u32>,
    /// Distinct files of the bench's size that the requests rotate over (`kpath load
    /// --paths-from`); `None` is one file for every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u32>,
}

/// `io`/`model` in bench.json: the command-line name, as `kpath serve` takes it.
mod by_name {
    use clap::ValueEnum;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T: ValueEnum, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let name = String::deserialize(d)?;
        T::from_str(&name, false).map_err(serde::de::Error::custom)
    }
}

impl Strategy {
    /// A strategy over one file; `keepalive` 0 is unlimited (a `const fn`, for the scenarios'
    /// tables).
    pub const fn new(io: Io, model: Model, keepalive: u32) -> Strategy {
        Strategy {
            io,
            model,
            keepalive: if keepalive == 0 {
                None
            } else {
                Some(keepalive)
            },
            files: None,
        }
    }

    /// `mmap-epoll-ka1` (`sendfile-epoll-kainf-1000files` over many files): the run directory
    /// name and the table label.
    pub fn name(&self) -> String {
        let ka = self
            .keepalive
            .map_or_else(|| "inf".to_string(), |n| n.to_string());
        let files = self
            .files
            .map_or_else(String::new, |n| format!("-{n}files"));
        format!("{}-{}-ka{ka}{files}", self.io, self.model)
    }
}

/// The load generator's figures (`kpath load --json`), as far as bench uses them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LoadSummary {
    pub requests: u64,
    pub duration_secs: f64,
    pub requests_per_sec: f64,
    pub bytes_per_sec: f64,
    pub errors: LoadErrors,
    pub latency_ns: LatencyNs,
    /// Absent from load generators before segment counting.
    #[serde(default)]
    pub tcp_segments: Option<TcpSegments>,
    /// The latency distribution (HdrHistogram) at fixed percentiles; absent before 2026-12.
    #[serde(default)]
    pub latency_percentiles_ns: Vec<LatencyPoint>,
}

/// A point of the load generator's latency distribution (`percentile`, `ns`).
pub use servers::load::LatencyPoint;

/// The totals behind a differential flame graph: the baseline's and this run's (samples for
/// on-CPU graphs, nanoseconds for off-CPU ones), so a reader sees how much each side rests on.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiffTotals {
    pub baseline: u64,
    pub run: u64,
}

/// Segments of the load's connections as the client's sockets counted them (TCP_INFO), as
/// `kpath load --json` writes them.
pub use servers::load::TcpSegments;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadErrors {
    pub connect: u64,
    pub read: u64,
    /// Absent from load generators before read and write errors were told apart.
    #[serde(default)]
    pub write: u64,
    pub timeout: u64,
    pub status: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LatencyNs {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BenchRun {
    pub name: String,
    pub strategy: Strategy,
    pub requests: u64,
    pub requests_per_sec: f64,
    pub latency_ns: LatencyNs,
    /// The load generator's latency distribution at fixed percentiles (`kpath load --json`'s
    /// `latency_percentiles_ns`); empty in benches before 2026-12.
    #[serde(default)]
    pub latency_percentiles_ns: Vec<LatencyPoint>,
    pub errors: LoadErrors,
    /// Traced syscalls of the server over the whole recording / requests.
    pub syscalls_per_request: f64,
    /// Sum of the server's traced syscall time / requests (includes time blocked in epoll_wait,
    /// accept and the like: it is time inside syscalls, not CPU time).
    pub kernel_ns_per_request: f64,
    /// Like `kernel_ns_per_request` without the syscalls that mostly wait ([`WAITING_SYSCALLS`]).
    #[serde(default)]
    pub busy_kernel_ns_per_request: f64,
    /// Syscall name -> calls per request.
    pub syscall_counts_per_request: BTreeMap<String, f64>,
    /// Syscall name -> traced time per request.
    #[serde(default)]
    pub syscall_ns_per_request: BTreeMap<String, f64>,
    /// TCP segments both ways per request, counted at the load generator's sockets (on
    /// loopback: every segment of its connections up to the client's close).
    #[serde(default)]
    pub tcp_segments_per_request: Option<f64>,
    /// Of those, segments carrying the server's data (replies) per request.
    #[serde(default)]
    pub reply_segments_per_request: Option<f64>,
    pub kpaths: Vec<KpathRow>,
    /// Voluntary + involuntary context switches per request; `None` without the sched family.
    pub ctx_switches_per_request: Option<f64>,
    /// Lock contention wait per request; `None` without the locks family.
    pub lock_wait_ns_per_request: Option<f64>,
    /// The same by waiting caller (function name, offset dropped).
    #[serde(default)]
    pub lock_wait_ns_per_request_by_caller: BTreeMap<String, f64>,
    /// Family -> attach method.
    pub methods: BTreeMap<String, String>,
    /// Events the kernel side dropped, per family.
    pub lost: BTreeMap<String, u64>,
    /// BPF run time of all families per request (`None` without BPF statistics).
    pub probe_ns_per_request: Option<f64>,
    /// The run directory, relative to the bench directory.
    pub run_dir: String,
    /// Differential on-CPU flame graph against the baseline, relative to the bench directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_oncpu_svg: Option<String>,
    /// On-CPU samples on each side of `diff_oncpu_svg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_oncpu_samples: Option<DiffTotals>,
    /// Differential off-CPU flame graph against the baseline, relative to the bench directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_offcpu_svg: Option<String>,
    /// Off-CPU nanoseconds on each side of `diff_offcpu_svg`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_offcpu_ns: Option<DiffTotals>,
}

/// Syscalls whose time is mostly spent blocked, not working: an idle event loop's epoll_wait
/// would otherwise dominate every strategy's kernel time.
pub const WAITING_SYSCALLS: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "accept",
    "accept4",
    "futex",
    "nanosleep",
    "clock_nanosleep",
    "io_uring_enter",
    "wait4",
];

/// `x / n`, NaN (JSON null) when nothing was served.
fn per(x: f64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        x / n as f64
    }
}

impl BenchRun {
    /// Normalizes one recording by the requests the load generator completed during it.
    pub fn new(strategy: Strategy, load: &LoadSummary, run: &Run, run_dir: &str) -> BenchRun {
        let n = load.requests;
        let calls: u64 = run.syscalls.iter().map(|r| r.count).sum();
        let ns: u64 = run.syscalls.iter().map(|r| r.total_ns).sum();
        let busy: u64 = run
            .syscalls
            .iter()
            .filter(|r| !WAITING_SYSCALLS.contains(&r.name.as_str()))
            .map(|r| r.total_ns)
            .sum();
        let mut counts = BTreeMap::new();
        let mut times = BTreeMap::new();
        for r in &run.syscalls {
            *counts.entry(r.name.clone()).or_insert(0.0) += per(r.count as f64, n);
            *times.entry(r.name.clone()).or_insert(0.0) += per(r.total_ns as f64, n);
        }
        let segments = load.tcp_segments.filter(|s| s.connections > 0);
        let ctx = run
            .sched
            .as_ref()
            .map(|s| per((s.voluntary_switches + s.involuntary_switches) as f64, n));
        let locks = run
            .methods
            .contains_key(probe_common::Family::Locks.name())
            .then(|| per(run.locks.iter().map(|l| l.wait_ns).sum::<u64>() as f64, n));
        let mut lock_callers = BTreeMap::new();
        for l in &run.locks {
            let caller = l.caller.split('+').next().unwrap_or_default().to_string();
            *lock_callers.entry(caller).or_insert(0.0) += per(l.wait_ns as f64, n);
        }
        let o = &run.overhead;
        let probe = o.bpf_stats_enabled.then(|| {
            per(
                o.families.values().map(|f| f.bpf_run_ns).sum::<u64>() as f64,
                n,
            )
        });
        BenchRun {
            name: strategy.name(),
            strategy,
            requests: n,
            requests_per_sec: load.requests_per_sec,
            latency_ns: load.latency_ns,
            latency_percentiles_ns: load.latency_percentiles_ns.clone(),
            errors: load.errors,
            syscalls_per_request: per(calls as f64, n),
            kernel_ns_per_request: per(ns as f64, n),
            busy_kernel_ns_per_request: per(busy as f64, n),
            syscall_counts_per_request: counts,
            syscall_ns_per_request: times,
            tcp_segments_per_request: segments.map(|s| per((s.sent + s.received) as f64, n)),
            reply_segments_per_request: segments.map(|s| per(s.data_received as f64, n)),
            kpaths: run.kpaths.clone(),
            ctx_switches_per_request: ctx,
            lock_wait_ns_per_request: locks,
            lock_wait_ns_per_request_by_caller: lock_callers,
            methods: run.methods.clone(),
            lost: run.lost.clone(),
            probe_ns_per_request: probe,
            run_dir: run_dir.to_string(),
            diff_oncpu_svg: None,
            diff_oncpu_samples: None,
            diff_offcpu_svg: None,
            diff_offcpu_ns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{LockRow, SchedRow, SyscallRow};

    fn sc(name: &str, count: u64, total_ns: u64) -> SyscallRow {
        SyscallRow {
            name: name.into(),
            count,
            total_ns,
            ..Default::default()
        }
    }

    #[test]
    fn strategy_names() {
        let s = |ka| Strategy {
            io: Io::Mmap,
            model: Model::Epoll,
            keepalive: ka,
            files: None,
        };
        assert_eq!(s(Some(1)).name(), "mmap-epoll-ka1");
        assert_eq!(s(None).name(), "mmap-epoll-kainf");
        let many = Strategy {
            files: Some(1000),
            ..s(None)
        };
        assert_eq!(many.name(), "mmap-epoll-kainf-1000files");
        assert_eq!(Strategy::new(Io::Cached, Model::Uring, 0).keepalive, None);
    }

    #[test]
    fn strategies_keep_their_command_line_names_in_json() {
        let s = Strategy {
            files: Some(10),
            ..Strategy::new(Io::SendfileNocork, Model::Threadpool, 1)
        };
        let v = serde_json::to_value(s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"io": "sendfile-nocork", "model": "threadpool", "keepalive": 1, "files": 10})
        );
        assert_eq!(serde_json::from_value::<Strategy>(v).unwrap(), s);
        let bogus =
            serde_json::json!({"io": "carrier-pigeon", "model": "epoll", "keepalive": null});
        assert!(serde_json::from_value::<Strategy>(bogus).is_err());
    }

    #[test]
    fn figures_are_per_request() {
        let mut run = Run {
            syscalls: vec![
                sc("write", 100, 5_000),
                sc("close", 100, 3_000),
                sc("munmap", 50, 2_000),
                sc("epoll_wait", 0, 90_000),
            ],
            sched: Some(SchedRow {
                voluntary_switches: 30,
                involuntary_switches: 20,
                ..Default::default()
            }),
            locks: vec![
                LockRow {
                    caller: "dput+0x1f".into(),
                    wait_ns: 300,
                    ..Default::default()
                },
                LockRow {
                    caller: "dput+0x2a".into(),
                    wait_ns: 100,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        run.methods
            .insert("locks".into(), "lock_tracepoints".into());
        let load = LoadSummary {
            requests: 100,
            requests_per_sec: 50.0,
            tcp_segments: Some(TcpSegments {
                connections: 100,
                sent: 500,
                received: 400,
                data_sent: 100,
                data_received: 100,
            }),
            ..Default::default()
        };
        let s = Strategy::new(Io::Mmap, Model::Epoll, 1);
        let b = BenchRun::new(s, &load, &run, "runs/mmap-epoll-ka1");
        assert_eq!(b.name, "mmap-epoll-ka1");
        assert_eq!(b.syscalls_per_request, 2.5);
        assert_eq!(b.kernel_ns_per_request, 1000.0);
        assert_eq!(b.busy_kernel_ns_per_request, 100.0);
        assert_eq!(b.syscall_counts_per_request["munmap"], 0.5);
        assert_eq!(b.syscall_ns_per_request["munmap"], 20.0);
        assert_eq!(b.tcp_segments_per_request, Some(9.0));
        assert_eq!(b.reply_segments_per_request, Some(1.0));
        assert_eq!(b.ctx_switches_per_request, Some(0.5));
        assert_eq!(b.lock_wait_ns_per_request, Some(4.0));
        assert_eq!(
            b.lock_wait_ns_per_request_by_caller,
            [("dput".to_string(), 4.0)].into()
        );
        assert_eq!(b.probe_ns_per_request, None);
        assert_eq!(b.requests_per_sec, 50.0);
    }

    #[test]
    fn no_requests_gives_null_not_infinity() {
        let run = Run {
            syscalls: vec![sc("epoll_wait", 3, 10)],
            ..Default::default()
        };
        let b = BenchRun::new(Strategy::default(), &LoadSummary::default(), &run, "r");
        assert!(b.syscalls_per_request.is_nan());
        assert_eq!(b.ctx_switches_per_request, None, "sched not recorded");
        assert_eq!(b.lock_wait_ns_per_request, None, "locks not recorded");
        assert_eq!(b.tcp_segments_per_request, None, "no segment counts");
        let v: serde_json::Value = serde_json::to_value(&b).unwrap();
        assert!(v["syscalls_per_request"].is_null());
    }
}
