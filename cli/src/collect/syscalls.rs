//! `syscalls` collector: per-syscall rows from the per-CPU stats array.
use probe_common::syscalls::{SyscallStats, MAP_STATS};

use super::{per_cpu_array, CollectError};
use crate::{hist, run::SyscallRow, syscall_names};

pub fn collect(ebpf: &aya::Ebpf) -> Result<Vec<SyscallRow>, CollectError> {
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
        assert_eq!(r.p50_ns, 127);
        assert_eq!(r.p99_ns, 5000);
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
