//! `sched` collector.
use probe_common::sched::{SchedStats, MAP_STATS};

use super::{per_cpu_array, CollectError};
use crate::{hist, run::SchedRow};

pub fn collect(ebpf: &aya::Ebpf) -> Result<SchedRow, CollectError> {
    let map = per_cpu_array::<SchedStats>(ebpf, MAP_STATS)?;
    let vals = map.get(&0, 0).map_err(|source| CollectError::Read {
        name: MAP_STATS,
        source,
    })?;
    Ok(row(vals.iter()))
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
