//! `sched`: voluntary/involuntary switches, off-CPU time and stacks, run-queue delay.
//!
//! Preferred: BPF raw tracepoints on sched_switch, sched_wakeup and sched_wakeup_new, which get
//! the tracepoint's arguments (task pointers) without building a trace-event record, and need
//! no tracefs. They read `task_struct` at offsets the loader takes from kernel BTF. Fallback:
//! the sched:* trace events, at offsets from their format files. Both entry points of each hook
//! share one body. Measured on Linux 6.18 (`kpath costs`): an untraced task's switch costs
//! ~0.1 µs less while kpath records another process; a traced switch costs the same (its two
//! stack walks dominate).
//!
//! Where the kernel loads BTF tracepoints (tp_btf), sched_switch attaches as one: its task
//! pointers are typed, so with an off-CPU threshold the kernel stack of a period is taken when
//! the thread is switched back in, only for periods that pass (`bpf_get_task_stack` of `next`),
//! instead of at every switch-out (the user stack still is: BPF takes one from the current task
//! only).
use aya_ebpf::{
    bindings::{task_struct, BPF_F_USER_STACK},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, raw_tracepoint, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{
        tracing::StackIdContext, BtfTracePointContext, RawTracePointContext, TracePointContext,
    },
    Global,
};
use probe_common::{
    sched::{OffcpuStart, SchedStats, OFFCPU_CAPACITY},
    stack_flags, Family, StackKey,
};

use crate::{
    count_lost, current_ids, hist_add, is_traced, offset, stack_id, IN_FLIGHT_CAPACITY,
    OFFCPU_MIN_NS, OFF_SWITCH_NEXT_PID, OFF_SWITCH_PREV_STATE, OFF_TASK_EXIT_STATE, OFF_TASK_PID,
    OFF_TASK_STATE, OFF_WAKEUP_PID, PER_PROCESS, SWITCH_PREV_STATE_ARG,
};

#[map]
static SCHED_STATS: PerCpuArray<SchedStats> = PerCpuArray::with_max_entries(1, 0);

/// Off-CPU stacks -> blocked ns.
#[map]
static SCHED_OFFCPU: HashMap<StackKey, u64> = HashMap::with_max_entries(OFFCPU_CAPACITY, 0);

/// Thread id -> when and where it left the CPU (ts 0: back on a CPU), and since when it waits
/// for a CPU (0: not runnable). Entries are updated in place, never removed by the switches: an
/// element is allocated once per thread, not twice per switch (LRU: threads that exit leave
/// theirs to eviction), and a switch in or a wakeup finds both clocks with one lookup.
#[map]
static SCHED_SWITCHED_OUT: LruHashMap<u32, OffcpuStart> =
    LruHashMap::with_max_entries(IN_FLIGHT_CAPACITY, 0);

/// prev_state bits below TASK_REPORT_MAX; zero means the task was still runnable (preempted).
const TASK_REPORT_MASK: i64 = 0xff;

#[inline(always)]
fn stats() -> Option<&'static mut SchedStats> {
    // SAFETY: `p` is this CPU's slot of a per-CPU array, valid while the program runs. Only the
    // sched programs use it; their hooks run under the run-queue lock with interrupts off, so
    // none nests on this CPU, and each caller drops the reference before taking another.
    SCHED_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The trace event's `prev_state` (`__trace_sched_switch_state`) is TASK_REPORT_MAX when
/// preempted, else the bit of fls((state | exit_state) & TASK_REPORT), with frozen and
/// rtlock-waiting tasks reported as uninterruptible. The raw entry computes the same test.
const TASK_REPORT: u32 = 0x7f;
/// TASK_RTLOCK_WAIT (5.15+) and TASK_FROZEN (6.1+); both bits are unused by older kernels.
const TASK_REPORTED_UNINTERRUPTIBLE: u32 = 0x1000 | 0x8000;

#[tracepoint]
pub fn sched_sched_switch(ctx: TracePointContext) -> u32 {
    try_switch_event::<true>(&ctx).unwrap_or(1)
}

/// `sched_sched_switch` without the DWARF walker, for kernels that cannot load it (see
/// `crate::unwind`: a program holding the walker's callback does not load before 5.13).
#[tracepoint]
pub fn sched_sched_switch_fp(ctx: TracePointContext) -> u32 {
    try_switch_event::<false>(&ctx).unwrap_or(1)
}

#[inline(always)]
fn try_switch_event<const DWARF: bool>(ctx: &TracePointContext) -> Result<u32, i64> {
    // SAFETY: read_at is bpf_probe_read_kernel at ctx + offset: it fails instead of faulting,
    // and any bits are a valid integer.
    let next: i32 = unsafe { ctx.read_at(offset(&OFF_SWITCH_NEXT_PID)) }.map_err(|e| e as i64)?;
    let preempted = || {
        // SAFETY: as above.
        let state: i64 =
            unsafe { ctx.read_at(offset(&OFF_SWITCH_PREV_STATE)) }.map_err(|e| e as i64)?;
        Ok(state & TASK_REPORT_MASK == 0)
    };
    switch::<_, DWARF>(ctx, preempted, next as u32, None)
}

/// raw_tp sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next
/// [, unsigned int prev_state]) (prev_state since 5.18).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_raw_sched_switch(ctx: RawTracePointContext) -> i32 {
    try_switch_raw::<true>(&ctx).unwrap_or(1) as i32
}

/// `sched_raw_sched_switch` without the DWARF walker (see `sched_sched_switch_fp`).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn sched_raw_sched_switch_fp(ctx: RawTracePointContext) -> i32 {
    try_switch_raw::<false>(&ctx).unwrap_or(1) as i32
}

#[inline(always)]
fn try_switch_raw<const DWARF: bool>(ctx: &RawTracePointContext) -> Result<u32, i64> {
    try_switch_args::<_, DWARF>(ctx, |n| ctx.arg(n), None)
}

/// tp_btf sched_switch: the raw tracepoint's arguments, typed by BTF.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_btf_sched_switch(ctx: BtfTracePointContext) -> i32 {
    try_switch_btf::<true>(&ctx).unwrap_or(1) as i32
}

/// `sched_btf_sched_switch` without the DWARF walker (see `sched_sched_switch_fp`).
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_btf_sched_switch_fp(ctx: BtfTracePointContext) -> i32 {
    try_switch_btf::<false>(&ctx).unwrap_or(1) as i32
}

#[inline(always)]
fn try_switch_btf<const DWARF: bool>(ctx: &BtfTracePointContext) -> Result<u32, i64> {
    let next: *mut task_struct = ctx.arg(2);
    try_switch_args::<_, DWARF>(ctx, |n| ctx.arg(n), Some(next))
}

/// sched_switch from its arguments (`arg(n)`: the nth, as a u64); `next_task`: the next task as
/// a BTF pointer, when the program has one (tp_btf).
#[inline(always)]
fn try_switch_args<C: StackIdContext, const DWARF: bool>(
    ctx: &C,
    arg: impl Fn(usize) -> u64,
    next_task: Option<*mut task_struct>,
) -> Result<u32, i64> {
    let next = task_pid(arg(2) as *const u8)?;
    let preempted = || {
        if arg(0) != 0 {
            return Ok(true);
        }
        let prev = arg(1) as *const u8;
        let state = if SWITCH_PREV_STATE_ARG.load() != 0 {
            arg(3) as u32
        } else {
            // Before 5.18 the trace event reads prev's state here too.
            task_u32(prev, &OFF_TASK_STATE)?
        };
        if state & (TASK_REPORT | TASK_REPORTED_UNINTERRUPTIBLE) != 0 {
            return Ok(false);
        }
        // Rare: runnable, or dead (TASK_DEAD is outside TASK_REPORT; exit_state is not).
        Ok(task_u32(prev, &OFF_TASK_EXIT_STATE)? & TASK_REPORT == 0)
    };
    switch::<_, DWARF>(ctx, preempted, next, next_task)
}

/// A u32 at the offset in `off` of a kernel `task_struct`.
#[inline(always)]
fn task_u32(task: *const u8, off: &Global<u32>) -> Result<u32, i64> {
    // SAFETY: bpf_probe_read_kernel fails instead of faulting on a bad address (wrapping_add
    // keeps the arithmetic defined for any offset); any bits are a valid u32.
    unsafe { bpf_probe_read_kernel(task.wrapping_add(offset(off)) as *const u32) }
        .map_err(i64::from)
}

#[inline(always)]
fn task_pid(task: *const u8) -> Result<u32, i64> {
    task_u32(task, &OFF_TASK_PID)
}

/// `StackKey::kstack_id` of a switch-out record whose kernel stack is taken at switch-in (never
/// charged: switch-in replaces it).
const KSTACK_AT_SWITCH_IN: i32 = i32::MIN;

/// One context switch from the current task to thread `next`; `preempted` (whether the
/// current task was still runnable) is asked only when the current task is traced. With
/// `next_task` (a BTF pointer) and an off-CPU threshold, kernel stacks wait for switch-in.
///
/// `next`'s part comes first: its branches then end before the stack walks, whose verification
/// (the DWARF walker's above all) would otherwise be repeated for every state they leave
/// (measured: 65k instructions verified for this program became 254k, and start-up 1 s longer,
/// when the switch-in's branches were after the walk).
#[inline(always)]
fn switch<C: StackIdContext, const DWARF: bool>(
    ctx: &C,
    preempted: impl FnOnce() -> Result<bool, i64>,
    next: u32,
    next_task: Option<*mut task_struct>,
) -> Result<u32, i64> {
    let min_ns = OFFCPU_MIN_NS.load();
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    if next != 0 {
        switch_in(next, next_task, now, min_ns);
    }
    // Periods shorter than the threshold are never charged to a stack: with a BTF pointer to
    // the task switched in, its kernel stack is taken then, and only for periods that pass.
    switch_out::<C, DWARF>(ctx, preempted, next_task.is_some() && min_ns != 0, now)
}

/// The current task leaves the CPU (the tracepoint runs on it).
#[inline(always)]
fn switch_out<C: StackIdContext, const DWARF: bool>(
    ctx: &C,
    preempted: impl FnOnce() -> Result<bool, i64>,
    defer: bool,
    now: u64,
) -> Result<u32, i64> {
    let (tgid, prev_tid) = current_ids();
    if prev_tid == 0 || !is_traced(tgid) {
        return Ok(0);
    }
    let preempted = preempted()?;
    if let Some(s) = stats() {
        if preempted {
            s.involuntary_switches += 1;
        } else {
            s.voluntary_switches += 1;
        }
    }
    if let Some(p) = crate::proc_stats(tgid) {
        p.switches += 1;
    }
    // Preempted: it waits for a CPU from now on. Without a branch, so that `preempted` is not
    // live across the walks below (two states to verify them with).
    let runnable_since = now & (preempted as u64).wrapping_neg();
    let kstack = if defer {
        KSTACK_AT_SWITCH_IN
    } else {
        stack_id(ctx, 0, Family::Sched)
    };
    let key = crate::unwind::stack_key::<DWARF>(tgid, kstack, || {
        stack_id(ctx, BPF_F_USER_STACK as u64, Family::Sched)
    });
    let out = OffcpuStart {
        ts_ns: now,
        key,
        runnable_since,
    };
    match SCHED_SWITCHED_OUT.get_ptr_mut(prev_tid) {
        // SAFETY: the entry of the task leaving this CPU: its other writers (its own
        // switch-in, its wakeups) cannot run now (this CPU's run queue is locked and the task
        // is on it); an LRU eviction reusing the element elsewhere at worst makes one wrong
        // sample.
        Some(p) => unsafe { *p = out },
        None => {
            if SCHED_SWITCHED_OUT.insert(prev_tid, out, 0).is_err() {
                count_lost(Family::Sched);
            }
        }
    }
    Ok(0)
}

/// Thread `next` gets the CPU: the end of its off-CPU period and of its wait for a CPU.
#[inline(always)]
fn switch_in(next: u32, next_task: Option<*mut task_struct>, now: u64, min_ns: u64) {
    // runnable_since 0: not runnable-marked. A plain u64, not an Option: LLVM may compare an
    // Option's payload before its tag, which the verifier refuses as a read of an unset
    // register.
    let (out, runnable_since): (Option<OffcpuStart>, u64) =
        match SCHED_SWITCHED_OUT.get_ptr_mut(next) {
            // SAFETY: the record is copied at once and marked back on a CPU and not runnable in
            // place. `next`'s record is written only by its own switch-out and wakeups, which
            // cannot run during this switch (it holds `next`'s run-queue lock); an LRU eviction
            // on another CPU reusing the element could make the copy a wrong sample, never an
            // invalid read.
            Some(p) => unsafe {
                let rec = *p;
                if rec.ts_ns != 0 || rec.runnable_since != 0 {
                    (*p).ts_ns = 0;
                    (*p).runnable_since = 0;
                }
                ((rec.ts_ns != 0).then_some(rec), rec.runnable_since)
            },
            None => (None, 0),
        };
    if let Some(out) = out {
        let ns = now.saturating_sub(out.ts_ns);
        if let Some(s) = stats() {
            s.offcpu_ns += ns;
        }
        // The breakdown's off-CPU time goes to the process that slept; `current` here is the
        // task leaving the CPU, so the entry must exist already (its switch-out created it).
        if PER_PROCESS.load() != 0 {
            if let Some(p) = crate::PROCS.get_ptr_mut(out.key.tgid) {
                // SAFETY: this CPU's slot of the entry, as in `crate::proc_stats`.
                unsafe { (*p).offcpu_ns += ns };
            }
        }
        if ns >= min_ns {
            let mut key = out.key;
            // Only a BTF tracepoint defers (the raw and trace-event programs compile this out).
            if let Some(t) = next_task {
                if key.kstack_id == KSTACK_AT_SWITCH_IN {
                    key.kstack_id = -1;
                    key.kernel_stack = crate::unwind::task_kernel_stack(t);
                    if key.kernel_stack == 0 {
                        crate::count_lost_at(probe_common::lost_stacks_index(Family::Sched));
                    }
                }
            }
            // Blocked until the wakeup (none: preempted, or woken before it was traced), then
            // runnable until now: two keys, the second flagged, so the wall-clock view can
            // show run-queue delay apart (the off-CPU graph merges them again).
            let ready = if runnable_since > out.ts_ns {
                runnable_since.min(now)
            } else {
                out.ts_ns
            };
            if ready > out.ts_ns {
                add_offcpu(&key, ready - out.ts_ns);
            }
            if now > ready {
                key.flags = stack_flags::RUNNABLE;
                add_offcpu(&key, now - ready);
            }
        }
    }
    if runnable_since != 0 {
        let ns = now.saturating_sub(runnable_since);
        if let Some(s) = stats() {
            s.runq_count += 1;
            s.runq_total_ns += ns;
            if ns > s.runq_max_ns {
                s.runq_max_ns = ns;
            }
            hist_add(&mut s.runq_delay_hist_log2_ns, ns);
        }
    }
}

#[inline(always)]
fn add_offcpu(key: &StackKey, ns: u64) {
    if !crate::add_shared(&SCHED_OFFCPU, key, ns) {
        count_lost(Family::Sched);
    }
}

/// A sleeping traced thread (it has a switch-out record) became runnable.
#[tracepoint]
pub fn sched_sched_wakeup(ctx: TracePointContext) -> u32 {
    // SAFETY: as in try_switch_event.
    match unsafe { ctx.read_at::<i32>(offset(&OFF_WAKEUP_PID)) } {
        Ok(pid) => wakeup(pid as u32),
        Err(_) => 1,
    }
}

/// raw_tp sched_wakeup(struct task_struct *p).
#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn sched_raw_sched_wakeup(ctx: RawTracePointContext) -> i32 {
    match task_pid(ctx.arg(0)) {
        Ok(pid) => wakeup(pid) as i32,
        Err(_) => 1,
    }
}

#[inline(always)]
fn wakeup(pid: u32) -> u32 {
    let Some(p) = SCHED_SWITCHED_OUT.get_ptr_mut(pid) else {
        return 0;
    };
    // SAFETY: `pid`'s record; its writers (its switches, its wakeups) hold its run-queue lock,
    // which the wakeup tracepoint runs under too.
    unsafe {
        if (*p).ts_ns == 0 {
            return 0;
        }
        (*p).runnable_since = mark_runnable();
    }
    0
}

/// Counts a wakeup; the run-queue clock's start.
#[inline(always)]
fn mark_runnable() -> u64 {
    if let Some(s) = stats() {
        s.wakeups += 1;
    }
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    unsafe { bpf_ktime_get_ns() }
}

/// A traced task created a task: its first wait for a CPU is run-queue delay too.
#[tracepoint]
pub fn sched_sched_wakeup_new(ctx: TracePointContext) -> u32 {
    wakeup_new(|| {
        // SAFETY: as in try_switch_event.
        unsafe { ctx.read_at::<i32>(offset(&OFF_WAKEUP_PID)) }
            .map(|p| p as u32)
            .map_err(|e| e as i64)
    })
}

/// raw_tp sched_wakeup_new(struct task_struct *p).
#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn sched_raw_sched_wakeup_new(ctx: RawTracePointContext) -> i32 {
    wakeup_new(|| task_pid(ctx.arg(0))) as i32
}

/// `pid` is read only when the current task is traced.
#[inline(always)]
fn wakeup_new(pid: impl FnOnce() -> Result<u32, i64>) -> u32 {
    let (tgid, _) = current_ids();
    if !is_traced(tgid) {
        return 0;
    }
    let Ok(pid) = pid() else {
        return 1;
    };
    let since = mark_runnable();
    match SCHED_SWITCHED_OUT.get_ptr_mut(pid) {
        // SAFETY: the new task's record (a reused id's), written only under its run-queue lock.
        Some(p) => unsafe { (*p).runnable_since = since },
        None => {
            // Never switched out: no period, only the wait for its first CPU.
            let rec = OffcpuStart {
                ts_ns: 0,
                // SAFETY: StackKey is integers only; all zero is a valid (unused) key.
                key: unsafe { core::mem::zeroed() },
                runnable_since: since,
            };
            if SCHED_SWITCHED_OUT.insert(pid, rec, 0).is_err() {
                count_lost(Family::Sched);
            }
        }
    }
    0
}
