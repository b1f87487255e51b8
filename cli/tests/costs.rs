//! `kpath costs --json`: every microbenchmark reports a plausible figure (no root needed).
mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

#[test]
fn costs_json_rows_are_plausible() {
    let f = common::run_with_timeout(
        Command::new(common::KPATH).args(["costs", "--json", "--reps", "3"]),
        Duration::from_secs(60),
    );
    assert!(
        !f.timed_out && f.status.success(),
        "kpath costs failed ({}):\n{}",
        f.status,
        f.stderr
    );
    let v: Value = serde_json::from_str(&f.stdout).expect("JSON on stdout");
    let rows = v["costs"].as_array().expect("costs array");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "null syscall",
        "context switch",
        "open+close",
        "stat",
        "mmap+touch+munmap 4 KB",
        "mmap+touch+munmap 1 MB",
        "read+write 64 KB",
        "sendfile 64 KB",
        "loopback connect+accept+close",
        "epoll_ctl add+del",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "no {want:?} in {names:?}"
        );
    }
    for r in rows {
        let (min, med, max) = (
            common::f64_of(r, "min_ns"),
            common::f64_of(r, "ns_per_op"),
            common::f64_of(r, "max_ns"),
        );
        assert_eq!(common::u64_of(r, "reps"), 3, "{r}");
        assert!(min > 0.0 && min <= med && med <= max, "{r}");
        assert!(max < 1_000_000.0, "slower than 1 ms per operation: {r}");
    }
    let ns = |prefix: &str| {
        rows.iter()
            .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .map(|r| common::f64_of(r, "ns_per_op"))
            .unwrap()
    };
    // A getpid is the floor: every other path does more work in the kernel.
    assert!(ns("null syscall") < ns("open+close"), "{rows:?}");
    assert!(
        ns("mmap+touch+munmap 4 KB") < ns("mmap+touch+munmap 1 MB"),
        "{rows:?}"
    );
}

/// `--traced` repeats every benchmark with the probes attached to kpath itself and adds the
/// traced median and the difference to every row.
#[test]
fn traced_costs_add_a_column_per_row() {
    if !common::require_root() {
        return;
    }
    let _guard = common::serial();
    let f = common::run_with_timeout(
        Command::new(common::KPATH).args([
            "costs", "--json", "--reps", "3", "--traced", "--probes", "syscalls",
        ]),
        Duration::from_secs(120),
    );
    assert!(
        !f.timed_out && f.status.success(),
        "kpath costs --traced failed ({}):\n{}",
        f.status,
        f.stderr
    );
    let v: Value = serde_json::from_str(&f.stdout).expect("JSON on stdout");
    assert!(
        v["traced_with"]["syscalls"].is_string(),
        "{}",
        v["traced_with"]
    );
    for r in v["costs"].as_array().expect("costs array") {
        let (ns, traced, added) = (
            common::f64_of(r, "ns_per_op"),
            common::f64_of(r, "traced_ns_per_op"),
            common::f64_of(r, "added_ns_per_op"),
        );
        assert!(traced > 0.0, "{r}");
        assert!((traced - ns - added).abs() < 1e-6, "{r}");
    }
}

/// `--method` forces an attach method for the traced pass, as in `kpath record`.
#[test]
fn traced_costs_honour_a_forced_method() {
    if !common::require_root() {
        return;
    }
    let _guard = common::serial();
    let f = common::run_with_timeout(
        Command::new(common::KPATH).args([
            "costs",
            "--json",
            "--reps",
            "1",
            "--traced",
            "--probes",
            "sched",
            "--method",
            "sched=sched_tracepoints",
        ]),
        Duration::from_secs(120),
    );
    assert!(
        !f.timed_out && f.status.success(),
        "kpath costs --traced --method failed ({}):\n{}",
        f.status,
        f.stderr
    );
    let v: Value = serde_json::from_str(&f.stdout).expect("JSON on stdout");
    assert_eq!(
        v["traced_with"]["sched"].as_str(),
        Some("sched_tracepoints"),
        "{}",
        v["traced_with"]
    );
}
