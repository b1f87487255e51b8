//! `kpaths`: calls and time of the kernel functions small-request servers live in
//! (eventpoll_release_file, tcp_close, do_sys_openat2, __vm_munmap), each function falling back
//! on its own: fentry/fexit, else kprobe/kretprobe, else its inclusive share of on-CPU samples
//! with the containing syscall's traced count and time beside it.
//!
//! Kernel side: probe-ebpf/src/kpaths.rs; shared types: probe-common/src/kpaths.rs; tests:
//! cli/tests/kpaths.rs, cli/tests/vm.rs (fentry and kprobe in stock-kernel guests).
use std::collections::HashMap;

use probe_common::{
    kpaths::{Function, FunctionStats, FUNCTIONS, MAP_START, MAP_STATS},
    Family,
};

use super::{
    section::{avg, opt, table, Align::*, Section, SectionOptions},
    Collector, FamilyPath, Method,
};
use crate::{
    fmt, hist,
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

fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    let total = run.oncpu.as_ref().map_or(0, |o| o.samples);
    let under = if c.probes.has(Family::Oncpu) {
        samples_under(c)?
    } else {
        [0; FUNCTIONS]
    };
    let measured = per_cpu_array::<FunctionStats>(&c.probes.ebpf, MAP_STATS)?;
    let mut rows = Vec::new();
    for f in Function::ALL {
        let method = c.probes.unit_method(Family::Kpaths, f.symbol());
        let vals = measured
            .get(&(f as u32), 0)
            .map_err(|source| CollectError::Read {
                name: MAP_STATS,
                source,
            })?;
        rows.push(row(
            f,
            method,
            vals.iter(),
            under[f as usize],
            total,
            &run.syscalls,
        ));
    }
    run.kpaths = rows;
    Ok(())
}

/// Samples whose kernel stack contains each function (inclusive: once per sample).
fn samples_under(c: &mut Collector) -> anyhow::Result<[u64; FUNCTIONS]> {
    let (counts, stacks, ksyms) = c.counts_view(probe_common::oncpu::MAP_COUNTS)?;
    let mut under = [0u64; FUNCTIONS];
    let mut by_stack: HashMap<i32, [bool; FUNCTIONS]> = HashMap::new();
    for (key, n) in counts {
        let hit = by_stack.entry(key.kstack_id).or_insert_with(|| {
            let mut hit = [false; FUNCTIONS];
            for &ip in stacks.ips(key.kstack_id) {
                if let Some(name) = ksyms.resolve(ip).map(|s| s.name) {
                    for f in Function::ALL {
                        hit[f as usize] |= name == f.symbol();
                    }
                }
            }
            hit
        });
        for f in Function::ALL {
            if hit[f as usize] {
                under[f as usize] += n;
            }
        }
    }
    Ok(under)
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
    r
}

/// How one row was measured, as the method column shows it.
fn method_cell(method: &str) -> String {
    match method {
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
    s.table(table(
        "kpaths",
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
        run.kpaths.iter().map(|r| {
            let avg = match (r.total_ns, r.calls) {
                (Some(t), Some(c)) => avg(t, c),
                _ => "-".to_string(),
            };
            let (on_cpu, samples) = share(r);
            vec![
                r.function.clone(),
                method_cell(&r.method),
                opt(r.calls, |c| c.to_string()),
                opt(r.total_ns, fmt::ns),
                avg,
                opt(r.max_ns, fmt::ns),
                on_cpu,
                samples,
                if r.syscall.is_empty() {
                    "-".to_string()
                } else {
                    r.syscall.clone()
                },
                opt(r.syscall_count, |c| c.to_string()),
                opt(r.syscall_total_ns, fmt::ns),
            ]
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
}
