//! The wall-clock view against real workloads (root): a program that burns 2 s then sleeps
//! 200 x 5 ms, and kpath's epoll server under light load.
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kpath::stacks::folded;
use serde_json::Value;

/// Sum of the folded weights whose stack contains `frame`.
fn weight_of(text: &str, frame: &str) -> u64 {
    folded::parse(text)
        .unwrap()
        .iter()
        .filter(|(s, _)| s.split(';').any(|f| f == frame))
        .map(|(_, n)| n)
        .sum()
}

/// Sum of the folded weights whose leaf is `leaf`.
fn leaf_weight(text: &str, leaf: &str) -> u64 {
    folded::parse(text)
        .unwrap()
        .iter()
        .filter(|(s, _)| s.rsplit(';').next() == Some(leaf))
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn burn_then_sleep_weighs_two_to_one_and_adds_up_to_the_run() {
    if !common::require_root() {
        return;
    }
    let bin = common::workload_with("burn_sleep", &["-fno-omit-frame-pointer"]);
    let (run, stderr, dir) =
        common::record_dir(&["-F", "999"], &[bin.to_str().unwrap(), "2", "200", "5"]);
    let text = std::fs::read_to_string(dir.join("wall.folded"))
        .unwrap_or_else(|e| panic!("no wall.folded ({e}): {stderr}"));
    assert_eq!(run["artifacts"]["wall_folded"], "wall.folded");
    let svg = std::fs::read_to_string(dir.join("wall.svg")).unwrap();
    assert!(
        svg.contains("Wall clock (ns)") && svg.contains("kpath_burn_here"),
        "wall.svg lacks its title or the burn's frame"
    );
    let burn = weight_of(&text, "kpath_burn_here");
    let sleep = weight_of(&text, "kpath_sleep_here");
    let total = folded::total(&text);
    let duration = common::u64_of(&run, "duration_ns");
    let ratio = burn as f64 / sleep.max(1) as f64;
    eprintln!(
        "burn {burn} ns, sleep {sleep} ns, ratio {ratio:.3}; wall total {total} ns vs run \
         {duration} ns ({:.3}); idle {} blocked {} runnable {}\n{}",
        total as f64 / duration as f64,
        leaf_weight(&text, "[idle]"),
        leaf_weight(&text, "[blocked]"),
        leaf_weight(&text, "[runnable]"),
        stderr
            .lines()
            .find(|l| l.starts_with("burn_sleep:"))
            .unwrap_or("")
    );
    assert!(
        (ratio / 2.0 - 1.0).abs() <= 0.15,
        "burn:sleep {ratio:.3}, expected 2 within 15%\n{text}"
    );
    assert!(
        (total as f64 / duration as f64 - 1.0).abs() <= 0.10,
        "wall total {total} vs run duration {duration}"
    );
    // The sleeps are idle (nanosleep), not blocked; the rest of them is wake-up latency.
    let idle_sleep: u64 = folded::parse(&text)
        .unwrap()
        .iter()
        .filter(|(s, _)| s.contains("kpath_sleep_here") && s.ends_with(";[idle]"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        idle_sleep as f64 >= 0.7 * sleep as f64,
        "sleep {sleep} ns, of it idle {idle_sleep}\n{text}"
    );
    // run.json's per-thread shares add up to the thread's wall time.
    let threads = run["wall"]["threads"].as_array().expect("wall.threads");
    let t = threads
        .iter()
        .find(|t| t["thread"] == "burn_sleep")
        .unwrap_or_else(|| panic!("no burn_sleep thread in {threads:?}"));
    let parts: u64 = ["oncpu_ns", "idle_ns", "blocked_ns", "runnable_ns"]
        .iter()
        .map(|k| common::u64_of(t, k))
        .sum();
    assert_eq!(parts, common::u64_of(t, "wall_ns"));
    let shares: f64 = [
        "oncpu_share",
        "idle_share",
        "blocked_share",
        "runnable_share",
    ]
    .iter()
    .map(|k| common::f64_of(t, k))
    .sum();
    assert!((shares - 1.0).abs() < 1e-6, "{t}");
    // The burn is two thirds of the wall time: on a CPU or, on a busy machine, waiting for one.
    let busy = common::f64_of(t, "oncpu_share") + common::f64_of(t, "runnable_share");
    assert!((0.55..=0.85).contains(&busy), "{t}");
    assert!(common::f64_of(t, "idle_share") > 0.2, "{t}");
}

/// `kpath serve` on a free port, killed with its group on drop.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill takes no pointers; the group is our unreaped child's own.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn serve(root: &Path, args: &[&str]) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = common::spawn_group(
        Command::new(common::KPATH)
            .args(["serve", "--root"])
            .arg(root)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(args),
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

#[test]
fn an_epoll_server_under_light_load_is_mostly_idle() {
    if !common::require_root() {
        return;
    }
    let root = common::tmpdir("wall-www");
    std::fs::write(root.join("index.html"), "x".repeat(1400)).unwrap();
    let srv = serve(&root, &["--io", "cached", "--model", "epoll"]);
    let url = format!("http://127.0.0.1:{}/index.html", srv.port);
    let load = common::spawn_group(
        Command::new(common::KPATH).args(["load", &url, "-c", "2", "-d", "4", "--rate", "200"]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let pid = srv.child.id().to_string();
    let (run, stderr, dir) = common::record_dir(&["-p", &pid, "-d", "2"], &[]);
    let _ = common::wait_with_timeout(load, Duration::from_secs(10));
    let text = std::fs::read_to_string(dir.join("wall.folded"))
        .unwrap_or_else(|e| panic!("no wall.folded ({e}): {stderr}"));
    let total = folded::total(&text);
    let idle = leaf_weight(&text, "[idle]");
    let epoll_idle: u64 = folded::parse(&text)
        .unwrap()
        .iter()
        .filter(|(s, _)| s.contains("epoll_wait") && s.ends_with(";[idle]"))
        .map(|(_, n)| n)
        .sum();
    let waits: &Value = &run["wall"]["waits"];
    eprintln!(
        "idle {idle} of {total} ns ({:.1}%), in epoll_wait {epoll_idle}; waits {waits}",
        100.0 * idle as f64 / total.max(1) as f64
    );
    assert!(total > 0, "{stderr}");
    assert!(
        idle as f64 > 0.5 * total as f64,
        "idle {idle} of {total}\n{text}"
    );
    assert!(epoll_idle > 0, "no idle time in epoll_wait\n{text}");
}
