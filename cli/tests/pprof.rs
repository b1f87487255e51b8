//! pprof export, read by its real consumer: `go tool pprof` (Debian's golang-go).
//!
//! - `epoll_contention 1 2 2` (tests/workloads/epoll_contention.c) recorded with oncpu, sched and
//!   locks: `go tool pprof -raw` reads oncpu.pb.gz, offcpu.pb.gz and locks.pb.gz, and its sample
//!   totals equal the folded files of the same run (samples, off-CPU ns) and run.json's lock
//!   rows (contentions, wait ns); `kpath report --format pprof` re-exports each with the same
//!   totals.
//! - `pprof_burn 1` (tests/workloads/pprof_burn.c, built with -g): `go tool pprof -top` names
//!   `burn_cpu_spin` first; `-raw` shows the workload's mapping with its build-id and a location
//!   whose lines are the inlined `mix_bits` inside `burn_cpu_spin`, at lines of pprof_burn.c.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The `go` command, or `None` (with a note; a panic when root tests are required: CI must not
/// skip silently).
fn go() -> Option<PathBuf> {
    match which_go() {
        Some(p) => Some(p),
        None => {
            let why = "`go` is not on PATH (Debian's golang-go; cargo xtask setup installs it)";
            if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("skipped: {why}");
            None
        }
    }
}

fn which_go() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("go"))
        .find(|p| p.is_file())
}

/// `go tool pprof ARGS FILE`'s stdout; panics with its stderr when it fails.
fn pprof(go: &Path, args: &[&str], file: &Path) -> String {
    let mut c = Command::new(go);
    c.arg("tool").arg("pprof").args(args).arg(file);
    let f = run_with_timeout(&mut c, Duration::from_secs(60));
    assert!(
        f.status.success() && !f.timed_out,
        "go tool pprof {args:?} {} failed ({}):\n{}",
        file.display(),
        f.status,
        f.stderr
    );
    f.stdout
}

/// Sums of each sample value column of `go tool pprof -raw` output, and the column names
/// (`samples/count`, `cpu/nanoseconds`, ...).
fn raw_totals(raw: &str) -> (Vec<String>, Vec<i64>) {
    let mut lines = raw.lines().skip_while(|l| !l.starts_with("Samples:"));
    lines.next();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let mut totals = vec![0i64; header.len()];
    for l in lines.take_while(|l| !l.starts_with("Locations")) {
        let Some((values, _ids)) = l.split_once(':') else {
            continue;
        };
        let v: Option<Vec<i64>> = values.split_whitespace().map(|x| x.parse().ok()).collect();
        // Label lines (`thread_name:[x]`) do not parse as numbers.
        if let Some(v) = v.filter(|v| v.len() == header.len()) {
            for (t, x) in totals.iter_mut().zip(v) {
                *t += x;
            }
        }
    }
    (header, totals)
}

fn folded_total(path: &Path) -> i64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<i64>().ok())
        .sum()
}

/// `kpath report DIR --format pprof --profile P -o OUT`.
fn reexport(dir: &Path, profile: &str, out: &Path) {
    let mut c = Command::new(KPATH);
    c.arg("report")
        .arg(dir)
        .args(["--format", "pprof", "--profile", profile, "-o"])
        .arg(out);
    let f = run_with_timeout(&mut c, Duration::from_secs(30));
    assert!(
        f.status.success(),
        "kpath report --format pprof: {}",
        f.stderr
    );
}

#[test]
fn go_tool_pprof_reads_every_profile_with_the_folded_totals() {
    if !require_root() {
        return;
    }
    let Some(go) = go() else { return };
    let bin = workload("epoll_contention");
    let (run, stderr, dir) = record_dir(
        &["--probes", "oncpu,sched,locks", "-F", "499"],
        &[bin.to_str().unwrap(), "1", "2", "2"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let artifacts = &run["artifacts"];
    for (key, file) in [
        ("oncpu_pprof", "oncpu.pb.gz"),
        ("offcpu_pprof", "offcpu.pb.gz"),
        ("locks_pprof", "locks.pb.gz"),
    ] {
        assert_eq!(artifacts[key], file, "run.json artifacts\n{}", context());
    }
    let out = tmpdir("pprof-reexport");

    // On-CPU: samples and cpu ns (samples x the period of -F 499).
    let folded = folded_total(&dir.join("oncpu.folded"));
    assert!(folded > 0, "no on-CPU samples\n{}", context());
    for file in [dir.join("oncpu.pb.gz"), out.join("oncpu.pb.gz")] {
        if file.starts_with(&out) {
            reexport(&dir, "oncpu", &file);
        }
        let raw = pprof(&go, &["-raw"], &file);
        let (header, totals) = raw_totals(&raw);
        assert_eq!(header, ["samples/count", "cpu/nanoseconds"], "{raw}");
        assert_eq!(
            totals[0],
            folded,
            "{}: samples vs oncpu.folded",
            file.display()
        );
        assert_eq!(totals[1], folded * (1_000_000_000 / 499), "{raw}");
        assert!(raw.contains("PeriodType: cpu nanoseconds"), "{raw}");
        assert!(raw.contains("thread_name:["), "no thread labels\n{raw}");
        assert!(raw.contains("pid:["), "no pid labels\n{raw}");
        assert!(
            raw.contains("[kernel.kallsyms]"),
            "no kernel mapping\n{raw}"
        );
    }

    // Off-CPU: blocked nanoseconds.
    let folded = folded_total(&dir.join("offcpu.folded"));
    assert!(folded > 0, "no off-CPU time\n{}", context());
    for file in [dir.join("offcpu.pb.gz"), out.join("offcpu.pb.gz")] {
        if file.starts_with(&out) {
            reexport(&dir, "offcpu", &file);
        }
        let raw = pprof(&go, &["-raw"], &file);
        let (header, totals) = raw_totals(&raw);
        assert_eq!(header, ["offcpu/nanoseconds"], "{raw}");
        assert_eq!(totals[0], folded, "{}: ns vs offcpu.folded", file.display());
    }
    // Threads blocked in a syscall (munmap, close, futex under the contention) say which.
    let raw = pprof(&go, &["-raw"], &dir.join("offcpu.pb.gz"));
    assert!(raw.contains("syscall:["), "no syscall labels\n{raw}");

    // Locks: contentions and wait ns, the sums of run.json's rows (every key is in one row).
    let rows = run["locks"].as_array().expect("locks rows");
    let count: i64 = rows.iter().map(|r| u64_of(r, "count") as i64).sum();
    let wait: i64 = rows.iter().map(|r| u64_of(r, "wait_ns") as i64).sum();
    assert!(count > 0, "no lock contention recorded\n{}", context());
    for file in [dir.join("locks.pb.gz"), out.join("locks.pb.gz")] {
        if file.starts_with(&out) {
            reexport(&dir, "locks", &file);
        }
        let raw = pprof(&go, &["-raw"], &file);
        let (header, totals) = raw_totals(&raw);
        assert_eq!(header, ["contentions/count", "wait/nanoseconds"], "{raw}");
        assert_eq!(totals, [count, wait], "{}", file.display());
        assert!(raw.contains("lock_type:["), "no lock labels\n{raw}");
    }
    // The heaviest lock caller is a function of the profile (pprof -top by wait).
    let top = pprof(
        &go,
        &["-top", "-sample_index=wait"],
        &dir.join("locks.pb.gz"),
    );
    let heaviest = rows
        .iter()
        .max_by_key(|r| u64_of(r, "wait_ns"))
        .map(|r| str_of(r, "caller").to_string())
        .unwrap();
    // (`[stack lost]` and the like name no function.)
    assert!(
        heaviest.starts_with('[') || top.contains(&heaviest),
        "{heaviest} not in\n{top}\n{}",
        context()
    );
}

#[test]
fn go_tool_pprof_top_names_the_burning_function_first() {
    if !require_root() {
        return;
    }
    let Some(go) = go() else { return };
    let bin = workload_with("pprof_burn", &["-g"]);
    let (run, stderr, dir) = record_dir(
        &["--probes", "oncpu", "-F", "999"],
        &[bin.to_str().unwrap(), "1"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let file = dir.join("oncpu.pb.gz");
    let top = pprof(&go, &["-top"], &file);
    // The first row under `flat  flat%   sum%        cum   cum%`.
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_else(|| panic!("no rows in\n{top}\n{}", context()));
    assert_eq!(
        first.split_whitespace().last(),
        Some("burn_cpu_spin"),
        "first row {first:?} of\n{top}\n{}",
        context()
    );
    let flat_pct: f64 = first
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.trim_end_matches('%').parse().ok())
        .unwrap();
    assert!(flat_pct > 50.0, "{first}\n{top}");

    let raw = pprof(&go, &["-raw"], &file);
    // The workload's mapping, with its build-id (what `readelf -n` says).
    let build_id = build_id(&bin);
    let mapping = raw
        .lines()
        .skip_while(|l| !l.starts_with("Mappings"))
        .find(|l| l.contains(bin.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no mapping of {}\n{raw}", bin.display()));
    assert!(mapping.contains(&build_id), "{mapping} lacks {build_id}");
    // A location of the inlined mix_bits: its first line mix_bits, then burn_cpu_spin, both in
    // pprof_burn.c with line numbers.
    let locations: Vec<&str> = raw
        .lines()
        .skip_while(|l| !l.starts_with("Locations"))
        .skip(1)
        .take_while(|l| !l.starts_with("Mappings"))
        .collect();
    let inlined = locations
        .windows(2)
        .find(|w| w[0].contains(" mix_bits ") && w[1].trim_start().starts_with("burn_cpu_spin "));
    let Some([inner, outer]) = inlined else {
        panic!("no location with mix_bits inlined in burn_cpu_spin:\n{raw}");
    };
    for l in [inner, outer] {
        assert!(
            l.contains("pprof_burn.c:"),
            "no source line in {l:?}\n{raw}"
        );
    }
}

/// The GNU build-id of an ELF file in hex, from `readelf -n`.
fn build_id(bin: &Path) -> String {
    let out = Command::new("readelf").arg("-n").arg(bin).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .unwrap_or_else(|| panic!("{} has no build-id", bin.display()))
}
