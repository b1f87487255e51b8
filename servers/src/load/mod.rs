//! `kpath load`: an HTTP load generator for loopback targets.
//!
//! Closed loop (wrk): each connection sends its next request as soon as the previous response
//! is in. Open loop (`--rate`, wrk2): requests are due on a fixed schedule and latency counts
//! from when a request was due, so a stalled server is charged for the requests it delayed
//! (no coordinated omission).

mod client;
mod response;
mod target;

pub use response::{parse_head, Head, HeadError};
pub use target::{Target, TargetError};

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

#[derive(Debug, clap::Args, Clone)]
pub struct LoadArgs {
    /// Target URL; its host must be a loopback address.
    pub url: String,
    /// Concurrent connections.
    #[arg(short = 'c', long = "connections", default_value_t = 64)]
    pub connections: usize,
    /// Threads, each running an epoll loop over its share of the connections.
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: usize,
    /// Test duration in seconds.
    #[arg(short = 'd', long, default_value_t = 10)]
    pub duration: u64,
    /// Open loop at this many requests/s in total, measuring latency from each intended send time.
    #[arg(long)]
    pub rate: Option<u64>,
    /// A new connection for every request.
    #[arg(long)]
    pub close: bool,
    /// Seconds before a request without a complete response counts as a timeout.
    #[arg(long, default_value_t = 2)]
    pub timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Library options for [`run_load`].
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    pub rate: Option<u64>,
    pub close: bool,
    pub timeout: Duration,
    /// Draw a progress bar on stderr (only if it is a terminal).
    pub progress: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8080/".into(),
            connections: 64,
            threads: 2,
            duration: Duration::from_secs(10),
            rate: None,
            close: false,
            timeout: Duration::from_secs(2),
            progress: false,
        }
    }
}

impl LoadArgs {
    pub fn into_config(self) -> LoadConfig {
        LoadConfig {
            url: self.url,
            connections: self.connections,
            threads: self.threads,
            duration: Duration::from_secs(self.duration),
            rate: self.rate,
            close: self.close,
            timeout: Duration::from_secs(self.timeout.max(1)),
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub timeout: u64,
    /// Responses with a status outside 2xx/3xx.
    pub status: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub requests: u64,
    pub duration_secs: f64,
    pub requests_per_sec: f64,
    pub bytes_per_sec: f64,
    pub errors: Errors,
    pub latency_ns: Latency,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("need at least one connection and one thread, and no more threads than connections")]
    Shape,
    #[error("--rate must be positive")]
    Rate,
    #[error("load thread failed")]
    Thread(#[source] std::io::Error),
}

pub fn run_load(cfg: LoadConfig) -> Result<LoadReport, LoadError> {
    let target = Arc::new(Target::parse(&cfg.url)?);
    if cfg.connections == 0 || cfg.threads == 0 || cfg.threads > cfg.connections {
        return Err(LoadError::Shape);
    }
    if cfg.rate == Some(0) {
        return Err(LoadError::Rate);
    }
    let request: Arc<[u8]> = target.request(cfg.close).into();
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let progress: Vec<Arc<AtomicU64>> = (0..cfg.threads).map(|_| Arc::default()).collect();
    let bar = progress_bar(&cfg);
    let stats = std::thread::scope(|s| {
        let workers: Vec<_> = (0..cfg.threads)
            .map(|t| {
                // Spread connections evenly: thread t gets every threads-th one.
                let ids: Vec<usize> = (t..cfg.connections).step_by(cfg.threads).collect();
                let schedule = cfg.rate.map(|rate| {
                    let per_request = Duration::from_secs_f64(1.0 / rate as f64);
                    let firsts = ids
                        .iter()
                        .map(|&i| start + per_request * i as u32)
                        .collect();
                    (firsts, per_request * cfg.connections as u32)
                });
                let plan = client::Plan {
                    target: Arc::clone(&target),
                    request: Arc::clone(&request),
                    close: cfg.close,
                    timeout: cfg.timeout,
                    deadline,
                    schedule,
                    conns: ids.len(),
                    progress: Arc::clone(&progress[t]),
                };
                s.spawn(move || client::run(&plan))
            })
            .collect();
        while Instant::now() < deadline {
            std::thread::sleep(
                Duration::from_millis(100).min(deadline - Instant::now().min(deadline)),
            );
            let done: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
            bar.set_position(start.elapsed().as_millis().min(u128::from(u64::MAX)) as u64);
            bar.set_message(format!("{done} requests"));
        }
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("panicked")))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(LoadError::Thread)?;
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    Ok(summarize(stats, elapsed))
}

fn summarize(stats: Vec<client::Stats>, elapsed: f64) -> LoadReport {
    let mut total = client::Stats {
        requests: 0,
        bytes: 0,
        errors: Errors::default(),
        latency_ns: hdrhistogram::Histogram::new(3).expect("3 significant figures is valid"),
    };
    for s in stats {
        total.requests += s.requests;
        total.bytes += s.bytes;
        total.errors.connect += s.errors.connect;
        total.errors.read += s.errors.read;
        total.errors.timeout += s.errors.timeout;
        total.errors.status += s.errors.status;
        // Auto-resizing histogram: adding cannot fail for in-range values.
        let _ = total.latency_ns.add(&s.latency_ns);
    }
    let h = &total.latency_ns;
    LoadReport {
        requests: total.requests,
        duration_secs: elapsed,
        requests_per_sec: total.requests as f64 / elapsed,
        bytes_per_sec: total.bytes as f64 / elapsed,
        errors: total.errors,
        latency_ns: Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        },
    }
}

fn progress_bar(cfg: &LoadConfig) -> indicatif::ProgressBar {
    if !cfg.progress || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(cfg.duration.as_millis() as u64);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {elapsed}/{duration} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// `kpath load`: runs and prints the report, as text or JSON.
pub fn run(args: LoadArgs) -> anyhow::Result<()> {
    let json = args.json;
    let (url, c, t) = (args.url.clone(), args.connections, args.threads);
    let report = run_load(args.into_config()).with_context(|| format!("load on {url}"))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let l = &report.latency_ns;
    println!(
        "{url}: {c} connections on {t} threads, {:.1}s",
        report.duration_secs
    );
    println!("  requests/s  {:>12.0}", report.requests_per_sec);
    println!("  MB/s        {:>12.2}", report.bytes_per_sec / 1e6);
    println!(
        "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p999),
        ms(l.max)
    );
    let e = &report.errors;
    println!(
        "  errors      connect {}  read {}  timeout {}  status {}",
        e.connect, e.read, e.timeout, e.status
    );
    Ok(())
}
