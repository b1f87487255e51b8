//! A real bench report in a real browser: `kpath bench` of two strategies, then headless
//! Chromium driven by selenium (`browser.py`, Debian's python3-selenium and chromium-driver)
//! clicks a narrow flame graph frame and sees it widen, searches a function and reads the
//! matched share, searches every graph from the page, looks into an off-CPU graph and lists
//! the plots; screenshots go to `KPATH_SCREENSHOTS` or the test's temporary directory.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// `/usr/bin/python3` when it has selenium and chromium and its driver are installed; `None`
/// (the test skips) otherwise, unless root tests are required.
fn selenium() -> Option<PathBuf> {
    let python = PathBuf::from("/usr/bin/python3");
    let has_selenium = Command::new(&python)
        .args(["-c", "import selenium"])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = [
        (!has_selenium).then_some("python3-selenium"),
        (!Path::new("/usr/bin/chromedriver").exists()).then_some("chromium-driver"),
        (!Path::new("/usr/bin/chromium").exists()).then_some("chromium"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return Some(python);
    }
    let why = format!(
        "{} missing (cargo xtask setup installs them)",
        missing.join(", ")
    );
    if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn bench_report_is_interactive_in_chromium() {
    if !common::require_root() {
        return;
    }
    let Some(python) = selenium() else { return };
    let _guard = common::serial();
    let dir = common::tmpdir("browser-bench");
    let common::BenchRun {
        finished: f,
        json: bench,
    } = common::bench(
        &[
            "--io",
            "mmap,cached",
            "--model",
            "epoll",
            "--keepalive",
            "1",
            "-d",
            "2",
            "-c",
            "8",
        ],
        &dir,
        Duration::from_secs(90),
    );
    let runs = bench["runs"].as_array().expect("runs");
    for r in runs {
        let p = r["latency_percentiles_ns"].as_array().expect("percentiles");
        assert!(p.len() >= 10, "{r}");
        let ns: Vec<u64> = p.iter().map(|x| common::u64_of(x, "ns")).collect();
        assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{ns:?}");
    }

    let shots = std::env::var_os("KPATH_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let profile = common::tmpdir("browser-profile");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser.py");
    let b = common::run_with_timeout(
        Command::new(python)
            .arg(script)
            .arg(dir.join("report.html"))
            .arg(&shots)
            .arg(&profile),
        Duration::from_secs(150),
    );
    let _ = std::fs::remove_dir_all(&profile);
    // selenium's messages quote whole elements (a graph's data: URL): their ends suffice.
    let end = |s: &str| s[s.len() - s.len().min(4000)..].to_string();
    assert!(
        !b.timed_out && b.status.success(),
        "browser.py failed ({}, {:?}):\n{}\n{}",
        b.status,
        b.elapsed,
        end(&b.stdout),
        end(&b.stderr)
    );
    let seen: Value = serde_json::from_str(b.stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("browser.py printed no JSON ({e}):\n{}", b.stdout));
    eprintln!("browser saw: {seen:#}");

    // Plots: one per question, drawn with marks.
    let plots = strs(&seen["plots"]);
    for want in [
        "Requests/s",
        "Request latency by percentile",
        "Busy kernel time per request",
        "Syscalls per request",
        "run-queue delay",
        "close latency",
    ] {
        assert!(
            plots.iter().any(|p| p.contains(want)),
            "no {want:?} plot in {plots:?}"
        );
    }
    assert!(common::u64_of(&seen, "plot_marks") >= 20, "{seen}");
    assert!(
        common::u64_of(&seen, "plot_points") >= 2 * 10,
        "two latency curves: {seen}"
    );

    // Graphs: per strategy on-CPU and off-CPU, and both kinds of differential.
    let graphs = strs(&seen["graphs"]);
    for want in [
        "mmap-epoll-ka1: on-CPU flame graph",
        "cached-epoll-ka1: on-CPU flame graph",
        "mmap-epoll-ka1: off-CPU flame graph",
        "cached-epoll-ka1: off-CPU flame graph",
        "on-CPU: cached-epoll-ka1 vs mmap-epoll-ka1",
        "off-CPU: cached-epoll-ka1 vs mmap-epoll-ka1",
    ] {
        assert!(
            graphs.iter().any(|g| g == want),
            "no {want:?} in {graphs:?}"
        );
    }
    assert_eq!(common::u64_of(&seen, "offcpu_graphs"), 2, "{seen}");
    assert!(common::u64_of(&seen, "offcpu_frames") > 0, "{seen}");

    // The clicked frame widened to (nearly) the graph's width; the tooltip line named it.
    let z = &seen["zoom"];
    let (before, after, full) = (
        common::f64_of(z, "before_px"),
        common::f64_of(z, "after_px"),
        common::f64_of(z, "graph_px"),
    );
    assert!(before <= full / 10.0 + 0.5, "{z}");
    assert!(after >= 0.8 * full && after >= 5.0 * before, "{z}");
    assert!(z["reset_shown"].as_bool().unwrap(), "{z}");
    // The details line (inferno's tooltip) names the frame under the pointer: the one clicked.
    assert_eq!(
        common::str_of(z, "details"),
        format!("Function: {}", common::str_of(z, "function")),
        "{z}"
    );

    // The graph's own search: a matched share above 0 and highlighted frames.
    let matched = common::str_of(&seen, "matched");
    let pct: f64 = matched
        .strip_prefix("Matched: ")
        .and_then(|m| m.strip_suffix('%'))
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("matched share: {matched:?}"));
    assert!(pct > 0.0 && pct <= 100.0, "{matched}");
    assert!(common::u64_of(&seen, "highlighted") >= 1, "{seen}");
    // The page-wide search reached the zoomed graph, and it answered with its share.
    let zoomed = common::str_of(&seen, "zoom_graph");
    let page = common::str_of(&seen["page_search"], zoomed);
    assert!(page.starts_with("search: Matched: "), "{seen}");

    // Differential graphs state both sides' samples, and warn exactly when one is small.
    let notes = strs(&seen["diff_notes"]);
    let t = &runs[1]["diff_oncpu_samples"];
    let (a, b) = (common::u64_of(t, "baseline"), common::u64_of(t, "run"));
    let totals = format!("mmap-epoll-ka1 {a} samples (baseline) vs cached-epoll-ka1 {b} samples");
    assert!(notes.contains(&totals), "{totals:?} not in {notes:?}");
    let warned = strs(&seen["warnings"])
        .iter()
        .any(|w| w.starts_with("too few samples"));
    assert_eq!(warned, a.min(b) < 500, "{a} vs {b}: {seen}");
    // kpath bench said so on stderr too.
    assert_eq!(
        f.stderr.contains("warning: differential graph diff/cached-epoll-ka1-vs-mmap-epoll-ka1.svg: too few samples"),
        a.min(b) < 500,
        "{}",
        f.stderr
    );

    for s in strs(&seen["screenshots"]) {
        let size = std::fs::metadata(&s).map(|m| m.len()).unwrap_or(0);
        // A blank 1400x1000 page compresses to a few KB.
        assert!(size > 20_000, "screenshot {s} is only {size} bytes");
    }
    assert!(strs(&seen["screenshots"]).len() >= 6, "{seen}");
}
