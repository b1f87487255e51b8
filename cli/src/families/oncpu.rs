//! `oncpu`: kernel and user stacks sampled by perf_event cpu-clock at `-F` Hz on every CPU; the
//! on-CPU flame graph, and the samples kpaths' sampled fallback reads.
//!
//! Kernel side: probe-ebpf/src/oncpu.rs; shared types: probe-common/src/oncpu.rs; tests:
//! cli/tests/oncpu.rs, cli/tests/flame.rs.
use probe_common::{
    oncpu::{MAP_COUNTS, MAP_SAMPLES},
    Family,
};

use super::{
    section::{Section, SectionOptions},
    Collector, FamilyPath, Method,
};
use crate::{
    probes::{
        attach::Prog,
        maps::per_cpu_u64s,
        plan::{needs, MethodSpec, Unit},
        FamilyTable,
    },
    run::{OncpuSummary, Run},
};

pub static PATH: FamilyPath = FamilyPath {
    table: FamilyTable {
        family: Family::Oncpu,
        units: &[Unit {
            name: "oncpu",
            methods: &METHODS,
        }],
        globals: |_, _| Vec::new(),
    },
    maps: &[MAP_COUNTS, MAP_SAMPLES],
    reads: &[],
    folds_stacks: true,
    collect,
    section,
};

const METHODS: [MethodSpec<Method>; 1] = [MethodSpec {
    method: Method::PerfEvent,
    needs: needs::perf_events,
    programs: &[Prog::CpuClock {
        prog: "oncpu_sample",
    }],
    uses: None,
}];

fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    let samples = per_cpu_u64s(&c.probes.ebpf, MAP_SAMPLES)?
        .first()
        .copied()
        .unwrap_or(0);
    let unique_stacks = c.counts(MAP_COUNTS)?.len() as u64;
    run.oncpu = Some(OncpuSummary {
        frequency_hz: c.probes.sample_hz,
        samples,
        unique_stacks,
        lost_stacks: c
            .lost_stacks
            .get(Family::Oncpu.name())
            .copied()
            .unwrap_or(0),
    });
    c.profiles.oncpu = c.fold(MAP_COUNTS, |_, _| {})?;
    Ok(())
}

fn section(run: &Run, _: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Oncpu, "On-CPU samples")?;
    s.line(match &run.oncpu {
        Some(o) => format!(
            "{} samples at {} Hz, {} unique stacks, {} samples without a stack",
            o.samples, o.frequency_hz, o.unique_stacks, o.lost_stacks
        ),
        None => "no on-CPU samples recorded".to_string(),
    });
    Some(s)
}
