//! `kpaths` collector: measured rows (fentry/kprobe) from the stats array, sampled rows from
//! on-CPU stacks; every row carries its method and the syscall that contains the function.
use std::collections::HashMap;

use probe_common::kpaths::{KpathFn, KpathStats, MAP_STATS};

use super::{oncpu::OncpuData, per_cpu_array, CollectError, Stacks};
use crate::{
    hist,
    kallsyms::Kallsyms,
    loader::Method,
    run::{KpathRow, SyscallRow},
};

/// Samples whose kernel stack contains each function (inclusive: once per sample).
pub fn samples_under(oncpu: &OncpuData, stacks: &mut Stacks, ksyms: &Kallsyms) -> [u64; 4] {
    let mut under = [0u64; 4];
    let mut by_stack: HashMap<i32, [bool; 4]> = HashMap::new();
    for (key, n) in &oncpu.counts {
        let hit = by_stack.entry(key.kstack_id).or_insert_with(|| {
            let mut hit = [false; 4];
            for &ip in stacks.ips(key.kstack_id) {
                if let Some(name) = ksyms.resolve(ip).map(|s| s.name) {
                    for f in KpathFn::ALL {
                        hit[f as usize] |= name == f.symbol();
                    }
                }
            }
            hit
        });
        for f in KpathFn::ALL {
            if hit[f as usize] {
                under[f as usize] += n;
            }
        }
    }
    under
}

pub fn collect(
    ebpf: &aya::Ebpf,
    methods: &[(KpathFn, Method)],
    under: [u64; 4],
    total_samples: u64,
    syscalls: &[SyscallRow],
) -> Result<Vec<KpathRow>, CollectError> {
    let measured = per_cpu_array::<KpathStats>(ebpf, MAP_STATS)?;
    let mut rows = Vec::new();
    for f in KpathFn::ALL {
        let method = methods.iter().find(|(g, _)| *g == f).map(|&(_, m)| m);
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
            total_samples,
            syscalls,
        ));
    }
    Ok(rows)
}

pub fn row<'a>(
    f: KpathFn,
    method: Option<Method>,
    per_cpu: impl Iterator<Item = &'a KpathStats>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(calls: u64, total: u64) -> KpathStats {
        KpathStats {
            calls,
            total_ns: total,
            max_ns: total,
            _reserved: 0,
            hist_log2_ns: [0; 40],
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
            KpathFn::TcpClose,
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
            KpathFn::TcpClose,
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
            KpathFn::DoSysOpenat2,
            Some(Method::Sampled),
            cpus.iter(),
            1,
            2,
            &opens,
        );
        assert_eq!(o.syscall, "openat+openat2");
        assert_eq!((o.syscall_count, o.syscall_total_ns), (Some(7), Some(70)));

        let u = row(KpathFn::VmMunmap, None, cpus.iter(), 0, 0, &sc);
        assert_eq!(u.method, "unavailable");
        assert_eq!(u.oncpu_share, 0.0);
        assert_eq!(u.syscall, "munmap");
        assert_eq!(u.syscall_count, None);
    }
}
