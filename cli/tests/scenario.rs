//! `kpath scenario`: the list names every scenario of the design, and each scenario that
//! compares strategies on this kernel runs end to end with a short load (root).
mod common;

use std::path::PathBuf;
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
    scenario_in(name).0
}

/// Runs `kpath scenario NAME -d 1`; its stdout and its bench directory.
fn scenario_in(name: &str) -> (String, PathBuf) {
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
    (f.stdout, dir)
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
fn cork_counts_reply_segments_and_the_corks_setsockopts() {
    if !require_root() {
        return;
    }
    let out = scenario("cork");
    // Findings lines: "- NAME: R reply segments/req, T TCP segments/req both ways, S setsockopt/req, ..."
    let reply = |name: &str| figure(&out, &format!("- {name}:"), ":");
    let tcp = |name: &str| figure(&out, &format!("- {name}:"), "reply segments/req,");
    let setsockopt = |name: &str| figure(&out, &format!("- {name}:"), "both ways,");
    let (corked, plain, cached) = (
        "sendfile-epoll-kainf",
        "sendfile-nocork-epoll-kainf",
        "cached-epoll-kainf",
    );
    // Under the cork, and as one writev, a 1400 B reply is one segment; without the cork the
    // header is a segment of its own.
    for one in [corked, cached] {
        assert!((0.9..1.1).contains(&reply(one)), "{one}\n{out}");
    }
    assert!(reply(plain) >= reply(corked) + 0.8, "{out}");
    for name in [corked, plain, cached] {
        assert!(
            tcp(name) >= reply(name) + 0.9,
            "requests are segments too\n{out}"
        );
    }
    assert!(tcp(plain) > tcp(corked), "{out}");
    // The cork is two setsockopt calls per reply (on, off); nothing else sets options per request.
    assert!((1.9..2.1).contains(&setsockopt(corked)), "{out}");
    assert_eq!(setsockopt(plain), 0.0, "{out}");
    assert_eq!(setsockopt(cached), 0.0, "{out}");
    assert!(
        out.contains("the header left as a segment of its own"),
        "{out}"
    );
    // The findings engine (the same as record's and report's) names the corked strategy only.
    assert!(
        out.contains(&format!("[medium] tcp-cork ({corked}): TCP_CORK")),
        "{out}"
    );
    assert!(!out.contains(&format!("tcp-cork ({plain})")), "{out}");
    assert!(!out.contains(&format!("tcp-cork ({cached})")), "{out}");
}

#[test]
fn sendfile_fanout_spreads_the_same_load_over_a_thousand_files() {
    if !require_root() {
        return;
    }
    let (out, dir) = scenario_in("sendfile-fanout");
    for name in ["sendfile-epoll-kainf", "sendfile-epoll-kainf-1000files"] {
        // "- NAME: R req/s, O openat2/req taking ..."
        let opens = figure(&out, &format!("- {name}:"), "req/s,");
        assert!(
            (0.9..1.1).contains(&opens),
            "{name}: one open per request\n{out}"
        );
        assert!(
            out.contains(&format!("- {name}: do_sys_openat2")),
            "{name}\n{out}"
        );
    }
    for line in [
        "- 1000 files instead of one: openat2",
        "- lock wait in the file's own path",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
    // The many-files run really asked for 1000 distinct paths, and every answer was a 200.
    let load: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("runs/sendfile-epoll-kainf-1000files/load.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(load["urls"], 1000, "{load}");
    assert!(load["requests"].as_u64().unwrap() > 1000, "{load}");
    assert_eq!(load["errors"]["status"], 0, "{load}");
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
