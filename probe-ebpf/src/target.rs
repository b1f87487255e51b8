//! Keeping the target filter current, in the kernel: fork children of traced processes join it,
//! and with `--comm`, processes that exec or rename themselves to that name join (and those
//! traced only for their name leave when they exec another program).
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_comm, macros::tracepoint,
    programs::TracePointContext,
};
use probe_common::target_flags;

use crate::{
    current_ids, offset, process_selected, set_hint,
    syscalls::{targets_changed, thread_exec, thread_exit, SYSCALLS_START},
    FILTER_COMM_HI, FILTER_COMM_LO, FILTER_ENABLED, FILTER_THREADS, OFF_FORK_CHILD_PID,
    OFF_RENAME_NEWCOMM, OFF_RENAME_PID, TARGETS, TARGET_THREADS,
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
    let (tgid, tid) = current_ids();
    // Only process and thread selections are inherited: a cgroup's members are found by their
    // cgroup on every event, and a fork child stays in its parent's cgroup.
    // SAFETY: the value is read once and copied; a concurrent remove could let another entry
    // reuse the slot, which at worst gives the child wrong flags (COMM or not).
    let parent = unsafe { TARGETS.get(tgid) }.copied();
    // SAFETY: presence only.
    let thread = FILTER_THREADS.load() != 0 && unsafe { TARGET_THREADS.get(tid) }.is_some();
    if !(parent.is_some() && process_selected(tgid)) && !thread {
        return Ok(0);
    }
    // SAFETY: read_at is bpf_probe_read_kernel at ctx + offset: it fails instead of faulting,
    // and any bits are a valid i32.
    let child: i32 = unsafe { ctx.read_at(offset(&OFF_FORK_CHILD_PID)) }.map_err(|e| e as i64)?;
    let child = child as u32;
    if child != tgid {
        let flags = target_flags::CHILD | (parent.unwrap_or(0) & target_flags::COMM);
        // The hint first: a task that finds its hint set still checks TARGETS.
        set_hint(child);
        if TARGETS.insert(child, flags, 0).is_err() {
            crate::count_lost(probe_common::Family::Syscalls);
        }
        targets_changed();
    }
    Ok(0)
}

/// A thread exited: drop its per-thread syscall slot, and its thread-id entry in `TARGETS`
/// (no-ops for threads that have none).
#[tracepoint]
pub fn target_sched_process_exit(_ctx: TracePointContext) -> u32 {
    let (tgid, tid) = current_ids();
    thread_exit(tgid, tid);
    let _ = SYSCALLS_START.remove(tid);
    if FILTER_ENABLED.load() != 0 && tid != tgid {
        let _ = TARGETS.remove(tid);
    }
    0
}

/// The current task exec'd a program: its name is the program's now.
#[tracepoint]
pub fn target_sched_process_exec(_ctx: TracePointContext) -> u32 {
    // After exec the task leads its thread group, whichever thread called execve.
    let (tgid, tid) = current_ids();
    thread_exec(tgid, tid);
    crate::unwind::exec(tgid);
    if !comm_selected() {
        return 0;
    }
    named(tgid, &bpf_get_current_comm().unwrap_or([0; 16]));
    0
}

/// A task is renamed (prctl PR_SET_NAME, or a write to /proc/PID/comm). Only a process's main
/// thread renaming itself counts: the event comes before the new name is set, and TARGETS
/// selects whole processes.
#[tracepoint]
pub fn target_task_rename(ctx: TracePointContext) -> u32 {
    if !comm_selected() {
        return 0;
    }
    let (tgid, tid) = current_ids();
    // SAFETY: as in try_fork; any bits are a valid i32 or byte array.
    let (Ok(pid), Ok(comm)) = (
        unsafe { ctx.read_at::<i32>(offset(&OFF_RENAME_PID)) },
        unsafe { ctx.read_at::<[u8; 16]>(offset(&OFF_RENAME_NEWCOMM)) },
    ) else {
        return 1;
    };
    if pid as u32 == tid && tid == tgid {
        named(tgid, &comm);
    }
    0
}

#[inline(always)]
fn comm_selected() -> bool {
    FILTER_ENABLED.load() != 0 && (FILTER_COMM_LO.load() | FILTER_COMM_HI.load()) != 0
}

/// Process `tgid` now has the name `comm`: it joins the filter when the name is the selected
/// one, and leaves it when it was traced for its old name only.
#[inline(always)]
fn named(tgid: u32, comm: &[u8; 16]) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&comm[..8]);
    hi.copy_from_slice(&comm[8..]);
    if u64::from_le_bytes(lo) == FILTER_COMM_LO.load()
        && u64::from_le_bytes(hi) == FILTER_COMM_HI.load()
    {
        set_hint(tgid);
        // NOEXIST: a process the user named keeps its ROOT flag.
        if TARGETS
            .insert(tgid, target_flags::COMM, BPF_NOEXIST as u64)
            .is_ok()
        {
            targets_changed();
        }
        return;
    }
    // SAFETY: the value is copied at once; see try_fork for the race.
    if let Some(flags) = unsafe { TARGETS.get(tgid) }.copied() {
        if flags & target_flags::COMM != 0 && flags & target_flags::ROOT == 0 {
            let _ = TARGETS.remove(tgid);
            targets_changed();
        }
    }
}
