//! kpaths family: tcp_close and eventpoll_release_file seen under close(2).
//!
//! `epoll_close 20000 8` (tests/workloads/epoll_close.c) accepts 20000 loopback connections, registers
//! each in 8 epoll instances and closes it while registered, so every server-side close runs
//! eventpoll_release_file (8 epitems to remove) and tcp_close; the client's closes add 20000 more
//! tcp_close. It runs ~1.5-2 s. On this kernel there is neither fentry nor kprobe, so the
//! family falls back to on-CPU samples: measured with bpftrace profile:hz:4999 on the same
//! workload, ~17% of its samples were under tcp_close and ~6-11% under eventpoll_release_file
//! (~1250 and ~450-850 samples), so "nonzero" holds with a wide margin. Where fentry or kprobes work,
//! the rows carry exact call counts instead.
mod common;

use common::*;

const CONNS: u64 = 20_000;
const FUNCTIONS: &[&str] = &[
    "eventpoll_release_file",
    "tcp_close",
    "do_sys_openat2",
    "__vm_munmap",
];

#[test]
fn close_paths_are_attributed() {
    if !require_root() {
        return;
    }
    let bin = workload("epoll_close");
    let conns = CONNS.to_string();
    let (run, stderr) = record(
        &["--probes", "syscalls,kpaths,oncpu", "-F", "4999"],
        &[bin.to_str().unwrap(), &conns, "8"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));

    let close = syscall_row(&run, "close").unwrap_or_else(|| panic!("no close row\n{}", context()));
    // Server and client each close one socket per connection.
    assert!(
        u64_of(close, "count") >= 2 * CONNS,
        "close count {} < {}\n{}",
        u64_of(close, "count"),
        2 * CONNS,
        context()
    );

    for f in FUNCTIONS {
        let row =
            kpath_row(&run, f).unwrap_or_else(|| panic!("no kpaths row for {f}\n{}", context()));
        let method = str_of(row, "method");
        assert!(
            ["fentry", "kprobe", "sampled", "unavailable"].contains(&method),
            "{f}: unknown method {method:?}"
        );
        let share = f64_of(row, "oncpu_share");
        assert!(
            (0.0..=1.0).contains(&share),
            "{f}: oncpu_share {share} outside 0..1"
        );
        assert!(
            !str_of(row, "syscall").is_empty(),
            "{f}: no containing syscall\n{}",
            context()
        );
    }

    for f in ["tcp_close", "eventpoll_release_file"] {
        let row = kpath_row(&run, f).unwrap();
        assert_eq!(
            str_of(row, "syscall"),
            "close",
            "{f} runs under close(2)\n{}",
            context()
        );
        match str_of(row, "method") {
            "sampled" => {
                assert!(row["calls"].is_null(), "{f}: sampled row with calls");
                assert!(u64_of(row, "samples") > 0, "{f}: no samples\n{}", context());
                assert!(
                    f64_of(row, "oncpu_share") > 0.0,
                    "{f}: zero share\n{}",
                    context()
                );
            }
            "fentry" | "kprobe" => {
                let calls = u64_of(row, "calls");
                let want = if f == "tcp_close" { 2 * CONNS } else { CONNS };
                assert!(calls >= want, "{f}: {calls} calls < {want}\n{}", context());
                assert!(row["total_ns"].as_u64().unwrap_or(0) > 0, "{f}: total_ns 0");
            }
            m => panic!("{f}: method {m:?}, expected a measurement\n{}", context()),
        }
    }

    let methods = &run["methods"];
    assert!(
        methods.get("kpaths").is_some(),
        "methods has no kpaths\n{}",
        context()
    );
    let oncpu = &run["oncpu"];
    assert!(
        u64_of(oncpu, "samples") > 0,
        "no on-CPU samples\n{}",
        context()
    );
}
