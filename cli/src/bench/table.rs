//! The side-by-side terminal tables of a [`Bench`]: one column set per strategy, every figure
//! per request, so the reader compares rows, not recordings.
use std::fmt::Write as _;

use prettytable::{format, Cell, Row, Table};

use super::json::{Bench, BenchRun};
use crate::render::{fmt_ns, fmt_si};

/// Syscall rows in the per-syscall table.
pub const TOP_SYSCALLS: usize = 12;

/// A per-request figure: 2 decimals under 10, else 3 significant digits; `-` when unknown.
pub fn fmt_per(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() < 9.995 {
        format!("{v:.2}")
    } else if v.abs() < 99.95 {
        format!("{v:.1}")
    } else {
        fmt_si(v)
    }
}

/// Nanoseconds per request; `-` when unknown.
pub fn fmt_ns_per(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        fmt_ns(v.round() as u64)
    } else {
        "-".into()
    }
}

fn opt(v: Option<f64>, f: fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// The comparison rows: header then one row per run; shared by the terminal and HTML tables.
pub fn summary_rows(bench: &Bench) -> Vec<Vec<String>> {
    let mut rows = vec![[
        "strategy",
        "req/s",
        "p50",
        "p99",
        "syscalls/req",
        "syscall time/req",
        "busy/req",
        "ctx switches/req",
        "lock wait/req",
        "TCP segs/req",
        "errors",
    ]
    .map(String::from)
    .to_vec()];
    for r in &bench.runs {
        let e = &r.errors;
        rows.push(vec![
            r.name.clone(),
            fmt_si(r.requests_per_sec),
            fmt_ns(r.latency_ns.p50),
            fmt_ns(r.latency_ns.p99),
            fmt_per(r.syscalls_per_request),
            fmt_ns_per(r.kernel_ns_per_request),
            fmt_ns_per(r.busy_kernel_ns_per_request),
            opt(r.ctx_switches_per_request, fmt_per),
            opt(r.lock_wait_ns_per_request, fmt_ns_per),
            opt(r.tcp_segments_per_request, fmt_per),
            (e.connect + e.read + e.write + e.timeout + e.status).to_string(),
        ]);
    }
    rows
}

/// Syscalls (most frequent per request in any run first) x runs, calls per request.
pub fn syscall_rows(bench: &Bench, top: usize) -> Vec<Vec<String>> {
    let mut names: Vec<(&str, f64)> = Vec::new();
    for r in &bench.runs {
        for (n, &v) in &r.syscall_counts_per_request {
            match names.iter_mut().find(|(m, _)| m == n) {
                Some((_, max)) => *max = max.max(v),
                None => names.push((n, v)),
            }
        }
    }
    names.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut header = vec!["syscall / req".to_string()];
    header.extend(bench.runs.iter().map(|r| r.name.clone()));
    let mut rows = vec![header];
    for (n, _) in names.into_iter().take(top) {
        let mut row = vec![n.to_string()];
        row.extend(
            bench
                .runs
                .iter()
                .map(|r| fmt_per(r.syscall_counts_per_request.get(n).copied().unwrap_or(0.0))),
        );
        rows.push(row);
    }
    rows
}

/// Kernel paths x runs: calls per request where measured, else the on-CPU share.
pub fn kpath_rows(bench: &Bench) -> Vec<Vec<String>> {
    let mut names: Vec<&str> = Vec::new();
    for r in &bench.runs {
        for k in &r.kpaths {
            if !names.contains(&k.function.as_str()) {
                names.push(&k.function);
            }
        }
    }
    let mut header = vec!["kpath: calls/req (on-CPU share if sampled)".to_string()];
    header.extend(bench.runs.iter().map(|r| r.name.clone()));
    let mut rows = vec![header];
    for n in names {
        let mut row = vec![n.to_string()];
        row.extend(bench.runs.iter().map(|r| kpath_cell(r, n)));
        rows.push(row);
    }
    rows
}

fn kpath_cell(r: &BenchRun, function: &str) -> String {
    let Some(k) = r.kpaths.iter().find(|k| k.function == function) else {
        return "-".into();
    };
    match k.calls {
        Some(c) if r.requests > 0 => fmt_per(c as f64 / r.requests as f64),
        Some(_) => "-".into(),
        None => format!("{:.1}% cpu", k.oncpu_share * 100.0),
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let mut t = Table::new();
    t.set_format(*format::consts::FORMAT_NO_BORDER_LINE_SEPARATOR);
    let mut it = rows.iter();
    if let Some(h) = it.next() {
        t.set_titles(Row::new(h.iter().map(|c| Cell::new(c)).collect()));
    }
    for r in it {
        let cells = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    Cell::new(c)
                } else {
                    Cell::new(c).style_spec("r")
                }
            })
            .collect();
        t.add_row(Row::new(cells));
    }
    t.to_string()
}

/// All bench tables, as `kpath bench` prints them.
pub fn render(bench: &Bench) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kernel {}; {} s of load per strategy, {} connections, {} B file; baseline {}",
        bench.kernel.release,
        bench.duration_secs,
        bench.connections,
        bench.file_size,
        bench.baseline
    );
    out.push_str(&table(&summary_rows(bench)));
    out.push('\n');
    out.push_str(&table(&syscall_rows(bench, TOP_SYSCALLS)));
    let k = kpath_rows(bench);
    if k.len() > 1 {
        out.push('\n');
        out.push_str(&table(&k));
    }
    out.push_str(
        "syscall time includes time blocked in waits (epoll_wait, accept, futex, ...); \
         busy excludes those waiting syscalls\n",
    );
    out.push_str(&crate::findings::text(&bench.findings));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::json::Strategy;

    fn run(io: &str, counts: &[(&str, f64)]) -> BenchRun {
        let io = clap::ValueEnum::from_str(io, false).expect("an io strategy");
        let strategy = Strategy::new(io, servers::serve::Model::Epoll, 1);
        BenchRun {
            name: strategy.name(),
            strategy,
            requests: 1000,
            requests_per_sec: 12_345.0,
            syscalls_per_request: counts.iter().map(|c| c.1).sum(),
            kernel_ns_per_request: 4321.0,
            busy_kernel_ns_per_request: 1000.0,
            syscall_counts_per_request: counts.iter().map(|&(n, v)| (n.into(), v)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn per_request_formatting() {
        assert_eq!(fmt_per(0.0), "0.00");
        assert_eq!(fmt_per(2.5), "2.50");
        assert_eq!(fmt_per(12.34), "12.3");
        assert_eq!(fmt_per(f64::NAN), "-");
        assert_eq!(fmt_ns_per(4321.4), "4.32µs");
        assert_eq!(fmt_ns_per(f64::NAN), "-");
    }

    #[test]
    fn side_by_side_rows() {
        let bench = Bench {
            baseline: "mmap-epoll-ka1".into(),
            runs: vec![
                run("mmap", &[("close", 2.0), ("munmap", 1.0), ("write", 1.0)]),
                run("cached", &[("close", 1.0), ("write", 1.0)]),
            ],
            ..Default::default()
        };
        let s = summary_rows(&bench);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1][0], "mmap-epoll-ka1");
        assert_eq!(s[1][1], "12.3k");
        assert_eq!(s[1][4], "4.00");
        assert_eq!(s[2][4], "2.00");
        assert_eq!(s[1][5], "4.32µs");
        let sc = syscall_rows(&bench, 2);
        assert_eq!(
            sc[0],
            ["syscall / req", "mmap-epoll-ka1", "cached-epoll-ka1"]
        );
        // close has the highest per-request count, then munmap and write tie on 1.0 by name.
        assert_eq!(sc[1], ["close", "2.00", "1.00"]);
        assert_eq!(sc[2], ["munmap", "1.00", "0.00"]);
        assert_eq!(sc.len(), 3);
        let text = render(&bench);
        assert!(text.contains("cached-epoll-ka1"), "{text}");
    }
}
