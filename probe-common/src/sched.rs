//! `sched`: context switches, off-CPU time and run-queue delay of the traced tasks.
use crate::HistLog2;

/// Per-CPU array with one [`SchedStats`].
pub const MAP_STATS: &str = "SCHED_STATS";
/// Off-CPU stacks: [`crate::StackKey`] -> total blocked ns.
pub const MAP_OFFCPU: &str = "SCHED_OFFCPU";
pub const OFFCPU_CAPACITY: u32 = 16384;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SchedStats {
    /// The task blocked (its state was not runnable when switched out).
    pub voluntary_switches: u64,
    /// The task was preempted while runnable.
    pub involuntary_switches: u64,
    /// Time between switching out and switching back in.
    pub offcpu_ns: u64,
    /// Number of run-queue delays measured.
    pub runq_count: u64,
    pub runq_total_ns: u64,
    pub runq_max_ns: u64,
    pub wakeups: u64,
    pub _reserved: u64,
    pub runq_delay_hist_log2_ns: HistLog2,
}
const _: () = assert!(core::mem::size_of::<SchedStats>() == 64 + 8 * crate::HIST_BUCKETS);

/// Value of the per-thread switch-out record: when (0: back on a CPU), the stack key it will be
/// charged to, and since when the thread waits for a CPU (0: not runnable-marked).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OffcpuStart {
    pub ts_ns: u64,
    pub key: crate::StackKey,
    pub runnable_since: u64,
}
const _: () = assert!(core::mem::size_of::<OffcpuStart>() == 72);
