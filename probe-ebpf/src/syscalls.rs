//! `syscalls`: count, errors and latency per syscall number.
//!
//! Preferred: BPF raw tracepoints on sys_enter/sys_exit, which get the tracepoint's arguments
//! directly (no trace-event record is built: the cheapest hook, and no tracefs needed). Then the
//! raw_syscalls:sys_enter/sys_exit trace events. Last, the same bodies attached to every
//! syscalls:sys_enter_*/sys_exit_* event, whose number field is an `int` rather than a `long`.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use probe_common::{
    syscalls::{SyscallStart, SyscallStats, MAX_SYSCALLS},
    Family,
};

use crate::{
    atomic_add, count_lost, current_ids, hist_add, is_traced, maybe_traced, FILTER_CGROUP_ID,
    FILTER_ENABLED, IN_FLIGHT_CAPACITY,
};

#[map]
static SYSCALLS_STATS: PerCpuArray<SyscallStats> = PerCpuArray::with_max_entries(MAX_SYSCALLS, 0);

/// Starts of syscalls that were in flight when their thread left the CPU (moved here from the
/// CPU's slot by `syscalls_*sched_switch`), updated in place (ts 0 = none in flight); entries of
/// exited threads are removed by `target_sched_process_exit`.
#[map]
pub(crate) static SYSCALLS_START: HashMap<u32, SyscallStart> =
    HashMap::with_max_entries(IN_FLIGHT_CAPACITY, 0);

/// This CPU's last syscall-making thread: whether it is traced (a cache of the target filter,
/// valid while `TARGETS_GEN` is unchanged) and the start of its syscall in flight. A syscall
/// that returns on the CPU it entered on without a switch in between (nearly all of them) costs
/// no hash lookup: the slot is one inlined per-CPU array load. A thread that leaves the CPU in a
/// syscall takes its start along into `SYSCALLS_START` (see `spill`).
///
/// The slot also knows who is running: from the first syscall after a switch until the next
/// switch, the current thread is the slot's, so the hooks skip bpf_get_current_pid_tgid (a
/// helper call, not inlined: about a quarter of the hooks' cost per enter+exit pair). That
/// holds only once this CPU's switch hook runs (`armed`): attached after the syscall hooks,
/// or not attached at all, it could not say that the thread changed.
#[map]
static SYSCALLS_CPU: PerCpuArray<CpuSlot> = PerCpuArray::with_max_entries(1, 0);

/// Bumped whenever the kernel side changes `TARGETS` (fork of a traced task, --comm joins and
/// leaves): every CPU's cached verdict is then stale.
#[map]
pub(crate) static TARGETS_GEN: Array<u64> = Array::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct CpuSlot {
    tgid: u32,
    tid: u32,
    /// `TARGETS_GEN` when `traced` was decided.
    gen: u64,
    /// 1: the thread is traced; 0: not; meaningful only for `tgid`/`tid` at `gen`.
    traced: u64,
    /// Start of the syscall in flight; 0: none.
    ts_ns: u64,
    nr: u64,
    /// The thread running on this CPU when `current` is 1 (set by its first syscall after a
    /// switch; `current` is cleared by every switch and by the thread's exit).
    cur_tgid: u32,
    cur_tid: u32,
    current: u32,
    /// 1: this CPU's switch hook has run, so `current` is cleared on every switch.
    armed: u32,
}

/// The current generation of the target filter.
#[inline(always)]
fn targets_gen() -> u64 {
    TARGETS_GEN.get(0).copied().unwrap_or(0)
}

/// Marks every CPU's cached verdict stale (after a change to `TARGETS`).
#[inline(always)]
pub(crate) fn targets_changed() {
    if let Some(p) = TARGETS_GEN.get_ptr_mut(0) {
        atomic_add(p, 1);
    }
}

#[inline(always)]
fn cpu_slot() -> Option<&'static mut CpuSlot> {
    // SAFETY: this CPU's slot of a per-CPU array, valid while the program runs. Its users (the
    // syscall hooks, sched_switch, the exit hook) run in task context with preemption disabled
    // and never from an interrupt, so none nests on this CPU: the reference is unique.
    SYSCALLS_CPU.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

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

/// (tgid, tid) of the current thread: from the slot when it knows them since the last switch,
/// else from the helper (then kept in the slot, once its switch hook runs, until the next
/// switch).
#[inline(always)]
fn running(c: &mut CpuSlot) -> (u32, u32) {
    if c.current != 0 {
        return (c.cur_tgid, c.cur_tid);
    }
    let (tgid, tid) = current_ids();
    c.cur_tgid = tgid;
    c.cur_tid = tid;
    c.current = c.armed;
    (tgid, tid)
}

#[inline(always)]
fn enter(nr: i64) -> u32 {
    let Some(c) = cpu_slot() else {
        return 0;
    };
    let (tgid, tid) = running(c);
    if nr < 0 || nr >= MAX_SYSCALLS as i64 || !maybe_traced(tgid) {
        return 0;
    }
    // System-wide the filter is two compares; a cgroup's members change without kpath seeing
    // it: neither is cached. Otherwise the verdict is kept for this CPU's last thread.
    let gen = targets_gen();
    let cached = FILTER_ENABLED.load() != 0 && FILTER_CGROUP_ID.load() == 0;
    if !(cached && c.tid == tid && c.tgid == tgid && c.gen == gen) {
        c.tgid = tgid;
        c.tid = tid;
        c.gen = gen;
        c.traced = is_traced(tgid) as u64;
        c.ts_ns = 0;
    }
    if c.traced == 0 {
        return 0;
    }
    c.nr = nr as u64;
    // The clock is read only once the thread is known to be traced: every other task on the
    // machine passes through here too.
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    c.ts_ns = unsafe { bpf_ktime_get_ns() };
    0
}

/// The start of the current thread's syscall in flight, taken (its slot marked empty): from
/// this CPU's slot, or from `SYSCALLS_START` when the thread left the CPU since.
#[inline(always)]
fn take_start(c: &mut CpuSlot, tgid: u32, tid: u32) -> Option<SyscallStart> {
    if c.tid == tid && c.tgid == tgid {
        if c.traced == 0 {
            // Its entry found it untraced: no start anywhere.
            return None;
        }
        if c.ts_ns != 0 {
            let start = SyscallStart {
                ts_ns: c.ts_ns,
                nr: c.nr,
            };
            c.ts_ns = 0;
            return Some(start);
        }
    }
    let slot = SYSCALLS_START.get_ptr_mut(tid)?;
    // SAFETY: `slot` is this thread's entry, valid while the program runs; only programs
    // running on this thread (its syscalls, its switches, its exit) touch it, one at a time.
    let start = unsafe { *slot };
    if start.ts_ns == 0 {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*slot).ts_ns = 0 };
    Some(start)
}

/// The current thread leaves the CPU: a syscall it has in flight in this CPU's slot moves to
/// `SYSCALLS_START` (it may return on another CPU, and another thread takes the slot here).
#[inline(always)]
fn spill() -> u32 {
    let Some(c) = cpu_slot() else {
        return 0;
    };
    c.armed = 1;
    let knew = c.current != 0;
    c.current = 0;
    if c.ts_ns == 0 {
        return 0;
    }
    let (tgid, tid) = if knew {
        (c.cur_tgid, c.cur_tid)
    } else {
        current_ids()
    };
    if c.tid != tid || c.tgid != tgid {
        return 0;
    }
    let start = SyscallStart {
        ts_ns: c.ts_ns,
        nr: c.nr,
    };
    c.ts_ns = 0;
    if SYSCALLS_START.insert(tid, start, 0).is_err() {
        count_lost(Family::Syscalls);
    }
    0
}

/// raw_tp sched_switch: runs on the task leaving the CPU.
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn syscalls_raw_sched_switch(_ctx: RawTracePointContext) -> i32 {
    spill() as i32
}

/// sched:sched_switch, for the trace-event methods.
#[tracepoint]
pub fn syscalls_sched_switch(_ctx: TracePointContext) -> u32 {
    spill()
}

/// The current thread is exiting: a syscall it never returns from (exit, exit_group) must not
/// be moved to `SYSCALLS_START` by its last switch, and its cached verdict must not outlive it
/// (its ids may be reused).
#[inline(always)]
pub(crate) fn thread_exit(tgid: u32, tid: u32) {
    if let Some(c) = cpu_slot() {
        c.current = 0;
        if c.tid == tid && c.tgid == tgid {
            c.tid = 0;
            c.tgid = 0;
            c.ts_ns = 0;
        }
    }
}

/// The current thread exec'd and is now (`tgid`, `tid`): a thread other than the leader takes
/// the leader's id in exec, without a switch. The slot follows it, its execve in flight too.
#[inline(always)]
pub(crate) fn thread_exec(tgid: u32, tid: u32) {
    if let Some(c) = cpu_slot() {
        if c.current == 0 {
            return;
        }
        if c.tid == c.cur_tid && c.tgid == c.cur_tgid {
            c.tgid = tgid;
            c.tid = tid;
        }
        c.cur_tgid = tgid;
        c.cur_tid = tid;
    }
}

#[inline(always)]
fn exit(ret: i64) -> u32 {
    let Some(c) = cpu_slot() else {
        return 0;
    };
    let (tgid, tid) = running(c);
    if !maybe_traced(tgid) {
        return 0;
    }
    // Only threads whose entry we saw have a start: that is the target filter here.
    let Some(start) = take_start(c, tgid, tid) else {
        return 0;
    };
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
