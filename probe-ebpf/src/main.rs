//! kpath's kernel side. Every program aggregates into maps (no per-event output), never panics,
//! and counts what it drops in `LOST`. Programs are named `<family>_<hook>[_<variant>]`.
#![no_std]
#![no_main]
// One intrinsic: atomic adds to maps shared by every CPU (see `atomic_add`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_NOEXIST},
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::tracing::StackIdContext,
    Global,
};
use probe_common::{
    hint_slot, offsets, Family, LOST_ENTRIES, STACKS_CAPACITY, TARGETS_CAPACITY, TARGET_HINTS_SIZE,
};

mod by_comm;
mod kpaths;
mod locks;
mod oncpu;
mod sched;
mod syscalls;
mod target;
mod unwind;

// Run-time settings: `Global`s in .rodata, set by the loader with `EbpfLoader::override_global`
// under the names in probe_common (GLOBAL_*, offsets::ALL). `Global::load` is a volatile read,
// so the compiler keeps the load instead of folding in the default; aya freezes the .rodata map
// before loading the programs, so the verifier sees the loaded value as a constant and prunes
// the branches it decides.

/// 1: trace only tgids in `TARGETS`; 0: trace every task but kpath itself.
#[no_mangle]
static FILTER_ENABLED: Global<u32> = Global::new(0);
/// kpath's own tgid, excluded in system-wide mode.
#[no_mangle]
static SELF_TGID: Global<u32> = Global::new(0);
/// 1: threads in `TARGET_THREADS` are traced too (`-t`).
#[no_mangle]
static FILTER_THREADS: Global<u32> = Global::new(0);
/// The `--comm` name (`probe_common::targets::comm_words`); both 0: no name selected.
#[no_mangle]
static FILTER_COMM_LO: Global<u64> = Global::new(0);
#[no_mangle]
static FILTER_COMM_HI: Global<u64> = Global::new(0);
/// The `--cgroup` v2 id (0: none) and its level: tasks whose ancestor at that level is that
/// cgroup are traced.
#[no_mangle]
static FILTER_CGROUP_ID: Global<u64> = Global::new(0);
#[no_mangle]
static FILTER_CGROUP_LEVEL: Global<u32> = Global::new(0);
/// 1: count syscalls and switches per process in `PROCS`.
#[no_mangle]
static PER_PROCESS: Global<u32> = Global::new(0);
/// Off-CPU periods shorter than this are counted in totals but not charged to a stack.
#[no_mangle]
static OFFCPU_MIN_NS: Global<u64> = Global::new(0);

// Trace-event field offsets, patched at load from the kernel's format files.
#[no_mangle]
static OFF_FORK_CHILD_PID: Global<u32> = Global::new(offsets::FORK_CHILD_PID);
#[no_mangle]
static OFF_SWITCH_PREV_STATE: Global<u32> = Global::new(offsets::SWITCH_PREV_STATE);
#[no_mangle]
static OFF_SWITCH_NEXT_PID: Global<u32> = Global::new(offsets::SWITCH_NEXT_PID);
#[no_mangle]
static OFF_WAKEUP_PID: Global<u32> = Global::new(offsets::WAKEUP_PID);
#[no_mangle]
static OFF_LOCK_ADDR: Global<u32> = Global::new(offsets::LOCK_ADDR);
#[no_mangle]
static OFF_LOCK_FLAGS: Global<u32> = Global::new(offsets::LOCK_FLAGS);
#[no_mangle]
static OFF_RENAME_PID: Global<u32> = Global::new(offsets::RENAME_PID);
#[no_mangle]
static OFF_RENAME_NEWCOMM: Global<u32> = Global::new(offsets::RENAME_NEWCOMM);

// task_struct offsets from kernel BTF (cli's `SchedBtf`) for the sched raw tracepoints;
// these defaults are never used: the loader picks those programs only when BTF gave the offsets.
#[no_mangle]
static OFF_TASK_PID: Global<u32> = Global::new(0);
#[no_mangle]
static OFF_TASK_STATE: Global<u32> = Global::new(0);
#[no_mangle]
static OFF_TASK_EXIT_STATE: Global<u32> = Global::new(0);
/// 1: sched_switch's fourth raw argument is prev_state (5.18+); 0: read prev's state field.
/// With 0 the read of argument 3 sits in a branch the verifier proves dead, so attaching to a
/// three-argument tracepoint passes its context-size check.
#[no_mangle]
static SWITCH_PREV_STATE_ARG: Global<u32> = Global::new(0);

/// 1 when the kernel has bpf_get_current_task_btf and bpf_task_pt_regs (5.15+). The loader
/// sets it from kallsyms; with 0 the calls below sit in a branch the verifier proves dead (the
/// global lives in frozen .rodata), so older kernels load the same programs.
#[no_mangle]
static USER_RET_ENABLED: Global<u32> = Global::new(0);

/// Reads an offset global.
#[inline(always)]
fn offset(g: &Global<u32>) -> usize {
    g.load() as usize
}

/// Capacity of the per-thread in-flight maps (syscall, kpath, lock and switch-out starts).
const IN_FLIGHT_CAPACITY: u32 = 16384;

/// Traced thread-group ids (and briefly, thread ids of traced processes: see `target`).
#[map]
static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(TARGETS_CAPACITY, 0);

/// Traced thread ids (`-t`), see `probe_common::targets`.
#[map]
static TARGET_THREADS: HashMap<u32, u32> =
    HashMap::with_max_entries(probe_common::targets::THREADS_CAPACITY, 0);

/// Per-process totals (see `probe_common::targets::ProcStats`). Per-CPU, so the hot paths add
/// without atomics; not preallocated, so creating the map costs nothing at start-up (an entry
/// is allocated when a process first shows up).
#[map]
static PROCS: PerCpuHashMap<u32, probe_common::targets::ProcStats> =
    PerCpuHashMap::with_max_entries(probe_common::targets::PROCS_CAPACITY, BPF_F_NO_PREALLOC);

/// Set slots for traced ids (see `probe_common::MAP_TARGET_HINTS`).
#[map]
static TARGET_HINTS: Array<u32> = Array::with_max_entries(TARGET_HINTS_SIZE, 0);

/// Lost events, then lost stacks, per family (see `probe_common::lost_stacks_index`).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_ENTRIES, 0);

/// Kernel and user stacks of on-CPU samples, off-CPU switches and lock contention.
#[map]
static STACKS: StackTrace = StackTrace::with_max_entries(STACKS_CAPACITY, 0);

/// False when the current task (of thread group `tgid`) is certainly not traced: with only
/// process and thread selectors, its hint slot is zero (an array load the verifier inlines).
/// True means "look closer" with [`is_traced`].
#[inline(always)]
fn maybe_traced(tgid: u32) -> bool {
    // A cgroup's members have no hints: tasks join it without kpath seeing them.
    FILTER_ENABLED.load() == 0 || FILTER_CGROUP_ID.load() != 0 || hint_set(tgid)
}

/// Whether `id`'s hint slot is set (a slot that cannot be read counts as set).
#[inline(always)]
fn hint_set(id: u32) -> bool {
    TARGET_HINTS.get(hint_slot(id)).is_none_or(|v| *v != 0)
}

/// Marks `id` in the hint array (done for every id put in `TARGETS` or `TARGET_THREADS`).
#[inline(always)]
fn set_hint(id: u32) {
    if let Some(p) = TARGET_HINTS.get_ptr_mut(hint_slot(id)) {
        // SAFETY: `p` points into TARGET_HINTS' value area, valid while the program runs; other
        // CPUs may store to the same slot at once, but only the value 1.
        unsafe { *p = 1 };
    }
}

/// Whether the process `tgid` is in `TARGETS` (selected by pid, command or name, or forked by
/// such a process).
#[inline(always)]
fn process_selected(tgid: u32) -> bool {
    // SAFETY: only the entry's presence is tested; its value, which a concurrent remove could
    // let another entry reuse, is never read.
    hint_set(tgid) && unsafe { TARGETS.get(tgid).is_some() }
}

/// Whether the current task, of thread group `tgid`, is traced: every program's filter, always
/// asked about the current task (selectors add up, see `probe_common::targets`).
#[inline(always)]
fn is_traced(tgid: u32) -> bool {
    if FILTER_ENABLED.load() == 0 {
        return tgid != 0 && tgid != SELF_TGID.load();
    }
    if process_selected(tgid) {
        return true;
    }
    if FILTER_THREADS.load() != 0 {
        let tid = bpf_get_current_pid_tgid() as u32;
        // SAFETY: presence only, as in process_selected.
        if hint_set(tid) && unsafe { TARGET_THREADS.get(tid).is_some() } {
            return true;
        }
    }
    let cgroup = FILTER_CGROUP_ID.load();
    // SAFETY: the helper reads the current task's cgroup (0 when the level is deeper than the
    // task's cgroup); the loader sets FILTER_CGROUP_ID only on kernels that offer it to
    // tracing programs, and with 0 the verifier proves the call dead.
    cgroup != 0
        && tgid != SELF_TGID.load()
        && unsafe { bpf_get_current_ancestor_cgroup_id(FILTER_CGROUP_LEVEL.load() as i32) }
            == cgroup
}

/// This CPU's totals of process `tgid` in `PROCS` (created for the current task's process when
/// missing), when the breakdown is on.
#[inline(always)]
fn proc_stats(tgid: u32) -> Option<&'static mut probe_common::targets::ProcStats> {
    if PER_PROCESS.load() == 0 {
        return None;
    }
    let p = match PROCS.get_ptr_mut(tgid) {
        Some(p) => p,
        None => {
            let fresh = probe_common::targets::ProcStats {
                comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]),
                ..Default::default()
            };
            let _ = PROCS.insert(tgid, fresh, BPF_NOEXIST as u64);
            let Some(p) = PROCS.get_ptr_mut(tgid) else {
                count_lost(probe_common::Family::Syscalls);
                return None;
            };
            p
        }
    };
    // SAFETY: this CPU's slot of the entry, valid while the program runs (only `kpath agent`
    // deletes entries, those of exited processes, and a deleted entry is freed after an RCU
    // grace period). Its users (syscall exit, sched_switch) run with preemption disabled and
    // never from an interrupt, so none nests on this CPU: the reference is unique.
    Some(unsafe { &mut *p })
}

/// (tgid, tid) of the current task.
#[inline(always)]
fn current_ids() -> (u32, u32) {
    let id = bpf_get_current_pid_tgid();
    ((id >> 32) as u32, id as u32)
}

#[inline(always)]
fn count_lost_at(index: u32) {
    if let Some(p) = LOST.get_ptr_mut(index) {
        // SAFETY: `p` is this CPU's slot of a per-CPU array, valid while the program runs, and
        // programs run with migration disabled. A program nesting on this CPU (a perf sample
        // in NMI) could interleave with the increment: at worst one loss goes uncounted.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn count_lost(f: Family) {
    count_lost_at(f as u32);
}

const EFAULT: i32 = 14;

/// A stack id in `STACKS`, or the negative error. -EFAULT means "no stack of this kind here" (a
/// user-mode sample has no kernel stack, a kernel thread no user stack) and is not a loss; any
/// other failure (collision, map full) is counted as a lost stack of `family`.
#[inline(always)]
fn stack_id<C: StackIdContext>(ctx: &C, flags: u64, family: Family) -> i32 {
    match ctx.get_stackid(&STACKS, flags) {
        Ok(id) => id as i32,
        Err(err) => {
            if err != -EFAULT {
                count_lost_at(probe_common::lost_stacks_index(family));
            }
            err
        }
    }
}

/// The word at the user stack pointer of the current task (see `StackKey::user_ret`); 0 if
/// unreadable. Call only while the task is in the kernel: in user mode its registers are live.
#[inline(always)]
fn user_stack_word() -> u64 {
    use aya_ebpf::helpers::{
        bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    };
    // x86_64 `struct pt_regs`: sp is the 20th u64.
    const PT_REGS_SP: usize = 19 * 8;
    if USER_RET_ENABLED.load() == 0 {
        return 0;
    }
    // SAFETY: the loader sets USER_RET_ENABLED only on kernels with both helpers;
    // bpf_get_current_task_btf returns the current task as a BTF pointer, the argument
    // bpf_task_pt_regs requires, and never fails.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as usize;
    if regs == 0 {
        return 0;
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting; any bits
    // are a valid u64.
    let Ok(sp) = (unsafe { bpf_probe_read_kernel((regs + PT_REGS_SP) as *const u64) }) else {
        return 0;
    };
    if sp == 0 {
        return 0;
    }
    // SAFETY: as above, for a user address of the current task.
    unsafe { bpf_probe_read_user(sp as *const u64) }.unwrap_or(0)
}

/// Adds `n` to the counter at `key` of a hash map shared by every CPU, inserting the key when
/// it is new; false when the map is full. kpath's aggregation maps of stack keys are shared
/// rather than per-CPU: a per-CPU hash map preallocates one element per CPU for every entry,
/// and creating those took most of `kpath record`'s start-up (60-90 ms for three maps here).
/// BPF_NOEXIST keeps two CPUs that insert the same new key at once from overwriting each
/// other: the one that loses adds to the winner's entry.
#[inline(always)]
fn add_shared<K>(map: &HashMap<K, u64>, key: &K, n: u64) -> bool {
    if let Some(v) = map.get_ptr_mut(key) {
        atomic_add(v, n);
        return true;
    }
    if map.insert(key, n, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    match map.get_ptr_mut(key) {
        Some(v) => {
            atomic_add(v, n);
            true
        }
        None => false,
    }
}

/// `*p += n` as one atomic add (BPF_XADD: the result is unused, so every kernel kpath runs on
/// has the instruction).
#[inline(always)]
fn atomic_add(p: *mut u64, n: u64) {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};
    // SAFETY: `p` points at a u64 value of a BPF hash map entry, 8-byte aligned and valid for
    // the whole program run (the kernel frees deleted entries only after an RCU grace period,
    // and kpath never deletes from these maps while recording); every writer goes through
    // atomics, so there is no data race. (The BPF target has no compare-and-swap, so core's
    // AtomicU64 offers no fetch_add there; the intrinsic is the same instruction.)
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}

/// Adds `ns` to a log2 histogram.
#[inline(always)]
fn hist_add(hist: &mut probe_common::HistLog2, ns: u64) {
    let b = probe_common::log2_bucket(ns);
    // The explicit bound check keeps the verifier sure of the index.
    if b < hist.len() {
        hist[b] += 1;
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
