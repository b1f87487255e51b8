//! `kpath agent`, read by its real consumers: a Prometheus server and promtool (Debian's
//! `prometheus` 2.42), started by the tests themselves.
//!
//! - `prometheus_counts_every_openat`: the agent follows `--comm agent_open`; three processes
//!   of tests/workloads/agent_open.c (static: no loader openat) make exactly 1000 openat calls
//!   each; Prometheus, scraping every 1 s on loopback, answers
//!   `sum(kpath_syscalls_total{syscall="openat"})` == 3000, the same by comm, and a finite
//!   positive `histogram_quantile(0.99, ...)` over `kpath_syscall_duration_seconds`;
//!   `promtool check metrics` finds nothing in a scraped /metrics; `kill -TERM` ends the agent
//!   with status 0 and its last (partial) window is written.
//! - `deploy_rules_check_and_their_tests_pass`: `promtool check rules` and `promtool test
//!   rules` on deploy/prometheus.
//! - `soak_with_churning_targets`: 40 s of the agent with `--window 10` following a new
//!   short-lived target every ~50 ms: at least 3 windows, each run.json parses, and VmRSS at
//!   40 s <= 1.2 x VmRSS at 15 s.
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::*;

/// A tool from Debian's prometheus package, or `None` (a panic when root tests are required).
fn tool(name: &str) -> Option<PathBuf> {
    match which::which(name) {
        Ok(p) => Some(p),
        Err(_) => {
            let why = format!(
                "`{name}` is not on PATH (Debian's prometheus; cargo xtask setup installs it)"
            );
            if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// GET `path` on 127.0.0.1:`port`; the body (panics on anything but 200).
fn http_get(port: u16, path: &str, accept: &str) -> String {
    try_http_get(port, path, accept).unwrap_or_else(|| panic!("GET {path} on port {port} failed"))
}

/// [`http_get`], `None` when nothing listens yet or the answer is not a 200.
fn try_http_get(port: u16, path: &str, accept: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_string())
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Values of an instant query to Prometheus' HTTP API, by the label `by` (or "" when none);
/// empty while Prometheus is not up yet.
fn query(port: u16, q: &str, by: &str) -> Vec<(String, f64)> {
    let path = format!("/api/v1/query?query={}", urlencode(q));
    let Some(body) = try_http_get(port, &path, "*/*") else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
        return Vec::new();
    };
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let label = r["metric"][by].as_str().unwrap_or("").to_string();
                    let val = r["value"][1]
                        .as_str()
                        .unwrap_or("NaN")
                        .parse()
                        .unwrap_or(f64::NAN);
                    (label, val)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the child's process group on drop (a failing test leaves nothing running).
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill takes no pointers; the group is our own child's.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Starts the agent and waits until it is attached and serving.
fn start_agent(args: &[&str], dir: &Path, log: &Path) -> Group {
    let ready = dir.join("ready");
    let child = Command::new(KPATH)
        .arg("agent")
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .process_group(0)
        .spawn()
        .expect("spawn kpath agent");
    let mut g = Group(child);
    let t = Instant::now();
    while !ready.exists() {
        if let Some(st) = g.0.try_wait().unwrap() {
            panic!(
                "agent exited {st}: {}",
                std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "agent never got ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    g
}

/// SIGTERM, then the exit status within 20 s.
fn terminate(g: &mut Group) -> std::process::ExitStatus {
    // SAFETY: kill takes no pointers; the pid is our unreaped child.
    unsafe { libc::kill(g.0.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    loop {
        if let Some(st) = g.0.try_wait().unwrap() {
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "agent ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn windows(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("window-"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn run_json(w: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(w.join("run.json"))
        .unwrap_or_else(|e| panic!("{}: {e}", w.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", w.display()))
}

#[test]
fn prometheus_counts_every_openat() {
    if !require_root() {
        return;
    }
    let (Some(prometheus), Some(promtool)) = (tool("prometheus"), tool("promtool")) else {
        return;
    };
    let _g = serial();
    let work = workload_with("agent_open", &["-static"]);
    let dir = tmpdir("agent-prom");
    let out = dir.join("windows");
    let agent_port = free_port();
    let listen = format!("127.0.0.1:{agent_port}");
    let mut agent = start_agent(
        &[
            "--comm",
            "agent_open",
            "--window",
            "2",
            "-o",
            out.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &dir,
        &dir.join("agent.log"),
    );
    let prom_port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: kpath\n    static_configs:\n      - targets: ['{listen}']\n"
        ),
    )
    .unwrap();
    let _prom = Group(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("spawn prometheus"),
    );
    let mut kids: Vec<Child> = (0..3)
        .map(|_| {
            Command::new(&work)
                .arg("1000")
                .spawn()
                .expect("spawn agent_open")
        })
        .collect();
    for k in &mut kids {
        assert!(k.wait().unwrap().success());
    }
    let q = r#"sum(kpath_syscalls_total{syscall="openat"})"#;
    let t = Instant::now();
    let total = loop {
        let v = query(prom_port, q, "");
        if v.first().is_some_and(|(_, n)| *n >= 3000.0) || t.elapsed() > Duration::from_secs(60) {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("{q} = {total:?} after {:?}", t.elapsed());
    assert_eq!(total.first().map(|v| v.1), Some(3000.0), "{total:?}");
    let by_comm = query(
        prom_port,
        r#"sum by (comm) (kpath_syscalls_total{syscall="openat"})"#,
        "comm",
    );
    eprintln!("by comm: {by_comm:?}");
    assert_eq!(by_comm, [("agent_open".to_string(), 3000.0)]);
    let pq = r#"histogram_quantile(0.99, sum by (le) (kpath_syscall_duration_seconds_bucket{syscall="openat"}))"#;
    let p99 = query(prom_port, pq, "");
    eprintln!("{pq} = {p99:?}");
    let p99 = p99.first().map(|v| v.1).expect("a quantile");
    assert!(p99.is_finite() && p99 > 0.0, "{p99}");

    let exposition = http_get(agent_port, "/metrics", "text/plain");
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    lint.stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    eprintln!("promtool check metrics: {:?} {said:?}", lint.status);
    assert!(
        lint.status.success() && said.trim().is_empty(),
        "{said}\n{exposition}"
    );
    let om = http_get(
        agent_port,
        "/metrics",
        "application/openmetrics-text;version=1.0.0",
    );
    assert!(om.trim_end().ends_with("# EOF"), "{om}");
    assert_eq!(http_get(agent_port, "/healthz", "*/*"), "ok\n");

    let before = windows(&out).len();
    let st = terminate(&mut agent);
    assert!(st.success(), "agent exit {st}");
    let after = windows(&out);
    eprintln!("windows: {before} before SIGTERM, {} after", after.len());
    assert!(after.len() > before, "SIGTERM wrote no last window");
    let last = run_json(after.last().unwrap());
    assert!(
        last["duration_ns"].as_u64().unwrap() <= 2_500_000_000,
        "{}",
        last["duration_ns"]
    );
    let openats: u64 = after
        .iter()
        .map(|w| {
            run_json(w)["syscalls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["name"] == "openat")
                .map(|r| r["count"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(openats, 3000, "every openat in exactly one window");
}

#[test]
fn deploy_rules_check_and_their_tests_pass() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        ["check", "rules", "kpath-rules.yml"],
        ["test", "rules", "kpath-rules.test.yml"],
    ] {
        let o = Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("promtool {}: {said}", args.join(" "));
        assert!(o.status.success(), "{said}");
        assert!(said.contains("SUCCESS"), "{said}");
    }
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn soak_with_churning_targets() {
    if !require_root() {
        return;
    }
    let _g = serial();
    let work = workload_with("agent_open", &["-static"]);
    let dir = tmpdir("agent-soak");
    let out = dir.join("windows");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent(
        &[
            "--comm",
            "agent_open",
            "--window",
            "10",
            "-o",
            out.to_str().unwrap(),
            "--listen",
            &listen,
        ],
        &dir,
        &dir.join("agent.log"),
    );
    let pid = agent.0.id();
    let t = Instant::now();
    let (mut rss15, mut rss40) = (0, 0);
    let mut started = 0u64;
    let mut kids: Vec<Child> = Vec::new();
    while t.elapsed() < Duration::from_secs(40) {
        kids.push(
            Command::new(&work)
                .arg("50")
                .spawn()
                .expect("spawn agent_open"),
        );
        started += 1;
        kids.retain_mut(|k| k.try_wait().ok().flatten().is_none());
        if rss15 == 0 && t.elapsed() >= Duration::from_secs(15) {
            rss15 = vm_rss_kb(pid);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    rss40 = rss40.max(vm_rss_kb(pid));
    for mut k in kids {
        let _ = k.wait();
    }
    let ws = windows(&out);
    eprintln!(
        "soak: {started} targets, {} windows, VmRSS {rss15} kB at 15 s, {rss40} kB at 40 s ({:.3}x)",
        ws.len(),
        rss40 as f64 / rss15.max(1) as f64
    );
    assert!(ws.len() >= 3, "{ws:?}");
    for w in &ws {
        let r = run_json(w);
        assert!(r["duration_ns"].as_u64().is_some(), "{}", w.display());
    }
    assert!(
        rss15 > 0 && rss40 as f64 <= 1.2 * rss15 as f64,
        "{rss15} -> {rss40}"
    );
    let st = terminate(&mut agent);
    assert!(st.success(), "agent exit {st}");
}
