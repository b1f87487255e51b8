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

/// `--kpath FUNC` follows any kernel function: on this host (no fentry, no kprobes) by its share
/// of on-CPU samples, labelled sampled, and of off-CPU time. tcp_v4_rcv runs under every
/// loopback send of epoll_close (softirq in the sender's context); its clients and server block
/// in do_epoll_wait (epoll_wait), which so holds off-CPU time.
#[test]
fn any_kernel_function_is_followed_with_its_method_labelled() {
    if !require_root() {
        return;
    }
    let bin = workload("epoll_close");
    let (run, stderr) = record(
        &[
            "--probes",
            "syscalls,sched,oncpu",
            "-F",
            "999",
            "--kpath",
            "tcp_v4_rcv",
            "--kpath",
            "do_epoll_wait",
        ],
        &[bin.to_str().unwrap(), "5000", "4"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let rcv = kpath_row(&run, "tcp_v4_rcv").unwrap_or_else(|| panic!("no row\n{}", context()));
    let method = str_of(rcv, "method");
    assert!(
        ["fentry", "kprobe", "sampled"].contains(&method),
        "method {method}\n{}",
        context()
    );
    assert_eq!(
        rcv["requested"],
        serde_json::Value::Bool(true),
        "{}",
        context()
    );
    if method == "sampled" {
        assert!(
            u64_of(rcv, "samples") > 0,
            "no samples under tcp_v4_rcv\n{}",
            context()
        );
        let share = f64_of(rcv, "oncpu_share");
        assert!(share > 0.0 && share <= 1.0, "share {share}\n{}", context());
        let ep = kpath_row(&run, "do_epoll_wait")
            .unwrap_or_else(|| panic!("no do_epoll_wait\n{}", context()));
        let off = f64_of(ep, "offcpu_share");
        assert!(
            off > 0.0 && off <= 1.0,
            "do_epoll_wait off-CPU share {off}\n{}",
            context()
        );
    } else {
        assert!(u64_of(rcv, "calls") > 0, "{}", context());
    }
    // The built-in four are still there.
    assert!(kpath_row(&run, "tcp_close").is_some(), "{}", context());
}

#[test]
fn an_unknown_function_fails_naming_close_matches() {
    let out = std::process::Command::new(KPATH)
        .args(["record", "--kpath", "tcp_v4_rcvv", "-d", "1"])
        .output()
        .expect("run kpath");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "kpath accepted an unknown function: {err}"
    );
    assert!(
        err.contains("tcp_v4_rcvv") && err.contains("close matches"),
        "{err}"
    );
    assert!(
        err.contains("tcp_v4_rcv,") || err.contains("tcp_v4_rcv)"),
        "{err}"
    );
}
