//! `oncpu` collector: sample counts per stack key, kept raw for kpaths shares and flame graphs.
use probe_common::{
    oncpu::{MAP_COUNTS, MAP_SAMPLES},
    StackKey,
};

use super::{fold_per_cpu_hash, per_cpu_u64s, CollectError};
use crate::run::OncpuSummary;

/// Sample counts per stack key.
pub struct OncpuData {
    pub counts: Vec<(StackKey, u64)>,
    pub summary: OncpuSummary,
}

pub fn collect(
    ebpf: &aya::Ebpf,
    frequency_hz: u64,
    lost_stacks: u64,
) -> Result<OncpuData, CollectError> {
    let samples = per_cpu_u64s(ebpf, MAP_SAMPLES)?
        .first()
        .copied()
        .unwrap_or(0);
    let counts = fold_per_cpu_hash::<StackKey, u64, u64>(ebpf, MAP_COUNTS, |acc, v| *acc += v)?;
    let mut counts: Vec<(StackKey, u64)> = counts.into_iter().collect();
    counts.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    Ok(OncpuData {
        summary: OncpuSummary {
            frequency_hz,
            samples,
            unique_stacks: counts.len() as u64,
            lost_stacks,
        },
        counts,
    })
}
