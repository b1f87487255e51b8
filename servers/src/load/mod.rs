//! `kpath load`: an HTTP load generator for servers on this machine's loopback.
//!
//! Closed loop (wrk): each connection sends its next request as soon as the previous response
//! is in. Open loop (`--rate`, wrk2): requests are due on a fixed schedule and latency counts
//! from when a request was due, so a stalled server is charged for the requests it delayed
//! (no coordinated omission).
//!
//! Several URLs of one server (`kpath load URL URL...`, `--paths-from FILE`) are requested in
//! turn by every connection, each starting at its own offset, so a run touches all of them
//! evenly and the same way every time.

mod client;
mod endpoint;
mod report;
mod response;
mod segments;

pub use endpoint::{Endpoint, EndpointError};
pub use report::{ConnectReason, Errors, Latency, LatencyPoint, LoadReport};
pub use response::{parse_head, Head, HeadError};
pub use segments::{tcp_segments, TcpSegments};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use endpoint::HttpUrl;

#[derive(Debug, clap::Args, Clone)]
#[command(after_help = "Examples:
  kpath load http://127.0.0.1:8080/index.html -c 64 -d 10
  kpath load http://127.0.0.1:8080/a.html http://127.0.0.1:8080/b.html    connections alternate a and b
  kpath load http://127.0.0.1:8080 --paths-from paths.txt -d 5            paths.txt: /f/0.html, /f/1.html, ...
  kpath load http://127.0.0.1:8080/ --close --rate 5000 --json
The report counts replies (requests), successes (2xx/3xx: requests_ok, what requests/s counts)
and errors by kind: connect (by reason: refused, unreachable, ...), read, write, timeout and
status (by status code). It exits 1 with the reason when no request succeeded, as wrk does.")]
pub struct LoadArgs {
    /// URLs to load, all on one loopback host and port. Every connection requests them in turn
    /// (round-robin), connection N starting at URL N (modulo their count).
    #[arg(required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Request the paths listed in FILE, one per line starting with / (blank lines and lines
    /// starting with # are skipped), on the host and port of the single URL, which then names
    /// only the server (http://HOST:PORT).
    #[arg(long, value_name = "FILE")]
    pub paths_from: Option<PathBuf>,
    /// Concurrent connections.
    #[arg(short = 'c', long = "connections", default_value_t = 64)]
    pub connections: usize,
    /// Threads, each running an epoll loop over its share of the connections.
    #[arg(short = 't', long, default_value_t = 2)]
    pub threads: usize,
    /// Test duration in seconds (fractions allowed; 0 is refused).
    #[arg(short = 'd', long, default_value_t = 10.0, value_parser = crate::args::seconds)]
    pub duration: f64,
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
    /// Requested in turn by every connection; one host and port for all.
    pub urls: Vec<String>,
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
            urls: vec!["http://127.0.0.1:8080/".into()],
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
    /// Reads `--paths-from` and checks the syntax of its server URL (the only steps that can
    /// fail); URLs are resolved and checked for loopback by [`run_load`].
    pub fn into_config(self) -> Result<LoadConfig, LoadError> {
        let urls = match &self.paths_from {
            Some(file) => urls_from_file(&self.urls, file)?,
            None => self.urls,
        };
        Ok(LoadConfig {
            urls,
            connections: self.connections,
            threads: self.threads,
            duration: Duration::from_secs_f64(self.duration),
            rate: self.rate,
            close: self.close,
            timeout: Duration::from_secs(self.timeout.max(1)),
            progress: true,
        })
    }
}

/// The URLs of `--paths-from FILE`: each listed path on the server that `urls` (one URL, no
/// path) names. The URL is split by the same parser as every load URL, but not resolved:
/// [`run_load`] resolves the URLs made from it.
fn urls_from_file(urls: &[String], file: &Path) -> Result<Vec<String>, LoadError> {
    let [base] = urls else {
        return Err(LoadError::PathsFromUrls { count: urls.len() });
    };
    let server = HttpUrl::parse(base)?;
    if !server.is_server_only() {
        return Err(LoadError::PathsFromBase { url: base.clone() });
    }
    let text = std::fs::read_to_string(file).map_err(|source| LoadError::PathsFile {
        path: file.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !line.starts_with('/') {
            return Err(LoadError::PathLine {
                path: file.to_path_buf(),
                line: n + 1,
                text: line.to_string(),
            });
        }
        out.push(format!("http://{}{line}", server.authority));
    }
    if out.is_empty() {
        return Err(LoadError::NoPaths {
            path: file.to_path_buf(),
        });
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("no URL to load")]
    NoUrls,
    #[error("every URL must name the same host and port as the first ({first}), not {other}")]
    MixedHosts { first: String, other: String },
    #[error("--paths-from takes exactly one URL naming the server, not {count}")]
    PathsFromUrls { count: usize },
    #[error(
        "with --paths-from the URL names only the server (http://HOST:PORT), not a path: {url}"
    )]
    PathsFromBase { url: String },
    #[error("cannot read --paths-from {}", path.display())]
    PathsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: a path must start with /: {text:?}", path.display())]
    PathLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("no paths in {} (one per line, each starting with /)", path.display())]
    NoPaths { path: PathBuf },
    #[error("need at least one connection and one thread, and no more threads than connections")]
    Shape,
    #[error("--rate must be positive")]
    Rate,
    #[error("-d 0: the duration must be a positive number of seconds")]
    Duration,
    #[error("load thread failed")]
    Thread(#[source] std::io::Error),
}

/// Every URL parsed, all on the first one's host and port.
fn endpoints(urls: &[String]) -> Result<Vec<Endpoint>, LoadError> {
    let endpoints = urls
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<Result<Vec<_>, _>>()?;
    let first = endpoints.first().ok_or(LoadError::NoUrls)?;
    if let Some(other) = endpoints
        .iter()
        .find(|t| t.addr != first.addr || !t.host.eq_ignore_ascii_case(&first.host))
    {
        return Err(LoadError::MixedHosts {
            first: first.host.clone(),
            other: other.host.clone(),
        });
    }
    Ok(endpoints)
}

pub fn run_load(cfg: LoadConfig) -> Result<LoadReport, LoadError> {
    let endpoints = endpoints(&cfg.urls)?;
    if cfg.connections == 0 || cfg.threads == 0 || cfg.threads > cfg.connections {
        return Err(LoadError::Shape);
    }
    if cfg.rate == Some(0) {
        return Err(LoadError::Rate);
    }
    if cfg.duration.is_zero() {
        return Err(LoadError::Duration);
    }
    let requests: Arc<[Box<[u8]>]> = endpoints
        .iter()
        .map(|t| t.request(cfg.close).into_boxed_slice())
        .collect();
    let addr = endpoints[0].addr;
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
                    addr,
                    requests: Arc::clone(&requests),
                    close: cfg.close,
                    timeout: cfg.timeout,
                    deadline,
                    schedule,
                    ids,
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
    Ok(report::summarize(stats, elapsed, requests.len()))
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
    let (c, t) = (args.connections, args.threads);
    let cfg = args.into_config()?;
    let url = match cfg.urls.as_slice() {
        [one] => one.clone(),
        [first, ..] => format!("{first} and {} more URLs", cfg.urls.len() - 1),
        [] => String::new(),
    };
    let report = run_load(cfg).with_context(|| format!("load on {url}"))?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print(&url, c, t);
    }
    // As wrk does: a load in which nothing succeeded is a failure, with the reason.
    match report.failure() {
        Some(why) => anyhow::bail!("load on {url}: {why}"),
        None => Ok(()),
    }
}
