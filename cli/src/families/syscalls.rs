//! `syscalls`: per syscall count, errors, latency histogram; for every task of the target.
//!
//! Kernel side: probe-ebpf/src/syscalls.rs; shared types: probe-common/src/syscalls.rs; tests:
//! cli/tests/syscalls.rs (counts equal `strace -f -c`).
use probe_common::{
    syscalls::{SyscallStats, GLOBAL_BY_COMM, MAP_BY_COMM, MAP_START, MAP_STATS},
    Family,
};

use super::{
    section::{avg, table, Align::*, Section, SectionOptions},
    Collector, FamilyPath, Method,
};
use crate::{
    fmt, hist,
    kernel::syscall_names,
    probes::{
        attach::Prog,
        maps::{per_cpu_array, CollectError},
        object::Global,
        plan::{needs, MethodSpec, Unit},
        FamilyTable,
    },
    run::{Run, SyscallRow},
};

pub static PATH: FamilyPath = FamilyPath {
    table: FamilyTable {
        family: Family::Syscalls,
        units: &[Unit {
            name: "syscalls",
            methods: &METHODS,
        }],
        globals: |_, o| vec![(GLOBAL_BY_COMM, Global::from(o.syscalls_by_comm))],
    },
    maps: &[MAP_STATS, MAP_START, MAP_BY_COMM],
    reads: &[],
    folds_stacks: false,
    collect,
    section,
};

/// A syscall's start stays in its CPU's slot while the thread runs (no hash lookup at enter or
/// exit); a thread that leaves the CPU mid-syscall takes it along into a per-thread map, on
/// sched_switch. Raw tracepoint for the raw method, the trace event for the other two.
const SPILL_RAW: Prog = Prog::RawTp {
    prog: "syscalls_raw_sched_switch",
    tp: "sched_switch",
};
const SPILL_EVENT: Prog = Prog::TracePoint {
    prog: "syscalls_sched_switch",
    category: "sched",
    event: "sched_switch",
};

/// Preferred first: raw tracepoints need no tracefs and skip the trace-event record; the
/// trace events are the fallback; one attachment per syscalls:* event is the last resort.
const METHODS: [MethodSpec<Method>; 3] = [
    MethodSpec {
        method: Method::RawTp,
        needs: needs::raw_tracepoints,
        programs: &[
            Prog::RawTp {
                prog: "syscalls_raw_sys_enter",
                tp: "sys_enter",
            },
            Prog::RawTp {
                prog: "syscalls_raw_sys_exit",
                tp: "sys_exit",
            },
            SPILL_RAW,
        ],
        uses: None,
    },
    MethodSpec {
        method: Method::RawSyscalls,
        needs: |f| {
            needs::tracefs(f)
                .or((!f.raw_syscalls_tracepoints).then_some("no raw_syscalls tracepoints"))
        },
        programs: &[
            Prog::TracePoint {
                prog: "syscalls_sys_enter",
                category: "raw_syscalls",
                event: "sys_enter",
            },
            Prog::TracePoint {
                prog: "syscalls_sys_exit",
                category: "raw_syscalls",
                event: "sys_exit",
            },
            SPILL_EVENT,
        ],
        uses: None,
    },
    MethodSpec {
        method: Method::SyscallTracepoints,
        needs: |f| {
            needs::tracefs(f).or((!f.syscalls_tracepoints)
                .then_some("no syscalls:* tracepoints (CONFIG_FTRACE_SYSCALLS off)"))
        },
        programs: &[
            Prog::EventPairs {
                category: "syscalls",
                enter_prog: "syscalls_sys_enter_each",
                enter_prefix: "sys_enter_",
                exit_prog: "syscalls_sys_exit_each",
                exit_prefix: "sys_exit_",
            },
            SPILL_EVENT,
        ],
        uses: None,
    },
];

fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    run.syscalls = rows(&c.probes.ebpf)?;
    Ok(())
}

/// Every called syscall's row, most total time first.
pub fn rows(ebpf: &aya::Ebpf) -> Result<Vec<SyscallRow>, CollectError> {
    let map = per_cpu_array::<SyscallStats>(ebpf, MAP_STATS)?;
    let mut rows = Vec::new();
    for (nr, item) in map.iter().enumerate() {
        let vals = item.map_err(|source| CollectError::Read {
            name: MAP_STATS,
            source,
        })?;
        rows.extend(row(nr as u32, vals.iter()));
    }
    rows.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.name.cmp(&b.name)));
    Ok(rows)
}

/// One syscall's row from its per-CPU values; `None` when it was never called.
pub fn row<'a>(nr: u32, per_cpu: impl Iterator<Item = &'a SyscallStats>) -> Option<SyscallRow> {
    let mut r = SyscallRow {
        name: syscall_names::display_name(nr),
        nr,
        ..Default::default()
    };
    let mut h = vec![0u64; probe_common::HIST_BUCKETS];
    for s in per_cpu {
        r.count += s.count;
        r.errors += s.errors;
        r.total_ns += s.total_ns;
        r.max_ns = r.max_ns.max(s.max_ns);
        hist::add_into(&mut h, &s.hist_log2_ns);
    }
    if r.count == 0 {
        return None;
    }
    r.p50_ns = hist::percentile(&h, 0.50, r.max_ns);
    r.p99_ns = hist::percentile(&h, 0.99, r.max_ns);
    r.hist_log2_ns = h;
    Some(r)
}

/// Syscalls in table order: most total time first.
pub fn by_total(run: &Run) -> Vec<&SyscallRow> {
    let mut rows: Vec<&SyscallRow> = run.syscalls.iter().collect();
    rows.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then(b.count.cmp(&a.count))
            .then(a.name.cmp(&b.name))
    });
    rows
}

fn section(run: &Run, opts: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Syscalls, "Top syscalls (by total time)")?;
    if run.syscalls.is_empty() {
        s.line("no syscalls recorded");
        return Some(s);
    }
    let rows = by_total(run);
    let shown = &rows[..rows.len().min(opts.top)];
    let mut t = table(
        "syscalls",
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
                fmt::ns(r.total_ns),
                avg(r.total_ns, r.count),
                fmt::ns(r.p50_ns),
                fmt::ns(r.p99_ns),
                fmt::ns(r.max_ns),
            ]
        }),
    );
    t.hidden = rows.len() - shown.len();
    t.hidden_what = "syscalls";
    s.table(t);
    s.line(crate::hist::ESTIMATE_NOTE);
    s.histograms = shown
        .iter()
        .map(|r| (format!("{} latency", r.name), r.hist_log2_ns.clone()))
        .collect();
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(count: u64, total: u64, max: u64, bucket: usize) -> SyscallStats {
        let mut h = [0; probe_common::HIST_BUCKETS];
        h[bucket] = count;
        SyscallStats {
            count,
            errors: 1,
            total_ns: total,
            max_ns: max,
            hist_log2_ns: h,
        }
    }

    #[test]
    fn per_cpu_values_are_summed_and_percentiles_derived() {
        let cpus = [stats(3, 300, 120, 6), stats(1, 5000, 5000, 12)];
        let r = row(3, cpus.iter()).unwrap();
        assert_eq!(r.name, "close");
        assert_eq!(
            (r.count, r.errors, r.total_ns, r.max_ns),
            (4, 2, 5300, 5000)
        );
        // Rank 2 of 4 is 2/3 into bucket 6 ([64, 128)); rank 3.96 is 0.96 into bucket 12,
        // which the maximum closes at 5000: [4096, 5001).
        assert_eq!(r.p50_ns, 106);
        assert_eq!(r.p99_ns, 4964);
        assert_eq!(r.hist_log2_ns.iter().sum::<u64>(), 4);
    }

    #[test]
    fn uncalled_syscalls_have_no_row() {
        let cpus = [SyscallStats {
            count: 0,
            errors: 0,
            total_ns: 0,
            max_ns: 0,
            hist_log2_ns: [0; 40],
        }];
        assert!(row(0, cpus.iter()).is_none());
    }
}
