//! The findings engine on real servers (root): kpath's server with mmap per request has the
//! mmap_lock/munmap finding and with a cache does not; nginx closing after every reply has
//! the close-path finding; `kpath report DIR` prints them.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A process group killed when the test ends, however it ends.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: kill takes no pointers; the group is our unreaped child's own.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// One test at a time: each starts its load before recording, and a recording waiting for
/// another test's would outlive its load.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

fn wait_listening(port: u16, what: &str) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn www() -> PathBuf {
    let root = common::tmpdir("findings-www");
    std::fs::write(root.join("index.html"), "x".repeat(1400)).unwrap();
    root
}

/// Records `pid` for 3 s at 999 Hz while `kpath load` drives `url`; the run and its directory.
fn record_under_load(pid: u32, url: &str) -> (Value, String, PathBuf) {
    let load = Group(common::spawn_group(
        Command::new(common::KPATH).args(["load", url, "-c", "8", "-d", "5"]),
    ));
    std::thread::sleep(Duration::from_millis(300));
    let p = pid.to_string();
    let out = common::record_dir(&["-p", &p, "-d", "3", "-F", "999"], &[]);
    drop(load);
    out
}

fn findings(run: &Value) -> Vec<&Value> {
    run["findings"]
        .as_array()
        .expect("findings array")
        .iter()
        .collect()
}

fn by_id<'a>(run: &'a Value, id: &str) -> Option<&'a Value> {
    findings(run).into_iter().find(|f| f["id"] == id)
}

/// `kpath report DIR` (tables).
fn report(dir: &Path) -> String {
    let f = common::run_with_timeout(
        Command::new(common::KPATH).arg("report").arg(dir),
        Duration::from_secs(30),
    );
    assert!(f.status.success(), "kpath report: {}", f.stderr);
    f.stdout
}

fn serve_and_record(io: &str) -> (Value, String, PathBuf) {
    let root = www();
    let port = free_port();
    let srv = Group(common::spawn_group(
        Command::new(common::KPATH)
            .args(["serve", "--root"])
            .arg(&root)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--io", io, "--model", "epoll", "--keepalive", "1"]),
    ));
    wait_listening(port, "kpath serve");
    let url = format!("http://127.0.0.1:{port}/index.html");
    let out = record_under_load(srv.0.id(), &url);
    drop(srv);
    out
}

#[test]
fn mmap_per_request_has_the_mmap_lock_finding_and_a_cache_has_none() {
    if !common::require_root() {
        return;
    }
    let _one = one_at_a_time();
    let (run, stderr, dir) = serve_and_record("mmap");
    let ids: Vec<&Value> = findings(&run).iter().map(|f| &f["id"]).collect();
    eprintln!("mmap: findings {ids:?}");
    let f = by_id(&run, "mmap-lock")
        .unwrap_or_else(|| panic!("no mmap-lock finding: {ids:?}\n{stderr}"));
    let evidence = f["evidence"].as_str().unwrap();
    eprintln!("mmap-lock evidence: {evidence}");
    assert!(
        evidence.contains("munmap per request") && evidence.contains("fires when"),
        "{evidence}"
    );
    // Its share: __vm_munmap's on-CPU share or mmap_lock's share of lock wait, as a percentage.
    assert!(
        evidence.contains("__vm_munmap in ") || evidence.contains("of all lock wait"),
        "{evidence}"
    );
    assert!(evidence.contains('%'), "{evidence}");
    assert_eq!(f["scenario"], "gulan");
    assert_eq!(f["severity"], "high");
    for k in ["title", "meaning", "try"] {
        assert!(!f[k].as_str().unwrap().is_empty(), "{k} empty");
    }
    let text = report(&dir);
    assert!(
        text.contains("[high] mmap-lock: mmap/munmap per request"),
        "kpath report does not print the finding:\n{text}"
    );

    let (run, stderr, dir) = serve_and_record("cached");
    let ids: Vec<&Value> = findings(&run).iter().map(|f| &f["id"]).collect();
    eprintln!("cached: findings {ids:?}");
    assert!(
        by_id(&run, "mmap-lock").is_none(),
        "cached has an mmap-lock finding: {ids:?}\n{stderr}"
    );
    for f in findings(&run) {
        let t = f["title"].as_str().unwrap();
        assert!(!t.contains("munmap"), "cached: {t}");
    }
    assert!(!report(&dir).contains("mmap-lock"));
}

/// nginx with one worker closing the connection after every reply (`keepalive_requests 1`).
fn start_nginx(bin: &Path) -> (Group, u16, PathBuf) {
    let dir = common::tmpdir("findings-nginx");
    std::fs::create_dir_all(dir.join("html")).unwrap();
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::write(dir.join("html/index.html"), "x".repeat(1400)).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n\
         error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1;\n  client_body_temp_path {d}/tmp;\n\
         proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n\
         scgi_temp_path {d}/tmp;\n  server {{ listen 127.0.0.1:{port}; root {d}/html; }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let g = Group(common::spawn_group(
        Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf")),
    ));
    wait_listening(port, "nginx");
    (g, port, dir)
}

fn worker_pid(master: u32) -> u32 {
    let start = Instant::now();
    loop {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        if let Some(p) = children.split_whitespace().next() {
            return p.parse().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no nginx worker");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn nginx_closing_after_every_reply_has_the_close_path_finding() {
    if !common::require_root() {
        return;
    }
    let _one = one_at_a_time();
    let bin = Path::new("/usr/sbin/nginx");
    if !bin.exists() {
        assert!(
            std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() != Ok("1"),
            "nginx is missing: run `cargo xtask setup`"
        );
        eprintln!("skipped: /usr/sbin/nginx missing (cargo xtask setup installs it)");
        return;
    }
    let (nginx, port, _dir) = start_nginx(bin);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut status = String::new();
    BufReader::new(s).read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "nginx answered {status:?}");
    let worker = worker_pid(nginx.0.id());
    let url = format!("http://127.0.0.1:{port}/index.html");
    let (run, stderr, dir) = record_under_load(worker, &url);
    drop(nginx);
    let ids: Vec<&Value> = findings(&run).iter().map(|f| &f["id"]).collect();
    eprintln!("nginx keepalive_requests 1: findings {ids:?}");
    let f = by_id(&run, "close-path")
        .unwrap_or_else(|| panic!("no close-path finding: {ids:?}\n{stderr}"));
    let evidence = f["evidence"].as_str().unwrap();
    eprintln!("close-path evidence: {evidence}");
    assert!(
        evidence.contains("tcp_close in ") && evidence.contains("accepted connections"),
        "{evidence}"
    );
    assert_eq!(f["scenario"], "epoll-close");
    let text = report(&dir);
    assert!(text.contains("close-path"), "{text}");
    assert!(text.contains("kpath scenario epoll-close"), "{text}");
}

#[test]
fn threads_contending_on_a_pthread_mutex_have_the_futex_finding() {
    if !common::require_root() {
        return;
    }
    let _one = one_at_a_time();
    let bin = common::workload("mutex_contend");
    let (run, stderr, dir) = common::record_dir(&[], &[bin.to_str().unwrap(), "4", "1.5"]);
    let ids: Vec<&Value> = findings(&run).iter().map(|f| &f["id"]).collect();
    eprintln!("mutex_contend: findings {ids:?}");
    let f = by_id(&run, "futex-offcpu")
        .unwrap_or_else(|| panic!("no futex-offcpu finding: {ids:?}\n{stderr}"));
    let evidence = f["evidence"].as_str().unwrap();
    eprintln!("futex-offcpu evidence: {evidence}");
    assert!(
        evidence.contains("kpath_wait_here;___pthread_mutex_lock")
            || evidence.contains("kpath_wait_here;pthread_mutex_lock"),
        "{evidence}"
    );
    // In the wall-clock view the waiters are blocked in kpath_wait_here, the holder's sleep is
    // idle, and so is main's join (a futex under a condition-style wait, not the lock).
    let wall = std::fs::read_to_string(dir.join("wall.folded")).unwrap();
    let weight = |pred: &dyn Fn(&str) -> bool| -> u64 {
        kpath::stacks::folded::parse(&wall)
            .unwrap()
            .iter()
            .filter(|(s, _)| pred(s))
            .map(|(_, n)| n)
            .sum()
    };
    let waiting = weight(&|s| s.contains("kpath_wait_here") && s.ends_with(";[blocked]"));
    let holding = weight(&|s| s.contains("kpath_hold_here") && s.ends_with(";[idle]"));
    eprintln!("blocked in kpath_wait_here {waiting} ns, idle in kpath_hold_here {holding} ns");
    // Four threads for 1.5 s, one holding at a time: about 4.5 s waiting, 1.5 s holding.
    assert!(waiting > 2 * holding, "{wall}");
    assert!(holding > 500_000_000, "{wall}");
    let waits = run["wall"]["waits"].as_array().unwrap();
    let lock = waits
        .iter()
        .find(|w| w["kind"] == "futex (lock)")
        .unwrap_or_else(|| panic!("no futex (lock) wait in {waits:?}"));
    assert!(common::u64_of(lock, "ns") >= waiting, "{lock}");
}
