//! `kpath record` lifecycle: stopping, cleanup, errors, the JSON contract.
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Kernel program name prefixes (`<family>_<hook>`, see house-style.md), plus `target_` for the
/// programs that follow the target into its fork children.
const PREFIXES: &[&str] = &[
    "syscalls_",
    "kpaths_",
    "sched_",
    "locks_",
    "oncpu_",
    "target_",
];

/// Keys every run.json has (cli/src/run.rs).
const RUN_KEYS: &[&str] = &[
    "format_version",
    "kpath_version",
    "kernel",
    "target",
    "started_unix_ms",
    "duration_ns",
    "methods",
    "lost",
    "warnings",
    "overhead",
    "syscalls",
    "kpaths",
    "sched",
    "locks",
    "oncpu",
];

/// Ids of the BPF programs whose fds `pid` holds (from /proc/PID/fdinfo).
fn held_prog_ids(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let is_prog = std::fs::read_link(fd.path())
            .map(|l| l.to_string_lossy() == "anon_inode:bpf-prog")
            .unwrap_or(false);
        if !is_prog {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(info) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("prog_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Every loaded BPF program: id -> name, from `bpftool prog show --json`.
fn loaded_programs() -> BTreeMap<u32, String> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("run bpftool (Debian package bpftool)");
    assert!(
        out.status.success(),
        "bpftool prog show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let progs: Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    progs
        .as_array()
        .expect("bpftool prog list")
        .iter()
        .filter_map(|p| {
            let id = p.get("id")?.as_u64()? as u32;
            let name = p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            Some((id, name))
        })
        .collect()
}

fn is_kpath_prog(name: &str) -> bool {
    PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A child that sleeps, killed and reaped on drop.
struct Sleeper(std::process::Child);

impl Sleeper {
    fn start() -> Self {
        Sleeper(
            Command::new("sleep")
                .arg("60")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep"),
        )
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigint_stops_pid_recording_and_detaches() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let sleeper = Sleeper::start();
    let pid = sleeper.0.id();
    let dir = tmpdir("sigint");
    let child = spawn_group(
        Command::new(KPATH)
            .args(["record", "-p", &pid.to_string(), "-o"])
            .arg(&dir),
    );
    let kpid = child.id();

    // Attached once the set of held programs has stopped growing for a while.
    let start = Instant::now();
    let (mut ids, mut stable_since) = (Vec::new(), Instant::now());
    while start.elapsed() < Duration::from_secs(15) {
        let now = held_prog_ids(kpid);
        if now != ids {
            ids = now;
            stable_since = Instant::now();
        } else if !ids.is_empty() && stable_since.elapsed() > Duration::from_millis(700) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !ids.is_empty(),
        "kpath record -p {pid} held no BPF program after 15 s"
    );
    let before = loaded_programs();
    for id in &ids {
        let name = before.get(id).map_or("", String::as_str);
        assert!(
            is_kpath_prog(name),
            "program {id} {name:?} lacks a kpath prefix {PREFIXES:?}"
        );
    }

    let sent = Instant::now();
    assert_eq!(
        // SAFETY: kill takes no pointers; `kpid` is our kpath child, not yet waited for.
        unsafe { libc::kill(kpid as i32, libc::SIGINT) },
        0,
        "kill -INT {kpid}"
    );
    let f = wait_with_timeout(child, Duration::from_secs(10));
    let took = sent.elapsed();
    assert!(
        f.status.success(),
        "kpath record after SIGINT: {}\nstderr:\n{}",
        f.status,
        f.stderr
    );
    assert!(
        took <= Duration::from_secs(1),
        "SIGINT took {took:?} to end the recording\n{}",
        f.stderr
    );

    let text = std::fs::read_to_string(dir.join("run.json")).expect("run.json written");
    let run: Value = serde_json::from_str(&text).expect("run.json parses");
    assert_eq!(str_of(&run["target"], "kind"), "pid", "{}", summary(&run));
    assert_eq!(
        u64_of(&run["target"], "pid"),
        pid as u64,
        "{}",
        summary(&run)
    );

    // Program teardown after the last fd closes is asynchronous (RCU): allow it a moment. Only our
    // own programs are checked, so another kpath running on the machine cannot fail this test.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = loaded_programs();
        let left: Vec<_> = ids.iter().filter(|id| now.contains_key(id)).collect();
        if left.is_empty() {
            let others: Vec<_> = now.values().filter(|n| is_kpath_prog(n)).collect();
            if !others.is_empty() {
                eprintln!("note: kpath programs of another process are loaded: {others:?}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "programs {left:?} still loaded after kpath exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sleeper);
}

#[test]
fn missing_pid_is_named() {
    if !require_root() {
        return;
    }
    assert!(
        !std::path::Path::new("/proc/999999").exists(),
        "pid 999999 exists here"
    );
    let _guard = serial();
    let dir = tmpdir("nopid");
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["record", "-p", "999999", "-d", "1", "-o"])
            .arg(&dir),
        Duration::from_secs(20),
    );
    assert!(
        !f.status.success(),
        "record -p 999999 succeeded\nstderr:\n{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("999999"),
        "stderr does not name the pid:\n{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("error:"),
        "stderr has no `error:` line:\n{}",
        f.stderr
    );
}

#[test]
fn non_root_is_refused() {
    if !require_root() {
        return;
    }
    let dir = tmpdir("nonroot");
    let f = run_with_timeout(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", KPATH])
            .args(["record", "-d", "1", "-o"])
            .arg(&dir)
            .args(["--", "true"]),
        Duration::from_secs(20),
    );
    assert!(
        !f.status.success(),
        "record as uid 65534 succeeded\nstderr:\n{}",
        f.stderr
    );
    assert!(
        f.stderr.to_lowercase().contains("root"),
        "stderr does not mention root:\n{}",
        f.stderr
    );
}

#[test]
fn json_stdout_matches_run_json() {
    if !require_root() {
        return;
    }
    let (run, stderr, dir) = record_dir(&[], &["true"]);
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    for key in RUN_KEYS {
        assert!(run.get(*key).is_some(), "run has no {key:?}\n{}", context());
    }
    for table in ["syscalls", "kpaths", "locks", "warnings"] {
        assert!(
            run[table].is_array(),
            "{table} is not an array\n{}",
            context()
        );
    }
    // With no --probes every family is recorded and says how.
    for family in ["syscalls", "kpaths", "sched", "locks", "oncpu"] {
        let method = run["methods"].get(family).and_then(Value::as_str);
        assert!(
            method.is_some_and(|m| !m.is_empty()),
            "no method for {family}\n{}",
            context()
        );
    }
    let target = &run["target"];
    assert_eq!(str_of(target, "kind"), "command", "{}", context());
    assert_eq!(target["exit_code"].as_i64(), Some(0), "{}", context());
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("run.json")).expect("run.json written"),
    )
    .expect("run.json parses");
    assert_eq!(file, run, "run.json differs from --json stdout");
}

#[test]
fn command_exit_ends_recording() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let dir = tmpdir("exit");
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["record", "--json", "-o"])
            .arg(&dir)
            .args(["--", "sleep", "0.2"]),
        Duration::from_secs(20),
    );
    assert!(
        f.status.success(),
        "record -- sleep 0.2: {}\nstderr:\n{}",
        f.status,
        f.stderr
    );
    assert!(
        f.elapsed < Duration::from_secs(2),
        "record -- sleep 0.2 took {:?}",
        f.elapsed
    );
    let run: Value = serde_json::from_str(&f.stdout).expect("--json stdout parses");
    let secs = u64_of(&run, "duration_ns") as f64 / 1e9;
    assert!(
        (0.2..2.0).contains(&secs),
        "duration_ns says {secs} s for sleep 0.2"
    );
}

#[test]
fn command_exit_code_is_recorded() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let dir = tmpdir("exitcode");
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["record", "--probes", "syscalls", "-o"])
            .arg(&dir)
            .args(["--", "sh", "-c", "exit 3"]),
        Duration::from_secs(20),
    );
    assert!(!f.timed_out, "record -- sh -c 'exit 3' hung\n{}", f.stderr);
    let text = std::fs::read_to_string(dir.join("run.json"))
        .unwrap_or_else(|e| panic!("run.json not written ({e})\nstderr:\n{}", f.stderr));
    let run: Value = serde_json::from_str(&text).expect("run.json parses");
    assert_eq!(
        run["target"]["exit_code"].as_i64(),
        Some(3),
        "{}",
        summary(&run)
    );
    // And kpath exits with it, as perf and strace do.
    assert_eq!(f.status.code(), Some(3), "{}", f.stderr);
}

#[test]
fn a_command_on_path_is_one_execve() {
    if !require_root() {
        return;
    }
    // `true` is found on PATH before the fork: the traced child makes one execve, not one
    // failed attempt per PATH entry before it.
    let (run, stderr) = record(&["--probes", "syscalls"], &["true"]);
    let execve = syscall_row(&run, "execve").unwrap_or_else(|| panic!("no execve row\n{stderr}"));
    assert_eq!(execve["count"].as_u64(), Some(1), "{execve}");
    assert_eq!(execve["errors"].as_u64(), Some(0), "{execve}");
}

#[test]
fn a_missing_command_is_named_before_anything_runs() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let f = run_with_timeout(
        Command::new(KPATH).args(["record", "--", "kpath-no-such-command-xyz"]),
        Duration::from_secs(20),
    );
    assert!(!f.status.success());
    assert!(
        f.stderr
            .contains("kpath-no-such-command-xyz: command not found"),
        "{}",
        f.stderr
    );
}

/// The child of `parent` named `comm`, if any (from /proc).
fn child_named(parent: u32, comm: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (name == comm && ppid == parent).then_some(pid)
    })
}

/// Whether `pid` still runs (a zombie does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn the_command_dies_with_kpath() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let dir = tmpdir("pdeathsig");
    let ready = dir.join("ready");
    let mut kpath = Command::new(KPATH)
        .args(["record", "--probes", "syscalls", "-o"])
        .arg(&dir)
        .arg("--ready-file")
        .arg(&ready)
        .args(["--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kpath record");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut sleeper = None;
    while Instant::now() < deadline && sleeper.is_none() {
        if ready.exists() {
            sleeper = child_named(kpath.id(), "sleep");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(sleeper) = sleeper else {
        let _ = kpath.kill();
        panic!("kpath record did not start `sleep 30` within 20 s");
    };
    kpath.kill().expect("SIGKILL kpath");
    let _ = kpath.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while running(sleeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !running(sleeper),
        "the traced `sleep 30` (pid {sleeper}) still runs after kpath was SIGKILLed"
    );
}

#[test]
fn json_stdout_is_json_whatever_the_command_prints() {
    if !require_root() {
        return;
    }
    // `record` asserts stdout parses as JSON; the command's own line went to stderr.
    let (run, stderr) = record(&["--probes", "syscalls"], &["echo", "kpath-hello-line"]);
    assert!(stderr.contains("kpath-hello-line"), "{stderr}");
    assert!(
        syscall_row(&run, "write").is_some(),
        "echo's write was traced"
    );
}

#[test]
fn two_recordings_at_once_get_two_directories() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let cwd = tmpdir("rundirs");
    let start = || {
        Command::new(KPATH)
            .args(["record", "--probes", "syscalls", "--", "true"])
            .current_dir(&cwd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kpath record")
    };
    let (mut a, mut b) = (start(), start());
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let runs: Vec<_> = std::fs::read_dir(cwd.join("runs"))
        .expect("runs/ written")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("run.json").is_file())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
}

#[test]
fn an_earlier_runs_files_are_removed_from_the_directory() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let dir = tmpdir("stale");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("oncpu.svg"), "<svg>old</svg>").unwrap();
    std::fs::write(dir.join("report.html"), "old").unwrap();
    std::fs::write(dir.join("notes.txt"), "the user's").unwrap();
    let f = run_with_timeout(
        Command::new(KPATH)
            .args(["record", "--probes", "syscalls", "-o"])
            .arg(&dir)
            .args(["--", "true"]),
        Duration::from_secs(20),
    );
    assert!(f.status.success(), "{}", f.stderr);
    assert!(dir.join("run.json").is_file());
    assert!(
        !dir.join("oncpu.svg").exists(),
        "a syscalls-only run left the old oncpu.svg"
    );
    assert!(!dir.join("report.html").exists());
    assert!(
        dir.join("notes.txt").exists(),
        "a file kpath does not write was removed"
    );
}

#[test]
fn several_pids_are_traced_and_only_they() {
    if !require_root() {
        return;
    }
    let _guard = serial();
    let dir = tmpdir("pids");
    let go = dir.join("go");
    let opener = workload("opener");
    let start = || {
        Command::new(&opener)
            .arg(&go)
            .arg("1000")
            .spawn()
            .expect("spawn opener")
    };
    // A and B are named with -p (once as a list, once repeated); C is a bystander.
    let (mut a, mut b, mut c) = (start(), start(), start());
    let out = dir.join("run");
    let (ab, a_again) = (format!("{},{}", a.id(), b.id()), a.id().to_string());
    let kpath = record_attached(
        [
            "--probes",
            "syscalls",
            "--json",
            "-o",
            out.to_str().unwrap(),
            "-p",
            &ab,
            "-p",
            &a_again,
        ],
        &dir.join("ready"),
    );
    std::fs::write(&go, b"").unwrap();
    for p in [&mut a, &mut b, &mut c] {
        assert!(p.wait().unwrap().success(), "an opener failed");
    }
    // The recording ends by itself once A and B have both exited.
    let f = wait_with_timeout(kpath, Duration::from_secs(20));
    assert!(!f.timed_out && f.status.success(), "{}", f.stderr);
    let run: Value = serde_json::from_str(&f.stdout).expect("--json stdout parses");
    let openat = syscall_row(&run, "openat").expect("openat row");
    assert_eq!(openat["count"].as_u64(), Some(2000), "{openat}");
    assert_eq!(run["target"]["kind"], "pid");
    let pids: Vec<u64> = run["target"]["pids"]
        .as_array()
        .expect("target.pids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(pids, [a.id() as u64, b.id() as u64]);
}
