//! `sched`: voluntary/involuntary switches, off-CPU time and stacks, run-queue delay.
use aya_ebpf::{
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::TracePointContext,
};
use probe_common::{
    sched::{OffcpuStart, SchedStats, OFFCPU_CAPACITY},
    Family, StackKey,
};

use crate::{
    count_lost, current_ids, hist_add, is_traced, offset, read_global, stack_id, OFFCPU_MIN_NS,
    OFF_SWITCH_NEXT_PID, OFF_SWITCH_PREV_STATE, OFF_WAKEUP_PID,
};

#[map]
static SCHED_STATS: PerCpuArray<SchedStats> = PerCpuArray::with_max_entries(1, 0);

/// Off-CPU stacks -> blocked ns.
#[map]
static SCHED_OFFCPU: PerCpuHashMap<StackKey, u64> =
    PerCpuHashMap::with_max_entries(OFFCPU_CAPACITY, 0);

/// Thread id -> when and where it left the CPU.
#[map]
static SCHED_SWITCHED_OUT: LruHashMap<u32, OffcpuStart> = LruHashMap::with_max_entries(16384, 0);

/// Thread id -> when it became runnable.
#[map]
static SCHED_RUNNABLE: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// prev_state bits below TASK_REPORT_MAX; zero means the task was still runnable (preempted).
const TASK_REPORT_MASK: i64 = 0xff;

#[inline(always)]
fn stats() -> Option<&'static mut SchedStats> {
    SCHED_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

#[tracepoint]
pub fn sched_sched_switch(ctx: TracePointContext) -> u32 {
    try_switch(&ctx).unwrap_or(1)
}

fn try_switch(ctx: &TracePointContext) -> Result<u32, i64> {
    let now = unsafe { bpf_ktime_get_ns() };
    // The tracepoint runs on the outgoing task.
    let (tgid, prev_tid) = current_ids();
    if prev_tid != 0 && is_traced(tgid) {
        let state: i64 =
            unsafe { ctx.read_at(offset(&OFF_SWITCH_PREV_STATE)) }.map_err(|e| e as i64)?;
        let preempted = state & TASK_REPORT_MASK == 0;
        if let Some(s) = stats() {
            if preempted {
                s.involuntary_switches += 1;
            } else {
                s.voluntary_switches += 1;
            }
        }
        if preempted && SCHED_RUNNABLE.insert(prev_tid, now, 0).is_err() {
            count_lost(Family::Sched);
        }
        let key = StackKey {
            tgid,
            kstack_id: stack_id(ctx, 0, Family::Sched),
            ustack_id: stack_id(ctx, BPF_F_USER_STACK as u64, Family::Sched),
            _reserved: 0,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
            user_ret: crate::user_stack_word(),
        };
        let out = OffcpuStart { ts_ns: now, key };
        if SCHED_SWITCHED_OUT.insert(prev_tid, out, 0).is_err() {
            count_lost(Family::Sched);
        }
    }

    let next: i32 = unsafe { ctx.read_at(offset(&OFF_SWITCH_NEXT_PID)) }.map_err(|e| e as i64)?;
    let next = next as u32;
    if next == 0 {
        return Ok(0);
    }
    if let Some(out) = unsafe { SCHED_SWITCHED_OUT.get(next) }.copied() {
        let _ = SCHED_SWITCHED_OUT.remove(next);
        let ns = now.saturating_sub(out.ts_ns);
        if let Some(s) = stats() {
            s.offcpu_ns += ns;
        }
        if ns >= read_global(&OFFCPU_MIN_NS) {
            add_offcpu(&out.key, ns);
        }
    }
    if let Some(t) = unsafe { SCHED_RUNNABLE.get(next) }.copied() {
        let _ = SCHED_RUNNABLE.remove(next);
        let ns = now.saturating_sub(t);
        if let Some(s) = stats() {
            s.runq_count += 1;
            s.runq_total_ns += ns;
            if ns > s.runq_max_ns {
                s.runq_max_ns = ns;
            }
            hist_add(&mut s.runq_delay_hist_log2_ns, ns);
        }
    }
    Ok(0)
}

#[inline(always)]
fn add_offcpu(key: &StackKey, ns: u64) {
    if let Some(v) = SCHED_OFFCPU.get_ptr_mut(key) {
        unsafe { *v += ns };
    } else if SCHED_OFFCPU.insert(key, ns, 0).is_err() {
        count_lost(Family::Sched);
    }
}

/// A sleeping traced thread (it has a switch-out record) became runnable.
#[tracepoint]
pub fn sched_sched_wakeup(ctx: TracePointContext) -> u32 {
    let Ok(pid) = (unsafe { ctx.read_at::<i32>(offset(&OFF_WAKEUP_PID)) }) else {
        return 1;
    };
    let pid = pid as u32;
    if unsafe { SCHED_SWITCHED_OUT.get(pid) }.is_none() {
        return 0;
    }
    if let Some(s) = stats() {
        s.wakeups += 1;
    }
    if SCHED_RUNNABLE
        .insert(pid, unsafe { bpf_ktime_get_ns() }, 0)
        .is_err()
    {
        count_lost(Family::Sched);
    }
    0
}

/// A traced task created a task: its first wait for a CPU is run-queue delay too.
#[tracepoint]
pub fn sched_sched_wakeup_new(ctx: TracePointContext) -> u32 {
    let (tgid, _) = current_ids();
    if !is_traced(tgid) {
        return 0;
    }
    let Ok(pid) = (unsafe { ctx.read_at::<i32>(offset(&OFF_WAKEUP_PID)) }) else {
        return 1;
    };
    if let Some(s) = stats() {
        s.wakeups += 1;
    }
    if SCHED_RUNNABLE
        .insert(pid as u32, unsafe { bpf_ktime_get_ns() }, 0)
        .is_err()
    {
        count_lost(Family::Sched);
    }
    0
}
