//! Terminal tables of a [`Run`]: what `kpath record` prints and `kpath report` re-prints.
//!
//! Every section names the method that produced it and the footer says what was lost and what
//! tracing cost, because a number without its provenance invites the wrong conclusion.

use std::fmt::Write as _;

use prettytable::{format, Cell, Row, Table};
use probe_common::Family;

use super::{fmt_ns, fmt_percent, fmt_si};
use crate::hist;
use crate::loader::Method;
use crate::run::{KpathRow, LockRow, Run, SchedRow, SyscallRow};

/// What to print; `Default` is what `kpath record` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableOptions {
    /// Rows per syscalls and locks table; the rest is summarized in one line.
    pub top: usize,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions { top: 25 }
    }
}

/// Renders the whole run: header, one section per recorded family, footer.
pub fn render(run: &Run, opts: &TableOptions) -> String {
    let mut out = String::new();
    header(&mut out, run);
    let recorded = |f: Family| run.methods.contains_key(f.name());
    if recorded(Family::Syscalls) {
        syscalls(&mut out, run, opts);
    }
    if recorded(Family::Kpaths) {
        kpaths(&mut out, run);
    }
    if recorded(Family::Sched) {
        sched(&mut out, run);
    }
    if recorded(Family::Locks) {
        locks(&mut out, run, opts);
    }
    if recorded(Family::Oncpu) {
        oncpu(&mut out, run);
    }
    footer(&mut out, run);
    out
}

/// The detailed view printed after [`render`]: a bcc-style latency histogram for each of the
/// top syscalls, each measured kpath and the run-queue delay, in the tables' order.
pub fn histograms(run: &Run, opts: &TableOptions) -> String {
    let mut out = String::new();
    let recorded = |f: Family| run.methods.contains_key(f.name());
    if recorded(Family::Syscalls) {
        for r in syscalls_by_total(run).into_iter().take(opts.top) {
            histogram(&mut out, &format!("{} latency", r.name), &r.hist_log2_ns);
        }
    }
    if recorded(Family::Kpaths) {
        for r in &run.kpaths {
            histogram(
                &mut out,
                &format!("{} latency", r.function),
                &r.hist_log2_ns,
            );
        }
    }
    if let (true, Some(s)) = (recorded(Family::Sched), &run.sched) {
        histogram(&mut out, "run-queue delay", &s.runq_delay_hist_log2_ns);
    }
    out
}

fn header(out: &mut String, run: &Run) {
    let t = &run.target;
    let mut target = match t.kind.as_str() {
        "system" => "system-wide".to_string(),
        "command" => {
            let cmd = t.command.as_deref().unwrap_or_default().join(" ");
            let mut s = format!("command `{cmd}`");
            let mut extra = Vec::new();
            if let Some(pid) = t.pid {
                extra.push(format!("pid {pid}"));
            }
            if let Some(code) = t.exit_code {
                extra.push(format!("exit {code}"));
            }
            if !extra.is_empty() {
                let _ = write!(s, " ({})", extra.join(", "));
            }
            s
        }
        kind => match t.pid {
            Some(pid) => format!("{kind} {pid}"),
            None => kind.to_string(),
        },
    };
    if t.kind != "system" && t.tgids_seen > 1 {
        let _ = write!(target, ", {} processes traced", t.tgids_seen);
    }
    let k = &run.kernel;
    let kernel = if k.machine.is_empty() {
        k.release.clone()
    } else {
        format!("{} ({})", k.release, k.machine)
    };
    let _ = writeln!(out, "target:   {target}");
    let _ = writeln!(out, "kernel:   {kernel}");
    let _ = writeln!(out, "duration: {}", fmt_ns(run.duration_ns));
}

/// The family's section title with the method that produced it.
fn section_title(out: &mut String, run: &Run, family: Family) {
    let method = run.methods.get(family.name()).map(String::as_str);
    let described = method.map(|m| Method::from_name(m).map_or(m, |x| x.describe()));
    let _ = writeln!(out);
    match described {
        Some(d) => {
            let _ = writeln!(out, "{} [{d}]", family.name());
        }
        None => {
            let _ = writeln!(out, "{}", family.name());
        }
    }
}

/// Column alignment.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

fn table(columns: &[(&str, Align)], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let spec = |a: Align| match a {
        Left => "l",
        Right => "r",
    };
    let mut t = Table::new();
    t.set_format(*format::consts::FORMAT_NO_LINESEP_WITH_TITLE);
    t.set_titles(Row::new(
        columns
            .iter()
            .map(|&(title, a)| Cell::new(title).style_spec(spec(a)))
            .collect(),
    ));
    for row in rows {
        t.add_row(Row::new(
            row.iter()
                .zip(columns)
                .map(|(text, &(_, a))| Cell::new(text).style_spec(spec(a)))
                .collect(),
        ));
    }
    t.to_string()
}

fn avg(total_ns: u64, count: u64) -> String {
    match total_ns.checked_div(count) {
        Some(a) => fmt_ns(a),
        None => "-".to_string(),
    }
}

fn opt<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

/// Appends the bcc-style histogram of one row, indented under its label.
fn histogram(out: &mut String, label: &str, h: &[u64]) {
    let bars = hist::render_bars(h, hist::BAR_WIDTH);
    if bars.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{label}");
    for line in bars.lines() {
        let _ = writeln!(out, "  {line}");
    }
}

fn more(out: &mut String, hidden: usize, what: &str) {
    if hidden > 0 {
        let _ = writeln!(out, "... {hidden} more {what}");
    }
}

/// Syscalls in table order: most total time first.
fn syscalls_by_total(run: &Run) -> Vec<&SyscallRow> {
    let mut rows: Vec<&SyscallRow> = run.syscalls.iter().collect();
    rows.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then(b.count.cmp(&a.count))
            .then(a.name.cmp(&b.name))
    });
    rows
}

fn syscalls(out: &mut String, run: &Run, opts: &TableOptions) {
    section_title(out, run, Family::Syscalls);
    if run.syscalls.is_empty() {
        let _ = writeln!(out, "no syscalls recorded");
        return;
    }
    let rows = syscalls_by_total(run);
    let shown = &rows[..rows.len().min(opts.top)];
    out.push_str(&table(
        &[
            ("syscall", Left),
            ("count", Right),
            ("errors", Right),
            ("total", Right),
            ("avg", Right),
            ("p50", Right),
            ("p99", Right),
            ("max", Right),
        ],
        shown.iter().map(|r| {
            vec![
                r.name.clone(),
                r.count.to_string(),
                r.errors.to_string(),
                fmt_ns(r.total_ns),
                avg(r.total_ns, r.count),
                fmt_ns(r.p50_ns),
                fmt_ns(r.p99_ns),
                fmt_ns(r.max_ns),
            ]
        }),
    ));
    more(out, rows.len() - shown.len(), "syscalls");
}

/// How one kpaths row was measured, as the method column shows it.
fn kpath_method(method: &str) -> String {
    match method {
        "sampled" => "sampled (on-CPU stacks)".to_string(),
        "fentry" => "fentry/fexit".to_string(),
        "kprobe" => "kprobe/kretprobe".to_string(),
        other => other.to_string(),
    }
}

fn kpaths(out: &mut String, run: &Run) {
    section_title(out, run, Family::Kpaths);
    if run.kpaths.is_empty() {
        let _ = writeln!(out, "no kernel paths recorded");
        return;
    }
    // Shares need on-CPU samples; without them 0% would read as "never ran".
    let sampled = run.oncpu.is_some();
    out.push_str(&table(
        &[
            ("function", Left),
            ("method", Left),
            ("calls", Right),
            ("total", Right),
            ("avg", Right),
            ("max", Right),
            ("on-CPU", Right),
            ("samples", Right),
            ("in syscall", Left),
            ("syscall count", Right),
            ("syscall total", Right),
        ],
        run.kpaths.iter().map(|r: &KpathRow| {
            let avg = match (r.total_ns, r.calls) {
                (Some(t), Some(c)) => avg(t, c),
                _ => "-".to_string(),
            };
            vec![
                r.function.clone(),
                kpath_method(&r.method),
                opt(r.calls, |c| c.to_string()),
                opt(r.total_ns, fmt_ns),
                avg,
                opt(r.max_ns, fmt_ns),
                if sampled {
                    fmt_percent(r.oncpu_share)
                } else {
                    "-".to_string()
                },
                if sampled {
                    r.samples.to_string()
                } else {
                    "-".to_string()
                },
                if r.syscall.is_empty() {
                    "-".to_string()
                } else {
                    r.syscall.clone()
                },
                opt(r.syscall_count, |c| c.to_string()),
                opt(r.syscall_total_ns, fmt_ns),
            ]
        }),
    ));
}

fn sched(out: &mut String, run: &Run) {
    section_title(out, run, Family::Sched);
    let Some(s): Option<&SchedRow> = run.sched.as_ref() else {
        let _ = writeln!(out, "no scheduling events recorded");
        return;
    };
    out.push_str(&table(
        &[
            ("voluntary", Right),
            ("involuntary", Right),
            ("off-CPU", Right),
            ("wakeups", Right),
            ("runq delays", Right),
            ("runq p50", Right),
            ("runq p99", Right),
            ("runq max", Right),
        ],
        [vec![
            s.voluntary_switches.to_string(),
            s.involuntary_switches.to_string(),
            fmt_ns(s.offcpu_ns),
            s.wakeups.to_string(),
            s.runq_delay_count.to_string(),
            fmt_ns(s.runq_delay_p50_ns),
            fmt_ns(s.runq_delay_p99_ns),
            fmt_ns(s.runq_delay_max_ns),
        ]],
    ));
}

fn locks(out: &mut String, run: &Run, opts: &TableOptions) {
    section_title(out, run, Family::Locks);
    if run.locks.is_empty() {
        let _ = writeln!(out, "no lock contention recorded");
        return;
    }
    let mut rows: Vec<&LockRow> = run.locks.iter().collect();
    rows.sort_by(|a, b| {
        b.wait_ns
            .cmp(&a.wait_ns)
            .then(a.caller.cmp(&b.caller))
            .then(a.lock.cmp(&b.lock))
    });
    let shown = &rows[..rows.len().min(opts.top)];
    out.push_str(&table(
        &[
            ("caller", Left),
            ("lock", Left),
            ("type", Left),
            ("count", Right),
            ("total wait", Right),
            ("max wait", Right),
        ],
        shown.iter().map(|r| {
            vec![
                r.caller.clone(),
                r.lock.clone(),
                r.lock_type.clone(),
                r.count.to_string(),
                fmt_ns(r.wait_ns),
                fmt_ns(r.max_ns),
            ]
        }),
    ));
    more(out, rows.len() - shown.len(), "locks");
}

fn oncpu(out: &mut String, run: &Run) {
    section_title(out, run, Family::Oncpu);
    match &run.oncpu {
        Some(o) => {
            let _ = writeln!(
                out,
                "{} samples at {} Hz, {} unique stacks, {} samples without a stack",
                o.samples, o.frequency_hz, o.unique_stacks, o.lost_stacks
            );
        }
        None => {
            let _ = writeln!(out, "no on-CPU samples recorded");
        }
    }
}

/// Family names in the order of the report's sections, then any others alphabetically.
fn families<'a>(keys: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let rank = |name: &str| {
        Family::ALL
            .iter()
            .position(|f| f.name() == name)
            .unwrap_or(Family::ALL.len())
    };
    let mut names: Vec<&str> = keys.into_iter().map(String::as_str).collect();
    names.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    names.dedup();
    names
}

fn footer(out: &mut String, run: &Run) {
    let _ = writeln!(out);
    let methods: Vec<String> = families(run.methods.keys())
        .into_iter()
        .map(|f| format!("{f}={}", run.methods[f]))
        .collect();
    let _ = writeln!(
        out,
        "methods: {}",
        if methods.is_empty() {
            "none".to_string()
        } else {
            methods.join(", ")
        }
    );

    // A recorded family missing from `lost` was not counted: say so rather than imply 0.
    let lost: Vec<String> = families(run.lost.keys().chain(run.methods.keys()))
        .into_iter()
        .map(|f| match run.lost.get(f) {
            Some(n) => format!("{f} {n} lost"),
            None => format!("{f} not counted"),
        })
        .collect();
    if !lost.is_empty() {
        let _ = writeln!(out, "lost events: {}", lost.join(", "));
    }

    let o = &run.overhead;
    if !o.bpf_stats_enabled || o.families.is_empty() {
        let _ = writeln!(
            out,
            "overhead: kpath's BPF run time not measured (kpath record --bpf-stats measures it; the \
             kernel's statistics then time every BPF program run, which costs a little itself)"
        );
    } else {
        let _ = writeln!(
            out,
            "overhead (BPF statistics on for {:.1} s):",
            o.stats_sampled_ns as f64 / 1e9
        );
        out.push_str(&table(
            &[
                ("family", Left),
                ("events", Right),
                ("events/s", Right),
                ("BPF ns/event", Right),
                ("BPF run time", Right),
            ],
            families(o.families.keys()).into_iter().map(|f| {
                let fo = &o.families[f];
                vec![
                    f.to_string(),
                    fo.events.to_string(),
                    fmt_si(fo.events_per_sec),
                    format!("{:.0}", fo.ns_per_event),
                    fmt_ns(fo.bpf_run_ns),
                ]
            }),
        ));
    }

    if !run.warnings.is_empty() {
        let _ = writeln!(out, "warnings:");
        for w in &run.warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{FamilyOverhead, OncpuSummary, Target};

    fn run_with(families: &[(&str, &str)]) -> Run {
        let mut run = Run {
            duration_ns: 2_000_000_000,
            target: Target {
                kind: "pid".into(),
                pid: Some(42),
                ..Default::default()
            },
            ..Default::default()
        };
        for &(f, m) in families {
            run.methods.insert(f.into(), m.into());
            run.lost.insert(f.into(), 0);
        }
        run
    }

    fn syscall(name: &str, count: u64, total_ns: u64) -> SyscallRow {
        SyscallRow {
            name: name.into(),
            count,
            total_ns,
            max_ns: total_ns,
            ..Default::default()
        }
    }

    #[test]
    fn unrecorded_families_are_omitted_and_empty_ones_say_so() {
        let run = run_with(&[
            ("locks", "lock_tracepoints"),
            ("sched", "sched_tracepoints"),
        ]);
        let text = render(&run, &TableOptions::default());
        assert!(text.contains("target:   pid 42\n"), "{text}");
        assert!(text.contains("duration: 2.00s\n"), "{text}");
        assert!(text.contains("no lock contention recorded"), "{text}");
        assert!(text.contains("no scheduling events recorded"), "{text}");
        assert!(!text.contains("syscalls ["), "{text}");
        assert!(!text.contains("kpaths"), "{text}");
        assert!(
            text.contains("lost events: sched 0 lost, locks 0 lost\n"),
            "{text}"
        );
        assert!(
            text.contains("locks [lock:contention_begin/end tracepoints]"),
            "{text}"
        );
    }

    #[test]
    fn syscalls_sorted_by_total_and_cut_at_top() {
        let mut run = run_with(&[("syscalls", "raw_syscalls")]);
        run.syscalls = vec![
            syscall("read", 10, 1_000),
            syscall("close", 5, 9_000),
            syscall("write", 7, 5_000),
        ];
        let text = render(&run, &TableOptions { top: 2 });
        let close = text.find("| close").expect(&text);
        let write = text.find("| write").expect(&text);
        assert!(close < write, "{text}");
        assert!(!text.contains("| read"), "{text}");
        assert!(text.contains("... 1 more syscalls\n"), "{text}");
        // avg = 9000 / 5.
        assert!(text.contains("1.80µs"), "{text}");

        let text = render(&run, &TableOptions::default());
        assert!(text.contains("| read"), "{text}");
        assert!(!text.contains("more syscalls"), "{text}");
    }

    #[test]
    fn kpaths_show_dashes_without_measurements() {
        let mut run = run_with(&[("kpaths", "sampled")]);
        run.kpaths = vec![KpathRow {
            function: "tcp_close".into(),
            method: "sampled".into(),
            oncpu_share: 0.25,
            samples: 10,
            syscall: "close".into(),
            ..Default::default()
        }];
        let text = render(&run, &TableOptions::default());
        let row = text.lines().find(|l| l.contains("tcp_close")).unwrap();
        assert!(row.contains("sampled (on-CPU stacks)"), "{row}");
        // No oncpu summary: the share is unknown, not 25%.
        assert!(!row.contains("25.0%"), "{row}");
        run.oncpu = Some(OncpuSummary::default());
        let text = render(&run, &TableOptions::default());
        let row = text.lines().find(|l| l.contains("tcp_close")).unwrap();
        assert!(row.contains("25.0%"), "{row}");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[3..6], ["-", "-", "-"], "{row}");
    }

    #[test]
    fn overhead_without_bpf_stats_says_so() {
        let mut run = run_with(&[("syscalls", "raw_syscalls")]);
        run.overhead = Default::default();
        let text = render(&run, &TableOptions::default());
        assert!(text.contains("BPF run time not measured"), "{text}");
        assert!(!text.contains("BPF ns/event"), "{text}");
        run.overhead.bpf_stats_enabled = true;
        run.overhead.stats_sampled_ns = 600_000_000;
        run.overhead.families.insert(
            "syscalls".into(),
            FamilyOverhead {
                events: 1000,
                events_per_sec: 500.0,
                bpf_run_ns: 80_000,
                ns_per_event: 80.0,
            },
        );
        let text = render(&run, &TableOptions::default());
        assert!(!text.contains("not measured"), "{text}");
        assert!(text.contains("BPF statistics on for 0.6 s"), "{text}");
        let row = text.lines().find(|l| l.contains("| syscalls")).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2..6], ["1000", "500", "80", "80.0µs"], "{row}");
    }

    #[test]
    fn uncounted_lost_is_not_zero() {
        let mut run = run_with(&[("syscalls", "raw_syscalls")]);
        run.lost.clear();
        let text = render(&run, &TableOptions::default());
        assert!(text.contains("lost events: syscalls not counted"), "{text}");
    }

    #[test]
    fn histograms_only_in_detailed_view() {
        let mut run = run_with(&[("syscalls", "raw_syscalls")]);
        let mut read = syscall("read", 3, 3_000);
        read.hist_log2_ns = vec![0; probe_common::HIST_BUCKETS];
        read.hist_log2_ns[10] = 3;
        let mut write = syscall("write", 1, 1_000);
        write.hist_log2_ns = read.hist_log2_ns.clone();
        run.syscalls = vec![write, read];
        let plain = render(&run, &TableOptions::default());
        assert!(!plain.contains("read latency"), "{plain}");
        let detailed = histograms(&run, &TableOptions::default());
        assert!(detailed.starts_with("\nread latency\n"), "{detailed}");
        assert!(detailed.contains("1024 -> 2047 : 3"), "{detailed}");
        assert!(detailed.contains("write latency"), "{detailed}");
        // Only the rows the table shows.
        let top1 = histograms(&run, &TableOptions { top: 1 });
        assert!(!top1.contains("write latency"), "{top1}");
        // Families not recorded have no histograms.
        run.methods.clear();
        assert_eq!(histograms(&run, &TableOptions::default()), "");
    }
}
