//! The bench report's plots, one per question a reader brings to a comparison: how fast
//! (requests/s), how slow at the tail (latency percentile curves), what each request costs the
//! kernel (busy time, syscalls by name, lock wait by caller). Strategy `i` has colour `i` in
//! every plot; drawn by [`crate::render::plot`].
use std::collections::BTreeMap;

use super::json::{Bench, BenchRun};
use crate::render::plot::{self, BarChart, Curve};

/// Segments of a stacked chart before the rest is summed as `other`.
const TOP_KEYS: usize = 7;

/// Requests per second per strategy.
pub fn requests_per_sec(bench: &Bench) -> Option<String> {
    per_run(bench, "Requests/s", plot::fmt_count, |r| r.requests_per_sec)
}

/// Busy kernel time per request (syscall time without the waiting syscalls).
pub fn busy_per_request(bench: &Bench) -> Option<String> {
    per_run(
        bench,
        "Busy kernel time per request (syscalls that work)",
        plot::fmt_ns,
        |r| r.busy_kernel_ns_per_request,
    )
}

fn per_run(
    bench: &Bench,
    title: &str,
    fmt: plot::Fmt,
    value: fn(&BenchRun) -> f64,
) -> Option<String> {
    let mut c = BarChart::new(title, fmt);
    for r in &bench.runs {
        c = c.row(r.name.clone(), vec![value(r)]);
    }
    plot::bars(&c)
}

/// The load generator's latency distribution per strategy, on the percentile log axis.
pub fn latency(bench: &Bench) -> Option<String> {
    let curves: Vec<Curve> = bench
        .runs
        .iter()
        .map(|r| Curve {
            name: r.name.clone(),
            points: r
                .latency_percentiles_ns
                .iter()
                .map(|p| (p.percentile, p.ns as f64))
                .collect(),
        })
        .collect();
    plot::percentile_curves("Request latency by percentile (kpath load)", &curves)
}

/// Per-request figures by name stacked per run: the `TOP_KEYS` names with the largest value in
/// any run, then `other`.
fn stacked(
    bench: &Bench,
    title: &str,
    fmt: plot::Fmt,
    by: fn(&BenchRun) -> &BTreeMap<String, f64>,
) -> Option<String> {
    let mut peak: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &bench.runs {
        for (k, &v) in by(r) {
            if v.is_finite() && v > 0.0 {
                let e = peak.entry(k).or_default();
                *e = e.max(v);
            }
        }
    }
    let mut keys: Vec<(&str, f64)> = peak.into_iter().collect();
    keys.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let has_other = keys.len() > TOP_KEYS;
    keys.truncate(TOP_KEYS);
    let mut c = BarChart::new(title, fmt);
    c.keys = keys.iter().map(|k| k.0.to_string()).collect();
    if has_other {
        c.keys.push("other".into());
    }
    for r in &bench.runs {
        let m = by(r);
        let mut values: Vec<f64> = keys
            .iter()
            .map(|k| m.get(k.0).copied().unwrap_or(0.0))
            .collect();
        if has_other {
            let shown: f64 = values.iter().filter(|v| v.is_finite()).sum();
            let all: f64 = m.values().filter(|v| v.is_finite()).sum();
            values.push((all - shown).max(0.0));
        }
        c = c.row(r.name.clone(), values);
    }
    if c.keys.is_empty() {
        return None;
    }
    plot::bars(&c)
}

/// Syscalls per request, stacked by syscall.
pub fn syscalls_per_request(bench: &Bench) -> Option<String> {
    stacked(bench, "Syscalls per request", plot::fmt_count, |r| {
        &r.syscall_counts_per_request
    })
}

/// Lock contention wait per request, stacked by waiting caller.
pub fn lock_wait_per_request(bench: &Bench) -> Option<String> {
    stacked(
        bench,
        "Lock wait per request by caller",
        plot::fmt_ns,
        |r| &r.lock_wait_ns_per_request_by_caller,
    )
}

/// Every bench plot, in reading order.
pub fn all(bench: &Bench) -> Vec<Option<String>> {
    vec![
        requests_per_sec(bench),
        latency(bench),
        busy_per_request(bench),
        syscalls_per_request(bench),
        lock_wait_per_request(bench),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::json::{LatencyPoint, Strategy};

    fn run(io: &str, calls: &[(&str, f64)]) -> BenchRun {
        let io = clap::ValueEnum::from_str(io, false).expect("an io strategy");
        let strategy = Strategy::new(io, servers::serve::Model::Epoll, 1);
        BenchRun {
            name: strategy.name(),
            strategy,
            requests_per_sec: 20_000.0,
            busy_kernel_ns_per_request: 15_000.0,
            syscall_counts_per_request: calls.iter().map(|&(n, v)| (n.into(), v)).collect(),
            latency_percentiles_ns: vec![
                LatencyPoint {
                    percentile: 50.0,
                    ns: 1_000_000,
                },
                LatencyPoint {
                    percentile: 99.0,
                    ns: 3_000_000,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn syscalls_stack_the_largest_names_then_other() {
        let many: Vec<(String, f64)> = (0..9).map(|i| (format!("s{i}"), 1.0 + i as f64)).collect();
        let many: Vec<(&str, f64)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        let bench = Bench {
            runs: vec![run("mmap", &many), run("cached", &[("s0", 0.5)])],
            ..Default::default()
        };
        let svg = syscalls_per_request(&bench).unwrap();
        // s8..s2 are the seven largest; s1 and s0 go to other (1 + 2 = 3 in mmap).
        assert!(
            svg.contains(">s8</text>") && svg.contains(">s2</text>"),
            "{svg}"
        );
        assert!(!svg.contains(">s1</text>"), "{svg}");
        assert!(
            svg.contains("<title>mmap-epoll-ka1, other: 3</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>cached-epoll-ka1, other: 0.50</title>"),
            "{svg}"
        );
        assert!(svg.contains(">45</text>"), "mmap's total, 1+..+9: {svg}");
    }

    #[test]
    fn every_plot_of_a_bench() {
        let bench = Bench {
            runs: vec![
                run("mmap", &[("close", 2.0)]),
                run("cached", &[("close", 1.0)]),
            ],
            ..Default::default()
        };
        let all = all(&bench);
        assert_eq!(all.len(), 5);
        assert!(all[..4].iter().all(Option::is_some));
        assert_eq!(all[4], None, "no lock waits: no lock plot");
        assert!(all[1]
            .as_ref()
            .unwrap()
            .contains("<title>cached-epoll-ka1: p99 3.00ms</title>"));
        assert!(all[0].as_ref().unwrap().contains(">20.0k</text>"));
    }
}
