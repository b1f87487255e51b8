//! `kpaths`: calls and time of the kernel functions small-request servers live in
//! (eventpoll_release_file, tcp_close, do_sys_openat2, __vm_munmap), each function falling back
//! on its own: fentry/fexit, else kprobe/kretprobe, else its inclusive share of on-CPU samples
//! with the containing syscall's traced count and time beside it. `--kpath FUNC` adds any other
//! kernel function as one more unit with the same chain, through generic slot programs
//! (`kpaths_slot<i>_*`); sampled, it also gets its share of off-CPU time.
//!
//! Kernel side: probe-ebpf/src/kpaths.rs; shared types: probe-common/src/kpaths.rs; tests:
//! cli/tests/kpaths.rs, cli/tests/vm.rs (fentry and kprobe in stock-kernel guests).
use std::collections::HashMap;

use probe_common::{
    kpaths::{Function, FunctionStats, EXTRA_SLOTS, FUNCTIONS, MAP_START, MAP_STATS},
    Family,
};

use super::{
    section::{avg, opt, table, Align::*, Section, SectionOptions},
    Collector, FamilyPath, Method,
};
use crate::{
    fmt, hist,
    kernel::kallsyms::{Kallsyms, KallsymsError},
    probes::{
        attach::Prog,
        maps::{per_cpu_array, CollectError},
        plan::{needs, MethodSpec, Unit},
        FamilyTable,
    },
    run::{KpathRow, Run, SyscallRow},
};

pub static PATH: FamilyPath = FamilyPath {
    table: FamilyTable {
        family: Family::Kpaths,
        units: &UNITS,
        globals: |_, _| Vec::new(),
    },
    maps: &[MAP_STATS, MAP_START],
    reads: &[Family::Syscalls, Family::Oncpu],
    folds_stacks: false,
    collect,
    section,
};

fn needs_fentry(f: &crate::kernel::features::Features) -> Option<&'static str> {
    use crate::kernel::tracing_prog::Fentry;
    if !f.btf {
        return Some("no kernel BTF (/sys/kernel/btf/vmlinux)");
    }
    match f.fentry {
        Fentry::Refused => Some(
            "the kernel refused a test tracing program (EPERM at load, empty verifier log): \
             this kernel does not allow fentry/fexit",
        ),
        Fentry::Failed(_) => Some("a test fentry program did not load (see kpath doctor)"),
        Fentry::Loads | Fentry::Untried => None,
    }
}

fn needs_samples(f: &crate::kernel::features::Features) -> Option<&'static str> {
    needs::perf_events(f).or((!f.kallsyms_readable).then_some(
        "/proc/kallsyms shows no addresses (kernel.kptr_restrict), so stacks cannot be named",
    ))
}

/// One function's fallback chain: `kpaths_<stem>_{fentry,fexit,kprobe,kretprobe}`.
macro_rules! function {
    ($symbol:literal, $stem:literal) => {
        Unit {
            name: $symbol,
            methods: &[
                MethodSpec {
                    method: Method::Fentry,
                    needs: needs_fentry,
                    programs: &[
                        Prog::FEntry {
                            prog: concat!("kpaths_", $stem, "_fentry"),
                            symbol: $symbol,
                        },
                        Prog::FExit {
                            prog: concat!("kpaths_", $stem, "_fexit"),
                            symbol: $symbol,
                        },
                    ],
                    uses: None,
                },
                MethodSpec {
                    method: Method::Kprobe,
                    needs: needs::kprobes,
                    programs: &[
                        Prog::KProbe {
                            prog: concat!("kpaths_", $stem, "_kprobe"),
                            symbol: $symbol,
                        },
                        Prog::KProbe {
                            prog: concat!("kpaths_", $stem, "_kretprobe"),
                            symbol: $symbol,
                        },
                    ],
                    uses: None,
                },
                MethodSpec {
                    method: Method::Sampled,
                    needs: needs_samples,
                    programs: &[],
                    uses: Some(Family::Oncpu),
                },
            ],
        }
    };
}

/// In [`Function::ALL`] order (a unit test checks).
const UNITS: [Unit<Method>; FUNCTIONS] = [
    function!("eventpoll_release_file", "eventpoll_release_file"),
    function!("tcp_close", "tcp_close"),
    function!("do_sys_openat2", "do_sys_openat2"),
    function!("__vm_munmap", "vm_munmap"),
];

/// The generic slot programs (probe-ebpf/src/kpaths.rs): fentry, fexit, kprobe, kretprobe.
const SLOT_PROGRAMS: [[&str; 4]; EXTRA_SLOTS] = {
    macro_rules! slot {
        ($i:literal) => {
            [
                concat!("kpaths_slot", $i, "_fentry"),
                concat!("kpaths_slot", $i, "_fexit"),
                concat!("kpaths_slot", $i, "_kprobe"),
                concat!("kpaths_slot", $i, "_kretprobe"),
            ]
        };
    }
    [
        slot!(0),
        slot!(1),
        slot!(2),
        slot!(3),
        slot!(4),
        slot!(5),
        slot!(6),
        slot!(7),
    ]
};

/// The fallback chain of slot `slot` attached to `symbol`: the built-in functions' chain with
/// the slot's programs. The engine wants `'static` tables, so these are leaked: once per
/// recording, a few hundred bytes.
fn slot_unit(slot: usize, symbol: &'static str) -> Unit<Method> {
    let [fentry, fexit, kprobe, kretprobe] = SLOT_PROGRAMS[slot];
    let progs = |v: Vec<Prog>| -> &'static [Prog] { Box::leak(v.into_boxed_slice()) };
    let methods = vec![
        MethodSpec {
            method: Method::Fentry,
            needs: needs_fentry,
            programs: progs(vec![
                Prog::FEntry {
                    prog: fentry,
                    symbol,
                },
                Prog::FExit {
                    prog: fexit,
                    symbol,
                },
            ]),
            uses: None,
        },
        MethodSpec {
            method: Method::Kprobe,
            needs: needs::kprobes,
            programs: progs(vec![
                Prog::KProbe {
                    prog: kprobe,
                    symbol,
                },
                Prog::KProbe {
                    prog: kretprobe,
                    symbol,
                },
            ]),
            uses: None,
        },
        MethodSpec {
            method: Method::Sampled,
            needs: needs_samples,
            programs: &[],
            uses: Some(Family::Oncpu),
        },
    ];
    Unit {
        name: symbol,
        methods: Box::leak(methods.into_boxed_slice()),
    }
}

/// The kpaths table with one more unit per `--kpath` function (checked by
/// [`check_functions`]: at most [`EXTRA_SLOTS`], none built in), or the static one.
pub fn table_with(extra: &[String]) -> &'static FamilyTable<Method> {
    if extra.is_empty() {
        return &PATH.table;
    }
    let mut units: Vec<Unit<Method>> = UNITS
        .iter()
        .map(|u| Unit {
            name: u.name,
            methods: u.methods,
        })
        .collect();
    for (slot, name) in extra.iter().take(EXTRA_SLOTS).enumerate() {
        let symbol: &'static str = Box::leak(name.clone().into_boxed_str());
        units.push(slot_unit(slot, symbol));
    }
    Box::leak(Box::new(FamilyTable {
        family: Family::Kpaths,
        units: Box::leak(units.into_boxed_slice()),
        globals: PATH.table.globals,
    }))
}

#[derive(Debug, thiserror::Error)]
pub enum KpathError {
    #[error("--kpath {name}: no kernel function of that name in /proc/kallsyms{}", suggestions(.close))]
    Unknown { name: String, close: Vec<String> },
    #[error("--kpath: at most {max} functions besides the built-in ones, got {got}")]
    TooMany { got: usize, max: usize },
    #[error("--kpath: the kernel's function names are needed")]
    Kallsyms(#[source] KallsymsError),
}

fn suggestions(close: &[String]) -> String {
    if close.is_empty() {
        String::new()
    } else {
        format!(" (close matches: {})", close.join(", "))
    }
}

/// `--kpath` names checked against /proc/kallsyms: deduplicated, the built-in functions
/// dropped (they are always followed), each one a kernel function.
pub fn check_functions(names: &[String]) -> Result<Vec<String>, KpathError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let ksyms = Kallsyms::load().map_err(KpathError::Kallsyms)?;
    check_functions_in(names, &ksyms)
}

pub fn check_functions_in(names: &[String], ksyms: &Kallsyms) -> Result<Vec<String>, KpathError> {
    let mut out: Vec<String> = Vec::new();
    for n in names.iter().map(|n| n.trim()) {
        if builtin(n).is_some() || out.iter().any(|o| o == n) {
            continue;
        }
        if !ksyms.function_names().any(|f| f == n) {
            return Err(KpathError::Unknown {
                name: n.to_string(),
                close: close_matches(n, ksyms.function_names(), 5),
            });
        }
        out.push(n.to_string());
    }
    if out.len() > EXTRA_SLOTS {
        return Err(KpathError::TooMany {
            got: out.len(),
            max: EXTRA_SLOTS,
        });
    }
    Ok(out)
}

/// Up to `n` function names near `name`: those containing it (or contained in it) first, by
/// length, then those within a small edit distance, nearest first.
pub fn close_matches<'a>(
    name: &str,
    names: impl Iterator<Item = &'a str>,
    n: usize,
) -> Vec<String> {
    let max_dist = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, usize, &str)> = Vec::new();
    for cand in names {
        if cand.starts_with("__pfx_") || cand.starts_with("__cfi_") {
            continue;
        }
        let score = if cand.contains(name) || (cand.len() >= 4 && name.contains(cand)) {
            Some(0)
        } else if cand.len().abs_diff(name.len()) <= max_dist {
            let d = edit_distance(name.as_bytes(), cand.as_bytes());
            (d <= max_dist).then_some(d)
        } else {
            None
        };
        if let Some(sc) = score {
            scored.push((sc, cand.len().abs_diff(name.len()), cand));
        }
    }
    scored.sort();
    let mut out: Vec<String> = Vec::new();
    for (_, _, c) in scored {
        if !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
        if out.len() == n {
            break;
        }
    }
    out
}

/// Levenshtein distance.
fn edit_distance(a: &[u8], b: &[u8]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(x != y);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    let total = run.oncpu.as_ref().map_or(0, |o| o.samples);
    // Functions followed with --kpath: the family's units past the built-in ones, in slot order.
    let extra: Vec<&'static str> = c
        .probes
        .units
        .iter()
        .filter(|(f, name, _)| *f == Family::Kpaths && builtin(name).is_none())
        .map(|&(_, name, _)| name)
        .collect();
    let names: Vec<&str> = Function::ALL
        .iter()
        .map(|f| f.symbol())
        .chain(extra.iter().copied())
        .collect();
    let under = if c.probes.has(Family::Oncpu) {
        weight_under(c, probe_common::oncpu::MAP_COUNTS, &names)?.0
    } else {
        vec![0; names.len()]
    };
    let offcpu = if c.probes.has(Family::Sched) && !extra.is_empty() {
        Some(weight_under(c, probe_common::sched::MAP_OFFCPU, &names)?)
    } else {
        None
    };
    let measured = per_cpu_array::<FunctionStats>(&c.probes.ebpf, MAP_STATS)?;
    let read = |idx: usize| {
        measured
            .get(&(idx as u32), 0)
            .map_err(|source| CollectError::Read {
                name: MAP_STATS,
                source,
            })
    };
    let mut rows = Vec::new();
    for f in Function::ALL {
        let method = c.probes.unit_method(Family::Kpaths, f.symbol());
        let vals = read(f as usize)?;
        rows.push(row(
            f,
            method,
            vals.iter(),
            under[f as usize],
            total,
            &run.syscalls,
        ));
    }
    for (slot, name) in extra.iter().enumerate() {
        let method = c.probes.unit_method(Family::Kpaths, name);
        let vals = read(FUNCTIONS + slot)?;
        let i = FUNCTIONS + slot;
        let off = offcpu.as_ref().map(|(w, t)| (w[i], *t));
        rows.push(extra_row(name, method, vals.iter(), under[i], total, off));
    }
    run.kpaths = rows;
    Ok(())
}

/// The built-in function named `name`, if it is one.
fn builtin(name: &str) -> Option<Function> {
    Function::ALL.into_iter().find(|f| f.symbol() == name)
}

/// Weight (samples, or off-CPU ns) of the stacks whose kernel frames contain each of `names`
/// (inclusive: once per stack), and the total weight of the map.
fn weight_under(
    c: &mut Collector,
    map: &'static str,
    names: &[&str],
) -> anyhow::Result<(Vec<u64>, u64)> {
    let (counts, stacks, ksyms) = c.counts_view(map)?;
    let mut under = vec![0u64; names.len()];
    let mut total = 0;
    let mut by_stack: HashMap<i32, Vec<bool>> = HashMap::new();
    for (key, n) in counts {
        total += n;
        let hit = by_stack.entry(key.kstack_id).or_insert_with(|| {
            let mut hit = vec![false; names.len()];
            for &ip in stacks.ips(key.kstack_id) {
                if let Some(sym) = ksyms.resolve(ip).map(|s| s.name) {
                    for (h, name) in hit.iter_mut().zip(names) {
                        *h |= sym == *name;
                    }
                }
            }
            hit
        });
        for (u, h) in under.iter_mut().zip(hit.iter()) {
            if *h {
                *u += n;
            }
        }
    }
    Ok((under, total))
}

/// A `--kpath` function's row: timed like the built-in ones, or sampled with its on-CPU share
/// and (with the sched family) its share of off-CPU time; `offcpu` is (ns under it, total ns).
pub fn extra_row<'a>(
    name: &str,
    method: Option<Method>,
    per_cpu: impl Iterator<Item = &'a FunctionStats>,
    samples: u64,
    total_samples: u64,
    offcpu: Option<(u64, u64)>,
) -> KpathRow {
    let mut r = KpathRow {
        function: name.to_string(),
        method: method.map_or("unavailable", |m| m.name()).to_string(),
        samples,
        oncpu_share: share(samples, total_samples),
        hist_log2_ns: vec![0; probe_common::HIST_BUCKETS],
        requested: true,
        ..Default::default()
    };
    if let Some((ns, total)) = offcpu {
        r.offcpu_ns = Some(ns);
        r.offcpu_share = Some(share(ns, total));
    }
    add_timed(&mut r, method, per_cpu);
    r
}

fn share(n: u64, total: u64) -> f64 {
    if total > 0 {
        n as f64 / total as f64
    } else {
        0.0
    }
}

/// Calls, time and histogram summed over CPUs, when the method timed the function.
fn add_timed<'a>(
    r: &mut KpathRow,
    method: Option<Method>,
    per_cpu: impl Iterator<Item = &'a FunctionStats>,
) {
    if matches!(method, Some(Method::Fentry | Method::Kprobe)) {
        let (mut calls, mut total, mut max) = (0, 0, 0);
        for s in per_cpu {
            calls += s.calls;
            total += s.total_ns;
            max = u64::max(max, s.max_ns);
            hist::add_into(&mut r.hist_log2_ns, &s.hist_log2_ns);
        }
        r.calls = Some(calls);
        r.total_ns = Some(total);
        r.max_ns = Some(max);
    }
}

pub fn row<'a>(
    f: Function,
    method: Option<Method>,
    per_cpu: impl Iterator<Item = &'a FunctionStats>,
    samples: u64,
    total_samples: u64,
    syscalls: &[SyscallRow],
) -> KpathRow {
    // The containing syscalls this target used (openat or openat2, ...), summed.
    let used: Vec<&SyscallRow> = syscalls
        .iter()
        .filter(|s| f.syscalls().contains(&s.name.as_str()))
        .collect();
    let syscall = if used.is_empty() {
        f.syscalls()[0].to_string()
    } else {
        used.iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("+")
    };
    let mut r = KpathRow {
        function: f.symbol().to_string(),
        method: method.map_or("unavailable", |m| m.name()).to_string(),
        samples,
        oncpu_share: if total_samples > 0 {
            samples as f64 / total_samples as f64
        } else {
            0.0
        },
        syscall,
        syscall_count: (!used.is_empty()).then(|| used.iter().map(|s| s.count).sum()),
        syscall_total_ns: (!used.is_empty()).then(|| used.iter().map(|s| s.total_ns).sum()),
        hist_log2_ns: vec![0; probe_common::HIST_BUCKETS],
        ..Default::default()
    };
    add_timed(&mut r, method, per_cpu);
    r
}

/// How one row was measured, as the method column shows it.
fn method_cell(r: &KpathRow) -> String {
    match r.method.as_str() {
        "sampled" if r.offcpu_share.is_some() => "sampled (on/off-CPU stacks)".to_string(),
        "sampled" => "sampled (on-CPU stacks)".to_string(),
        "fentry" => "fentry/fexit".to_string(),
        "kprobe" => "kprobe/kretprobe".to_string(),
        other => other.to_string(),
    }
}

fn section(run: &Run, _: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Kpaths, "Kernel paths")?;
    if run.kpaths.is_empty() {
        s.line("no kernel paths recorded");
        return Some(s);
    }
    // Shares need on-CPU samples; without them 0% would read as "never ran".
    let sampled = run.oncpu.is_some();
    let share = |r: &KpathRow| {
        if sampled {
            (fmt::percent(r.oncpu_share), r.samples.to_string())
        } else {
            ("-".to_string(), "-".to_string())
        }
    };
    // The off-CPU column only when a --kpath row was sampled with the sched family.
    let offcpu = run.kpaths.iter().any(|r| r.offcpu_share.is_some());
    let mut columns = vec![
        ("function", Left),
        ("method", Left),
        ("calls", Right),
        ("total", Right),
        ("avg", Right),
        ("max", Right),
        ("on-CPU", Right),
        ("samples", Right),
    ];
    if offcpu {
        columns.push(("off-CPU", Right));
    }
    columns.extend([
        ("in syscall", Left),
        ("syscall count", Right),
        ("syscall total", Right),
    ]);
    s.table(table(
        "kpaths",
        &columns,
        run.kpaths.iter().map(|r| {
            let avg = match (r.total_ns, r.calls) {
                (Some(t), Some(c)) => avg(t, c),
                _ => "-".to_string(),
            };
            let (on_cpu, samples) = share(r);
            let mut cells = vec![
                r.function.clone(),
                method_cell(r),
                opt(r.calls, |c| c.to_string()),
                opt(r.total_ns, fmt::ns),
                avg,
                opt(r.max_ns, fmt::ns),
                on_cpu,
                samples,
            ];
            if offcpu {
                cells.push(opt(r.offcpu_share, fmt::percent));
            }
            cells.extend([
                if r.syscall.is_empty() {
                    "-".to_string()
                } else {
                    r.syscall.clone()
                },
                opt(r.syscall_count, |c| c.to_string()),
                opt(r.syscall_total_ns, fmt::ns),
            ]);
            cells
        }),
    ));
    s.histograms = run
        .kpaths
        .iter()
        .map(|r| (format!("{} latency", r.function), r.hist_log2_ns.clone()))
        .collect();
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(calls: u64, total: u64) -> FunctionStats {
        FunctionStats {
            calls,
            total_ns: total,
            max_ns: total,
            _reserved: 0,
            hist_log2_ns: [0; 40],
        }
    }

    #[test]
    fn units_follow_the_function_order() {
        for f in Function::ALL {
            assert_eq!(UNITS[f as usize].name, f.symbol());
        }
    }

    #[test]
    fn measured_rows_have_calls_and_sampled_rows_do_not() {
        let sc = vec![SyscallRow {
            name: "close".into(),
            count: 10,
            total_ns: 900,
            ..Default::default()
        }];
        let cpus = [stats(4, 100), stats(6, 200)];
        let m = row(
            Function::TcpClose,
            Some(Method::Kprobe),
            cpus.iter(),
            5,
            50,
            &sc,
        );
        assert_eq!(
            (m.calls, m.total_ns, m.max_ns),
            (Some(10), Some(300), Some(200))
        );
        assert_eq!(m.method, "kprobe");
        assert_eq!(m.syscall_count, Some(10));
        assert!((m.oncpu_share - 0.1).abs() < 1e-9);

        let s = row(
            Function::TcpClose,
            Some(Method::Sampled),
            cpus.iter(),
            5,
            50,
            &sc,
        );
        assert_eq!((s.calls, s.total_ns), (None, None));
        assert_eq!(s.method, "sampled");
        assert_eq!(s.samples, 5);

        let opens = vec![
            SyscallRow {
                name: "openat".into(),
                count: 3,
                total_ns: 30,
                ..Default::default()
            },
            SyscallRow {
                name: "openat2".into(),
                count: 4,
                total_ns: 40,
                ..Default::default()
            },
        ];
        let o = row(
            Function::DoSysOpenat2,
            Some(Method::Sampled),
            cpus.iter(),
            1,
            2,
            &opens,
        );
        assert_eq!(o.syscall, "openat+openat2");
        assert_eq!((o.syscall_count, o.syscall_total_ns), (Some(7), Some(70)));

        let u = row(Function::VmMunmap, None, cpus.iter(), 0, 0, &sc);
        assert_eq!(u.method, "unavailable");
        assert_eq!(u.oncpu_share, 0.0);
        assert_eq!(u.syscall, "munmap");
        assert_eq!(u.syscall_count, None);
    }

    fn features(kprobes: bool, btf: bool) -> crate::kernel::features::Features {
        crate::kernel::features::Features {
            tracefs: Some("/sys/kernel/tracing".into()),
            btf,
            kprobes,
            perf_events: true,
            kallsyms_readable: true,
            fentry: crate::kernel::tracing_prog::Fentry::Untried,
            ..Default::default()
        }
    }

    #[test]
    fn extra_functions_get_the_same_chain_through_their_slot_programs() {
        use crate::probes::plan::plan;
        let t = table_with(&["ep_poll".to_string(), "tcp_sendmsg".to_string()]);
        assert_eq!(t.units.len(), FUNCTIONS + 2);
        let unit = &t.units[FUNCTIONS + 1];
        assert_eq!(unit.name, "tcp_sendmsg");
        let names: Vec<&str> = unit
            .methods
            .iter()
            .flat_map(|m| m.programs.iter().flat_map(|p| p.names()))
            .collect();
        assert_eq!(
            names,
            [
                "kpaths_slot1_fentry",
                "kpaths_slot1_fexit",
                "kpaths_slot1_kprobe",
                "kpaths_slot1_kretprobe"
            ]
        );
        // Selected by detection, as the built-in functions are: this host (no kprobes; fentry
        // refused only at load), a stock kernel with kprobes, and one without BTF.
        let host = plan(unit, &features(false, true), None);
        assert_eq!(host.methods(), vec![Method::Fentry, Method::Sampled]);
        let stock = plan(unit, &features(true, true), None);
        assert_eq!(
            stock.methods(),
            vec![Method::Fentry, Method::Kprobe, Method::Sampled]
        );
        let no_btf = plan(unit, &features(true, false), None);
        assert_eq!(no_btf.methods(), vec![Method::Kprobe, Method::Sampled]);
        let refused = crate::kernel::features::Features {
            fentry: crate::kernel::tracing_prog::Fentry::Refused,
            ..features(false, true)
        };
        assert_eq!(plan(unit, &refused, None).methods(), vec![Method::Sampled]);
        // Without extras the static table serves.
        assert!(std::ptr::eq(table_with(&[]), &PATH.table));
    }

    #[test]
    fn slot_programs_are_in_the_object() {
        let n = crate::probes::object::names().expect("the embedded object parses");
        for name in SLOT_PROGRAMS.iter().flatten() {
            assert!(
                n.programs.iter().any(|x| x == name),
                "{name} not in the object"
            );
        }
    }

    fn ksyms() -> Kallsyms {
        Kallsyms::parse(
            "ffffffff81000000 T _text\n\
             ffffffff81001000 T tcp_sendmsg\n\
             ffffffff81001100 T tcp_sendmsg_locked\n\
             ffffffff81001200 t tcp_recvmsg\n\
             ffffffff81001300 T tcp_close\n\
             ffffffff81001400 T ep_poll\n\
             ffffffff81001500 t __pfx_tcp_sendmsg\n\
             ffffffff82600000 D tcp_hashinfo\n",
        )
        .unwrap()
    }

    #[test]
    fn unknown_functions_fail_with_close_matches() {
        let k = ksyms();
        let ok = check_functions_in(
            &["ep_poll".into(), "tcp_close".into(), "ep_poll".into()],
            &k,
        )
        .unwrap();
        assert_eq!(ok, ["ep_poll"], "built-in and repeated names dropped");
        let e = check_functions_in(&["tcp_sendmsgg".into()], &k).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("--kpath tcp_sendmsgg"), "{msg}");
        let KpathError::Unknown { close, .. } = e else {
            panic!("{msg}")
        };
        assert_eq!(close[0], "tcp_sendmsg", "{close:?}");
        assert!(!close.iter().any(|c| c.starts_with("__pfx_")));
        // A data symbol is not a function.
        assert!(check_functions_in(&["tcp_hashinfo".into()], &k).is_err());
        // A substring finds the longer names.
        let close = close_matches("sendmsg", k.function_names(), 5);
        assert_eq!(close, ["tcp_sendmsg", "tcp_sendmsg_locked"]);
        let many: Vec<String> = (0..=EXTRA_SLOTS).map(|_| "ep_poll".into()).collect();
        assert!(
            check_functions_in(&many, &k).is_ok(),
            "duplicates take one slot"
        );
        assert_eq!(edit_distance(b"kitten", b"sitting"), 3);
    }

    #[test]
    fn extra_rows_are_labelled_and_carry_offcpu_shares() {
        let cpus = [stats(4, 100)];
        let r = extra_row(
            "ep_poll",
            Some(Method::Sampled),
            cpus.iter(),
            3,
            30,
            Some((250, 1000)),
        );
        assert_eq!(
            (r.method.as_str(), r.calls, r.requested),
            ("sampled", None, true)
        );
        assert!((r.oncpu_share - 0.1).abs() < 1e-9);
        assert_eq!((r.offcpu_ns, r.offcpu_share), (Some(250), Some(0.25)));
        let t = extra_row("ep_poll", Some(Method::Kprobe), cpus.iter(), 0, 0, None);
        assert_eq!((t.calls, t.total_ns), (Some(4), Some(100)));
        assert_eq!(t.offcpu_share, None);
    }
}
