//! `kpath scenario`: the list names every scenario of the design, and each scenario that
//! compares strategies on this kernel runs end to end with a short load (root).
mod common;

use std::process::Command;

use common::*;

#[test]
fn list_names_the_six_scenarios() {
    let out = Command::new(KPATH)
        .args(["scenario", "--list"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "gulan",
        "epoll-close",
        "cork",
        "sendfile-fanout",
        "batching",
        "threadpool",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing from:\n{text}"
        );
    }
}

/// Runs `kpath scenario NAME -d 1` and returns its stdout.
fn scenario(name: &str) -> String {
    // One at a time: concurrent benches would share the 2 CPUs and each other's load.
    let _guard = serial();
    let dir = tmpdir(name);
    let mut c = Command::new(KPATH);
    c.args(["scenario", name, "-d", "1", "--out-dir"]).arg(&dir);
    let f = run_with_timeout(&mut c, std::time::Duration::from_secs(120));
    assert!(!f.timed_out, "scenario {name} timed out\n{}", f.stderr);
    assert!(
        f.status.success(),
        "scenario {name} failed: {}\n{}",
        f.status,
        f.stderr
    );
    assert!(dir.join("bench.json").exists() && dir.join("report.html").exists());
    assert!(
        f.stdout.contains("measured on") && f.stdout.contains("why:"),
        "{}",
        f.stdout
    );
    f.stdout
}

/// The number after `label` in the findings line that starts with `prefix`.
fn figure(out: &str, prefix: &str, label: &str) -> f64 {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in\n{out}"));
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("no {label:?} in {line}"))
        + label.len();
    line[at..]
        .trim_start()
        .split(|c: char| c != '.' && !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line}"))
}

#[test]
fn gulan_mmap_costs_more_syscalls_than_the_cache() {
    if !require_root() {
        return;
    }
    let out = scenario("gulan");
    let mmap = figure(&out, "- mmap-epoll-ka1:", "req/s,");
    let cached = figure(&out, "- cached-epoll-ka1:", "req/s,");
    // mmap, munmap, openat2, statx and a second close per request on top of the cache's path.
    assert!(
        mmap >= cached + 3.0,
        "syscalls/req mmap {mmap} vs cached {cached}\n{out}"
    );
    assert!(out.contains("the thread pool is"), "{out}");
}

#[test]
fn batching_io_uring_needs_fewer_syscalls_per_request() {
    if !require_root() {
        return;
    }
    let out = scenario("batching");
    let epoll = figure(&out, "- cached-epoll-kainf:", "req/s,");
    let uring = figure(&out, "- cached-uring-kainf:", "req/s,");
    assert!(
        uring < epoll / 2.0,
        "syscalls/req uring {uring} vs epoll {epoll}\n{out}"
    );
}

#[test]
fn threadpool_compares_three_models() {
    if !require_root() {
        return;
    }
    let out = scenario("threadpool");
    for name in [
        "cached-epoll-kainf",
        "cached-threadpool-kainf",
        "cached-thread-kainf",
    ] {
        assert!(out.contains(&format!("- {name}:")), "{name} missing\n{out}");
    }
}
