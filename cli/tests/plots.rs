//! Golden tests of the report's plots and flame graph figures: the run plots of the golden
//! `run.json`, the plots of a small bench, and one flame graph figure (frame, totals, warning,
//! link). Run with `BLESS=1` to rewrite `tests/data/` after an intended change.

mod golden;

use golden::{check_golden, data_path};

use kpath::bench::json::{Bench, BenchRun, LatencyPoint, Strategy};
use kpath::bench::plots;
use kpath::render::flame::{diff_note, FlameKind};
use kpath::render::{html, json};
use servers::serve::{Io, Model};

fn bench() -> Bench {
    let run = |io: Io, rps: f64, busy: f64, calls: &[(&str, f64)], lat: &[(f64, u64)]| {
        let strategy = Strategy::new(io, Model::Epoll, 1);
        BenchRun {
            name: strategy.name(),
            strategy,
            requests_per_sec: rps,
            busy_kernel_ns_per_request: busy,
            syscall_counts_per_request: calls.iter().map(|&(n, v)| (n.into(), v)).collect(),
            lock_wait_ns_per_request_by_caller: [("__vm_munmap".into(), busy / 20.0)].into(),
            latency_percentiles_ns: lat
                .iter()
                .map(|&(percentile, ns)| LatencyPoint { percentile, ns })
                .collect(),
            ..Default::default()
        }
    };
    let lat = |k: u64| -> Vec<(f64, u64)> {
        [0.0, 50.0, 90.0, 99.0, 99.9, 100.0]
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, k * (1 + i as u64 * i as u64) * 100_000))
            .collect()
    };
    Bench {
        baseline: "mmap-epoll-ka1".into(),
        runs: vec![
            run(
                Io::Mmap,
                22_000.0,
                41_700.0,
                &[
                    ("close", 2.0),
                    ("mmap", 1.0),
                    ("munmap", 1.0),
                    ("writev", 1.0),
                ],
                &lat(3),
            ),
            run(
                Io::Cached,
                28_500.0,
                15_000.0,
                &[("close", 1.0), ("writev", 1.0)],
                &lat(2),
            ),
        ],
        ..Default::default()
    }
}

#[test]
fn bench_plots_match_golden() {
    let svgs: Vec<String> = plots::all(&bench()).into_iter().flatten().collect();
    assert_eq!(svgs.len(), 5, "requests/s, latency, busy, syscalls, locks");
    check_golden("plots_bench.svg.html", &(svgs.join("\n") + "\n"));
}

#[test]
fn run_plots_match_golden() {
    let run = json::from_file(&data_path("run.json")).unwrap();
    let mut out = String::new();
    html::run_plots(&mut out, &run);
    // Syscall latency histograms, the run-queue delay histogram and lock wait by caller.
    assert!(
        out.matches("<svg class=\"plot histogram\"").count() >= 3,
        "{out}"
    );
    assert!(out.contains("run-queue delay"), "{out}");
    assert!(out.contains("Lock wait by caller"), "{out}");
    check_golden("plots_run.html", &out);
}

#[test]
fn figure_matches_golden() {
    let svg = "<?xml version=\"1.0\" standalone=\"no\"?><svg version=\"1.1\" width=\"1200\" \
               height=\"100\" onload=\"init(evt)\" xmlns=\"http://www.w3.org/2000/svg\">\
               <g id=\"frames\"><g><title>all (10 samples)</title></g></g></svg>\n";
    let note = diff_note(FlameKind::OnCpu, ("mmap-epoll-ka1", 64), ("cached", 83));
    let f = html::Figure {
        link: Some("diff/cached-vs-mmap-epoll-ka1.svg".into()),
        note: Some(note.totals),
        warning: note.warning,
        ..html::Figure::new("on-CPU: cached vs mmap-epoll-ka1", svg)
    };
    let mut out = String::new();
    html::figure(&mut out, 0, &f);
    assert!(out.contains("too few samples"), "{out}");
    check_golden("figure.html", &out);
}
