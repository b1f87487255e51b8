//! Terminal tables of a [`Run`]: what `kpath record` prints and `kpath report` re-prints.
//!
//! Every section names the method that produced it and the footer says what was lost and what
//! tracing cost, because a number without its provenance invites the wrong conclusion.

use std::fmt::Write as _;

use prettytable::{format, Cell, Row, Table};
use probe_common::Family;

use super::{fmt_ns, fmt_si};
use crate::families::{
    self,
    section::{Align, Block, Section, SectionOptions},
};
use crate::hist;
use crate::run::Run;

/// What to print; `Default` is what `kpath record` shows.
pub type TableOptions = SectionOptions;

/// Renders the whole run: header, one section per recorded family, footer.
pub fn render(run: &Run, opts: &TableOptions) -> String {
    let mut out = String::new();
    header(&mut out, run);
    for s in families::sections(run, opts) {
        section(&mut out, &s);
    }
    footer(&mut out, run);
    out.push_str(&crate::findings::text(&run.findings));
    out
}

/// The detailed view printed after [`render`]: a bcc-style latency histogram for each row of
/// the sections that keep them (the top syscalls, each measured kpath, the run-queue delay).
pub fn histograms(run: &Run, opts: &TableOptions) -> String {
    let mut out = String::new();
    for s in families::sections(run, opts) {
        for (label, h) in &s.histograms {
            histogram(&mut out, label, h);
        }
    }
    out
}

/// One family's section: its title with the method that produced it, then its blocks.
fn section(out: &mut String, s: &Section) {
    let _ = writeln!(out);
    match s.method_described() {
        Some(d) => {
            let _ = writeln!(out, "{} [{d}]", s.name);
        }
        None => {
            let _ = writeln!(out, "{}", s.name);
        }
    }
    for b in &s.blocks {
        match b {
            Block::Line(l) => {
                let _ = writeln!(out, "{l}");
            }
            Block::Table(t) => {
                out.push_str(&table(&t.columns, t.rows.iter().cloned()));
                more(out, t.hidden, t.hidden_what);
            }
        }
    }
    // The section's histograms as compact bar rows (the HTML report plots them; `--histograms`
    // prints them whole).
    let shown = &s.histograms[..s.histograms.len().min(COMPACT_ROWS)];
    if let Some(rows) = hist::compact_rows(shown) {
        for line in rows.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}

/// Compact histogram rows under a section, at most.
const COMPACT_ROWS: usize = 8;

fn header(out: &mut String, run: &Run) {
    let t = &run.target;
    let target = match t.kind.as_str() {
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
        kind if t.pids.len() > 1 => {
            let pids: Vec<String> = t.pids.iter().map(u32::to_string).collect();
            format!("{kind}s {}", pids.join(", "))
        }
        kind => match t.pid {
            Some(pid) => format!("{kind} {pid}"),
            None => kind.to_string(),
        },
    };
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

fn table(columns: &[(&'static str, Align)], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let spec = |a: Align| match a {
        Align::Left => "l",
        Align::Right => "r",
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

/// Family names in the order of the report's sections, then any others alphabetically.
fn family_order<'a>(keys: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
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
    let methods: Vec<String> = family_order(run.methods.keys())
        .into_iter()
        .map(|f| format!("{f}={}", run.methods[f]))
        .collect();
    let _ = writeln!(
        out,
        "methods: {}{}",
        if methods.is_empty() {
            "none".to_string()
        } else {
            methods.join(", ")
        },
        run.call_graph
            .as_deref()
            .map(|c| format!(", call-graph={c}"))
            .unwrap_or_default()
    );
    if let Some(u) = &run.unwind {
        let _ = writeln!(out, "{}", unwind_line(u));
    }

    // A recorded family missing from `lost` was not counted: say so rather than imply 0.
    let lost: Vec<String> = family_order(run.lost.keys().chain(run.methods.keys()))
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
                ("family", Align::Left),
                ("events", Align::Right),
                ("events/s", Align::Right),
                ("BPF ns/event", Align::Right),
                ("BPF run time", Align::Right),
            ],
            family_order(o.families.keys()).into_iter().map(|f| {
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

/// One line on DWARF unwinding: walks by outcome, tables loaded.
pub fn unwind_line(u: &crate::unwind::bpf::UnwindReport) -> String {
    let walks: u64 = u
        .outcomes
        .iter()
        .filter(|(k, _)| k.as_str() != "fp_steps")
        .map(|(_, n)| n)
        .sum();
    let complete = u.outcomes.get("complete").copied().unwrap_or(0);
    let failures: Vec<String> = u
        .outcomes
        .iter()
        .filter(|(k, n)| k.as_str() != "complete" && **n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "user stacks (dwarf): {complete} of {walks} walks complete{}; tables: {} rows of {} \
         binaries ({} from cache), {:.1} MiB of maps, built in {:.0} ms",
        if failures.is_empty() {
            String::new()
        } else {
            format!(" (short: {})", failures.join(", "))
        },
        u.rows,
        u.binaries.len(),
        u.cache_hits,
        u.map_bytes as f64 / (1024.0 * 1024.0),
        u.build_ms
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{FamilyOverhead, KpathRow, OncpuSummary, SyscallRow, Target};

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
        let text = render(
            &run,
            &TableOptions {
                top: 2,
                ..Default::default()
            },
        );
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
    fn whole_histograms_only_in_detailed_view() {
        let mut run = run_with(&[("syscalls", "raw_syscalls")]);
        let mut read = syscall("read", 3, 3_000);
        read.hist_log2_ns = vec![0; probe_common::HIST_BUCKETS];
        read.hist_log2_ns[10] = 3;
        let mut write = syscall("write", 1, 1_000);
        write.hist_log2_ns = read.hist_log2_ns.clone();
        run.syscalls = vec![write, read];
        let plain = render(&run, &TableOptions::default());
        // The plain view has them as compact bar rows, the detailed view whole.
        assert!(!plain.contains("1024 -> 2047"), "{plain}");
        assert!(plain.contains("\n  read latency   █\n"), "{plain}");
        assert!(
            plain.contains("\n                 1.02µs .. 2.05µs, one column per doubling\n"),
            "{plain}"
        );
        let detailed = histograms(&run, &TableOptions::default());
        assert!(detailed.starts_with("\nread latency\n"), "{detailed}");
        assert!(detailed.contains("1024 -> 2047 : 3"), "{detailed}");
        assert!(detailed.contains("write latency"), "{detailed}");
        // Only the rows the table shows.
        let top1 = histograms(
            &run,
            &TableOptions {
                top: 1,
                ..Default::default()
            },
        );
        assert!(!top1.contains("write latency"), "{top1}");
        // Families not recorded have no histograms.
        run.methods.clear();
        assert_eq!(histograms(&run, &TableOptions::default()), "");
    }
}
