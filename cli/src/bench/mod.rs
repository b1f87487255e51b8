//! `kpath bench`: the reference server under every requested strategy, one after another, each
//! in its own process with all probe families attached (`kpath record -p`) and the same load
//! (`kpath load`) from another process; then one side-by-side table, `bench.json`, differential
//! flame graphs against the first strategy and `report.html`.
//!
//! Separate processes keep the recording honest: only the server is traced, and the load
//! generator's CPU never shows up in its numbers.
pub mod json;
pub mod report;
pub mod table;

use std::fs::File;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use servers::serve::{Io, Model};

use self::json::{Bench, BenchRun, LoadSummary, Strategy, BENCH_FORMAT_VERSION};
use crate::render::flame::{self, FlameKind};
use crate::render::json as run_json;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sudo kpath bench --io mmap,sendfile,cached --model epoll --keepalive 1 -d 3 -o runs/bench
  sudo kpath bench --io cached --model epoll,threadpool,uring --keepalive 1,100
  sudo kpath bench --io sendfile --keepalive 0 --files 1,1000     one file for all vs 1000 files")]
pub struct BenchArgs {
    /// File strategies, comma separated (read, mmap, sendfile, sendfile-nocork, cached).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cached")]
    pub io: Vec<Io>,
    /// Threading models, comma separated (epoll, threadpool, thread, tokio, uring).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "epoll")]
    pub model: Vec<Model>,
    /// Requests per connection, comma separated (1 closes after every reply; 0 is unlimited).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub keepalive: Vec<u32>,
    /// Load generator connections.
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds of load per strategy.
    #[arg(short = 'd', long, default_value_t = 5)]
    pub duration: u64,
    /// Size in bytes of the file every request fetches.
    #[arg(long = "file", default_value_t = 1400)]
    pub file_size: usize,
    /// Distinct files (each --file bytes) the requests rotate over, comma separated: 1 sends
    /// one file to every connection, N spreads each connection's requests over N files.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub files: Vec<u32>,
    /// On-CPU sampling frequency (Hz) of each recording.
    #[arg(short = 'F', long, default_value_t = 99)]
    pub frequency: u64,
    /// Bench directory (default: runs/bench-<unix time>).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// Library options for [`bench`].
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// In order; the first is the baseline of the differential flame graphs.
    pub strategies: Vec<Strategy>,
    pub connections: usize,
    pub load_threads: usize,
    pub duration: Duration,
    pub file_size: usize,
    pub frequency: u64,
    pub out_dir: PathBuf,
    /// The kpath binary that serves, records and loads.
    pub kpath: PathBuf,
    /// How long `kpath record` may take to attach.
    pub attach_timeout: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            strategies: vec![Strategy {
                io: Io::Cached.to_string(),
                model: Model::Epoll.to_string(),
                keepalive: Some(1),
                files: None,
            }],
            connections: 32,
            load_threads: 2,
            duration: Duration::from_secs(5),
            file_size: 1400,
            frequency: 99,
            out_dir: PathBuf::from("runs/bench"),
            kpath: PathBuf::from("kpath"),
            attach_timeout: Duration::from_secs(30),
        }
    }
}

impl BenchArgs {
    /// Every combination, io outermost, so `--io a,b` reads as the comparison's rows.
    pub fn strategies(&self) -> Vec<Strategy> {
        let mut out = Vec::new();
        for io in &self.io {
            for model in &self.model {
                for &ka in &self.keepalive {
                    for &files in &self.files {
                        let s = Strategy {
                            io: io.to_string(),
                            model: model.to_string(),
                            keepalive: (ka > 0).then_some(ka),
                            files: (files > 1).then_some(files),
                        };
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                }
            }
        }
        out
    }

    pub fn into_options(self, kpath: PathBuf, now_secs: u64) -> BenchOptions {
        BenchOptions {
            strategies: self.strategies(),
            connections: self.connections,
            duration: Duration::from_secs(self.duration),
            file_size: self.file_size,
            frequency: self.frequency,
            out_dir: self
                .output
                .unwrap_or_else(|| PathBuf::from(format!("runs/bench-{now_secs}"))),
            kpath,
            ..BenchOptions::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the server did not listen on {addr} within {secs} s (log: {})", log.display())]
    NotListening {
        addr: SocketAddr,
        secs: u64,
        log: PathBuf,
    },
    #[error("kpath record exited before attaching ({status}):\n{log}")]
    RecordExited { status: ExitStatus, log: String },
    #[error("kpath record did not attach within {secs} s:\n{log}")]
    NotAttached { secs: u64, log: String },
    #[error("kpath record failed ({status}):\n{log}")]
    RecordFailed { status: ExitStatus, log: String },
    #[error("kpath record did not finish within {secs} s of SIGINT")]
    RecordHung { secs: u64 },
    #[error("kpath load failed ({status}): {stderr}")]
    LoadFailed { status: ExitStatus, stderr: String },
    #[error("kpath load printed no report")]
    LoadOutput(#[source] serde_json::Error),
    #[error(transparent)]
    Run(#[from] run_json::JsonError),
    #[error(transparent)]
    Html(#[from] crate::render::html::HtmlError),
    #[error("no strategy to run")]
    Empty,
}

/// A child that is killed and reaped if it is still running when dropped (errors, Ctrl-C paths).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits up to `timeout`; `None` if it is still running.
    fn wait_for(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.0.try_wait()? {
                return Ok(Some(s));
            }
            if start.elapsed() >= timeout {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn write(path: &Path, data: &[u8]) -> Result<(), BenchError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|source| BenchError::Write {
            path: d.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(path, data).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn log_file(path: &Path) -> Result<File, BenchError> {
    File::create(path).map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A loopback port nobody listens on right now.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Page content of exactly `size` bytes.
fn page(size: usize) -> Vec<u8> {
    let line = b"<p>kpath bench page: the same bytes for every strategy.</p>\n";
    line.iter().copied().cycle().take(size).collect()
}

/// Writes the pages every strategy needs into `root`: `index.html`, the one file, and
/// `f0.html`.. for many-file runs, beside it so that opening any of them walks the same path
/// depth; and for each many-file count N the list of its N paths (`paths-N.txt` beside the
/// root) that `kpath load --paths-from` reads.
fn write_pages(opts: &BenchOptions, root: &Path) -> Result<(), BenchError> {
    let content = page(opts.file_size);
    write(&root.join("index.html"), &content)?;
    let most = opts.strategies.iter().filter_map(|s| s.files).max();
    for i in 0..most.unwrap_or(0) {
        write(&root.join(format!("f{i}.html")), &content)?;
    }
    for n in opts.strategies.iter().filter_map(|s| s.files) {
        let list: String = (0..n).map(|i| format!("/f{i}.html\n")).collect();
        write(&paths_file(opts, n), list.as_bytes())?;
    }
    Ok(())
}

fn paths_file(opts: &BenchOptions, files: u32) -> PathBuf {
    opts.out_dir.join(format!("paths-{files}.txt"))
}

/// Runs one strategy: server, recording, load, collection. Returns the bench row.
fn run_one(
    opts: &BenchOptions,
    s: &Strategy,
    root: &Path,
    run_rel: &str,
) -> Result<BenchRun, BenchError> {
    let run_dir = opts.out_dir.join(run_rel);
    std::fs::create_dir_all(&run_dir).map_err(|source| BenchError::Write {
        path: run_dir.clone(),
        source,
    })?;
    let port = free_port().map_err(|source| BenchError::Spawn {
        what: "the server (no free port)",
        source,
    })?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    let serve_log = run_dir.join("serve.log");
    let mut cmd = Command::new(&opts.kpath);
    cmd.args(["serve", "--io", &s.io, "--model", &s.model, "--addr"])
        .arg(addr.to_string())
        .arg("--root")
        .arg(root);
    if let Some(ka) = s.keepalive {
        cmd.args(["--keepalive", &ka.to_string()]);
    }
    let log = log_file(&serve_log)?;
    let server = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|source| BenchError::Write {
            path: serve_log.clone(),
            source,
        })?)
        .stderr(log)
        .spawn()
        .map_err(|source| BenchError::Spawn {
            what: "kpath serve",
            source,
        })?;
    let mut server = Proc(server);
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        let exited = server.0.try_wait().ok().flatten().is_some();
        if exited || start.elapsed() > Duration::from_secs(10) {
            return Err(BenchError::NotListening {
                addr,
                secs: 10,
                log: serve_log,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Record until SIGINT; the duration is only a backstop should bench itself die.
    let record_log = run_dir.join("record.log");
    let ready = run_dir.join("record.ready");
    let _ = std::fs::remove_file(&ready);
    let log = log_file(&record_log)?;
    let backstop = opts.duration.as_secs() + 120;
    let record = Command::new(&opts.kpath)
        .args(["record", "-p", &server.pid().to_string()])
        .args(["-d", &backstop.to_string()])
        .args([
            "-F",
            &opts.frequency.to_string(),
            "--bpf-stats",
            "--ready-file",
        ])
        .arg(&ready)
        .arg("-o")
        .arg(&run_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|source| BenchError::Write {
            path: record_log.clone(),
            source,
        })?)
        .stderr(log)
        .spawn()
        .map_err(|source| BenchError::Spawn {
            what: "kpath record",
            source,
        })?;
    let mut record = Proc(record);
    let start = Instant::now();
    while !ready.exists() {
        if let Ok(Some(status)) = record.0.try_wait() {
            return Err(BenchError::RecordExited {
                status,
                log: tail(&record_log),
            });
        }
        if start.elapsed() > opts.attach_timeout {
            return Err(BenchError::NotAttached {
                secs: opts.attach_timeout.as_secs(),
                log: tail(&record_log),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut load = Command::new(&opts.kpath);
    load.arg("load");
    match s.files {
        None => load.arg(format!("http://{addr}/index.html")),
        Some(n) => load
            .arg(format!("http://{addr}"))
            .arg("--paths-from")
            .arg(paths_file(opts, n)),
    };
    let out = load
        .args(["-c", &opts.connections.to_string()])
        .args(["-t", &opts.load_threads.min(opts.connections).to_string()])
        .args(["-d", &opts.duration.as_secs().max(1).to_string(), "--json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            what: "kpath load",
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(BenchError::LoadFailed {
            status: out.status,
            stderr,
        });
    }
    write(&run_dir.join("load.json"), &out.stdout)?;
    let load: LoadSummary = serde_json::from_slice(&out.stdout).map_err(BenchError::LoadOutput)?;

    unsafe { libc::kill(record.pid() as libc::pid_t, libc::SIGINT) };
    let wait = Duration::from_secs(120);
    let status = match record.wait_for(wait) {
        Ok(Some(s)) => s,
        _ => {
            return Err(BenchError::RecordHung {
                secs: wait.as_secs(),
            })
        }
    };
    if !status.success() {
        return Err(BenchError::RecordFailed {
            status,
            log: tail(&record_log),
        });
    }
    drop(server);
    let run = run_json::from_file(&run_dir.join("run.json"))?;
    Ok(BenchRun::new(s.clone(), &load, &run, run_rel))
}

/// On-CPU differential flame graphs of every run against the first; a missing folded file (the
/// oncpu family not recorded) skips the graph with a warning.
fn diffs(opts: &BenchOptions, bench: &mut Bench) {
    let Some((base, rest)) = bench.runs.split_first_mut() else {
        return;
    };
    let kind = FlameKind::OnCpu;
    let read = |rel: &str| std::fs::read_to_string(opts.out_dir.join(rel).join(kind.folded_name()));
    let Ok(a) = read(&base.run_dir) else {
        log::warn!(
            "no on-CPU stacks in {}: no differential graphs",
            base.run_dir
        );
        return;
    };
    for r in rest {
        let svg = format!("diff/{}-vs-{}.svg", r.name, base.name);
        let made = read(&r.run_dir)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(crate::render::flame::diff_folded(&a, &b)?))
            .and_then(|lines| {
                let o = crate::render::flame::diff_options(kind, &base.name, &r.name);
                Ok(flame::render_file(&lines, &o, &opts.out_dir.join(&svg))?)
            });
        match made {
            Ok(()) => r.diff_oncpu_svg = Some(svg),
            Err(e) => log::warn!("differential graph of {}: {e:#}", r.name),
        }
    }
}

/// Runs every strategy and writes `bench.json`; the tables and HTML are rendered from it.
pub fn bench(opts: &BenchOptions) -> Result<Bench, BenchError> {
    if opts.strategies.is_empty() {
        return Err(BenchError::Empty);
    }
    let root = opts.out_dir.join("www");
    write_pages(opts, &root)?;
    let mut bench = Bench {
        format_version: BENCH_FORMAT_VERSION,
        kpath_version: env!("CARGO_PKG_VERSION").to_string(),
        duration_secs: opts.duration.as_secs(),
        connections: opts.connections,
        file_size: opts.file_size,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        baseline: opts.strategies[0].name(),
        ..Bench::default()
    };
    let n = opts.strategies.len();
    for (i, s) in opts.strategies.iter().enumerate() {
        let name = s.name();
        eprintln!(
            "kpath bench [{}/{n}] {name}: serving, recording, {} s of load ...",
            i + 1,
            opts.duration.as_secs()
        );
        let rel = format!("runs/{name}");
        let r = run_one(opts, s, &root, &rel)?;
        eprintln!(
            "kpath bench [{}/{n}] {name}: {} req/s, {} syscalls/req, {} busy in syscalls/req",
            i + 1,
            crate::render::fmt_si(r.requests_per_sec),
            table::fmt_per(r.syscalls_per_request),
            table::fmt_ns_per(r.busy_kernel_ns_per_request),
        );
        if bench.runs.is_empty() {
            if let Ok(run) = run_json::from_file(&opts.out_dir.join(&rel).join("run.json")) {
                bench.kernel = run.kernel;
            }
        }
        bench.runs.push(r);
    }
    let _ = std::fs::create_dir_all(opts.out_dir.join("diff"));
    diffs(opts, &mut bench);
    let text = serde_json::to_string_pretty(&bench).expect("a Bench always serializes") + "\n";
    write(&opts.out_dir.join("bench.json"), text.as_bytes())?;
    report::write_bench_report(&opts.out_dir, &bench)?;
    Ok(bench)
}

/// Reads a `bench.json` back (the HTML report and tests use it).
pub fn read_bench(path: &Path) -> anyhow::Result<Bench> {
    let mut text = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid bench.json", path.display()))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !crate::kernel::features::is_root() {
        anyhow::bail!("kpath bench records with BPF and needs root: run it with sudo");
    }
    let exe = std::env::current_exe().context("locating the kpath binary")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let opts = args.into_options(exe, now);
    let bench = bench(&opts).context("kpath bench")?;
    print!("{}", table::render(&bench));
    eprintln!(
        "kpath: bench written to {} (report.html, bench.json, runs/, diff/)",
        opts.out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn every_combination_in_order() {
        let a = Cli::parse_from([
            "kpath",
            "--io",
            "mmap,cached",
            "--model",
            "epoll",
            "--keepalive",
            "1,0",
        ])
        .bench;
        let names: Vec<String> = a.strategies().iter().map(Strategy::name).collect();
        assert_eq!(
            names,
            [
                "mmap-epoll-ka1",
                "mmap-epoll-kainf",
                "cached-epoll-ka1",
                "cached-epoll-kainf"
            ]
        );
        let o = a.into_options(PathBuf::from("/k"), 7);
        assert_eq!(o.out_dir, PathBuf::from("runs/bench-7"));
        assert_eq!(o.duration, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["kpath", "--io", "bogus"]).is_err());

        let a = Cli::parse_from(["kpath", "--io", "sendfile-nocork", "--files", "1,1000"]).bench;
        let names: Vec<String> = a.strategies().iter().map(Strategy::name).collect();
        assert_eq!(
            names,
            [
                "sendfile-nocork-epoll-ka1",
                "sendfile-nocork-epoll-ka1-1000files"
            ]
        );
        assert!(Cli::try_parse_from(["kpath", "--files", "0"]).is_err());
    }

    #[test]
    fn page_has_the_requested_size() {
        assert_eq!(page(1400).len(), 1400);
        assert_eq!(page(0).len(), 0);
    }
}
