//! Stock Debian kernels under qemu (`kpath vm`): the fentry and kprobe programs run for real.
//!
//! The host kernel has neither kprobes nor fentry, so these are the only tests that attach them.
//! Each boots a guest (software emulation: ~6-10 s per run once the kernel is cached; the first run
//! per kernel downloads it, ~10 s more) and records `kpath workload --conns 200`, which accepts 200
//! loopback connections, registers each accepted socket in epoll and closes it while registered:
//! 200 eventpoll_release_file calls exactly, and at least 400 tcp_close (both ends). Guests run
//! one at a time ([`serial`]) since the machine has two cores. `--kpath __sys_accept4` rides
//! along: the generic slot programs attached by fentry or kprobe, at least 200 calls.
//!
//! The epmutex pair runs `kpath scenario epoll-close` in bullseye (5.10: ep_free and epmutex, so
//! every close of an epoll-watched socket takes the global mutex) and bookworm (6.1 with the
//! refcount rework: it does not).
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One guest run, first-time kernel download included.
const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const CONNS: u64 = 200;

/// Whether guests can run here: root, and qemu installed (CI must have both).
fn can_boot() -> bool {
    if !require_root() {
        return false;
    }
    if Path::new("/usr/bin/qemu-system-x86_64").exists() {
        return true;
    }
    if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("qemu-system-x86_64 is missing (cargo xtask setup installs qemu-system-x86)");
    }
    eprintln!("skipped: qemu-system-x86_64 is not installed");
    false
}

/// `kpath vm --kernel KERNEL --out-dir TMP -- ARGS` in TMP; returns TMP and kpath's stderr.
fn guest(kernel: &str, args: &[&str]) -> (std::path::PathBuf, String) {
    guest_with(kernel, &[], args)
}

/// [`guest`] with host binaries installed in the guest at the same paths (`--add`).
fn guest_with(kernel: &str, add: &[&Path], args: &[&str]) -> (std::path::PathBuf, String) {
    let _guard = serial();
    let dir = tmpdir(&format!("vm-{kernel}"));
    let mut c = Command::new(KPATH);
    c.current_dir(&dir)
        .args(["vm", "--kernel", kernel, "--out-dir"])
        .arg(&dir);
    for a in add {
        c.arg("--add").arg(a);
    }
    c.arg("--").args(args);
    let f = run_with_timeout(&mut c, GUEST_TIMEOUT);
    assert!(
        !f.timed_out,
        "kpath vm --kernel {kernel} -- {args:?} did not finish within {GUEST_TIMEOUT:?}\nstderr:\n{}",
        f.stderr
    );
    assert!(
        f.status.success(),
        "kpath vm --kernel {kernel} -- {args:?} failed ({})\nstderr:\n{}",
        f.status,
        f.stderr
    );
    (dir, f.stderr)
}

fn read_run(path: &Path, stderr: &str) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}\nstderr:\n{stderr}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The guest's kernel release as `kpath vm` reported it, checked against run.json.
fn check_guest_kernel(run: &Value, stderr: &str) -> String {
    let release = str_of(&run["kernel"], "release").to_string();
    assert!(
        stderr.contains(&format!("guest kernel {release} ")),
        "run.json kernel {release} is not the guest kernel kpath vm reported\n{stderr}"
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    assert_ne!(release, host.trim(), "run.json names the host kernel");
    release
}

/// Records the workload with kpaths forced to `method`; asserts exact-enough counts and time.
fn kpaths_through(kernel: &str, method: &str) {
    if !can_boot() {
        return;
    }
    let conns = CONNS.to_string();
    let forced = format!("kpaths={method}");
    let (dir, stderr) = guest(
        kernel,
        &[
            "record",
            "--probes",
            "kpaths",
            "--method",
            &forced,
            "--kpath",
            "__sys_accept4",
            "-o",
            "run",
            "--",
            "kpath",
            "workload",
            "--files",
            "50",
            "--mmaps",
            "50",
            "--conns",
            &conns,
            "--pipes",
            "0",
        ],
    );
    let run = read_run(&dir.join("run/run.json"), &stderr);
    let release = check_guest_kernel(&run, &stderr);
    let context = || {
        format!(
            "guest {release}\nkpath stderr:\n{stderr}\nrun:\n{}",
            summary(&run)
        )
    };
    assert_eq!(
        run["methods"]["kpaths"].as_str(),
        Some(method),
        "{}",
        context()
    );
    let want = [
        ("eventpoll_release_file", CONNS),
        ("tcp_close", 2 * CONNS),
        ("do_sys_openat2", 50),
        ("__vm_munmap", 50),
        // --kpath through a generic slot: one accept per connection.
        ("__sys_accept4", CONNS),
    ];
    for (f, min) in want {
        let row = kpath_row(&run, f).unwrap_or_else(|| panic!("no row for {f}\n{}", context()));
        assert_eq!(str_of(row, "method"), method, "{f}\n{}", context());
        let calls = u64_of(row, "calls");
        assert!(calls >= min, "{f}: {calls} calls < {min}\n{}", context());
        assert!(
            u64_of(row, "total_ns") > 0,
            "{f}: total_ns 0\n{}",
            context()
        );
    }
    // Only the 200 accepted sockets were in epoll: far fewer than the tcp_close count.
    let epoll = u64_of(kpath_row(&run, "eventpoll_release_file").unwrap(), "calls");
    assert!(
        epoll < 2 * CONNS,
        "eventpoll_release_file {epoll} calls: more than the epoll-watched sockets\n{}",
        context()
    );
}

#[test]
fn bookworm_kpaths_through_fentry() {
    kpaths_through("bookworm", "fentry");
}

#[test]
fn bookworm_kpaths_through_kprobes() {
    kpaths_through("bookworm", "kprobe");
}

#[test]
fn bullseye_kpaths_through_kprobes() {
    kpaths_through("bullseye", "kprobe");
}

/// `kpath scenario epoll-close` in one guest; returns its run.json and the scenario's own result.
fn epoll_close_scenario(kernel: &str) -> (Value, Value, String) {
    let _guard = serial();
    let dir = tmpdir(&format!("scenario-{kernel}"));
    let mut c = Command::new(KPATH);
    c.args([
        "scenario",
        "epoll-close",
        "--kernel",
        kernel,
        "-d",
        "2",
        "--out-dir",
    ])
    .arg(&dir);
    let f = run_with_timeout(&mut c, GUEST_TIMEOUT);
    assert!(
        !f.timed_out && f.status.success(),
        "kpath scenario epoll-close --kernel {kernel} failed ({}, timed out: {})\nstdout:\n{}\nstderr:\n{}",
        f.status,
        f.timed_out,
        f.stdout,
        f.stderr
    );
    let run = read_run(&dir.join(kernel).join("run/run.json"), &f.stderr);
    let drive = read_run(&dir.join(kernel).join("run/drive.json"), &f.stderr);
    (
        run,
        drive,
        format!("stdout:\n{}\nstderr:\n{}", f.stdout, f.stderr),
    )
}

fn epmutex_rows(run: &Value) -> Vec<&Value> {
    run["locks"]
        .as_array()
        .expect("locks array")
        .iter()
        .filter(|r| str_of(r, "lock") == "epmutex")
        .collect()
}

#[test]
fn bullseye_close_contends_on_epmutex_from_eventpoll_release_file() {
    if !can_boot() {
        return;
    }
    let (run, drive, out) = epoll_close_scenario("bullseye");
    let context = || format!("{out}\nrun:\n{}", summary(&run));
    assert_eq!(
        str_of(&drive, "epoll_close"),
        "global_epmutex",
        "{}",
        context()
    );
    assert_eq!(
        run["methods"]["locks"].as_str(),
        Some("mutex_kprobe"),
        "{}",
        context()
    );
    assert!(u64_of(&drive, "requests") > 0, "{}", context());
    let rows = epmutex_rows(&run);
    let from_close: Vec<&&Value> = rows
        .iter()
        .filter(|r| str_of(r, "caller").starts_with("eventpoll_release_file"))
        .collect();
    assert!(
        !from_close.is_empty(),
        "no epmutex contention with eventpoll_release_file as caller\n{}",
        context()
    );
    for r in &from_close {
        assert!(u64_of(r, "count") > 0 && u64_of(r, "wait_ns") > 0, "{r}");
    }
    let erf = kpath_row(&run, "eventpoll_release_file").expect("eventpoll_release_file row");
    assert!(u64_of(erf, "calls") > 0, "{}", context());
}

#[test]
fn bookworm_close_does_not_take_epmutex() {
    if !can_boot() {
        return;
    }
    let (run, drive, out) = epoll_close_scenario("bookworm");
    let context = || format!("{out}\nrun:\n{}", summary(&run));
    assert_eq!(str_of(&drive, "epoll_close"), "refcounted", "{}", context());
    // 6.1 still takes epmutex in epoll_ctl(ADD) of a file that another epoll already watches
    // (the loop check); what the refcount rework removed is the close path's.
    let from_close: Vec<&Value> = epmutex_rows(&run)
        .into_iter()
        .filter(|r| str_of(r, "caller").starts_with("eventpoll_release_file"))
        .collect();
    assert!(
        from_close.is_empty(),
        "epmutex contention from eventpoll_release_file on bookworm: {from_close:?}\n{}",
        context()
    );
    // The same load ran: the close path was exercised.
    let erf = kpath_row(&run, "eventpoll_release_file").expect("eventpoll_release_file row");
    assert!(
        u64_of(erf, "calls") >= u64_of(&drive, "requests") / 2,
        "{}",
        context()
    );
}

/// The DWARF walker on a stock 6.1 kernel (bpf_loop, bpf_task_pt_regs): the frameless
/// `deep_stacks` program unwinds to its roots there as on the host (tests/unwind.rs). With an
/// off-CPU threshold, the sched family attaches sched_switch as a BTF tracepoint there too and
/// takes the sleeper's kernel stacks when it is switched back in (tests/sched.rs on the host).
#[test]
fn bookworm_unwinds_a_frameless_program_from_dwarf() {
    if !can_boot() {
        return;
    }
    let bin = workload_with("deep_stacks", &["-fomit-frame-pointer"]);
    let (dir, stderr) = guest_with(
        "bookworm",
        &[&bin],
        &[
            "record",
            "--probes",
            "oncpu,sched",
            "-F",
            "499",
            "--call-graph",
            "dwarf",
            "--offcpu-min-us",
            "100",
            "-o",
            "run",
            "--",
            bin.to_str().unwrap(),
            "3",
        ],
    );
    let run = read_run(&dir.join("run/run.json"), &stderr);
    let release = check_guest_kernel(&run, &stderr);
    let context = || {
        format!(
            "guest {release}\nkpath stderr:\n{stderr}\nunwind: {}\n",
            serde_json::to_string_pretty(&run["unwind"]).unwrap_or_default()
        )
    };
    assert_eq!(str_of(&run, "call_graph"), "dwarf", "{}", context());
    common::stacks::assert_deep_stacks_complete(&dir.join("run"), &context);
    assert_sleep_charged_at_switch_in(&run, &dir.join("run"), &context);
}

/// Linux 5.10 (bpf_get_task_stack and BTF tracepoints, no bpf_loop: frame-pointer stacks): with
/// an off-CPU threshold the sched family takes sched_switch as a BTF tracepoint and the kernel
/// stacks of kept periods when the sleeper is switched back in, as on 6.1 and the host.
#[test]
fn bullseye_sched_takes_kernel_stacks_at_switch_in() {
    if !can_boot() {
        return;
    }
    let bin = workload("deep_stacks");
    let (dir, stderr) = guest_with(
        "bullseye",
        &[&bin],
        &[
            "record",
            "--probes",
            "sched",
            "--offcpu-min-us",
            "100",
            "-o",
            "run",
            "--",
            bin.to_str().unwrap(),
            "2",
        ],
    );
    let run = read_run(&dir.join("run/run.json"), &stderr);
    let release = check_guest_kernel(&run, &stderr);
    let context = || {
        format!(
            "guest {release}\nkpath stderr:\n{stderr}\nrun:\n{}",
            summary(&run)
        )
    };
    // (deep_stacks has no frame pointers: its user frames are not checked here.)
    assert_sleep_charged_at_switch_in(&run, &dir.join("run"), &context);
}

/// A guest recording of deep_stacks with `--offcpu-min-us`: sched_switch attached as a BTF
/// tracepoint, nothing lost, and over a second of the sleeper's nanosleeps charged to kernel
/// stacks taken at switch-in (they end in the marker for the scheduler's frames).
fn assert_sleep_charged_at_switch_in(run: &Value, dir: &Path, context: &dyn Fn() -> String) {
    assert_eq!(
        str_of(&run["methods"], "sched"),
        "sched_tp_btf",
        "{}",
        context()
    );
    assert_eq!(u64_of(&run["offcpu"], "lost_stacks"), 0, "{}", context());
    let offcpu = common::stacks::folded(dir, "offcpu.folded");
    let sleeps: u64 = offcpu
        .iter()
        .filter(|(s, _)| {
            s.last().map(String::as_str) == Some("[scheduler frames not unwound]_[k]")
                && s.iter()
                    .any(|f| f.contains("nanosleep") && f.ends_with("_[k]"))
        })
        .map(|(_, n)| n)
        .sum();
    assert!(
        sleeps > 1_000_000_000,
        "{sleeps} ns of sleep charged to switch-in kernel stacks: {offcpu:?}\n{}",
        context()
    );
}
