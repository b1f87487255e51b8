//! `syscalls`: count, errors and latency per syscall number.
//!
//! Preferred: BPF raw tracepoints on sys_enter/sys_exit, which get the tracepoint's arguments
//! directly (no trace-event record is built: the cheapest hook, and no tracefs needed). Then the
//! raw_syscalls:sys_enter/sys_exit trace events. Last, the same bodies attached to every
//! syscalls:sys_enter_*/sys_exit_* event, whose number field is an `int` rather than a `long`.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use probe_common::{
    syscalls::{SyscallStart, SyscallStats, MAX_SYSCALLS},
    Family,
};

use crate::{count_lost, current_ids, hist_add, is_traced, maybe_traced, IN_FLIGHT_CAPACITY};

#[map]
static SYSCALLS_STATS: PerCpuArray<SyscallStats> = PerCpuArray::with_max_entries(MAX_SYSCALLS, 0);

/// Per-thread start, updated in place (ts 0 = no syscall in flight); entries of exited threads
/// are removed by `target_sched_process_exit`.
#[map]
pub(crate) static SYSCALLS_START: HashMap<u32, SyscallStart> =
    HashMap::with_max_entries(IN_FLIGHT_CAPACITY, 0);

// raw_syscalls:sys_enter: long id @8; sys_exit: long id @8, long ret @16.
// syscalls:sys_enter_*: int __syscall_nr @8; syscalls:sys_exit_*: int __syscall_nr @8, long ret @16.
const NR_OFFSET: usize = 8;
const RET_OFFSET: usize = 16;

/// raw_tp sys_enter(struct pt_regs *regs, long id).
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn syscalls_raw_sys_enter(ctx: RawTracePointContext) -> i32 {
    enter(ctx.arg::<i64>(1)) as i32
}

/// raw_tp sys_exit(struct pt_regs *regs, long ret).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn syscalls_raw_sys_exit(ctx: RawTracePointContext) -> i32 {
    exit(ctx.arg::<i64>(1)) as i32
}

#[tracepoint]
pub fn syscalls_sys_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: read_at is bpf_probe_read_kernel at ctx + offset, which fails instead of
    // faulting; any bits are a valid integer. The same holds for every read_at below.
    let nr = unsafe { ctx.read_at::<i64>(NR_OFFSET) }.unwrap_or(-1);
    enter(nr)
}

#[tracepoint]
pub fn syscalls_sys_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: as in syscalls_sys_enter.
    exit(unsafe { ctx.read_at::<i64>(RET_OFFSET) }.unwrap_or(0))
}

#[tracepoint]
pub fn syscalls_sys_enter_each(ctx: TracePointContext) -> u32 {
    // SAFETY: as in syscalls_sys_enter.
    let nr = unsafe { ctx.read_at::<i32>(NR_OFFSET) }
        .map(|n| n as i64)
        .unwrap_or(-1);
    enter(nr)
}

#[tracepoint]
pub fn syscalls_sys_exit_each(ctx: TracePointContext) -> u32 {
    // SAFETY: as in syscalls_sys_enter.
    exit(unsafe { ctx.read_at::<i64>(RET_OFFSET) }.unwrap_or(0))
}

#[inline(always)]
fn enter(nr: i64) -> u32 {
    let (tgid, tid) = current_ids();
    if nr < 0 || nr >= MAX_SYSCALLS as i64 || !maybe_traced(tgid) {
        return 0;
    }
    // A slot exists only for threads found traced before: one lookup on the hot path. The
    // clock is read only once the thread is known to be traced: every other task on the machine
    // passes through here too.
    if let Some(slot) = SYSCALLS_START.get_ptr_mut(tid) {
        // SAFETY: `slot` is this thread's entry, valid while the program runs; only programs
        // running on this thread (its syscalls, its exit) touch it, one at a time.
        // bpf_ktime_get_ns takes no arguments and cannot fail.
        unsafe {
            *slot = SyscallStart {
                ts_ns: bpf_ktime_get_ns(),
                nr: nr as u64,
            }
        };
        return 0;
    }
    if !is_traced(tgid) {
        return 0;
    }
    let start = SyscallStart {
        // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        nr: nr as u64,
    };
    if SYSCALLS_START.insert(tid, start, 0).is_err() {
        count_lost(Family::Syscalls);
    }
    0
}

#[inline(always)]
fn exit(ret: i64) -> u32 {
    let (tgid, tid) = current_ids();
    if !maybe_traced(tgid) {
        return 0;
    }
    // Only threads whose entry we saw have a start: that lookup is the target filter here.
    let Some(slot) = SYSCALLS_START.get_ptr_mut(tid) else {
        return 0;
    };
    // SAFETY: `slot` is this thread's entry (see `enter`).
    let start = unsafe { *slot };
    if start.ts_ns == 0 {
        return 0;
    }
    // SAFETY: as above.
    unsafe { (*slot).ts_ns = 0 };
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let now = unsafe { bpf_ktime_get_ns() };
    let ns = now.saturating_sub(start.ts_ns);
    let Some(stats) = SYSCALLS_STATS.get_ptr_mut(start.nr as u32) else {
        count_lost(Family::Syscalls);
        return 0;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid while the program runs. Only the
    // syscalls programs use the map; they run with preemption disabled and never from an
    // interrupt, so none nests on this CPU and this reference is the only one.
    let stats = unsafe { &mut *stats };
    stats.count += 1;
    if (-4095..0).contains(&ret) {
        stats.errors += 1;
    }
    stats.total_ns += ns;
    if ns > stats.max_ns {
        stats.max_ns = ns;
    }
    hist_add(&mut stats.hist_log2_ns, ns);
    crate::by_comm::count(start.nr, ret);
    if let Some(p) = crate::proc_stats(tgid) {
        p.syscalls += 1;
        p.syscall_ns += ns;
        if (-4095..0).contains(&ret) {
            p.syscall_errors += 1;
        }
    }
    0
}
