//! `locks`: kernel lock contention per (lock, kernel stack, flags, thread).
//!
//! Preferred: lock:contention_begin/end (5.19+). Fallback: kprobe/kretprobe on
//! `__mutex_lock_slowpath`, which is entered only when the mutex fast path failed; its time
//! includes optimistic spinning as well as sleeping, which the report says.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns},
    macros::{kprobe, kretprobe, map, tracepoint},
    maps::{HashMap, LruHashMap},
    programs::{tracing::StackIdContext, ProbeContext, RetProbeContext, TracePointContext},
};
use probe_common::{
    locks::{lock_flags, LockKey, LockStart, LockStartKey, LockStats, STATS_CAPACITY},
    Family,
};

use crate::{
    count_lost, current_ids, is_traced, offset, stack_id,
    unwind::{self, Regs, Slot},
    IN_FLIGHT_CAPACITY, OFF_LOCK_ADDR, OFF_LOCK_FLAGS,
};

#[map]
static LOCKS_STATS: HashMap<LockKey, LockStats> = HashMap::with_max_entries(STATS_CAPACITY, 0);

#[map]
static LOCKS_START: LruHashMap<LockStartKey, LockStart> =
    LruHashMap::with_max_entries(IN_FLIGHT_CAPACITY, 0);

#[inline(always)]
fn begin<C: StackIdContext, const DWARF: bool>(
    ctx: &C,
    lock_addr: u64,
    key_addr: u64,
    flags: u32,
) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return 0;
    }
    let kstack_id = stack_id(ctx, 0, Family::Locks);
    // The waiter is in the kernel: its user registers are the ones it entered with.
    let user_stack = if DWARF {
        unwind::user_stack(Regs::Task, tgid, Slot::Tracepoint)
    } else {
        0
    };
    let start = LockStart {
        // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        lock_addr,
        kstack_id,
        flags,
        user_stack,
    };
    let key = LockStartKey {
        lock_addr: key_addr,
        tid,
        _reserved: 0,
    };
    if LOCKS_START.insert(key, start, 0).is_err() {
        count_lost(Family::Locks);
    }
    0
}

#[inline(always)]
fn end(key_addr: u64) -> u32 {
    let (tgid, tid) = current_ids();
    let key = LockStartKey {
        lock_addr: key_addr,
        tid,
        _reserved: 0,
    };
    // SAFETY: copied at once; the entry is keyed by this thread, which alone inserts and
    // removes it. An LRU eviction on another CPU reusing the element could make the copy a
    // wrong sample, never an invalid read.
    let Some(start) = (unsafe { LOCKS_START.get(key) }).copied() else {
        return 0;
    };
    let _ = LOCKS_START.remove(key);
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start.ts_ns);
    let key = LockKey {
        lock_addr: start.lock_addr,
        kstack_id: start.kstack_id,
        flags: start.flags,
        tgid,
        tid,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        user_stack: start.user_stack,
    };
    if !add_wait(&key, ns) {
        count_lost(Family::Locks);
    }
    0
}

/// Adds one wait of `ns` to `key`'s entry (shared by every CPU, see `crate::add_shared`).
#[inline(always)]
fn add_wait(key: &LockKey, ns: u64) -> bool {
    let mut s = LOCKS_STATS.get_ptr_mut(key);
    if s.is_none() {
        let first = LockStats {
            count: 0,
            wait_ns: 0,
            max_ns: 0,
        };
        // BPF_NOEXIST: a CPU that loses the race to insert adds to the winner's entry.
        let _ = LOCKS_STATS.insert(key, first, BPF_NOEXIST as u64);
        s = LOCKS_STATS.get_ptr_mut(key);
    }
    let Some(s) = s else {
        return false;
    };
    // SAFETY: `s` points at a LockStats value of a hash map entry, valid for the whole program
    // run (entries are never deleted while recording); the u64 fields are 8-byte aligned.
    let (count, wait, max) = unsafe {
        (
            core::ptr::addr_of_mut!((*s).count),
            core::ptr::addr_of_mut!((*s).wait_ns),
            core::ptr::addr_of_mut!((*s).max_ns),
        )
    };
    crate::atomic_add(count, 1);
    crate::atomic_add(wait, ns);
    // Not atomic (no compare-and-swap on 5.10): two CPUs ending waits on one key at the same
    // instant can keep the smaller of their two maxima. Counts and totals stay exact.
    // SAFETY: as above; a torn read is impossible for an aligned u64.
    unsafe {
        if ns > core::ptr::read_volatile(max) {
            core::ptr::write_volatile(max, ns);
        }
    }
    true
}

#[tracepoint]
pub fn locks_contention_begin(ctx: TracePointContext) -> u32 {
    contention_begin::<true>(&ctx)
}

/// `locks_contention_begin` without the DWARF walker (see `sched_sched_switch_fp`).
#[tracepoint]
pub fn locks_contention_begin_fp(ctx: TracePointContext) -> u32 {
    contention_begin::<false>(&ctx)
}

#[inline(always)]
fn contention_begin<const DWARF: bool>(ctx: &TracePointContext) -> u32 {
    // SAFETY: read_at is bpf_probe_read_kernel at ctx + offset: it fails instead of faulting,
    // and any bits are a valid integer.
    let (Ok(addr), Ok(flags)) = (
        unsafe { ctx.read_at::<u64>(offset(&OFF_LOCK_ADDR)) },
        unsafe { ctx.read_at::<u32>(offset(&OFF_LOCK_FLAGS)) },
    ) else {
        return 1;
    };
    begin::<_, DWARF>(ctx, addr, addr, flags)
}

#[tracepoint]
pub fn locks_contention_end(ctx: TracePointContext) -> u32 {
    // SAFETY: as in locks_contention_begin.
    let Ok(addr) = (unsafe { ctx.read_at::<u64>(offset(&OFF_LOCK_ADDR)) }) else {
        return 1;
    };
    end(addr)
}

/// `__mutex_lock_slowpath(struct mutex *lock)`; keyed by thread only (the return has no args).
#[kprobe]
pub fn locks_mutex_slowpath_kprobe(ctx: ProbeContext) -> u32 {
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    begin::<_, true>(&ctx, addr, 0, lock_flags::MUTEX)
}

/// `locks_mutex_slowpath_kprobe` without the DWARF walker (see `sched_sched_switch_fp`).
#[kprobe]
pub fn locks_mutex_slowpath_kprobe_fp(ctx: ProbeContext) -> u32 {
    let addr: u64 = ctx.arg(0).unwrap_or(0);
    begin::<_, false>(&ctx, addr, 0, lock_flags::MUTEX)
}

#[kretprobe]
pub fn locks_mutex_slowpath_kretprobe(_ctx: RetProbeContext) -> u32 {
    end(0)
}
