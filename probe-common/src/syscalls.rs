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

/// Per-CPU hash map [`ByCommKey`] -> [`ByCommStats`]: syscalls per (task name, syscall), filled
/// only when [`GLOBAL_BY_COMM`] is 1 (`kpath agent`'s `comm` label).
pub const MAP_BY_COMM: &str = "SYSCALLS_BY_COMM";
/// Global (set at load time): 1 to count into [`MAP_BY_COMM`]; 0 (record) prunes it away.
pub const GLOBAL_BY_COMM: &str = "SYSCALLS_BY_COMM_ON";
/// Capacity of [`MAP_BY_COMM`]; pairs beyond it are counted as lost syscalls events.
pub const BY_COMM_CAPACITY: u32 = 8192;

/// Key of [`MAP_BY_COMM`]: the calling thread's name (NUL padded) and the syscall number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ByCommKey {
    pub comm: [u8; 16],
    pub nr: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ByCommKey>() == 24);

/// Value of [`MAP_BY_COMM`] (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ByCommStats {
    pub count: u64,
    pub errors: u64,
}
const _: () = assert!(core::mem::size_of::<ByCommStats>() == 16);
