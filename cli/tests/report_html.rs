//! report.html renders in a real browser: a synthetic run and bench (no root, no BPF) are
//! written as HTML and loaded by headless Chromium, whose DOM must hold the table rows, the
//! inline plots and the flame graphs' frames, and whose screenshot must not be blank
//! (`browser.rs` drives a real bench report with clicks and searches).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kpath::bench::json::{Bench, BenchRun, LoadSummary, Strategy};
use kpath::render::html;
use kpath::run::{KernelInfo, KpathRow, Run, SchedRow, SyscallRow};

/// The Chromium binary, or `None` (with a message) when the test should be skipped.
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(name).output() {
            if out.status.success() {
                let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
                return Some(PathBuf::from(p));
            }
        }
    }
    if std::env::var("KPATH_REQUIRE_ROOT_TESTS").as_deref() == Ok("1") {
        panic!("chromium is missing (cargo xtask setup installs it)");
    }
    eprintln!("skipped: chromium is missing (cargo xtask setup installs it)");
    None
}

/// Runs headless Chromium on `page` with `extra` arguments; returns its stdout.
fn chrome(bin: &Path, page: &Path, extra: &[&str]) -> String {
    let profile = common::tmpdir("chromium-profile");
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(format!("file://{}", page.display()));
    let f = common::run_with_timeout(&mut c, Duration::from_secs(60));
    assert!(
        !f.timed_out && f.status.success(),
        "chromium failed ({}):\n{}",
        f.status,
        f.stderr
    );
    let _ = std::fs::remove_dir_all(&profile);
    f.stdout
}

fn flame_svg() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flame_oncpu.svg"),
    )
    .expect("golden flame graph")
}

fn synthetic_run(extra_syscall: &str, count: u64) -> Run {
    let mut run = Run {
        kernel: KernelInfo {
            release: "6.18.0-test".into(),
            ..Default::default()
        },
        duration_ns: 3_000_000_000,
        syscalls: vec![
            SyscallRow {
                name: "writev".into(),
                count: 1000,
                total_ns: 4_000_000,
                hist_log2_ns: [(11, 600), (12, 300), (13, 100)].iter().fold(
                    vec![0; 40],
                    |mut h, &(i, c)| {
                        h[i] = c;
                        h
                    },
                ),
                ..Default::default()
            },
            SyscallRow {
                name: extra_syscall.into(),
                count,
                total_ns: 2_000_000,
                ..Default::default()
            },
        ],
        kpaths: vec![KpathRow {
            function: "tcp_close".into(),
            method: "sampled".into(),
            oncpu_share: 0.12,
            syscall: "close".into(),
            ..Default::default()
        }],
        sched: Some(SchedRow {
            voluntary_switches: 321,
            ..Default::default()
        }),
        ..Default::default()
    };
    for (f, m) in [
        ("syscalls", "raw_tp"),
        ("kpaths", "sampled"),
        ("sched", "sched_tracepoints"),
    ] {
        run.methods.insert(f.into(), m.into());
    }
    run
}

fn check_dom_and_screenshot(bin: &Path, page: &Path, rows: &[&str]) {
    let dom = chrome(bin, page, &["--dump-dom"]);
    for want in rows {
        assert!(
            dom.contains(want),
            "DOM lacks {want:?}:\n{}",
            &dom[..dom.len().min(3000)]
        );
    }
    assert!(dom.contains("<svg class=\"plot"), "DOM has no inline plot");
    assert!(
        dom.contains("<iframe class=\"flame\""),
        "DOM has no flame graph frame"
    );
    assert!(dom.contains("tcp_close"), "DOM lacks the kpaths table");
    let png = page.with_extension("png");
    chrome(
        bin,
        page,
        &[
            "--window-size=1200,1600",
            &format!("--screenshot={}", png.display()),
        ],
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    // A blank 1200x1600 page compresses to a few KB; tables and flame graphs are far larger.
    assert!(
        size > 30_000,
        "screenshot {} is only {size} bytes",
        png.display()
    );
}

#[test]
fn run_report_renders_in_chromium() {
    let Some(bin) = chromium() else { return };
    let dir = common::tmpdir("html-run");
    let run = synthetic_run("munmap", 1000);
    let page = dir.join("report.html");
    let text = html::run_page(
        &run,
        &[html::Figure::new("on-CPU flame graph", flame_svg())],
    );
    std::fs::write(&page, text).unwrap();
    check_dom_and_screenshot(
        &bin,
        &page,
        &[
            "<td>writev</td><td class=\"n\">1000</td>",
            "<td>munmap</td>",
            "321",
        ],
    );
}

#[test]
fn bench_report_renders_in_chromium() {
    let Some(bin) = chromium() else { return };
    let dir = common::tmpdir("html-bench");
    use servers::serve::{Io, Model};
    let strategies = [(Io::Mmap, "munmap", 1000), (Io::Cached, "<evil>&name", 10)];
    let mut sections = Vec::new();
    let mut bench = Bench {
        kernel: KernelInfo {
            release: "6.18.0-test".into(),
            ..Default::default()
        },
        duration_secs: 3,
        connections: 32,
        file_size: 1400,
        baseline: "mmap-epoll-ka1".into(),
        ..Default::default()
    };
    for (io, sc, count) in strategies {
        let run = synthetic_run(sc, count);
        let s = Strategy::new(io, Model::Epoll, 1);
        let load = LoadSummary {
            requests: 1000,
            requests_per_sec: 333.0,
            ..Default::default()
        };
        let r = BenchRun::new(s, &load, &run, &format!("runs/{io}"));
        sections.push(kpath::bench::report::RunSection {
            name: r.name.clone(),
            run,
            figures: vec![html::Figure::new(format!("{} on-CPU", r.name), flame_svg())],
        });
        bench.runs.push(r);
    }
    let diffs = [html::Figure::new(
        "cached-epoll-ka1 vs mmap-epoll-ka1",
        flame_svg(),
    )];
    let page = dir.join("report.html");
    std::fs::write(
        &page,
        kpath::bench::report::bench_page(&bench, &sections, &diffs),
    )
    .unwrap();
    check_dom_and_screenshot(
        &bin,
        &page,
        &[
            "<td>mmap-epoll-ka1</td><td class=\"n\">333</td>",
            "<td>cached-epoll-ka1</td>",
            // The hostile syscall name arrives as text, not markup.
            "<td>&lt;evil&gt;&amp;name</td>",
            "Differential flame graphs",
        ],
    );
}
