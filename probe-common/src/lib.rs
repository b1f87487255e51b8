//! Data shared by the kernel side (`probe-ebpf`) and the user side (`cli`).
//!
//! Every map key and value is `#[repr(C)]`, `Copy`, and free of implicit padding, so that the
//! kernel and user views agree byte for byte. The module names are the probe family names used
//! through every layer: `syscalls`, `kpaths`, `sched`, `locks`, `oncpu`; `unwind` is the
//! DWARF stack walker's tables, shared by the families that take stacks.
#![no_std]

pub mod kpaths;
pub mod locks;
pub mod oncpu;
pub mod sched;
pub mod syscalls;
pub mod targets;
pub mod unwind;

/// Number of log2 latency buckets. Bucket `i` counts values in `[2^i, 2^(i+1))` ns, bucket 0 also
/// holds 0 and 1; the last bucket (2^39 ns, about 9 minutes) also holds everything above.
pub const HIST_BUCKETS: usize = 40;

/// Log2 histogram of nanoseconds.
pub type HistLog2 = [u64; HIST_BUCKETS];

/// Index of the log2 bucket for `ns` (see [`HIST_BUCKETS`]).
#[inline(always)]
pub fn log2_bucket(ns: u64) -> usize {
    if ns < 2 {
        return 0;
    }
    let b = 63 - ns.leading_zeros() as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

/// Name of the hash map of traced thread-group ids (value: [`TargetFlags`] bits).
pub const MAP_TARGETS: &str = "TARGETS";
/// Name of the per-CPU array of lost-event counters, indexed by [`Family`] (events) and
/// [`lost_stacks_index`] (stacks that could not be stored).
pub const MAP_LOST: &str = "LOST";
/// Index into [`MAP_LOST`] of the family's lost stacks (events are at `Family as u32`).
pub const fn lost_stacks_index(f: Family) -> u32 {
    LOST_STACKS_BASE + f as u32
}
/// First lost-stacks index in [`MAP_LOST`]: one lost-events slot per family comes before.
pub const LOST_STACKS_BASE: u32 = Family::ALL.len() as u32;
/// Entries of [`MAP_LOST`]: lost events, then lost stacks, per family.
pub const LOST_ENTRIES: u32 = 2 * LOST_STACKS_BASE;

/// Name of the shared stack-trace map (on-CPU, off-CPU and lock stacks).
pub const MAP_STACKS: &str = "STACKS";
/// Capacity of [`MAP_STACKS`].
/// Stack ids are hashes into this many buckets; a colliding stack is dropped and counted (as
/// bcc does), so the table is sized for a few thousand distinct stacks at a few % collisions
/// (32768 x 127 frames x 8 bytes = 32 MiB of kernel memory while recording).
pub const STACKS_CAPACITY: u32 = 32768;
/// Capacity of [`MAP_TARGETS`]; thread ids of traced processes pass through it briefly.
pub const TARGETS_CAPACITY: u32 = 16384;

/// Name of the array of target hints: slot [`hint_slot`]`(id)` is set (never cleared) for every id
/// put in [`MAP_TARGETS`], so a zero slot proves a task untraced with one inlined array load
/// instead of hash lookups: most tasks on the machine are not traced and leave at that test.
pub const MAP_TARGET_HINTS: &str = "TARGET_HINTS";
/// One u64: changed whenever `TARGETS` changes, so the per-CPU caches of the target verdict
/// (the syscalls family's) are refreshed; the kernel side adds 1, user space adds 2^32.
pub const MAP_TARGETS_GEN: &str = "TARGETS_GEN";
/// Slots of [`MAP_TARGET_HINTS`] (a power of two).
pub const TARGET_HINTS_SIZE: u32 = 1 << 16;
/// The slot of `id` in [`MAP_TARGET_HINTS`].
pub const fn hint_slot(id: u32) -> u32 {
    id & (TARGET_HINTS_SIZE - 1)
}

/// Global (set at load time): 1 when only tasks whose tgid is in [`MAP_TARGETS`] are traced.
pub const GLOBAL_FILTER: &str = "FILTER_ENABLED";
/// Global (set at load time): kpath's own tgid, never traced in system-wide mode.
pub const GLOBAL_SELF_TGID: &str = "SELF_TGID";
/// Global (set at load time): 1 when bpf_task_pt_regs may be called (Linux 5.15+).
pub const GLOBAL_USER_RET: &str = "USER_RET_ENABLED";
/// Global (set at load time): minimum off-CPU time (ns) for a stack to be recorded.
pub const GLOBAL_OFFCPU_MIN_NS: &str = "OFFCPU_MIN_NS";

/// `task_struct` offsets and sched_switch's argument count from kernel BTF, for the sched raw
/// tracepoints (set at load time; see `probe-ebpf/src/sched.rs`).
pub const GLOBAL_TASK_PID: &str = "OFF_TASK_PID";
pub const GLOBAL_TASK_STATE: &str = "OFF_TASK_STATE";
pub const GLOBAL_TASK_EXIT_STATE: &str = "OFF_TASK_EXIT_STATE";
/// 1 when sched_switch passes prev_state as its fourth argument (Linux 5.18+).
pub const GLOBAL_SWITCH_PREV_STATE_ARG: &str = "SWITCH_PREV_STATE_ARG";

/// Globals (set at load time) holding trace-event field offsets read from the running kernel's
/// tracefs `format` files: layouts differ between kernels (6.18's sched_process_fork uses
/// `__data_loc` comms, so `child_pid` moved from 44 to 20). The defaults below are the 5.10-6.x
/// layouts; probe-ebpf initializes its globals from them and the loader falls back to them.
pub mod offsets {
    /// sched:sched_process_fork `child_pid`.
    pub const FORK_CHILD_PID: u32 = 44;
    /// sched:sched_switch `prev_state`.
    pub const SWITCH_PREV_STATE: u32 = 32;
    /// sched:sched_switch `next_pid`.
    pub const SWITCH_NEXT_PID: u32 = 56;
    /// sched:sched_wakeup `pid` (sched_wakeup_new shares the layout).
    pub const WAKEUP_PID: u32 = 24;
    /// lock:contention_begin `lock_addr` (contention_end shares the offset).
    pub const LOCK_ADDR: u32 = 8;
    /// lock:contention_begin `flags`.
    pub const LOCK_FLAGS: u32 = 16;

    /// task:task_rename `pid`.
    pub const RENAME_PID: u32 = 8;
    /// task:task_rename `newcomm`.
    pub const RENAME_NEWCOMM: u32 = 28;

    /// (global name, category, event, field, default offset)
    pub const ALL: [(&str, &str, &str, &str, u32); 8] = [
        (
            "OFF_FORK_CHILD_PID",
            "sched",
            "sched_process_fork",
            "child_pid",
            FORK_CHILD_PID,
        ),
        (
            "OFF_SWITCH_PREV_STATE",
            "sched",
            "sched_switch",
            "prev_state",
            SWITCH_PREV_STATE,
        ),
        (
            "OFF_SWITCH_NEXT_PID",
            "sched",
            "sched_switch",
            "next_pid",
            SWITCH_NEXT_PID,
        ),
        ("OFF_WAKEUP_PID", "sched", "sched_wakeup", "pid", WAKEUP_PID),
        (
            "OFF_LOCK_ADDR",
            "lock",
            "contention_begin",
            "lock_addr",
            LOCK_ADDR,
        ),
        (
            "OFF_LOCK_FLAGS",
            "lock",
            "contention_begin",
            "flags",
            LOCK_FLAGS,
        ),
        ("OFF_RENAME_PID", "task", "task_rename", "pid", RENAME_PID),
        (
            "OFF_RENAME_NEWCOMM",
            "task",
            "task_rename",
            "newcomm",
            RENAME_NEWCOMM,
        ),
    ];
}

/// Bits stored as values of [`MAP_TARGETS`].
pub mod target_flags {
    /// The process was named by the user (`-p`) or started by kpath.
    pub const ROOT: u32 = 1;
    /// The process was a fork child of a traced process.
    pub const CHILD: u32 = 2;
    /// The process is traced because its name matched `--comm` (or it descends from one that
    /// did, without a process named by the user in between): it leaves the filter when it
    /// execs a program of another name.
    pub const COMM: u32 = 4;
}

/// The probe families, also the index into [`MAP_LOST`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Syscalls = 0,
    Kpaths = 1,
    Sched = 2,
    Locks = 3,
    Oncpu = 4,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Syscalls,
        Family::Kpaths,
        Family::Sched,
        Family::Locks,
        Family::Oncpu,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Family::Syscalls => "syscalls",
            Family::Kpaths => "kpaths",
            Family::Sched => "sched",
            Family::Locks => "locks",
            Family::Oncpu => "oncpu",
        }
    }
}
// `Family as u32` indexes MAP_LOST and `Family::ALL` lists the families in that order.
const _: () = {
    let mut i = 0;
    while i < Family::ALL.len() {
        assert!(Family::ALL[i] as usize == i);
        i += 1;
    }
};

/// Bits of [`StackKey::flags`].
pub mod stack_flags {
    /// Off-CPU time spent runnable (woken or preempted, waiting for a CPU: run-queue delay),
    /// charged apart from the blocked part of the same period so the wall-clock view can
    /// tell `[runnable]` from waiting.
    pub const RUNNABLE: u32 = 1;
}

/// Key of the on-CPU and off-CPU stack maps: one entry per process, thread name and stack pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub tgid: u32,
    /// Id in [`MAP_STACKS`], or negative when the kernel stack could not be taken.
    pub kstack_id: i32,
    /// Id in [`MAP_STACKS`], or negative when the user stack could not be taken.
    pub ustack_id: i32,
    /// [`stack_flags`] bits: what kind of time the weight is (0 for samples, lock waits and
    /// the blocked part of an off-CPU period).
    pub flags: u32,
    /// Thread name (`comm`), NUL padded.
    pub comm: [u8; 16],
    /// The word at the user stack pointer when the task entered the kernel, 0 when not taken.
    /// In a frameless syscall wrapper (most of libc's) it is the wrapper's return address, the
    /// caller frame-pointer unwinding skips, and the only caller left when the program was built
    /// without frame pointers (Debian's nginx). User space keeps it only if it follows a call.
    pub user_ret: u64,
    /// Key of the DWARF-unwound user stack in [`unwind::MAP_USER_STACKS`] (`--call-graph
    /// dwarf`; `ustack_id` is then -1 and `user_ret` 0), 0 when none was taken.
    pub user_stack: u64,
    /// Key of a kernel stack in [`unwind::MAP_USER_STACKS`] (the same store of address arrays),
    /// 0 when `kstack_id` applies: the sched family takes the kernel stack of a kept off-CPU
    /// period when the thread is switched back in (`bpf_get_task_stack`, which returns the
    /// addresses rather than a [`MAP_STACKS`] id).
    pub kernel_stack: u64,
}
const _: () = assert!(core::mem::size_of::<StackKey>() == 56);

// aya::Pod promises that any bit pattern is a valid value and that there are no padding bytes
// (uninitialized memory copied to or from the kernel). Each type below is `#[repr(C)]`, holds
// only integers and integer arrays, and has its size asserted next to its definition to equal
// the sum of its fields.
#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), u32/i32 x4 + [u8; 16] + 3 x u64 = 56 bytes (asserted), no padding.
    unsafe impl aya::Pod for StackKey {}
    // SAFETY: repr(C), 4 x u64 + [u64; HIST_BUCKETS] (size asserted), no padding.
    unsafe impl aya::Pod for syscalls::SyscallStats {}
    // SAFETY: repr(C), [u8; 16] + 2 x u32 = 24 bytes (asserted), no padding.
    unsafe impl aya::Pod for syscalls::ByCommKey {}
    // SAFETY: repr(C), 2 x u64 = 16 bytes (asserted), no padding.
    unsafe impl aya::Pod for syscalls::ByCommStats {}
    // SAFETY: repr(C), 4 x u64 + [u64; HIST_BUCKETS] (size asserted), no padding.
    unsafe impl aya::Pod for kpaths::FunctionStats {}
    // SAFETY: repr(C), 2 x u32 = 8 bytes (asserted), no padding.
    unsafe impl aya::Pod for kpaths::StartKey {}
    // SAFETY: repr(C), 8 x u64 + [u64; HIST_BUCKETS] (size asserted), no padding.
    unsafe impl aya::Pod for sched::SchedStats {}
    // SAFETY: repr(C), u64 + i32 + 3 x u32 + u64 = 32 bytes (asserted), no padding.
    unsafe impl aya::Pod for locks::LockKey {}
    // SAFETY: repr(C), 3 x u64 = 24 bytes (asserted), no padding.
    unsafe impl aya::Pod for locks::LockStats {}
    // SAFETY: repr(C), u32 + 2 x i16 + 4 x u8 = 12 bytes (asserted), no padding.
    unsafe impl aya::Pod for unwind::Row {}
    // SAFETY: repr(C), 3 x u64 + 2 x u32 = 32 bytes (asserted), no padding.
    unsafe impl aya::Pod for unwind::Mapping {}
    // SAFETY: repr(C), 2 x u32 + [Mapping; MAX_MAPPINGS] (size asserted), no padding.
    unsafe impl aya::Pod for unwind::ProcMaps {}
    // SAFETY: repr(C), 2 x u32 + [u64; MAX_FRAMES] + u64 (size asserted), no padding.
    unsafe impl aya::Pod for unwind::UserStack {}
    // SAFETY: repr(C), 2 x u32 + u64 = 16 bytes (asserted), no padding.
    unsafe impl aya::Pod for unwind::Event {}
    // SAFETY: repr(C), 5 x u64 + [u8; 16] = 56 bytes (asserted), no padding.
    unsafe impl aya::Pod for targets::ProcStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_bucket_edges() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 1);
        assert_eq!(log2_bucket(4), 2);
        assert_eq!(log2_bucket(1023), 9);
        assert_eq!(log2_bucket(1024), 10);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
