//! Following the target into fork children, in the kernel.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use probe_common::target_flags;

use crate::{
    current_ids, is_traced, offset, set_hint, syscalls::SYSCALLS_START, FILTER_ENABLED,
    OFF_FORK_CHILD_PID, TARGETS,
};

/// A traced task forked: trace the child too. Thread creation also lands here (the child id is
/// then a thread id); `target_sched_process_exit` removes those entries again.
#[tracepoint]
pub fn target_sched_process_fork(ctx: TracePointContext) -> u32 {
    try_fork(&ctx).unwrap_or(1)
}

fn try_fork(ctx: &TracePointContext) -> Result<u32, i64> {
    if FILTER_ENABLED.load() == 0 {
        return Ok(0);
    }
    let (tgid, _) = current_ids();
    if !is_traced(tgid) {
        return Ok(0);
    }
    // SAFETY: read_at is bpf_probe_read_kernel at ctx + offset: it fails instead of faulting,
    // and any bits are a valid i32.
    let child: i32 = unsafe { ctx.read_at(offset(&OFF_FORK_CHILD_PID)) }.map_err(|e| e as i64)?;
    let child = child as u32;
    if child != tgid {
        // The hint first: a task that finds its hint set still checks TARGETS.
        set_hint(child);
        if TARGETS.insert(child, target_flags::CHILD, 0).is_err() {
            crate::count_lost(probe_common::Family::Syscalls);
        }
    }
    Ok(0)
}

/// A thread exited: drop its per-thread syscall slot, and its thread-id entry in `TARGETS`
/// (no-ops for threads that have none).
#[tracepoint]
pub fn target_sched_process_exit(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    let _ = SYSCALLS_START.remove(tid);
    if FILTER_ENABLED.load() != 0 && tid != tgid {
        let _ = TARGETS.remove(tid);
    }
    0
}
