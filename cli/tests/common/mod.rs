//! Shared harness for the integration tests: root check, the C workloads, and running
//! `kpath record` with a timeout.
//!
//! Each test binary compiles the workloads it uses once (`cc -O2 -pthread`) into its own directory
//! under `CARGO_TARGET_TMPDIR`, and serializes its recordings (see [`serial`]) so that timing
//! assertions do not compete with a sibling test for the machine's two CPUs.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod stacks;

/// Path of the binary under test.
pub const KPATH: &str = env!("CARGO_BIN_EXE_kpath");

/// Default limit for one `kpath record` run; every test is meant to finish well inside it.
pub const RECORD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the test may go on. As non-root it prints "skipped: needs root" and returns false,
/// unless `KPATH_REQUIRE_ROOT_TESTS=1`, in which case it panics (CI must not skip silently).
pub fn require_root() -> bool {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("KPATH_REQUIRE_ROOT_TESTS=1 but the tests are not running as root");
    }
    eprintln!("skipped: needs root");
    false
}

/// The reference server built with the release profile (Rust's default: no frame pointers),
/// as users run it: `servers`' `kpath-serve-bench` example, which `cargo xtask test` builds
/// (`cargo build --release -p servers --example kpath-serve-bench`) and names in
/// `KPATH_RELEASE_SERVER`. Missing: `None` with a note, or a panic when root tests are required
/// (CI must not skip it silently).
pub fn release_server() -> Option<PathBuf> {
    let path = std::env::var_os("KPATH_RELEASE_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/release/examples/kpath-serve-bench")
        });
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "the release server {} is missing (cargo build --release -p servers --example \
         kpath-serve-bench; cargo xtask test builds it)",
        path.display()
    );
    if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// Holds the per-binary lock that keeps recordings of one test binary from running at once.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory under `CARGO_TARGET_TMPDIR`, unique per call.
pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "kpath-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test temp dir");
    dir
}

/// The compiled C workload `cli/tests/workloads/NAME.c`, built once per test binary.
pub fn workload(name: &str) -> PathBuf {
    workload_with(name, &[])
}

/// [`workload`] with extra compiler flags (e.g. `-fomit-frame-pointer`); one build per name.
pub fn workload_with(name: &str, flags: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(name) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(format!("{name}.c"));
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("workloads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create workload dir");
    let out = dir.join(name);
    let res = Command::new("cc")
        .args(["-O2", "-pthread"])
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc (is a C compiler installed?)");
    assert!(
        res.status.success(),
        "cc failed for {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    built.insert(name.to_string(), out.clone());
    out
}

/// What a finished (or timed-out and killed) child left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

/// Runs `cmd` in its own process group with piped output; past `timeout` the whole group (the
/// child and anything it started) gets SIGKILL.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Finished {
    let child = spawn_group(cmd);
    wait_with_timeout(child, timeout)
}

/// Spawns `cmd` as the leader of a new process group, stdout and stderr piped, stdin closed.
pub fn spawn_group(cmd: &mut Command) -> std::process::Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Waits for a child made by [`spawn_group`], killing its process group past `timeout`.
pub fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> Finished {
    let start = Instant::now();
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for child") {
            break st;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            // The child leads its own group: this reaches it and whatever it started, nothing else.
            // SAFETY: kill takes no pointers; the group id is our unreaped child's pid, so the
            // group cannot belong to anyone else.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            break child.wait().expect("wait for killed child");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Finished {
        status,
        stdout,
        stderr,
        elapsed,
        timed_out,
    }
}

/// `kpath record --json -o <tmpdir> ARGS -- CMD` under [`serial`] and [`RECORD_TIMEOUT`]; panics
/// (showing stderr) unless it exits 0 with JSON on stdout. Returns the run and kpath's stderr.
/// Starts `kpath record ARGS --ready-file READY` with stdout and stderr piped; returns once it
/// has attached (the ready file exists), failing the test after 20 s.
pub fn record_attached<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
    ready: &Path,
) -> std::process::Child {
    let kpath = Command::new(KPATH)
        .arg("record")
        .args(args)
        .arg("--ready-file")
        .arg(ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kpath record");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(ready.exists(), "kpath record did not attach within 20 s");
    kpath
}

pub fn record(args: &[&str], cmd: &[&str]) -> (Value, String) {
    let (run, stderr, _dir) = record_dir(args, cmd);
    (run, stderr)
}

/// [`record`], also returning the output directory (which holds `run.json`).
pub fn record_dir(args: &[&str], cmd: &[&str]) -> (Value, String, PathBuf) {
    let _guard = serial();
    let dir = tmpdir("record");
    let mut c = Command::new(KPATH);
    c.arg("record").arg("--json").arg("-o").arg(&dir).args(args);
    if !cmd.is_empty() {
        c.arg("--").args(cmd);
    }
    let f = run_with_timeout(&mut c, RECORD_TIMEOUT);
    assert!(
        !f.timed_out,
        "kpath record {args:?} -- {cmd:?} did not finish within {RECORD_TIMEOUT:?}\nstderr:\n{}",
        f.stderr
    );
    assert!(
        f.status.success(),
        "kpath record {args:?} -- {cmd:?} failed ({})\nstderr:\n{}",
        f.status,
        f.stderr
    );
    let run: Value = serde_json::from_str(&f.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout of kpath record --json is not JSON ({e})\nstdout:\n{}\nstderr:\n{}",
            f.stdout, f.stderr
        )
    });
    (run, f.stderr, dir)
}

/// The `syscalls` row named `name`.
pub fn syscall_row<'a>(run: &'a Value, name: &str) -> Option<&'a Value> {
    find_row(run, "syscalls", "name", name)
}

/// The `kpaths` row for kernel function `function`.
pub fn kpath_row<'a>(run: &'a Value, function: &str) -> Option<&'a Value> {
    find_row(run, "kpaths", "function", function)
}

fn find_row<'a>(run: &'a Value, table: &str, key: &str, want: &str) -> Option<&'a Value> {
    run.get(table)?
        .as_array()?
        .iter()
        .find(|r| r.get(key).and_then(Value::as_str) == Some(want))
}

/// `v[key]` as u64; panics naming the key (and showing the object) when missing or not a number.
pub fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

/// `v[key]` as f64; panics like [`u64_of`].
pub fn f64_of(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a number in {v}"))
}

/// `v[key]` as &str; panics like [`u64_of`].
pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
}

/// Short view of a run for assertion messages: the tables without histograms and stacks.
pub fn summary(run: &Value) -> String {
    let mut v = run.clone();
    if let Some(obj) = v.as_object_mut() {
        for table in ["syscalls", "kpaths", "locks"] {
            if let Some(rows) = obj.get_mut(table).and_then(Value::as_array_mut) {
                for r in rows.iter_mut().filter_map(Value::as_object_mut) {
                    r.remove("hist_log2_ns");
                    r.remove("stack");
                }
            }
        }
        if let Some(s) = obj.get_mut("sched").and_then(Value::as_object_mut) {
            s.remove("runq_delay_hist_log2_ns");
        }
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// What a `kpath bench` run left: its output and the parsed bench.json.
pub struct BenchRun {
    pub finished: Finished,
    pub json: Value,
}

/// Runs `kpath bench ARGS -o DIR` within `timeout`, asserts it succeeded, and reads bench.json.
pub fn bench(args: &[&str], dir: &Path, timeout: Duration) -> BenchRun {
    let f = run_with_timeout(
        Command::new(KPATH)
            .arg("bench")
            .args(args)
            .arg("-o")
            .arg(dir),
        timeout,
    );
    assert!(
        !f.timed_out && f.status.success(),
        "kpath bench failed ({}, {:?}):\n{}",
        f.status,
        f.elapsed,
        f.stderr
    );
    let path = dir.join("bench.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    BenchRun { finished: f, json }
}
