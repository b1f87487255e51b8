//! `kpath bench`: the reference server under every requested strategy, one after another, each
//! in its own process with all probe families attached (`kpath record -p`) and the same load
//! (`kpath load`) from another process; then one side-by-side table, `bench.json`, differential
//! flame graphs against the first strategy and `report.html`.
//!
//! Separate processes keep the recording honest: only the server is traced, and the load
//! generator's CPU never shows up in its numbers.
pub mod json;
pub mod plots;
pub mod report;
pub mod table;

use std::fs::File;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use servers::serve::{Io, Model};

use self::json::{Bench, BenchRun, LoadSummary, Strategy, BENCH_FORMAT_VERSION};
use crate::process::KillOnDrop;
use crate::render::flame::{self, FlameKind};
use crate::render::json as run_json;

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
    /// `--call-graph` of each recording (`None`: record's default, dwarf where supported).
    pub call_graph: Option<crate::probes::CallGraph>,
    pub out_dir: PathBuf,
    /// The kpath binary that serves, records and loads.
    pub kpath: PathBuf,
    /// How long `kpath record` may take to attach.
    pub attach_timeout: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            strategies: vec![Strategy::new(Io::Cached, Model::Epoll, 1)],
            connections: 32,
            load_threads: 2,
            duration: Duration::from_secs(5),
            file_size: 1400,
            frequency: 99,
            call_graph: None,
            out_dir: PathBuf::from("runs/bench"),
            kpath: PathBuf::from("kpath"),
            attach_timeout: Duration::from_secs(30),
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
    // Dropped in reverse order on an error: the recording stops before its server.
    let server = start_server(opts, s, root, addr, &run_dir)?;
    let mut record = start_recording(opts, server.pid(), &run_dir)?;
    let load = run_load(opts, s, addr)?;
    write(&run_dir.join("load.json"), &load)?;
    let load: LoadSummary = serde_json::from_slice(&load).map_err(BenchError::LoadOutput)?;
    stop_recording(&mut record, &run_dir)?;
    drop(server);
    let run = run_json::from_file(&run_dir.join("run.json"))?;
    Ok(BenchRun::new(*s, &load, &run, run_rel))
}

/// Spawns `cmd` with stdin closed and stdout and stderr going to a new log file at `path`.
fn spawn_logged(
    mut cmd: Command,
    path: &Path,
    what: &'static str,
) -> Result<KillOnDrop, BenchError> {
    let log = log_file(path)?;
    let log2 = log.try_clone().map_err(|source| BenchError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log2)
        .stderr(log)
        .spawn()
        .map_err(|source| BenchError::Spawn { what, source })?;
    Ok(KillOnDrop::adopt(child))
}

/// `kpath serve` of the strategy on `addr`, once it accepts connections.
fn start_server(
    opts: &BenchOptions,
    s: &Strategy,
    root: &Path,
    addr: SocketAddr,
    run_dir: &Path,
) -> Result<KillOnDrop, BenchError> {
    let serve_log = run_dir.join("serve.log");
    let mut cmd = Command::new(&opts.kpath);
    cmd.args(["serve", "--io", &s.io.to_string()])
        .args(["--model", &s.model.to_string(), "--addr"])
        .arg(addr.to_string())
        .arg("--root")
        .arg(root);
    if let Some(ka) = s.keepalive {
        cmd.args(["--keepalive", &ka.to_string()]);
    }
    let mut server = spawn_logged(cmd, &serve_log, "kpath serve")?;
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if server.try_wait().is_some() || start.elapsed() > Duration::from_secs(10) {
            return Err(BenchError::NotListening {
                addr,
                secs: 10,
                log: serve_log,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// `kpath record -p SERVER` into `run_dir`, once its probes are attached. It records until
/// SIGINT ([`stop_recording`]); its duration is only a backstop should bench itself die.
fn start_recording(
    opts: &BenchOptions,
    server: u32,
    run_dir: &Path,
) -> Result<KillOnDrop, BenchError> {
    let record_log = run_dir.join("record.log");
    let ready = run_dir.join("record.ready");
    let _ = std::fs::remove_file(&ready);
    let backstop = opts.duration.as_secs() + 120;
    let mut cmd = Command::new(&opts.kpath);
    cmd.args(["record", "-p", &server.to_string()])
        .args(["-d", &backstop.to_string()])
        .args(["-F", &opts.frequency.to_string(), "--bpf-stats"])
        .args(
            opts.call_graph
                .iter()
                .flat_map(|c| ["--call-graph", c.name()]),
        )
        .arg("--ready-file")
        .arg(&ready)
        .arg("-o")
        .arg(run_dir);
    let mut record = spawn_logged(cmd, &record_log, "kpath record")?;
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = record.try_wait() {
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
    Ok(record)
}

/// `kpath load --json` against the server; its report as printed.
fn run_load(opts: &BenchOptions, s: &Strategy, addr: SocketAddr) -> Result<Vec<u8>, BenchError> {
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
        .args(["-d", &opts.duration.as_secs_f64().to_string(), "--json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| BenchError::Spawn {
            what: "kpath load",
            source,
        })?;
    if !out.status.success() {
        return Err(BenchError::LoadFailed {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// SIGINT to `kpath record`, which then writes the run; waits for it to finish.
fn stop_recording(record: &mut KillOnDrop, run_dir: &Path) -> Result<(), BenchError> {
    let wait = Duration::from_secs(120);
    // An error means it is gone already: the wait reports how it ended.
    let _ = record.signal(libc::SIGINT);
    let status = record.wait_timeout(wait).ok_or(BenchError::RecordHung {
        secs: wait.as_secs(),
    })?;
    if !status.success() {
        return Err(BenchError::RecordFailed {
            status,
            log: tail(&run_dir.join("record.log")),
        });
    }
    Ok(())
}

/// On-CPU and off-CPU differential flame graphs of every run against the first, with both
/// sides' totals; a missing folded file (the oncpu or sched family not recorded) skips that
/// kind with a warning.
fn diffs(opts: &BenchOptions, bench: &mut Bench) {
    let Some((base, rest)) = bench.runs.split_first_mut() else {
        return;
    };
    for kind in [FlameKind::OnCpu, FlameKind::OffCpu] {
        let read =
            |rel: &str| std::fs::read_to_string(opts.out_dir.join(rel).join(kind.folded_name()));
        let Ok(a) = read(&base.run_dir) else {
            log::warn!(
                "no {} in {}: no differential graphs of it",
                kind.folded_name(),
                base.run_dir
            );
            continue;
        };
        let tag = match kind {
            FlameKind::OnCpu => "",
            FlameKind::OffCpu => "-offcpu",
            FlameKind::Wall => "-wall",
        };
        for r in rest.iter_mut() {
            let svg = format!("diff/{}-vs-{}{tag}.svg", r.name, base.name);
            let made = read(&r.run_dir).map_err(anyhow::Error::from).and_then(|b| {
                let lines = crate::render::flame::diff_folded(&a, &b)?;
                let o = crate::render::flame::diff_options(kind, &base.name, &r.name);
                flame::render_file(&lines, &o, &opts.out_dir.join(&svg))?;
                Ok(json::DiffTotals {
                    baseline: flame::folded_total(&a),
                    run: flame::folded_total(&b),
                })
            });
            match (made, kind) {
                (Ok(t), FlameKind::OnCpu) => {
                    // As `kpath diff` does: say when a graph rests on too few samples.
                    let note = flame::diff_note(kind, (&base.name, t.baseline), (&r.name, t.run));
                    if let Some(w) = note.warning {
                        eprintln!("warning: differential graph {svg}: {w}");
                    }
                    r.diff_oncpu_svg = Some(svg);
                    r.diff_oncpu_samples = Some(t);
                }
                (Ok(t), FlameKind::OffCpu) => {
                    r.diff_offcpu_svg = Some(svg);
                    r.diff_offcpu_ns = Some(t);
                }
                // Not differenced (the loop above takes on- and off-CPU only).
                (Ok(_), FlameKind::Wall) => {}
                (Err(e), _) => log::warn!("differential graph of {}: {e:#}", r.name),
            }
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
        // Whole seconds in bench.json (its format); a fractional -d rounds up.
        duration_secs: opts.duration.as_secs_f64().ceil() as u64,
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
            opts.duration.as_secs_f64()
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
    bench.findings = findings(&opts.out_dir, &bench).unwrap_or_default();
    let text = serde_json::to_string_pretty(&bench).expect("a Bench always serializes") + "\n";
    write(&opts.out_dir.join("bench.json"), text.as_bytes())?;
    report::write_bench_report(&opts.out_dir, &bench)?;
    Ok(bench)
}

/// The findings engine over each strategy's run (its run.json under `dir`), per request as
/// the load generator counted them; a run that cannot be read has none, and `None` says no
/// run could be read.
pub fn findings(dir: &Path, bench: &Bench) -> Option<Vec<crate::run::Finding>> {
    let mut out = Vec::new();
    let mut read = false;
    for r in &bench.runs {
        let Ok(run) = run_json::from_file(&dir.join(&r.run_dir).join("run.json")) else {
            continue;
        };
        read = true;
        let facts = crate::findings::Facts::from_run(&run)
            .with_requests(&run, r.requests, "counted by kpath load")
            .with_reply_segments(r.reply_segments_per_request);
        for mut f in crate::findings::evaluate(&facts) {
            f.strategy = Some(r.name.clone());
            out.push(f);
        }
    }
    read.then_some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_has_the_requested_size() {
        assert_eq!(page(1400).len(), 1400);
        assert_eq!(page(0).len(), 0);
    }

    #[test]
    fn findings_are_per_strategy_and_per_counted_request() {
        use crate::run::{Run, SyscallRow};
        let dir = std::env::temp_dir().join(format!("kpath-bench-findings-{}", std::process::id()));
        let sc = |name: &str, count| SyscallRow {
            name: name.into(),
            count,
            ..Default::default()
        };
        // 20000 setsockopt: 2 per request by the load generator's 10000, but 0.5 per writev.
        let run = Run {
            syscalls: vec![sc("writev", 40_000), sc("setsockopt", 20_000)],
            ..Default::default()
        };
        std::fs::create_dir_all(dir.join("runs/a")).unwrap();
        std::fs::write(
            dir.join("runs/a/run.json"),
            serde_json::to_string(&run).unwrap(),
        )
        .unwrap();
        let bench = Bench {
            runs: vec![
                BenchRun {
                    name: "a".into(),
                    requests: 10_000,
                    reply_segments_per_request: Some(1.0),
                    run_dir: "runs/a".into(),
                    ..Default::default()
                },
                BenchRun {
                    name: "missing".into(),
                    run_dir: "runs/missing".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let f = findings(&dir, &bench).expect("one run readable");
        assert!(findings(&dir.join("nowhere"), &bench).is_none());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].id, "tcp-cork");
        assert_eq!(f[0].strategy.as_deref(), Some("a"));
        assert!(
            f[0].evidence
                .contains("2.00 setsockopt per request (10000 requests, counted by kpath load")
                && f[0].evidence.contains("1.00 reply segments per request"),
            "{}",
            f[0].evidence
        );
        // Written into bench.json and printed under the bench's tables.
        let b = Bench {
            findings: f,
            ..Default::default()
        };
        assert!(table::render(&b).contains("[medium] tcp-cork (a): TCP_CORK"));
    }
}
