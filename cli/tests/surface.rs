//! The command line as users meet it (issue 12): one spelling per idea, `-o -`, `kpath load`'s
//! errors by kind, `kpath report` of a bench directory, quiet runs. Everything runs the kpath
//! binary; the recording test needs root, the rest do not.
mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{require_root, run_with_timeout, spawn_group, tmpdir, Finished, KPATH};
use kpath::bench::json::{Bench, BenchRun, LoadSummary, Strategy};
use serde_json::Value;
use servers::serve::{Io, Model};

const LIMIT: Duration = Duration::from_secs(60);

fn kpath(args: &[&str]) -> Finished {
    run_with_timeout(Command::new(KPATH).args(args), LIMIT)
}

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `kpath serve` of `root` on a free port, killed (with its group) on drop.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(root: &Path, extra: &[&str]) -> Server {
        let port = closed_port();
        let child = spawn_group(
            Command::new(KPATH)
                .args(["serve", "--root"])
                .arg(root)
                .args(["--addr", &format!("127.0.0.1:{port}")])
                .args(extra),
        );
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "kpath serve did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, port }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill takes no pointers; the group is our unreaped child's own.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn www() -> std::path::PathBuf {
    let root = tmpdir("www");
    std::fs::write(root.join("index.html"), "<p>hello</p>\n").unwrap();
    root
}

fn json(f: &Finished) -> Value {
    serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", f.stdout, f.stderr))
}

#[test]
fn load_to_a_closed_port_says_connection_refused() {
    let url = format!("http://127.0.0.1:{}/", closed_port());
    let f = kpath(&["load", &url, "-d", "0.5", "-c", "2", "-t", "1", "--json"]);
    assert_eq!(f.status.code(), Some(1), "stderr:\n{}", f.stderr);
    assert!(
        f.stderr.contains("unable to connect: connection refused"),
        "{}",
        f.stderr
    );
    let r = json(&f);
    assert_eq!(r["requests_ok"], 0);
    let connect = r["errors"]["connect"].as_u64().unwrap();
    assert!(connect > 0, "{r}");
    assert_eq!(r["errors"]["connect_by_reason"]["refused"], connect, "{r}");
    // The text report shows the same.
    let f = kpath(&["load", &url, "-d", "0.5", "-c", "2", "-t", "1"]);
    assert_eq!(f.status.code(), Some(1));
    assert!(
        f.stdout.contains("connect ") && f.stdout.contains("(connection refused "),
        "{}",
        f.stdout
    );
}

#[test]
fn load_of_a_missing_page_counts_404s_under_their_status() {
    let root = www();
    let server = Server::start(&root, &[]);
    let url = format!("http://127.0.0.1:{}/no-such-page", server.port);
    let f = kpath(&["load", &url, "-d", "0.5", "-c", "2", "-t", "1", "--json"]);
    assert_eq!(f.status.code(), Some(1), "stderr:\n{}", f.stderr);
    let r = json(&f);
    let requests = r["requests"].as_u64().unwrap();
    assert!(requests > 0, "{r}");
    assert_eq!(r["requests_ok"], 0, "{r}");
    assert_eq!(r["requests_per_sec"], 0.0, "{r}");
    assert_eq!(r["errors"]["status"], requests, "{r}");
    assert_eq!(r["errors"]["by_status"]["404"], requests, "{r}");
    assert!(f.stderr.contains("404: "), "{}", f.stderr);
    let f = kpath(&["load", &url, "-d", "0.5", "-c", "2", "-t", "1"]);
    assert!(f.stdout.contains("(404: "), "{}", f.stdout);
}

/// `--keepalive 0` means unlimited in serve as in bench: 2 connections carry every request.
#[test]
fn serve_keepalive_zero_is_unlimited() {
    let root = www();
    for (ka, unlimited) in [("0", true), ("1", false)] {
        let server = Server::start(&root, &["--keepalive", ka]);
        let url = format!("http://127.0.0.1:{}/index.html", server.port);
        let f = kpath(&["load", &url, "-d", "0.5", "-c", "2", "-t", "1", "--json"]);
        assert!(f.status.success(), "{}", f.stderr);
        let r = json(&f);
        let (ok, conns) = (
            r["requests_ok"].as_u64().unwrap(),
            r["tcp_segments"]["connections"].as_u64().unwrap(),
        );
        assert!(ok > 100, "{r}");
        if unlimited {
            assert_eq!(conns, 2, "--keepalive 0: {r}");
        } else {
            assert!(conns + 2 >= ok, "--keepalive 1: {r}");
        }
    }
}

#[test]
fn a_zero_duration_is_refused_by_every_subcommand() {
    for args in [
        &["record", "-d", "0"][..],
        &["load", "http://127.0.0.1:1/", "-d", "0"],
        &["bench", "-d", "0"],
        &["scenario", "gulan", "-d", "0"],
    ] {
        let f = kpath(args);
        assert_eq!(f.status.code(), Some(2), "{args:?}: {}", f.stderr);
        assert!(
            f.stderr.contains("positive number of seconds"),
            "{args:?}: {}",
            f.stderr
        );
    }
}

#[test]
fn dash_output_is_stdout_for_one_file_and_refused_for_directories() {
    let dir = tmpdir("dash");
    let folded = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flame_oncpu.folded");
    std::fs::copy(&folded, dir.join("oncpu.folded")).unwrap();
    let d = dir.to_str().unwrap();
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["flame", d, "-o", "-"])
            .current_dir(&dir),
        LIMIT,
    );
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stdout.starts_with("<?xml") && f.stdout.contains("<svg"));
    assert!(!dir.join("-").exists(), "a file named - was written");
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["diff", d, d, "-o", "-"])
            .current_dir(&dir),
        LIMIT,
    );
    assert!(f.status.success(), "{}", f.stderr);
    assert!(f.stdout.contains("<svg"));
    assert!(!dir.join("-").exists());
    for args in [&["record", "-o", "-", "-d", "1"][..], &["bench", "-o", "-"]] {
        let f = kpath(args);
        assert_eq!(f.status.code(), Some(1), "{args:?}");
        assert!(f.stderr.contains("-o -:"), "{args:?}: {}", f.stderr);
    }
}

#[test]
fn report_of_a_run_takes_json_and_output() {
    let dir = tmpdir("report-run");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/run.json");
    std::fs::copy(&data, dir.join("run.json")).unwrap();
    let d = dir.to_str().unwrap();
    let a = kpath(&["report", d, "--json"]);
    let b = kpath(&["report", d, "--format", "json"]);
    assert!(a.status.success(), "{}", a.stderr);
    assert_eq!(a.stdout, b.stdout);
    json(&a);
    let out = dir.join("tables.txt");
    let f = kpath(&["report", d, "-o", out.to_str().unwrap()]);
    assert!(f.status.success() && f.stdout.is_empty(), "{}", f.stderr);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        kpath(&["report", d]).stdout
    );
    let f = kpath(&["report", d, "--format", "html", "-o", "-"]);
    assert!(f.stdout.contains("<html"), "{}", f.stderr);
    assert!(!dir.join("report.html").exists());
}

#[test]
fn report_of_a_bench_directory_prints_its_tables() {
    let dir = tmpdir("report-bench");
    let mut bench = Bench {
        duration_secs: 3,
        connections: 32,
        file_size: 1400,
        baseline: "mmap-epoll-ka1".into(),
        ..Default::default()
    };
    for (io, rps) in [(Io::Mmap, 1000.0), (Io::Cached, 2500.0)] {
        let load = LoadSummary {
            requests: 3000,
            requests_per_sec: rps,
            ..Default::default()
        };
        let run = kpath::run::Run::default();
        let s = Strategy::new(io, Model::Epoll, 1);
        bench
            .runs
            .push(BenchRun::new(s, &load, &run, &format!("runs/{io}")));
    }
    std::fs::write(
        dir.join("bench.json"),
        serde_json::to_string(&bench).unwrap(),
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let f = kpath(&["report", d]);
    assert!(f.status.success(), "{}", f.stderr);
    assert_eq!(f.stdout, kpath::bench::table::render(&bench));
    assert!(
        f.stdout.contains("mmap-epoll-ka1") && f.stdout.contains("cached-epoll-ka1"),
        "{}",
        f.stdout
    );
    let f = kpath(&["report", d, "--json"]);
    let back: Bench = serde_json::from_str(&f.stdout).unwrap();
    assert_eq!(back, bench);
    let f = kpath(&["report", d, "--format", "html"]);
    assert!(f.status.success(), "{}", f.stderr);
    assert!(dir.join("report.html").exists());
}

#[test]
fn scenario_and_vm_take_output_and_keep_out_dir() {
    use clap::Parser;
    use kpath::cmd::{Cli, Command as Sub};
    for flag in ["-o", "--output", "--out-dir"] {
        match Cli::parse_from(["kpath", "scenario", "cork", flag, "runs/x"]).command {
            Sub::Scenario(a) => assert_eq!(a.out_dir.unwrap(), Path::new("runs/x")),
            _ => unreachable!(),
        }
        let args = [
            "kpath", "vm", "--kernel", "bookworm", flag, "out", "--", "doctor",
        ];
        match Cli::parse_from(args).command {
            Sub::Vm(a) => assert_eq!(a.out_dir, Path::new("out")),
            _ => unreachable!(),
        }
    }
    // The alias is hidden: --help lists -o/--output only.
    let f = kpath(&["scenario", "--help"]);
    assert!(f.stdout.contains("-o, --output <DIR>"), "{}", f.stdout);
    assert!(
        !f.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("--out-dir")),
        "{}",
        f.stdout
    );
}

/// Quiet by default: no library log lines, the kernel's missing features said in one line
/// (not as warnings in the tables and run.json), and a warning for -F above 1000 Hz.
#[test]
fn record_is_quiet_and_says_missing_features_once() {
    if !require_root() {
        return;
    }
    let _guard = common::serial();
    let dir = tmpdir("quiet");
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["record", "-o"])
            .arg(&dir)
            .args(["-F", "2000", "--", "true"])
            .env_remove("RUST_LOG"),
        LIMIT,
    );
    assert!(f.status.success(), "{}", f.stderr);
    for bad in ["[ERROR", "[WARN", "[INFO"] {
        assert!(!f.stderr.contains(bad), "{bad} in stderr:\n{}", f.stderr);
    }
    assert!(
        f.stderr.contains("-F 2000 is above 1000 Hz"),
        "{}",
        f.stderr
    );
    let run: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap();
    let warnings = run["warnings"].to_string();
    assert!(!warnings.contains("skipped"), "{warnings}");
    assert!(!f.stdout.contains("skipped:"), "{}", f.stdout);
    // What this kernel lacks (this project's hosts: kprobes and fentry) is one note.
    let lacks = !Path::new("/sys/bus/event_source/devices/kprobe").exists();
    let notes = f.stderr.matches("note: ").count();
    if lacks {
        assert_eq!(notes, 1, "{}", f.stderr);
        assert!(
            f.stderr.contains("kprobes") && f.stderr.contains("see kpath doctor"),
            "{}",
            f.stderr
        );
    }
    // -v brings the libraries' warnings back (their filter, not a count: none may come).
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["-v", "record", "--probes", "syscalls", "-o"])
            .arg(&dir)
            .args(["--", "true"]),
        LIMIT,
    );
    assert!(f.status.success(), "{}", f.stderr);
    // doctor names every skipped method.
    let f = kpath(&["doctor"]);
    if lacks {
        assert!(
            f.stdout.contains("kprobe/kretprobe skipped"),
            "{}",
            f.stdout
        );
    }
}

/// A non-root doctor sees /proc/mounts but not inside tracefs (mode 0700).
#[test]
fn non_root_doctor_says_tracefs_is_unreadable() {
    if !require_root() {
        return;
    }
    let mounted = |m: &str| m.lines().any(|l| l.contains(" tracefs "));
    if !mounted(&std::fs::read_to_string("/proc/mounts").unwrap()) {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status();
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    if !mounted(&mounts) {
        panic!("tracefs is not mounted and could not be");
    }
    // As nobody (the binary must be reachable: it is under the worktree, mode 0755 dirs).
    let f = run_with_timeout(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                KPATH,
                "doctor",
            ])
            .env_remove("RUST_LOG"),
        LIMIT,
    );
    if f.stderr.contains("Permission denied") {
        eprintln!("skipped: nobody cannot run {KPATH}: {}", f.stderr);
        return;
    }
    let tracefs_line = f
        .stdout
        .lines()
        .find(|l| l.contains("tracefs"))
        .unwrap_or_else(|| panic!("no tracefs line:\n{}\n{}", f.stdout, f.stderr));
    assert!(
        tracefs_line.contains("unreadable") && !tracefs_line.contains("not mounted"),
        "{tracefs_line}"
    );
}
