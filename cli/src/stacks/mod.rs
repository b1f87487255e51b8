//! Stacks for flame graphs: on-CPU samples and off-CPU time, symbolized and folded.
//!
//! `kpath record` keeps a [`maps::MapsRecorder`] current while it waits, then at the end
//! [`collect`] reads the `oncpu` and `sched` stack maps and symbolizes them, and
//! [`write_artifacts`] writes `oncpu.folded`, `offcpu.folded` and their SVGs into the run.
use std::path::Path;

use aya::Ebpf;
use probe_common::{oncpu, sched, Family, StackKey};

use crate::{
    collect::{self, fold_per_cpu_hash, CollectError, Stacks},
    flame::{self, FlameKind},
    kallsyms::{Kallsyms, KallsymsError},
    loader::Probes,
    run::{Artifacts, OffcpuSummary, Run},
};

pub mod folded;
pub mod maps;
pub mod symbolize;

use maps::MapsRecorder;
use symbolize::{RawStack, StackSymbolizer};

#[derive(Debug, thiserror::Error)]
pub enum StacksError {
    #[error("reading stacks from the kernel failed")]
    Collect(#[from] CollectError),
    #[error("loading kernel symbols failed")]
    Kallsyms(#[from] KallsymsError),
    #[error("writing {path} failed")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rendering {path} failed")]
    Render {
        path: String,
        #[source]
        source: flame::FlameError,
    },
}

/// Folded on-CPU and off-CPU profiles of one recording.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    /// `None` when the family was not recorded.
    pub oncpu: Option<String>,
    pub offcpu: Option<String>,
    pub offcpu_summary: Option<OffcpuSummary>,
}

/// Reads one stack key's addresses.
pub fn raw_stack(key: &StackKey, weight: u64, stacks: &mut Stacks) -> RawStack {
    RawStack {
        tgid: key.tgid,
        comm: collect::comm(key),
        kernel: stacks.ips(key.kstack_id).to_vec(),
        user: stacks.ips(key.ustack_id).to_vec(),
        user_ret: key.user_ret,
        weight,
    }
}

/// Frames of the tracing machinery itself, innermost in a stack taken from a BPF raw tracepoint
/// (`bpf_prog_<tag>_<name>`, `bpf_trace_run4`, and on some kernels `__bpf_trace_<tp>`,
/// `__traceiter_<tp>`); a stack taken from a trace event starts at the traced function.
const TRACING_FRAME_PREFIXES: [&str; 4] =
    ["bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_"];

/// Drops the tracing frames from the innermost end of an off-CPU kernel stack (innermost first),
/// so both sched methods give the same stacks, ending in `__schedule`.
pub fn strip_tracing_frames<'a>(kernel: &mut Vec<u64>, name_of: impl Fn(u64) -> Option<&'a str>) {
    let n = kernel
        .iter()
        .take_while(|&&ip| {
            name_of(ip)
                .is_some_and(|name| TRACING_FRAME_PREFIXES.iter().any(|p| name.starts_with(p)))
        })
        .count();
    kernel.drain(..n);
}

/// Reads the on-CPU counts and off-CPU times and symbolizes them. `maps` gets a last snapshot of
/// every process that appears in a stack and is still alive.
pub fn collect(
    probes: &Probes,
    maps: &mut MapsRecorder,
    offcpu_min_ns: u64,
) -> Result<Profiles, StacksError> {
    let ebpf: &Ebpf = &probes.ebpf;
    let mut stacks = Stacks::new(ebpf);
    let (_, lost_stacks) = collect::lost(ebpf)?;
    let read = |name: &'static str| {
        fold_per_cpu_hash::<StackKey, u64, u64>(ebpf, name, |acc, v| *acc += v)
            .map(|m| m.into_iter().collect::<Vec<_>>())
    };
    let on = if probes.has(Family::Oncpu) {
        Some(read(oncpu::MAP_COUNTS)?)
    } else {
        None
    };
    let off = if probes.has(Family::Sched) {
        Some(read(sched::MAP_OFFCPU)?)
    } else {
        None
    };
    let mut raws = |v: &[(StackKey, u64)]| -> Vec<RawStack> {
        v.iter()
            .map(|(k, n)| raw_stack(k, *n, &mut stacks))
            .collect()
    };
    let on_raw = on.as_deref().map(&mut raws);
    let mut off_raw = off.as_deref().map(&mut raws);
    maps.refresh();
    for s in on_raw.iter().chain(off_raw.iter()).flatten() {
        maps.ensure(s.tgid);
    }
    let ksyms = Kallsyms::load()?;
    for s in off_raw.iter_mut().flatten() {
        strip_tracing_frames(&mut s.kernel, |ip| ksyms.resolve(ip).map(|s| s.name));
    }
    let sym = StackSymbolizer::new(&ksyms, &maps.snapshots);
    let fold = |raw: &[RawStack]| folded::fold(&sym.symbolize(raw));
    Ok(Profiles {
        oncpu: on_raw.as_deref().map(fold),
        offcpu_summary: off.as_ref().map(|v| OffcpuSummary {
            total_ns: v.iter().map(|(_, n)| n).sum(),
            stacks: v.len() as u64,
            lost_stacks: lost_stacks.get(Family::Sched.name()).copied().unwrap_or(0),
            min_block_ns: offcpu_min_ns,
        }),
        offcpu: off_raw.as_deref().map(fold),
    })
}

/// Writes the folded files and their SVGs into `dir`; returns their names for run.json.
pub fn write_artifacts(dir: &Path, p: &Profiles, run: &Run) -> Result<Artifacts, StacksError> {
    let mut a = Artifacts::default();
    for (kind, text) in [(FlameKind::OnCpu, &p.oncpu), (FlameKind::OffCpu, &p.offcpu)] {
        let Some(text) = text else { continue };
        let folded_name = kind.folded_name().to_string();
        let svg_name = kind.svg_name().to_string();
        let path = dir.join(&folded_name);
        std::fs::write(&path, text).map_err(|source| StacksError::Write {
            path: path.display().to_string(),
            source,
        })?;
        let svg = dir.join(&svg_name);
        flame::render_file(text, &flame::FlameOptions::for_run(kind, run), &svg).map_err(
            |source| StacksError::Render {
                path: svg.display().to_string(),
                source,
            },
        )?;
        match kind {
            FlameKind::OnCpu => {
                a.oncpu_folded = Some(folded_name);
                a.oncpu_svg = Some(svg_name);
            }
            FlameKind::OffCpu => {
                a.offcpu_folded = Some(folded_name);
                a.offcpu_svg = Some(svg_name);
            }
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::strip_tracing_frames;

    #[test]
    fn raw_tracepoint_frames_are_stripped_from_the_innermost_end_only() {
        let names = |ip: u64| match ip {
            1 => Some("bpf_prog_0db7f7bb8e78647a_sched_raw_sched_switch"),
            2 => Some("bpf_trace_run4"),
            3 => Some("__bpf_trace_sched_switch"),
            4 => Some("__traceiter_sched_switch"),
            5 => Some("__schedule"),
            6 => Some("schedule"),
            7 => Some("bpf_prog_run_outer"),
            _ => None,
        };
        let mut k = vec![1, 2, 3, 4, 5, 6, 7];
        strip_tracing_frames(&mut k, names);
        assert_eq!(k, vec![5, 6, 7]);
        // A trace event's stack is left alone, and so is an unresolvable innermost frame.
        let mut k = vec![5, 6];
        strip_tracing_frames(&mut k, names);
        assert_eq!(k, vec![5, 6]);
        let mut k = vec![99, 1, 5];
        strip_tracing_frames(&mut k, names);
        assert_eq!(k, vec![99, 1, 5]);
    }
}
