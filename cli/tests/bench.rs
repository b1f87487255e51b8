//! `kpath bench` end to end: three io strategies served, recorded and loaded; bench.json has a
//! row per strategy with the per-request figures, mmap costs more syscalls per request than the
//! in-memory cache, and report.html renders its tables and flame graphs in headless Chromium.
mod common;

use std::process::Command;
use std::time::Duration;

#[test]
fn bench_compares_io_strategies() {
    if !common::require_root() {
        return;
    }
    let _guard = common::serial();
    let dir = common::tmpdir("bench");
    let common::BenchRun {
        finished: f,
        json: bench,
    } = common::bench(
        &[
            "--io",
            "mmap,sendfile,cached",
            "--model",
            "epoll",
            "--keepalive",
            "1",
            "-d",
            "3",
            "-c",
            "16",
        ],
        &dir,
        Duration::from_secs(55),
    );
    assert_eq!(
        f.stderr.matches("kpath bench [").count(),
        6,
        "two progress lines per strategy:\n{}",
        f.stderr
    );
    assert!(f.stdout.contains("cached-epoll-ka1"), "{}", f.stdout);

    let runs = bench["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3, "{bench}");
    for r in runs {
        for key in [
            "strategy",
            "requests_per_sec",
            "latency_ns",
            "syscalls_per_request",
            "kernel_ns_per_request",
            "syscall_counts_per_request",
            "kpaths",
            "ctx_switches_per_request",
            "lock_wait_ns_per_request",
            "methods",
            "run_dir",
        ] {
            assert!(!r[key].is_null(), "{key} missing in {r}");
        }
        assert!(common::f64_of(r, "requests_per_sec") > 100.0, "{r}");
        assert!(common::u64_of(&r["latency_ns"], "p50") > 0, "{r}");
        assert!(dir
            .join(r["run_dir"].as_str().unwrap())
            .join("run.json")
            .is_file());
        assert_eq!(r["errors"]["connect"], 0, "{r}");
    }
    let per = |i: usize| common::f64_of(&runs[i], "syscalls_per_request");
    let (mmap, cached) = (per(0), per(2));
    assert_eq!(runs[0]["strategy"]["io"], "mmap");
    assert_eq!(runs[2]["strategy"]["io"], "cached");
    assert!(
        mmap > cached + 2.0,
        "mmap should add open, mmap, munmap and a close per request: mmap {mmap}, cached {cached}"
    );
    let munmap = |i: usize| runs[i]["syscall_counts_per_request"]["munmap"].as_f64();
    assert!(
        munmap(0).is_some_and(|m| (0.9..1.1).contains(&m)),
        "{:?}",
        munmap(0)
    );
    assert!(munmap(2).is_none_or(|m| m < 0.1), "{:?}", munmap(2));

    // The differential graphs against the baseline, and the report in a real browser.
    for r in &runs[1..] {
        let svg = r["diff_oncpu_svg"].as_str().expect("diff graph");
        assert!(dir.join(svg).is_file(), "{svg}");
    }
    let page = dir.join("report.html");
    assert!(page.is_file());
    let Ok(chromium) = which("chromium") else {
        if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
            panic!("chromium is missing (cargo xtask setup installs it)");
        }
        eprintln!("skipped the browser check: chromium is missing");
        return;
    };
    let profile = common::tmpdir("bench-chromium");
    let f = common::run_with_timeout(
        Command::new(chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .args([
                "--disable-background-networking",
                "--disable-component-update",
            ])
            .args(["--disable-sync", "--no-first-run", "--dump-dom"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(60),
    );
    assert!(f.status.success(), "chromium: {}", f.stderr);
    for want in [
        "<td>mmap-epoll-ka1</td>",
        "<td>sendfile-epoll-ka1</td>",
        "<td>cached-epoll-ka1</td>",
        "<td>munmap</td>",
        "<svg class=\"plot",
    ] {
        assert!(f.stdout.contains(want), "report DOM lacks {want:?}");
    }
    // Per strategy an on-CPU and an off-CPU graph, and both against the baseline for two.
    assert!(
        f.stdout.matches("<iframe class=\"flame\"").count() >= 3 * 2 + 2 * 2,
        "three on-CPU, three off-CPU and four differential graphs"
    );
}

fn which(name: &str) -> Result<String, ()> {
    let out = Command::new("which").arg(name).output().map_err(|_| ())?;
    if !out.status.success() {
        return Err(());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
