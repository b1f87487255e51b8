//! `syscalls`: per syscall number, calls, errors and latency of the traced tasks.
use crate::HistLog2;

/// Per-CPU array of [`SyscallStats`], indexed by syscall number.
pub const MAP_STATS: &str = "SYSCALLS_STATS";
/// Per-thread start of the syscall in flight.
pub const MAP_START: &str = "SYSCALLS_START";
/// Syscall numbers at or above this are counted as lost.
pub const MAX_SYSCALLS: u32 = 512;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStats {
    pub count: u64,
    /// Returns in `-4095..0`.
    pub errors: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub hist_log2_ns: HistLog2,
}
const _: () = assert!(core::mem::size_of::<SyscallStats>() == 32 + 8 * crate::HIST_BUCKETS);

/// Value of [`MAP_START`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyscallStart {
    pub ts_ns: u64,
    pub nr: u64,
}
const _: () = assert!(core::mem::size_of::<SyscallStart>() == 16);
