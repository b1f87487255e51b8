//! Golden tests of the renderers: a realistic run rendered as a table and as JSON.
//!
//! Run with `BLESS=1` to rewrite `tests/data/` after an intended change, then review the diff.

mod golden;

use golden::{check_golden, data_path};

use kpath::hist;
use kpath::render::{json, table};
use kpath::run::*;
use probe_common::HIST_BUCKETS;

/// A log2 histogram from `(bucket, count)` pairs.
fn hist_of(entries: &[(usize, u64)]) -> Vec<u64> {
    let mut h = vec![0; HIST_BUCKETS];
    for &(i, c) in entries {
        h[i] = c;
    }
    h
}

fn syscall(
    name: &str,
    nr: u32,
    errors: u64,
    total_ns: u64,
    max_ns: u64,
    buckets: &[(usize, u64)],
) -> SyscallRow {
    let h = hist_of(buckets);
    SyscallRow {
        name: name.into(),
        nr,
        count: hist::total(&h),
        errors,
        total_ns,
        p50_ns: hist::percentile(&h, 0.50, max_ns),
        p99_ns: hist::percentile(&h, 0.99, max_ns),
        max_ns,
        hist_log2_ns: h,
    }
}

fn sampled(function: &str, share: f64, samples: u64, sc: &SyscallRow) -> KpathRow {
    KpathRow {
        function: function.into(),
        method: "sampled".into(),
        calls: None,
        total_ns: None,
        max_ns: None,
        oncpu_share: share,
        samples,
        hist_log2_ns: vec![0; HIST_BUCKETS],
        syscall: sc.name.clone(),
        syscall_count: Some(sc.count),
        syscall_total_ns: Some(sc.total_ns),
        ..Default::default()
    }
}

/// The mmap-per-request epoll server closing after every reply, 10 s under load.
fn sample_run() -> Run {
    let families = ["syscalls", "kpaths", "sched", "locks", "oncpu"];
    let methods = [
        "raw_syscalls",
        "fentry",
        "sched_tracepoints",
        "lock_tracepoints",
        "perf_event",
    ];
    let syscalls = vec![
        syscall(
            "read",
            0,
            0,
            61_234_567,
            180_345,
            &[(9, 20_000), (10, 21_000), (12, 900)],
        ),
        syscall(
            "write",
            1,
            12,
            402_345_678,
            2_345_678,
            &[(12, 30_000), (13, 11_000), (21, 12)],
        ),
        syscall(
            "close",
            3,
            0,
            190_456_789,
            8_912_345,
            &[(10, 40_000), (11, 1_500), (23, 3)],
        ),
        syscall(
            "mmap",
            9,
            0,
            55_678_901,
            95_432,
            &[(10, 38_000), (11, 3_912)],
        ),
        syscall(
            "munmap",
            11,
            0,
            88_765_432,
            640_123,
            &[(10, 35_000), (11, 6_000), (19, 912)],
        ),
        syscall(
            "epoll_wait",
            232,
            0,
            9_123_456_789,
            20_123_456,
            &[(13, 9_000), (17, 800), (24, 77)],
        ),
        syscall(
            "openat",
            257,
            3,
            72_345_678,
            152_345,
            &[(10, 39_000), (11, 2_900), (17, 12)],
        ),
        syscall(
            "accept4",
            288,
            41_912,
            33_456_789,
            95_678,
            &[(9, 41_912), (10, 41_912), (16, 3)],
        ),
        syscall("fstat", 5, 0, 12_345_678, 23_456, &[(8, 41_000), (9, 912)]),
    ];
    let by_name = |n: &str| syscalls.iter().find(|s| s.name == n).unwrap().clone();
    let epoll_hist = hist_of(&[(9, 30_000), (10, 11_000), (14, 900), (17, 12)]);
    let kpaths = vec![
        KpathRow {
            function: "eventpoll_release_file".into(),
            method: "fentry".into(),
            calls: Some(hist::total(&epoll_hist)),
            total_ns: Some(41_234_567),
            max_ns: Some(245_678),
            oncpu_share: 0.0412,
            samples: 98,
            hist_log2_ns: epoll_hist,
            syscall: "close".into(),
            syscall_count: Some(by_name("close").count),
            syscall_total_ns: Some(by_name("close").total_ns),
            ..Default::default()
        },
        sampled("tcp_close", 0.1837, 437, &by_name("close")),
        sampled("do_sys_openat2", 0.0523, 124, &by_name("openat")),
        sampled("__vm_munmap", 0.0761, 181, &by_name("munmap")),
    ];
    let runq = hist_of(&[(10, 5_000), (12, 3_000), (14, 400), (20, 7)]);
    let sched = SchedRow {
        voluntary_switches: 51_234,
        involuntary_switches: 1_234,
        offcpu_ns: 9_234_567_890,
        wakeups: 50_987,
        runq_delay_count: hist::total(&runq),
        runq_delay_total_ns: 31_234_567,
        runq_delay_p50_ns: hist::percentile(&runq, 0.50, 1_534_567),
        runq_delay_p99_ns: hist::percentile(&runq, 0.99, 1_534_567),
        runq_delay_max_ns: 1_534_567,
        runq_delay_hist_log2_ns: runq,
    };
    let locks = vec![
        LockRow {
            caller: "fput".into(),
            lock: "0xffff8881053c2a40".into(),
            lock_addr: "0xffff8881053c2a40".into(),
            lock_addrs: 1,
            lock_type: "spinlock".into(),
            count: 212,
            wait_ns: 1_234_567,
            max_ns: 45_678,
            stack: vec![
                "native_queued_spin_lock_slowpath+0x6e".into(),
                "_raw_spin_lock+0x29".into(),
                "fput+0x3a".into(),
                "__x64_sys_close+0x3d".into(),
                "do_syscall_64+0x5b".into(),
            ],
            user_stack: Vec::new(),
        },
        LockRow {
            caller: "eventpoll_release_file".into(),
            lock: "epmutex".into(),
            lock_addr: "0xffffffff82a1c3e0".into(),
            lock_addrs: 1,
            lock_type: "mutex".into(),
            count: 1_877,
            wait_ns: 312_345_678,
            max_ns: 4_567_890,
            stack: vec![
                "__mutex_lock.constprop.0+0x2a1".into(),
                "__mutex_lock_slowpath+0x13".into(),
                "mutex_lock+0x2e".into(),
                "eventpoll_release_file+0x3c".into(),
                "__fput+0x1f0".into(),
                "task_work_run+0x5a".into(),
            ],
            user_stack: Vec::new(),
        },
    ];
    let overhead = Overhead {
        bpf_stats_enabled: true,
        stats_sampled_ns: 1_000_000_000,
        families: families
            .iter()
            .zip([
                (1_234_567u64, 123_456.7, 187_654_321u64),
                (41_912, 4_191.2, 5_123_456),
                (104_455, 10_445.5, 28_456_789),
                (2_089, 208.9, 1_234_567),
                (2_379, 237.9, 9_876_543),
            ])
            .map(|(f, (events, eps, run_ns))| {
                (
                    f.to_string(),
                    FamilyOverhead {
                        events,
                        events_per_sec: eps,
                        bpf_run_ns: run_ns,
                        // Rounded: without serde_json's `float_roundtrip` feature a
                        // full-precision float may come back one ULP off.
                        ns_per_event: (run_ns as f64 / events as f64 * 10.0).round() / 10.0,
                    },
                )
            })
            .collect(),
    };
    let mut run = Run {
        format_version: RUN_FORMAT_VERSION,
        kpath_version: "0.1.0".into(),
        kernel: KernelInfo {
            release: "6.1.0-18-amd64".into(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)".into(),
            machine: "x86_64".into(),
            hostname: "bench1".into(),
        },
        target: Target {
            kind: "command".into(),
            pid: Some(4242),
            pids: Vec::new(),
            command: Some(
                ["kpath", "serve", "--io", "mmap", "--model", "epoll", "--keepalive", "1"]
                    .map(String::from)
                    .to_vec(),
            ),
            exit_code: Some(0),
            ..Default::default()
        },
        started_unix_ms: 1_717_171_717_171,
        duration_ns: 10_012_345_678,
        methods: families
            .iter()
            .zip(methods)
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .collect(),
        lost: families
            .iter()
            .map(|f| (f.to_string(), if *f == "oncpu" { 3 } else { 0 }))
            .collect(),
        warnings: vec![
            "kpaths: fentry on tcp_close, do_sys_openat2 and __vm_munmap failed (EPERM); using on-CPU samples".into(),
        ],
        overhead,
        syscalls,
        kpaths,
        sched: Some(sched),
        locks,
        oncpu: Some(OncpuSummary {
            frequency_hz: 99,
            samples: 2_379,
            unique_stacks: 412,
            lost_stacks: 3,
            functions: Vec::new(),
        }),
        ..Default::default()
    };
    // What the findings engine concludes from it, as record stores it.
    run.findings = kpath::findings::for_run(&run);
    run
}

#[test]
fn table_matches_golden() {
    let text = table::render(&sample_run(), &table::TableOptions::default());
    check_golden("run_table.txt", &text);
}

#[test]
fn detailed_table_matches_golden() {
    let opts = table::TableOptions {
        top: 3,
        ..Default::default()
    };
    let run = sample_run();
    let text = table::render(&run, &opts) + &table::histograms(&run, &opts);
    check_golden("run_table_detailed.txt", &text);
}

#[test]
fn json_matches_golden() {
    check_golden("run.json", &json::to_string_pretty(&sample_run()));
}

#[test]
fn json_round_trips() {
    let run = sample_run();
    let text = json::to_string_pretty(&run);
    let back = json::from_str(&text, std::path::Path::new("run.json")).unwrap();
    assert_eq!(back, run);
    assert_eq!(json::to_string_pretty(&back), text);
    // The golden file too, so a stale one fails here as well as above.
    let from_golden = json::from_file(&data_path("run.json")).unwrap();
    assert_eq!(json::to_string_pretty(&from_golden), text);
}
