//! locks family: contention by caller in the epoll and mmap paths.
//!
//! `epoll_contention 2 2 2` (tests/workloads/epoll_contention.c): for 2 s, two threads hammer one
//! shared epoll instance (epoll_ctl ADD/MOD/DEL on eventfds, close while registered) and two threads
//! mmap+touch+munmap in the same mm; the threads of each kind are pinned to different CPUs.
//! bpftrace on lock:contention_begin with kstack, on Linux 6.18 with 2 CPUs, saw in 2 s (~25000
//! events, before pinning):
//!   mutex ep->mtx (flags MUTEX|SPIN): do_epoll_ctl ~15800, eventpoll_release_file (under __fput from
//!     close) ~5300;
//!   mmap_lock rwsem write: vm_mmap_pgoff ~80, __vm_munmap ~85; rwsem read: lock_mm_and_find_vma (page
//!     fault) ~230; spinlocks: __pte_offset_map_lock, vms_complete_munmap_vmas (rwsem_wake), plus
//!     fd-table/ida/dcache spinlocks (alloc_fd, file_close_fd, ida_alloc_range, d_instantiate).
//! kpath's rows name the same callers (plus rq-lock spinlocks under exit_to_user_mode_loop and
//! __vma_start_write now and then). With pinning, 8 runs (4 of them beside two CPU hogs) gave
//! 4000..120000 epoll-path and 240..7600 mmap-path contentions; unpinned, one busy run had both epoll
//! threads share a CPU and no ep->mtx contention at all.
mod common;

use common::*;
use serde_json::Value;

fn is_epoll_caller(c: &str) -> bool {
    c.contains("epoll") || c.contains("ep_") || c.contains("eventpoll")
}

fn is_mmap_caller(c: &str) -> bool {
    [
        "mmap",
        "munmap",
        "vm_",
        "do_vmi",
        "vma",
        "mmap_region",
        "lock_mm_and_find_vma",
    ]
    .iter()
    .any(|p| c.contains(p))
}

#[test]
fn caller_classification() {
    assert!(is_epoll_caller("do_epoll_ctl+0x2da"));
    assert!(is_epoll_caller("eventpoll_release_file+0x4c"));
    assert!(is_mmap_caller("__vm_munmap+0x7d"));
    assert!(is_mmap_caller("vm_mmap_pgoff+0xe0"));
    assert!(is_mmap_caller("lock_mm_and_find_vma+0x9e"));
    assert!(!is_mmap_caller("do_epoll_ctl+0x2da"));
    assert!(!is_epoll_caller("alloc_fd+0x30"));
}

#[test]
fn contention_in_epoll_and_mmap_paths() {
    if !require_root() {
        return;
    }
    let bin = workload("epoll_contention");
    let (run, stderr) = record(
        &["--probes", "locks"],
        &[bin.to_str().unwrap(), "2", "2", "2"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let rows: &Vec<Value> = run["locks"].as_array().expect("locks array");
    assert!(!rows.is_empty(), "no lock rows\n{}", context());

    for r in rows {
        let caller = str_of(r, "caller");
        assert!(!caller.is_empty(), "row without caller: {r}");
        assert!(u64_of(r, "count") > 0, "{caller}: count 0");
        let (wait, max) = (u64_of(r, "wait_ns"), u64_of(r, "max_ns"));
        assert!(max <= wait, "{caller}: max_ns {max} > wait_ns {wait}");
        assert!(!str_of(r, "type").is_empty(), "{caller}: no lock type");
    }
    let callers: Vec<&str> = rows.iter().map(|r| str_of(r, "caller")).collect();
    let epoll: Vec<&Value> = rows
        .iter()
        .filter(|r| is_epoll_caller(str_of(r, "caller")))
        .collect();
    let mmap: Vec<&Value> = rows
        .iter()
        .filter(|r| is_mmap_caller(str_of(r, "caller")))
        .collect();
    assert!(
        !epoll.is_empty(),
        "no epoll-path caller among {callers:?}\n{}",
        context()
    );
    assert!(
        !mmap.is_empty(),
        "no mmap-path caller among {callers:?}\n{}",
        context()
    );
    assert!(
        epoll.iter().map(|r| u64_of(r, "wait_ns")).sum::<u64>() > 0,
        "epoll callers waited 0 ns\n{}",
        context()
    );
    assert!(
        mmap.iter().map(|r| u64_of(r, "wait_ns")).sum::<u64>() > 0,
        "mmap callers waited 0 ns\n{}",
        context()
    );
    // ep->mtx is a mutex: the epoll callers' contention must be typed as one.
    assert!(
        epoll.iter().any(|r| str_of(r, "type").contains("mutex")),
        "no mutex among epoll-path rows\n{}",
        context()
    );
    // And the heap locks are named by class, from the flags and the caller frames.
    assert!(
        epoll.iter().any(|r| str_of(r, "lock") == "ep->mtx"),
        "no epoll-path row on ep->mtx\n{}",
        context()
    );
    assert!(
        mmap.iter().any(|r| str_of(r, "lock") == "mmap_lock"),
        "no mmap-path row on mmap_lock\n{}",
        context()
    );
}

/// The epoll-close workload (tests/workloads/epoll_close.c: 20000 loopback connections, each
/// closed while in 8 epoll instances) contends on many sockets' `sk_lock.slock` from one caller
/// (tcp_v4_rcv and the close path): keyed by address that was one row per socket, by class it
/// is one row per caller and class. JSON and the `--locks-by` tables must agree.
#[test]
fn epoll_close_rows_are_per_caller_and_class_not_per_address() {
    if !require_root() {
        return;
    }
    let bin = workload("epoll_close");
    let (run, stderr, dir) = record_dir(
        &["--probes", "locks"],
        &[bin.to_str().unwrap(), "20000", "8"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let rows: &Vec<Value> = run["locks"].as_array().expect("locks array");
    assert!(!rows.is_empty(), "no lock rows\n{}", context());

    let mut keys = std::collections::BTreeSet::new();
    let mut per_address_rows = 0;
    for r in rows {
        let key = (str_of(r, "caller"), str_of(r, "lock"), str_of(r, "type"));
        assert!(keys.insert(key), "two rows for {key:?}\n{}", context());
        assert!(
            !key.1.starts_with("0x"),
            "lock {:?} named by its address, not its class\n{}",
            key.1,
            context()
        );
        let addrs = u64_of(r, "lock_addrs");
        assert!(addrs >= 1, "{key:?}: lock_addrs {addrs}");
        assert!(u64_of(r, "max_ns") <= u64_of(r, "wait_ns"), "{key:?}");
        per_address_rows += addrs;
    }
    eprintln!(
        "epoll_close locks: {} rows by caller and class, {per_address_rows} by caller and address",
        rows.len()
    );

    // The per-thread rows hold the same waits.
    let tasks = run["lock_tasks"].as_array().expect("lock_tasks array");
    let sum = |v: &Vec<Value>, k: &str| v.iter().map(|r| u64_of(r, k)).sum::<u64>();
    assert_eq!(sum(rows, "count"), sum(tasks, "count"), "{}", context());
    assert_eq!(sum(rows, "wait_ns"), sum(tasks, "wait_ns"), "{}", context());
    for t in tasks {
        assert!(!str_of(t, "comm").is_empty(), "task row without comm: {t}");
    }

    // The report's three groupings.
    for (by, header) in [
        ("caller", "caller"),
        ("lock", "top caller"),
        ("task", "tid"),
    ] {
        let out = std::process::Command::new(KPATH)
            .args(["report", dir.to_str().unwrap(), "--locks-by", by])
            .output()
            .expect("run kpath report");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "report --locks-by {by}: {text}");
        assert!(
            text.contains(header),
            "--locks-by {by}: no {header:?}:\n{text}"
        );
    }
}
