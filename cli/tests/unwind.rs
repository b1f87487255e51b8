//! DWARF user stacks (`--call-graph dwarf`): the walker in BPF over kpath's own unwind tables,
//! on a program built without frame pointers.
//!
//! `deep_stacks 3` (tests/workloads/deep_stacks.c, `-O2 -fomit-frame-pointer`) runs two threads
//! 61 `kpath_recurse` frames deep: one spins in `kpath_spin`, main sleeps in
//! `kpath_sleep_here`. With dwarf, >= 95% of its on-CPU samples and of its off-CPU time must
//! end at a real root (`_start`/`__libc_start_*`/`main` for main, `clone3`/`start_thread` for
//! the thread), one stack must hold all 61 recursion frames, and main's off-CPU stack must
//! run `main;...;kpath_sleep_here`. The same program under `--call-graph fp` reaches no root:
//! what dwarf is for, and proof that the bounds can fail.
mod common;

use std::path::Path;

use common::stacks::*;
use common::*;

/// Keeps this file's tests apart: the servers and their load would starve the other's CPU.
fn whole_test() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn dwarf_stacks_of_a_frameless_program_reach_their_roots() {
    if !require_root() {
        return;
    }
    let _whole = whole_test();
    let bin = workload_with("deep_stacks", &["-fomit-frame-pointer"]);
    let (run, stderr, dir) = record_dir(
        &[
            "--probes",
            "oncpu,sched",
            "-F",
            "499",
            "--call-graph",
            "dwarf",
        ],
        &[bin.to_str().unwrap(), "3"],
    );
    let context = || {
        format!(
            "kpath stderr:\n{stderr}\nunwind: {}\n",
            serde_json::to_string_pretty(&run["unwind"]).unwrap_or_default()
        )
    };
    assert_eq!(str_of(&run, "call_graph"), "dwarf", "{}", context());
    let outcomes = &run["unwind"]["outcomes"];
    assert!(u64_of(outcomes, "complete") > 0, "{}", context());

    assert_deep_stacks_complete(&dir, &context);

    // Frame pointers on the same program: no root (the frameless code breaks the chain).
    let (run, _stderr, dir) = record_dir(
        &["--probes", "oncpu", "-F", "499", "--call-graph", "fp"],
        &[bin.to_str().unwrap(), "1"],
    );
    assert_eq!(str_of(&run, "call_graph"), "fp");
    assert!(run.get("unwind").is_none_or(|u| u.is_null()));
    let (root, all) = root_share(&folded(&dir, "oncpu.folded"), "deep_stacks");
    eprintln!("fp on-CPU: {root} of {all} samples end at a root");
    assert!(
        root * 100 < all * 50,
        "fp reached a root in {root} of {all} samples: the program is not frameless?"
    );
}

/// Whether the outermost user frame of a stack (as folded or as perf prints it) is a real
/// root: the program's entry, libc's start, or a thread's clone entry.
fn is_root_name(f: &str) -> bool {
    ROOTS.contains(&f) || f.starts_with("__libc_start") || f.contains("clone")
}

/// Share (percent) of perf's samples with user frames whose outermost frame is a root, from
/// `perf script -F ip,sym` (one block per sample, innermost first, blank line between).
fn perf_complete_share(perf_data: &Path) -> (f64, usize) {
    let out = std::process::Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(perf_data)
        .output()
        .expect("run perf script");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut root, mut all) = (0usize, 0usize);
    for block in text.split("\n\n") {
        let user: Vec<&str> = block
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("ffffffff"))
            .collect();
        let Some(last) = user.last() else { continue };
        all += 1;
        let sym = last.split_whitespace().nth(1).unwrap_or("");
        let sym = sym.split('+').next().unwrap_or(sym);
        if is_root_name(sym) {
            root += 1;
        }
    }
    (100.0 * root as f64 / all.max(1) as f64, all)
}

/// Records `pid` on-CPU with kpath (dwarf) and `perf record --call-graph dwarf` at once for
/// `secs`, and returns both complete shares (percent of samples with user frames) and
/// kpath's sample count; the caller keeps the process busy meanwhile.
fn kpath_and_perf(pid: u32, secs: u32, comm: &str) -> (f64, f64, u64, String) {
    let dir = tmpdir("perf");
    let perf_data = dir.join("perf.data");
    let mut perf = std::process::Command::new("perf");
    perf.args(["record", "-q", "--call-graph", "dwarf", "-F", "199", "-p"])
        .arg(pid.to_string())
        .arg("-o")
        .arg(&perf_data)
        .args(["--", "sleep", &secs.to_string()]);
    let perf = spawn_group(&mut perf);
    let (run, stderr, run_dir) = record_dir(
        &[
            "-p",
            &pid.to_string(),
            "-d",
            &secs.to_string(),
            "--probes",
            "oncpu",
            "-F",
            "199",
            "--call-graph",
            "dwarf",
        ],
        &[],
    );
    let f = wait_with_timeout(perf, std::time::Duration::from_secs(60));
    assert!(f.status.success(), "perf record failed:\n{}", f.stderr);
    let (perf_share, perf_n) = perf_complete_share(&perf_data);
    assert!(
        perf_n >= 100,
        "perf took only {perf_n} samples with user frames"
    );
    let stacks = folded(&run_dir, "oncpu.folded");
    let (root, all) = stacks
        .iter()
        .filter(|(s, _)| s[0].starts_with(comm) && !user_frames(s).is_empty())
        .fold((0, 0), |(r, a), (s, n)| {
            let rooted = user_frames(s).first().is_some_and(|f| is_root_name(f));
            (r + if rooted { *n } else { 0 }, a + n)
        });
    let kpath_share = 100.0 * root as f64 / all.max(1) as f64;
    let context = format!(
        "kpath: {root} of {all} samples complete ({kpath_share:.1}%), perf: {perf_share:.1}% of \
         {perf_n}\nkpath stderr:\n{stderr}\nunwind: {}",
        serde_json::to_string_pretty(&run["unwind"]).unwrap_or_default()
    );
    (kpath_share, perf_share, all, context)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_listening(port: u16) {
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "nothing listens on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Debian's nginx (stripped, no frame pointers; one worker under wrk) and kpath's own server
/// (Rust, no frame pointers) under `kpath load`: >= 90% of kpath's on-CPU samples with user
/// frames reach a root, within 5 points of perf's DWARF unwinding in the same window.
#[test]
fn dwarf_stacks_of_nginx_and_kpaths_server_match_perf() {
    if !require_root() {
        return;
    }
    let _whole = whole_test();
    let www = tmpdir("www");
    std::fs::write(www.join("f.bin"), vec![b'x'; 1400]).unwrap();

    // nginx: master plus one worker, in the foreground.
    let port = free_port();
    let conf = www.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process on; worker_processes 1; pid {d}/nginx.pid;\n\
             error_log {d}/error.log;\nevents {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on;\n\
             server {{ listen 127.0.0.1:{port}; root {d}; }} }}\n",
            d = www.display()
        ),
    )
    .unwrap();
    let mut nginx = std::process::Command::new("nginx");
    nginx.arg("-c").arg(&conf).arg("-p").arg(&www);
    let nginx = KillGroup(spawn_group(&mut nginx));
    wait_listening(port);
    let master = nginx.0.id();
    let worker = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .expect("nginx's worker pid");
    let mut wrk = std::process::Command::new("wrk");
    wrk.args(["-t1", "-c32", "-d8s"])
        .arg(format!("http://127.0.0.1:{port}/f.bin"));
    let _wrk = KillGroup(spawn_group(&mut wrk));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (kpath, perf, n, context) = kpath_and_perf(worker, 4, "nginx");
    eprintln!("nginx worker: kpath {kpath:.1}% of {n} complete, perf {perf:.1}%");
    assert!(n >= 100, "only {n} samples\n{context}");
    assert!(kpath >= 90.0, "{context}");
    assert!((kpath - perf).abs() <= 5.0, "{context}");

    // kpath's own server as users run it (release build), epoll model, under kpath load.
    let Some(server) = release_server() else {
        return;
    };
    let port = free_port();
    let mut serve = std::process::Command::new(server);
    serve
        .args(["serve", "--model", "epoll", "--io", "read", "--root"])
        .arg(&www)
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"));
    let serve = KillGroup(spawn_group(&mut serve));
    wait_listening(port);
    let mut load = std::process::Command::new(KPATH);
    load.args(["load", "-c", "32", "-t", "1", "-d", "8"])
        .arg(format!("http://127.0.0.1:{port}/f.bin"));
    let _load = KillGroup(spawn_group(&mut load));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (kpath, perf, n, context) = kpath_and_perf(serve.0.id(), 4, "kpath-epoll");
    eprintln!("kpath serve: kpath {kpath:.1}% of {n} complete, perf {perf:.1}%");
    assert!(n >= 100, "only {n} samples\n{context}");
    assert!(kpath >= 90.0, "{context}");
    assert!((kpath - perf).abs() <= 5.0, "{context}");
}

/// A process group leader (from [`spawn_group`]): its group is SIGKILLed and the leader
/// reaped when dropped.
struct KillGroup(std::process::Child);

impl Drop for KillGroup {
    fn drop(&mut self) {
        // SAFETY: kill takes plain integers; a group that is gone gives ESRCH, ignored.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

/// Lock contention: with dwarf, each lock row carries its longest waiter's user stack, and
/// those of `epoll_contention`'s threads (frameless) reach their root.
#[test]
fn dwarf_lock_waiter_stacks_reach_their_roots() {
    if !require_root() {
        return;
    }
    let _whole = whole_test();
    let bin = workload_with("epoll_contention", &["-fomit-frame-pointer"]);
    let (run, stderr) = record(
        &["--probes", "locks", "--call-graph", "dwarf"],
        &[bin.to_str().unwrap(), "2", "2", "2"],
    );
    let rows = run["locks"].as_array().cloned().unwrap_or_default();
    let stacks: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| r.get("user_stack").and_then(|s| s.as_array()))
        .map(|s| {
            s.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .collect();
    let context = format!(
        "{} rows, {} with a user stack: {stacks:?}\nkpath stderr:\n{stderr}\nunwind: {}",
        rows.len(),
        stacks.len(),
        run["unwind"]
    );
    assert!(!stacks.is_empty(), "{context}");
    let rooted = stacks
        .iter()
        .filter(|s| {
            s.first()
                .is_some_and(|f| is_root_name(f.trim_end_matches("_[i]")))
        })
        .count();
    eprintln!(
        "locks: {rooted} of {} waiter stacks reach a root",
        stacks.len()
    );
    assert!(rooted * 100 >= stacks.len() * 90, "{context}");
}
