//! Stacks for flame graphs: raw addresses from the shared stack map, symbolized (kernel from
//! kallsyms, user from `/proc/PID/maps` snapshots taken while recording) and folded.
//!
//! The families that take stacks (`oncpu`, `sched`, `locks`) read their keys; this module turns
//! keys into [`RawStack`]s and those into folded text.
use probe_common::StackKey;

use crate::{
    kernel::kallsyms::Kallsyms,
    probes::maps::{self as bpf_maps, Stacks},
};

pub mod bpf_frames;
pub mod flat;
pub mod folded;
pub mod maps;
pub mod stack;
pub mod symbolize;
pub mod wall;

use maps::MapsSnapshots;
use stack::SymStacks;
use symbolize::{RawStack, StackSymbolizer};

/// The profiles of one recording: folded text for the flame graphs, and the same stacks
/// structured (addresses, mappings, source lines) for pprof.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    /// `None` when the family was not recorded.
    pub oncpu: Option<String>,
    pub offcpu: Option<String>,
    /// The wall-clock view, when both oncpu and sched recorded.
    pub wall: Option<String>,
    /// The off-CPU profile's parts: time before the wakeup, and runnable time after it (or
    /// after a preemption). `offcpu` is their sum.
    pub offcpu_waiting: Option<String>,
    pub offcpu_runnable: Option<String>,
    /// On-CPU stacks weighted by samples; `None` when not recorded.
    pub oncpu_stacks: Option<SymStacks>,
    /// Off-CPU stacks weighted by blocked nanoseconds.
    pub offcpu_stacks: Option<SymStacks>,
    /// Lock-contention stacks weighted by wait nanoseconds.
    pub locks: Option<LockStacks>,
}

impl Profiles {
    /// Sets the on-CPU profile: its folded text and its stacks.
    pub fn set_oncpu(&mut self, stacks: SymStacks) {
        self.oncpu = Some(stacks.folded_text());
        self.oncpu_stacks = Some(stacks);
    }

    /// Sets the off-CPU profile: its folded text and its stacks.
    pub fn set_offcpu(&mut self, stacks: SymStacks) {
        self.offcpu = Some(stacks.folded_text());
        self.offcpu_stacks = Some(stacks);
    }
}

/// Lock-contention stacks (kernel, and user with `--call-graph dwarf`), one per waiting thread,
/// lock and stack, each weighted by its wait nanoseconds; `waits[i]` belongs to `stacks.stacks[i]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockStacks {
    pub stacks: SymStacks,
    pub waits: Vec<LockWait>,
}

/// What a lock-contention stack waited on, and how often.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LockWait {
    pub tid: u32,
    pub contentions: u64,
    /// The lock class (`locks_class`) and type (`mutex`, `spinlock`, ...).
    pub lock: String,
    pub lock_type: String,
}

/// Reads one stack key's addresses.
pub fn raw_stack(key: &StackKey, weight: u64, stacks: &mut Stacks) -> RawStack {
    RawStack {
        tgid: key.tgid,
        comm: bpf_maps::comm(key),
        kernel: stacks.kernel_ips(key).to_vec(),
        user: stacks.user_ips(key).to_vec(),
        user_ret: key.user_ret,
        weight,
        kernel_from_task: key.kernel_stack != 0,
    }
}

/// Symbolizes weighted stacks, structured.
pub fn symbolize(raw: &[RawStack], ksyms: &Kallsyms, maps: &MapsSnapshots) -> SymStacks {
    StackSymbolizer::new(ksyms, maps).symbolize_stacks(raw)
}

/// Symbolizes and folds weighted stacks.
pub fn fold(raw: &[RawStack], ksyms: &Kallsyms, maps: &MapsSnapshots) -> String {
    symbolize(raw, ksyms, maps).folded_text()
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
