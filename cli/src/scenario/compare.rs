//! Scenarios that compare server strategies on this kernel: each is a `kpath bench` of chosen
//! strategies, printed with what it runs, what to look at, the measured findings and why the
//! kernel behaves so.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};

use servers::serve::{Io, Model};

use super::ScenarioOptions;
use crate::bench::{
    self,
    json::{Bench, BenchRun, Strategy},
    BenchOptions,
};

/// A strategy comparison with its explanation.
pub struct Comparison {
    pub name: &'static str,
    /// What runs, in one sentence.
    pub runs: &'static str,
    /// Which columns tell the story.
    pub look_at: &'static str,
    /// Why the kernel behaves so.
    pub why: &'static str,
    /// Baseline first.
    pub strategies: &'static [Strategy],
    /// Lines computed from the measured runs.
    /// Side-by-side lines computed from the measured runs. The findings (what the numbers
    /// mean, what to try) come from `crate::findings`, the engine record and report use: the
    /// bench's table ends with them.
    pub measured: fn(&Bench) -> Vec<String>,
    /// On-CPU sampling frequency when the findings read sampled shares; `None` is bench's.
    pub frequency: Option<u64>,
}

/// The steps of the blog post the scenario is named after (its author, Gulan): mmap+write per
/// request, sendfile, an in-memory cache, then the cache behind a thread pool.
pub const GULAN: Comparison = Comparison {
    name: "gulan",
    runs: "the same close-per-request load against mmap+write per request, sendfile, an \
           in-memory cache, and the cache behind a thread pool",
    look_at: "syscalls/req and busy/req fall from mmap to sendfile to cached; ctx switches/req \
              rise with the thread pool",
    why: "mmap+munmap per request changes the process's address space twice per reply: both \
          take mmap_lock for writing (all threads serialize on it) and munmap flushes the TLB. \
          sendfile copies page-cache pages to the socket without mapping them; a cache answers \
          from memory with one writev. A thread pool then adds a hand-off between the acceptor \
          and a worker per connection: a wakeup and a context switch that the event loop never \
          pays.",
    strategies: &[
        Strategy::new(Io::Mmap, Model::Epoll, 1),
        Strategy::new(Io::Sendfile, Model::Epoll, 1),
        Strategy::new(Io::Cached, Model::Epoll, 1),
        Strategy::new(Io::Cached, Model::Threadpool, 1),
    ],
    measured: gulan_findings,
    frequency: None,
};

pub const BATCHING: Comparison = Comparison {
    name: "batching",
    runs: "keep-alive load against the cached file served by an epoll loop and by io_uring with \
           batched submission",
    look_at: "syscalls/req: epoll pays a read and a writev per request plus a share of \
              epoll_wait; io_uring submits many connections' receives and sends per \
              io_uring_enter",
    why: "every syscall crosses into the kernel and back (see `kpath costs`, null syscall); \
          io_uring queues the operations in shared rings and enters the kernel once per batch, \
          so syscalls per request fall below one when many connections are busy at once.",
    strategies: &[
        Strategy::new(Io::Cached, Model::Epoll, 0),
        Strategy::new(Io::Cached, Model::Uring, 0),
    ],
    measured: batching_findings,
    frequency: None,
};

pub const THREADPOOL: Comparison = Comparison {
    name: "threadpool",
    runs: "keep-alive load against the cached file served by an epoll loop per core, a thread \
           pool, and a thread per connection",
    look_at: "ctx switches/req: near zero for the event loop under load, about one or more per \
              request for blocking threads",
    why: "a blocking thread sleeps in read() until its client's next request and is woken for \
          it: one voluntary switch per request, plus run-queue delay when threads outnumber \
          cores. An event loop collects many ready connections per epoll_wait and only sleeps \
          when none is ready.",
    strategies: &[
        Strategy::new(Io::Cached, Model::Epoll, 0),
        Strategy::new(Io::Cached, Model::Threadpool, 0),
        Strategy::new(Io::Cached, Model::Thread, 0),
    ],
    measured: threadpool_findings,
    frequency: None,
};

/// The first run of `io` on `model`.
pub(super) fn by(b: &Bench, io: Io, model: Model) -> Option<&BenchRun> {
    b.runs
        .iter()
        .find(|r| r.strategy.io == io && r.strategy.model == model)
}

/// Calls of `syscall` per request.
pub(super) fn per_req(r: &BenchRun, syscall: &str) -> f64 {
    r.syscall_counts_per_request
        .get(syscall)
        .copied()
        .unwrap_or(0.0)
}

/// Traced time in `syscall` per request.
pub(super) fn ns_per_req(r: &BenchRun, syscall: &str) -> f64 {
    r.syscall_ns_per_request
        .get(syscall)
        .copied()
        .unwrap_or(0.0)
}

/// `b` relative to `a` as a signed percentage.
pub(super) fn change(a: f64, b: f64) -> String {
    if a > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:+.1}%", (b / a - 1.0) * 100.0)
    } else {
        "-".into()
    }
}

pub(super) fn fastest(b: &Bench) -> Option<&BenchRun> {
    b.runs
        .iter()
        .max_by(|x, y| x.requests_per_sec.total_cmp(&y.requests_per_sec))
}

pub(super) fn summary(r: &BenchRun) -> String {
    format!(
        "{}: {:.0} req/s, {:.2} syscalls/req, {} busy in syscalls/req, {} ctx switches/req",
        r.name,
        r.requests_per_sec,
        r.syscalls_per_request,
        crate::render::fmt_ns(r.busy_kernel_ns_per_request.round() as u64),
        r.ctx_switches_per_request
            .map_or("-".to_string(), |c| format!("{c:.2}"))
    )
}

fn gulan_findings(b: &Bench) -> Vec<String> {
    let mut out: Vec<String> = b.runs.iter().map(summary).collect();
    if let (Some(m), Some(c)) = (
        by(b, Io::Mmap, Model::Epoll),
        by(b, Io::Cached, Model::Epoll),
    ) {
        out.push(format!(
            "mmap costs {:.1}x the syscalls and {:.1}x the busy kernel time per request of the cache \
             (mmap {:.2} + munmap {:.2} per request)",
            m.syscalls_per_request / c.syscalls_per_request.max(1e-9),
            m.busy_kernel_ns_per_request / c.busy_kernel_ns_per_request.max(1e-9),
            per_req(m, "mmap"),
            per_req(m, "munmap"),
        ));
    }
    if let (Some(e), Some(t)) = (
        by(b, Io::Cached, Model::Epoll),
        by(b, Io::Cached, Model::Threadpool),
    ) {
        let verdict = if t.requests_per_sec < e.requests_per_sec {
            "worse"
        } else {
            "not worse here"
        };
        out.push(format!(
            "the thread pool is {verdict}: {:.0} vs {:.0} req/s, {} vs {} ctx switches/req",
            t.requests_per_sec,
            e.requests_per_sec,
            t.ctx_switches_per_request
                .map_or("-".into(), |c| format!("{c:.2}")),
            e.ctx_switches_per_request
                .map_or("-".into(), |c| format!("{c:.2}")),
        ));
    }
    if let Some(f) = fastest(b) {
        out.push(format!("fastest: {}", f.name));
    }
    out
}

fn batching_findings(b: &Bench) -> Vec<String> {
    let mut out: Vec<String> = b.runs.iter().map(summary).collect();
    if let (Some(e), Some(u)) = (
        by(b, Io::Cached, Model::Epoll),
        by(b, Io::Cached, Model::Uring),
    ) {
        out.push(format!(
            "syscalls per request: epoll {:.2} (read {:.2}, writev {:.2}, epoll_wait {:.2}) vs \
             io_uring {:.2} (io_uring_enter {:.2})",
            e.syscalls_per_request,
            per_req(e, "read"),
            per_req(e, "writev"),
            per_req(e, "epoll_wait"),
            u.syscalls_per_request,
            per_req(u, "io_uring_enter"),
        ));
        out.push(
            "io_uring_enter both does a batch's work and waits for completions, so its time is \
             left out of busy/req like epoll_wait's: compare io_uring by req/s and syscalls/req"
                .to_string(),
        );
    }
    out
}

fn threadpool_findings(b: &Bench) -> Vec<String> {
    let mut out: Vec<String> = b.runs.iter().map(summary).collect();
    if let Some(f) = fastest(b) {
        out.push(format!("fastest: {}", f.name));
    }
    out
}

/// Runs a comparison on this kernel and prints its explanation, tables and findings.
pub fn run(c: &Comparison, opts: &ScenarioOptions) -> anyhow::Result<()> {
    if !opts.kernels.is_empty() {
        bail!(
            "scenario {} compares server strategies on this kernel; --kernel is for epoll-close",
            c.name
        );
    }
    if !crate::kernel::features::is_root() {
        bail!("kpath scenario records with BPF and needs root: run it with sudo");
    }
    let out_dir = opts.out_dir.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("runs/scenario-{}-{now}", c.name))
    });
    println!("scenario {}\n", c.name);
    println!("runs:        {}", c.runs);
    println!("look at:     {}\n", c.look_at);
    let bench_opts = BenchOptions {
        strategies: c.strategies.to_vec(),
        duration: Duration::from_secs_f64(opts.duration_secs),
        connections: opts
            .connections
            .unwrap_or(BenchOptions::default().connections),
        out_dir: out_dir.clone(),
        kpath: std::env::current_exe().context("locating the kpath binary")?,
        frequency: c.frequency.unwrap_or(BenchOptions::default().frequency),
        ..BenchOptions::default()
    };
    let b = bench::bench(&bench_opts).with_context(|| format!("scenario {}", c.name))?;
    print!("{}", bench::table::render(&b));
    println!("\nmeasured on {}:", b.kernel.release);
    for line in (c.measured)(&b) {
        println!("  - {line}");
    }
    println!("\nwhy:         {}", c.why);
    println!(
        "\nreport:      {} (bench.json, per-strategy runs, differential flame graphs)",
        out_dir.join("report.html").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn run(io: Io, model: Model, rps: f64, spr: f64, busy: f64, cs: f64) -> BenchRun {
        let mut counts = BTreeMap::new();
        let mapped = if io == Io::Mmap { 1.0 } else { 0.0 };
        counts.insert("mmap".to_string(), mapped);
        counts.insert("munmap".to_string(), mapped);
        BenchRun {
            name: format!("{io}-{model}-ka1"),
            strategy: Strategy::new(io, model, 1),
            requests_per_sec: rps,
            syscalls_per_request: spr,
            busy_kernel_ns_per_request: busy,
            ctx_switches_per_request: Some(cs),
            syscall_counts_per_request: counts,
            ..BenchRun::default()
        }
    }

    #[test]
    fn gulan_findings_compare_mmap_with_the_cache_and_judge_the_pool() {
        let b = Bench {
            runs: vec![
                run(Io::Mmap, Model::Epoll, 20_000.0, 10.0, 40_000.0, 0.1),
                run(Io::Cached, Model::Epoll, 28_000.0, 5.0, 16_000.0, 0.3),
                run(Io::Cached, Model::Threadpool, 18_000.0, 6.0, 20_000.0, 1.5),
            ],
            ..Bench::default()
        };
        let f = gulan_findings(&b);
        assert!(
            f.iter()
                .any(|l| l.contains("2.0x the syscalls") && l.contains("2.5x the busy")),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l.starts_with("the thread pool is worse")),
            "{f:#?}"
        );
        assert_eq!(f.last().unwrap(), "fastest: cached-epoll-ka1");
    }
}
