//! `sched`: voluntary and involuntary context switches, off-CPU time and stacks, wakeups and
//! run-queue delay of the target's threads.
//!
//! Kernel side: probe-ebpf/src/sched.rs; shared types: probe-common/src/sched.rs; task_struct
//! offsets: kernel/btf.rs; tests: cli/tests/sched.rs (switches equal getrusage).
use probe_common::{
    sched::{SchedStats, MAP_OFFCPU, MAP_STATS},
    stack_flags, Family, StackKey, GLOBAL_OFFCPU_MIN_NS, GLOBAL_SWITCH_PREV_STATE_ARG,
    GLOBAL_TASK_EXIT_STATE, GLOBAL_TASK_PID, GLOBAL_TASK_STATE,
};

use super::{
    section::{table, Align::*, Section, SectionOptions},
    Collector, FamilyPath, LoadOptions, Method,
};
use crate::{
    fmt, hist,
    kernel::{features::Features, kallsyms::Kallsyms},
    probes::{
        attach::Prog,
        maps::{per_cpu_array, CollectError},
        object::Global,
        plan::{needs, MethodSpec, Unit},
        FamilyTable, Globals,
    },
    run::{OffcpuSummary, Run, SchedRow},
    stacks::strip_tracing_frames,
};

pub static PATH: FamilyPath = FamilyPath {
    table: FamilyTable {
        family: Family::Sched,
        units: &[Unit {
            name: "sched",
            methods: &METHODS,
        }],
        globals,
    },
    maps: &[MAP_STATS, MAP_OFFCPU],
    reads: &[],
    folds_stacks: true,
    collect,
    section,
};

/// The wakeups' raw tracepoints, shared by the two methods with typed task pointers.
const RAW_WAKEUPS: [Prog; 2] = [
    Prog::RawTp {
        prog: "sched_raw_sched_wakeup",
        tp: "sched_wakeup",
    },
    Prog::RawTp {
        prog: "sched_raw_sched_wakeup_new",
        tp: "sched_wakeup_new",
    },
];

/// Raw tracepoints first: they skip the trace-event record (but need task_struct offsets from
/// BTF, since they get task pointers); the sched:* trace events are the fallback. Before both,
/// where the kernel loads BTF tracepoints: sched_switch as one, whose `next` is a pointer the
/// verifier knows to be a task, so that with `--offcpu-min-us` the kernel stack of a period is
/// taken when it ends and only if it passes (`bpf_get_task_stack`); with no threshold it takes
/// the stacks at switch-out as the raw tracepoint does.
const METHODS: [MethodSpec<Method>; 3] = [
    MethodSpec {
        method: Method::SchedTpBtf,
        needs: |f| {
            needs::raw_tracepoints(f)
                .or(f.sched_btf.is_none().then_some(
                    "no task_struct offsets or sched_switch prototype in kernel BTF (/sys/kernel/btf/vmlinux)",
                ))
                .or(f.tp_btf.tp_btf_unusable())
        },
        programs: &[
            Prog::BtfTp {
                prog: "sched_btf_sched_switch",
                tp: "sched_switch",
            },
            RAW_WAKEUPS[0],
            RAW_WAKEUPS[1],
        ],
        uses: None,
    },
    MethodSpec {
        method: Method::SchedRawTp,
        needs: |f| {
            needs::raw_tracepoints(f).or(f.sched_btf.is_none().then_some(
                "no task_struct offsets or sched_switch prototype in kernel BTF (/sys/kernel/btf/vmlinux)",
            ))
        },
        programs: &[
            Prog::RawTp {
                prog: "sched_raw_sched_switch",
                tp: "sched_switch",
            },
            RAW_WAKEUPS[0],
            RAW_WAKEUPS[1],
        ],
        uses: None,
    },
    MethodSpec {
        method: Method::SchedTracepoints,
        needs: |f| needs::tracefs(f).or((!f.sched_tracepoints).then_some("no sched:* tracepoints")),
        programs: &[
            Prog::TracePoint {
                prog: "sched_sched_switch",
                category: "sched",
                event: "sched_switch",
            },
            Prog::TracePoint {
                prog: "sched_sched_wakeup",
                category: "sched",
                event: "sched_wakeup",
            },
            Prog::TracePoint {
                prog: "sched_sched_wakeup_new",
                category: "sched",
                event: "sched_wakeup_new",
            },
        ],
        uses: None,
    },
];

/// task_struct offsets for the raw tracepoints (zeros when BTF gave none: then the plan never
/// picks them), and the shortest off-CPU period charged to a stack.
fn globals(f: &Features, opts: &LoadOptions) -> Globals {
    let b = f.sched_btf.unwrap_or_default();
    vec![
        (GLOBAL_TASK_PID, Global::U32(b.task_pid)),
        (GLOBAL_TASK_STATE, Global::U32(b.task_state)),
        (GLOBAL_TASK_EXIT_STATE, Global::U32(b.task_exit_state)),
        (
            GLOBAL_SWITCH_PREV_STATE_ARG,
            Global::from(b.switch_prev_state_arg),
        ),
        (GLOBAL_OFFCPU_MIN_NS, Global::U64(opts.offcpu_min_ns)),
    ]
}

fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    let map = per_cpu_array::<SchedStats>(&c.probes.ebpf, MAP_STATS)?;
    let vals = map.get(&0, 0).map_err(|source| CollectError::Read {
        name: MAP_STATS,
        source,
    })?;
    run.sched = Some(row(vals.iter()));
    if c.maps.is_some() {
        let off = c.counts(MAP_OFFCPU)?;
        // A period's runnable part has a key of its own (flagged): count stacks without it.
        let stacks = off.iter().filter(|(k, _)| k.flags == 0).count() as u64;
        let total_ns = off.iter().map(|(_, n)| n).sum();
        run.offcpu = Some(OffcpuSummary {
            total_ns,
            stacks,
            lost_stacks: c
                .lost_stacks
                .get(Family::Sched.name())
                .copied()
                .unwrap_or(0),
            min_block_ns: c.offcpu_min_ns,
        });
        // The off-CPU graph and profile show whole periods: both parts of each stack together;
        // the wall-clock view takes the parts apart.
        // One symbolization: the stacks come in the map's key order, so each knows its part.
        if let Some(stacks) = c.symbolize(MAP_OFFCPU, strip)? {
            let parts: Vec<bool> = c
                .counts(MAP_OFFCPU)?
                .iter()
                .map(|(k, _)| runnable(k))
                .collect();
            c.profiles.offcpu_waiting = Some(stacks.folded_text_where(|i| !parts[i]));
            c.profiles.offcpu_runnable = Some(stacks.folded_text_where(|i| parts[i]));
            c.profiles.set_offcpu(stacks);
        }
    }
    Ok(())
}

/// The runnable part of an off-CPU period (woken or preempted, waiting for a CPU).
fn runnable(k: &StackKey) -> bool {
    k.flags & stack_flags::RUNNABLE != 0
}

/// Both methods' stacks end in `__schedule`: a raw tracepoint's start in the tracing code.
fn strip(kernel: &mut Vec<u64>, ksyms: &Kallsyms) {
    strip_tracing_frames(kernel, |ip| ksyms.resolve(ip).map(|s| s.name));
}

fn section(run: &Run, _: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Sched, "Scheduling")?;
    let Some(r) = run.sched.as_ref() else {
        s.line("no scheduling events recorded");
        return Some(s);
    };
    s.table(table(
        "sched",
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
            r.voluntary_switches.to_string(),
            r.involuntary_switches.to_string(),
            fmt::ns(r.offcpu_ns),
            r.wakeups.to_string(),
            r.runq_delay_count.to_string(),
            fmt::ns(r.runq_delay_p50_ns),
            fmt::ns(r.runq_delay_p99_ns),
            fmt::ns(r.runq_delay_max_ns),
        ]],
    ));
    s.line(crate::hist::ESTIMATE_NOTE);
    s.histograms = vec![("run-queue delay".into(), r.runq_delay_hist_log2_ns.clone())];
    Some(s)
}

pub fn row<'a>(per_cpu: impl Iterator<Item = &'a SchedStats>) -> SchedRow {
    let mut r = SchedRow::default();
    let mut h = vec![0u64; probe_common::HIST_BUCKETS];
    for s in per_cpu {
        r.voluntary_switches += s.voluntary_switches;
        r.involuntary_switches += s.involuntary_switches;
        r.offcpu_ns += s.offcpu_ns;
        r.wakeups += s.wakeups;
        r.runq_delay_count += s.runq_count;
        r.runq_delay_total_ns += s.runq_total_ns;
        r.runq_delay_max_ns = r.runq_delay_max_ns.max(s.runq_max_ns);
        hist::add_into(&mut h, &s.runq_delay_hist_log2_ns);
    }
    r.runq_delay_p50_ns = hist::percentile(&h, 0.50, r.runq_delay_max_ns);
    r.runq_delay_p99_ns = hist::percentile(&h, 0.99, r.runq_delay_max_ns);
    r.runq_delay_hist_log2_ns = h;
    r
}
