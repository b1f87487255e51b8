//! `cargo xtask bench-servers`: kpath's server strategies and load generator against Debian's
//! nginx and wrk, over loopback, with ratios side by side from one run.
//!
//! Rounds are interleaved (every contender once per round) and the median per contender is
//! reported, so background load on a small machine skews all contenders alike instead of
//! whichever happened to run during a spike.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::proc::Proc;
use crate::stats::median;
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    pub duration: u64,
    /// Interleaved rounds; the median of each contender is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Connections, as wrk -c.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Client threads, as wrk -t.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Benchmark all 20 io x model combinations instead of a representative eight.
    #[arg(long)]
    pub all: bool,
}

const NGINX_PORT: u16 = 18_480;
const KPATH_PORT: u16 = 18_481;
const FILE: &str = "index.html";
const FILE_SIZE: usize = 1400;

const IOS: [&str; 4] = ["cached", "sendfile", "read", "mmap"];
const MODELS: [&str; 5] = ["epoll", "uring", "tokio", "threadpool", "thread"];

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    util::run(util::cargo().args([
        "build",
        "--release",
        "-p",
        "servers",
        "--example",
        "kpath-serve-bench",
    ]))?;
    let kpath = util::target_dir().join("release/examples/kpath-serve-bench");
    for tool in ["nginx", "wrk"] {
        if util::which(tool).is_none() {
            bail!("{tool} not found: apt-get install {tool} (cargo xtask setup installs it)");
        }
    }

    let work = std::env::temp_dir().join(format!("kpath-bench-servers-{}", std::process::id()));
    let www = work.join("www");
    std::fs::create_dir_all(work.join("logs"))?;
    std::fs::create_dir_all(&www)?;
    let body: Vec<u8> = (0..FILE_SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    std::fs::write(www.join(FILE), body)?;
    let result = bench(args, &kpath, &work, &www);
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// A measured contender: a label and its requests/s in each round.
struct Row {
    label: String,
    samples: Vec<f64>,
}

impl Row {
    fn new(label: impl Into<String>) -> Row {
        Row {
            label: label.into(),
            samples: Vec::new(),
        }
    }

    fn median(&self) -> f64 {
        median(&self.samples).unwrap_or(0.0)
    }
}

fn bench(args: &Args, kpath: &Path, work: &Path, www: &Path) -> anyhow::Result<()> {
    let strategies: Vec<(&str, &str)> = if args.all {
        IOS.iter()
            .flat_map(|io| MODELS.iter().map(move |m| (*io, *m)))
            .collect()
    } else {
        let mut s: Vec<_> = IOS.iter().map(|io| (*io, "epoll")).collect();
        s.extend(MODELS[1..].iter().map(|m| ("cached", *m)));
        s
    };
    let nginx = Nginx::start(work, www)?;
    let nginx_url = format!("http://127.0.0.1:{NGINX_PORT}/{FILE}");
    let kpath_url = format!("http://127.0.0.1:{KPATH_PORT}/{FILE}");

    let mut keep = vec![Row::new("nginx")];
    let mut close = vec![Row::new("nginx")];
    for (io, model) in &strategies {
        keep.push(Row::new(format!("kpath {io}/{model}")));
        close.push(Row::new(format!("kpath {io}/{model}")));
    }
    let mut clients = [Row::new("wrk"), Row::new("kpath load")];

    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        keep[0].samples.push(wrk(args, &nginx_url, false)?);
        close[0].samples.push(wrk(args, &nginx_url, true)?);
        for (i, (io, model)) in strategies.iter().enumerate() {
            let server = Server::start(kpath, www, io, model)?;
            keep[i + 1].samples.push(wrk(args, &kpath_url, false)?);
            close[i + 1].samples.push(wrk(args, &kpath_url, true)?);
            server.stop();
        }
        clients[0].samples.push(wrk(args, &nginx_url, false)?);
        clients[1]
            .samples
            .push(kpath_load(args, kpath, &nginx_url)?);
    }
    drop(nginx);

    println!(
        "\n1.4 KB file, {} connections, client threads {}, {} s x {} interleaved rounds (median), loopback",
        args.connections, args.threads, args.duration, args.rounds
    );
    println!("machine: {}", machine());
    print_table("server (client: wrk)", &keep, &close);
    let (w, k) = (clients[0].median(), clients[1].median());
    println!("\n| client against nginx (keep-alive) | requests/s | vs wrk |");
    println!("|---|---:|---:|");
    println!("| wrk | {w:.0} | 1.00x |");
    println!("| kpath load | {k:.0} | {:.2}x |", k / w);
    Ok(())
}

fn print_table(what: &str, keep: &[Row], close: &[Row]) {
    let (nk, nc) = (keep[0].median(), close[0].median());
    println!("\n| {what} | keep-alive req/s | vs nginx | close-per-request req/s | vs nginx |");
    println!("|---|---:|---:|---:|---:|");
    for (k, c) in keep.iter().zip(close) {
        let (mk, mc) = (k.median(), c.median());
        println!(
            "| {} | {mk:.0} | {:.2}x | {mc:.0} | {:.2}x |",
            k.label,
            mk / nk,
            mc / nc
        );
    }
    let best = |rows: &[Row]| {
        rows[1..]
            .iter()
            .max_by(|a, b| a.median().total_cmp(&b.median()))
            .map_or(("-".to_string(), 0.0), |r| (r.label.clone(), r.median()))
    };
    let (bk, bkv) = best(keep);
    let (bc, bcv) = best(close);
    println!(
        "\nbest keep-alive: {bk} at {:.2}x nginx; best close-per-request: {bc} at {:.2}x nginx",
        bkv / nk,
        bcv / nc
    );
}

fn wrk(args: &Args, url: &str, close: bool) -> anyhow::Result<f64> {
    wrk_rps(args.threads, args.connections, args.duration, url, close)
}

/// wrk's Requests/sec for one run (`close`: a new connection per request).
pub(crate) fn wrk_rps(
    threads: usize,
    connections: usize,
    secs: u64,
    url: &str,
    close: bool,
) -> anyhow::Result<f64> {
    wrk_run(threads, connections, secs, url, close).map(|w| w.requests_per_sec)
}

/// What one wrk run reports.
pub(crate) struct Wrk {
    pub requests_per_sec: f64,
    /// Completed requests ("N requests in ...").
    pub requests: u64,
}

pub(crate) fn wrk_run(
    threads: usize,
    connections: usize,
    secs: u64,
    url: &str,
    close: bool,
) -> anyhow::Result<Wrk> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{secs}s"),
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).output().context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unexpected wrk output: {text}"))
}

fn parse_wrk(text: &str) -> Option<Wrk> {
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    // "  1234 requests in 3.00s, 2.05MB read"
    let requests = text
        .lines()
        .find_map(|l| l.split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())?;
    Some(Wrk {
        requests_per_sec,
        requests,
    })
}

fn kpath_load(args: &Args, kpath: &Path, url: &str) -> anyhow::Result<f64> {
    let out = Command::new(kpath)
        .args(["load", url, "--json"])
        .args([
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
        ])
        .args(["-d", &args.duration.to_string()])
        .output()
        .context("running kpath load")?;
    let text = String::from_utf8_lossy(&out.stdout);
    load_rps(&text).with_context(|| format!("unexpected kpath load --json output: {text}"))
}

/// The part of `kpath load --json` read here.
#[derive(Deserialize)]
struct LoadJson {
    requests_per_sec: f64,
}

fn load_rps(json: &str) -> anyhow::Result<f64> {
    Ok(serde_json::from_str::<LoadJson>(json)?.requests_per_sec)
}

struct Nginx(#[allow(dead_code)] Proc);

impl Nginx {
    fn start(work: &Path, www: &Path) -> anyhow::Result<Nginx> {
        let conf = work.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "user root;\nworker_processes 2;\npid {pid};\nerror_log {log};\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 1000000;\n  \
                 types {{ text/html html; }}\n  \
                 server {{ listen 127.0.0.1:{NGINX_PORT}; root {www}; }}\n}}\n",
                pid = work.join("nginx.pid").display(),
                log = work.join("logs/error.log").display(),
                www = www.display(),
            ),
        )?;
        let nginx = Nginx(Proc::spawn(
            Command::new("nginx")
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(work)
                .args(["-g", "daemon off;"]),
        )?);
        wait_listening(NGINX_PORT)?;
        Ok(nginx)
    }
}

struct Server(Proc);

impl Server {
    fn start(kpath: &Path, www: &Path, io: &str, model: &str) -> anyhow::Result<Server> {
        let server = Server(Proc::spawn(
            Command::new(kpath)
                .args(["serve", "--addr", &format!("127.0.0.1:{KPATH_PORT}")])
                .arg("--root")
                .arg(www)
                .args(["--io", io, "--model", model])
                .stderr(Stdio::null()),
        )?);
        wait_listening(KPATH_PORT)?;
        Ok(server)
    }

    fn stop(self) {
        drop(self.0);
    }
}

pub(crate) fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listening on 127.0.0.1:{port} after 5 s")
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::{load_rps, parse_wrk, Row};

    #[test]
    fn row_median_of_an_even_round_count_is_the_mean_of_the_middle_two() {
        let mut row = Row::new("x");
        row.samples = vec![100.0, 300.0];
        assert_eq!(row.median(), 200.0);
        assert_eq!(Row::new("empty").median(), 0.0);
    }

    #[test]
    fn reads_requests_per_sec_from_kpath_load_json() {
        let json = r#"{"urls":1,"requests":10,"duration_secs":2.0,"requests_per_sec":5.5,
            "errors":{"connect":0},"latency_ns":{"p50":1}}"#;
        assert_eq!(load_rps(json).unwrap(), 5.5);
        assert!(load_rps("requests_per_sec: 5").is_err());
    }

    #[test]
    fn parses_wrk_totals() {
        let text = "Running 3s test @ http://127.0.0.1:1/x\n  1 threads and 64 connections\n\
                    \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n\
                    \x20 371652 requests in 3.00s, 583.82MB read\nRequests/sec: 123859.21\n\
                    Transfer/sec:    194.55MB\n";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.requests, 371_652);
        assert_eq!(w.requests_per_sec, 123_859.21);
        assert!(parse_wrk("Requests/sec: 5\n").is_none());
    }
}
