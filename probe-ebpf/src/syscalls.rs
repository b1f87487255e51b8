//! `syscalls`: count, errors and latency per syscall number.
//!
//! Preferred: raw_syscalls:sys_enter/sys_exit (two programs for all syscalls). Fallback: the same
//! bodies attached to every syscalls:sys_enter_*/sys_exit_* tracepoint, whose number field is an
//! `int` rather than a `long`.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use probe_common::{
    syscalls::{SyscallStart, SyscallStats, MAX_SYSCALLS},
    Family,
};

use crate::{count_lost, current_ids, hist_add, is_traced};

#[map]
static SYSCALLS_STATS: PerCpuArray<SyscallStats> = PerCpuArray::with_max_entries(MAX_SYSCALLS, 0);

/// LRU: a thread that never returns (exit_group, a killed task) must not leak its entry.
#[map]
static SYSCALLS_START: LruHashMap<u32, SyscallStart> = LruHashMap::with_max_entries(16384, 0);

// raw_syscalls:sys_enter: long id @8; sys_exit: long id @8, long ret @16.
// syscalls:sys_enter_*: int __syscall_nr @8; syscalls:sys_exit_*: int __syscall_nr @8, long ret @16.
const NR_OFFSET: usize = 8;
const RET_OFFSET: usize = 16;

#[tracepoint]
pub fn syscalls_sys_enter(ctx: TracePointContext) -> u32 {
    let nr = unsafe { ctx.read_at::<i64>(NR_OFFSET) }.unwrap_or(-1);
    enter(nr)
}

#[tracepoint]
pub fn syscalls_sys_exit(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[tracepoint]
pub fn syscalls_sys_enter_each(ctx: TracePointContext) -> u32 {
    let nr = unsafe { ctx.read_at::<i32>(NR_OFFSET) }
        .map(|n| n as i64)
        .unwrap_or(-1);
    enter(nr)
}

#[tracepoint]
pub fn syscalls_sys_exit_each(ctx: TracePointContext) -> u32 {
    exit(&ctx)
}

#[inline(always)]
fn enter(nr: i64) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return 0;
    }
    if nr < 0 || nr >= MAX_SYSCALLS as i64 {
        count_lost(Family::Syscalls);
        return 0;
    }
    let start = SyscallStart {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        nr: nr as u64,
    };
    if SYSCALLS_START.insert(&tid, &start, 0).is_err() {
        count_lost(Family::Syscalls);
    }
    0
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> u32 {
    let (_, tid) = current_ids();
    // Only threads whose entry we saw have a start: that lookup is the target filter here.
    let Some(start) = (unsafe { SYSCALLS_START.get(&tid) }).copied() else {
        return 0;
    };
    let _ = SYSCALLS_START.remove(&tid);
    let now = unsafe { bpf_ktime_get_ns() };
    let ns = now.saturating_sub(start.ts_ns);
    let ret = unsafe { ctx.read_at::<i64>(RET_OFFSET) }.unwrap_or(0);
    let Some(stats) = SYSCALLS_STATS.get_ptr_mut(start.nr as u32) else {
        count_lost(Family::Syscalls);
        return 0;
    };
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
    0
}
