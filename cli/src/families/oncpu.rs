//! `oncpu`: kernel and user stacks sampled by perf_event cpu-clock at `-F` Hz on every CPU; the
//! on-CPU flame graph, the flat profile (top functions by self and total samples), and the
//! samples kpaths' sampled fallback reads.
//!
//! Kernel side: probe-ebpf/src/oncpu.rs; shared types: probe-common/src/oncpu.rs; tests:
//! cli/tests/oncpu.rs, cli/tests/flame.rs.
use probe_common::{
    oncpu::{MAP_COUNTS, MAP_SAMPLES},
    Family,
};

use super::{
    section::{table, Align::*, Section, SectionOptions},
    Collector, FamilyPath, Method,
};
use crate::{
    fmt,
    probes::{
        attach::Prog,
        maps::per_cpu_u64s,
        plan::{needs, MethodSpec, Unit},
        FamilyTable,
    },
    run::{FunctionShare, OncpuSummary, Run},
    stacks::flat,
};

/// Functions kept in run.json: the top this many by self samples and by total samples.
pub const FLAT_KEPT: usize = 50;

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
        functions: Vec::new(),
    });
    if let Some(stacks) = c.symbolize(MAP_COUNTS, |_, _| {})? {
        c.profiles.set_oncpu(stacks);
    }
    if let (Some(text), Some(o)) = (&c.profiles.oncpu, run.oncpu.as_mut()) {
        o.functions = functions(text)?;
    }
    Ok(())
}

/// The flat profile of folded on-CPU stacks (root frame = thread name, left out).
pub fn functions(folded: &str) -> anyhow::Result<Vec<FunctionShare>> {
    let (entries, total) = flat::flat(folded, true)?;
    let share = |n: u64| {
        if total > 0 {
            n as f64 / total as f64
        } else {
            0.0
        }
    };
    let mut kept: Vec<&flat::FlatEntry> = flat::top(&entries, FLAT_KEPT, |e| e.self_weight);
    for e in flat::top(&entries, FLAT_KEPT, |e| e.total_weight) {
        if !kept.iter().any(|k| k.function == e.function) {
            kept.push(e);
        }
    }
    Ok(kept
        .into_iter()
        .map(|e| FunctionShare {
            function: e.function.clone(),
            self_samples: e.self_weight,
            total_samples: e.total_weight,
            self_share: share(e.self_weight),
            total_share: share(e.total_weight),
        })
        .collect())
}

/// A flat-profile table: its id, the figure it ranks by, and what it shows.
type View = (&'static str, fn(&FunctionShare) -> u64, &'static str);

fn section(run: &Run, opts: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Oncpu, "On-CPU samples")?;
    s.line(match &run.oncpu {
        Some(o) => format!(
            "{} samples at {} Hz, {} unique stacks, {} samples without a stack",
            o.samples, o.frequency_hz, o.unique_stacks, o.lost_stacks
        ),
        None => "no on-CPU samples recorded".to_string(),
    });
    let Some(o) = run.oncpu.as_ref().filter(|o| !o.functions.is_empty()) else {
        return Some(s);
    };
    // perf report --no-children, then --children.
    let views: [View; 2] = [
        (
            "oncpu-self",
            |f| f.self_samples,
            "top functions by self samples (innermost frame)",
        ),
        (
            "oncpu-total",
            |f| f.total_samples,
            "top functions by total samples (anywhere on the stack, children included)",
        ),
    ];
    for (id, key, what) in views {
        let mut rows: Vec<&FunctionShare> = o.functions.iter().filter(|f| key(f) > 0).collect();
        rows.sort_by(|a, b| key(b).cmp(&key(a)).then(a.function.cmp(&b.function)));
        let shown = rows.len().min(opts.top);
        s.line(format!("{what}:"));
        let mut t = table(
            id,
            &[
                ("function", Left),
                ("self", Right),
                ("self %", Right),
                ("total", Right),
                ("total %", Right),
            ],
            rows[..shown].iter().map(|f| {
                vec![
                    f.function.clone(),
                    f.self_samples.to_string(),
                    fmt::percent(f.self_share),
                    f.total_samples.to_string(),
                    fmt::percent(f.total_share),
                ]
            }),
        );
        t.hidden = rows.len() - shown;
        t.hidden_what = "functions";
        s.table(t);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_profile_keeps_top_self_and_top_total() {
        let text = "t;main;work;spin_[k] 6\nt;main;work 2\nt;main;idle 2\n";
        let f = functions(text).unwrap();
        let get = |n: &str| f.iter().find(|x| x.function == n).unwrap();
        assert_eq!(f[0].function, "spin_[k]");
        assert!((get("spin_[k]").self_share - 0.6).abs() < 1e-9);
        assert!((get("main").total_share - 1.0).abs() < 1e-9);
        assert_eq!(get("main").self_samples, 0);
        assert_eq!(
            (get("work").self_samples, get("work").total_samples),
            (2, 8)
        );
        assert!(f.iter().all(|x| x.function != "t"));

        let run = Run {
            methods: [("oncpu".to_string(), "perf_event".to_string())].into(),
            oncpu: Some(OncpuSummary {
                samples: 10,
                functions: f,
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = section(&run, &SectionOptions::default()).unwrap();
        let tables: Vec<&super::super::section::Table> = s
            .blocks
            .iter()
            .filter_map(|b| match b {
                super::super::section::Block::Table(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].rows[0][0], "spin_[k]");
        assert_eq!(tables[1].rows[0][0], "main");
        assert_eq!(tables[1].rows[0][4], fmt::percent(1.0));
    }
}
