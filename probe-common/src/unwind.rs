//! DWARF call-frame unwinding of user stacks in the kernel (`--call-graph dwarf`).
//!
//! User space turns each executable mapping's `.eh_frame` (or `.debug_frame`) CFI into compact
//! [`Row`]s, sorted by `pc` and with identical neighbours merged; every binary's rows sit in one
//! contiguous run ("shard") of [`MAP_ROWS`]. Each traced process has a [`ProcMaps`] in
//! [`MAP_PROC_MAPS`]: its executable mappings sorted by start address, each naming its shard.
//!
//! The walker (probe-ebpf `unwind`) starts from the user registers (rip, rsp, rbp), and per frame:
//! finds the mapping of the pc (binary search in [`ProcMaps::maps`]), the last row with
//! `row.pc <= pc - bias` in the mapping's shard (binary search), computes the CFA from the row,
//! reads the return address at CFA-8 and, if the row says so, the caller's rbp, then steps
//! (rsp = CFA, rip = return address). A return address points after its call, so every frame but
//! the first (and but one interrupted by a signal) is looked up at `pc - 1`.
//!
//! Stacks are stored as address arrays in [`MAP_USER_STACKS`], keyed by a hash of the frames;
//! what went wrong is counted per [`Error`] in [`MAP_ERRORS`].

/// Name of the array of unwind rows of every loaded binary (one shard per binary).
pub const MAP_ROWS: &str = "UNWIND_ROWS";
/// Default capacity of [`MAP_ROWS`]; the loader sizes it to the tables built (with headroom for
/// binaries that appear while recording) via `set_max_entries`.
pub const ROWS_CAPACITY: u32 = 1 << 20;
/// Name of the hash map tgid -> [`ProcMaps`].
pub const MAP_PROC_MAPS: &str = "UNWIND_PROC_MAPS";
/// Capacity of [`MAP_PROC_MAPS`] (processes with tables at once).
pub const PROCS_CAPACITY: u32 = 1024;
/// Name of the hash map stack hash -> [`UserStack`].
pub const MAP_USER_STACKS: &str = "UNWIND_USER_STACKS";
/// Capacity of [`MAP_USER_STACKS`] (distinct user stacks per recording).
pub const USER_STACKS_CAPACITY: u32 = 16384;
/// Name of the per-CPU array of failure counters, indexed by [`Error`].
pub const MAP_ERRORS: &str = "UNWIND_ERRORS";
/// Name of the ring buffer of [`Event`]s to user space (a process needs its tables (re)read).
pub const MAP_EVENTS: &str = "UNWIND_EVENTS";
/// Global (set at load time): 1 when stacks are unwound with DWARF CFI, 0 for frame pointers.
pub const GLOBAL_DWARF: &str = "UNWIND_DWARF";

/// Frames kept per user stack (perf's and bpf_get_stack's limit is 127).
pub const MAX_FRAMES: usize = 127;
/// Executable mappings per process in [`ProcMaps`].
pub const MAX_MAPPINGS: usize = 128;

/// How a row finds the canonical frame address (CFA).
pub mod cfa {
    /// CFA = rsp + offset.
    pub const RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const RBP: u8 = 2;
    /// The standard .plt expression: CFA = rsp + cfa_offset + ((rip & 15) >= T ? 8 : 0), where
    /// the threshold T is in the row's `rbp_offset` (11 for binutils' classic lazy .plt, 10
    /// for its IBT variant; the caller's rbp is unchanged in a PLT).
    pub const PLT: u8 = 3;
    /// A signal trampoline (`__restore_rt`, CIE augmentation 'S'): the interrupted registers are
    /// in the `ucontext` at rsp (rip at rsp+168, rsp at rsp+160, rbp at rsp+120 on x86_64), and
    /// the next frame's pc is exact (not a return address).
    pub const SIGNAL: u8 = 4;
    /// The return address is undefined here: the outermost frame (`_start`, clone/clone3's
    /// child). Reaching it means the stack is complete.
    pub const STOP: u8 = 5;
    /// A rule kpath does not interpret (any other DWARF expression): the walker takes one
    /// frame-pointer step instead (CFA = rbp + 16, rbp at CFA-16) and counts it.
    pub const FP_STEP: u8 = 6;
}

/// How a row recovers the caller's rbp.
pub mod rbp {
    /// rbp is the same in the caller.
    pub const UNCHANGED: u8 = 0;
    /// The caller's rbp is saved at CFA + rbp_offset.
    pub const AT_CFA: u8 = 1;
    /// A rule kpath does not interpret: the caller's rbp is unknown (a frame that needs it as
    /// its CFA base fails later, counted as such).
    pub const UNKNOWN: u8 = 2;
}

/// One unwind row: the rule from `pc` (relative to the binary's link-time addresses) up to the
/// next row's pc. A row with `cfa == 0` marks a gap (no CFI covers these addresses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Row {
    pub pc: u32,
    pub cfa_offset: i16,
    pub rbp_offset: i16,
    /// One of [`cfa`]'s kinds, 0 for a gap.
    pub cfa: u8,
    /// One of [`rbp`]'s kinds.
    pub rbp: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Row>() == 12);

/// One executable mapping of a process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// First address of the mapping.
    pub start: u64,
    /// One past its last address.
    pub end: u64,
    /// Subtracted from a pc to get the link-time address the rows use (load address minus the
    /// segment's p_vaddr rounded as the loader did; 0 for a non-PIE executable).
    pub bias: u64,
    /// First row of the binary's shard in [`MAP_ROWS`].
    pub row_start: u32,
    /// Rows in the shard; 0 when the binary has no table (no unwind info, JIT code, not read yet).
    pub row_count: u32,
}
const _: () = assert!(core::mem::size_of::<Mapping>() == 32);

/// A process's executable mappings, sorted by `start`, `count` of them valid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcMaps {
    pub count: u32,
    pub _pad: u32,
    pub maps: [Mapping; MAX_MAPPINGS],
}
const _: () = assert!(core::mem::size_of::<ProcMaps>() == 8 + 32 * MAX_MAPPINGS);

/// A user stack: `len` return addresses, innermost first (the first is the sampled pc itself).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserStack {
    pub len: u32,
    /// 1 when the walk reached a [`cfa::STOP`] row (the stack is complete to its root).
    pub complete: u32,
    pub frames: [u64; MAX_FRAMES],
    pub _pad: u64,
}
const _: () = assert!(core::mem::size_of::<UserStack>() == 8 + 8 * (MAX_FRAMES + 1));

/// Why a walk stopped short, the index into [`MAP_ERRORS`]. A walk counts exactly one outcome:
/// [`Error::Complete`] or one of the failures.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Not a failure: the walk reached its root.
    Complete = 0,
    /// The pc is in no executable mapping of the process.
    NoMapping = 1,
    /// The pc's mapping has no row for it (no CFI there).
    NoRow = 2,
    /// The CFA's base register was unknown or the CFA could not be computed.
    CfaFailed = 3,
    /// The return address (or the signal frame's registers) could not be read.
    ReadFailed = 4,
    /// The walk hit [`MAX_FRAMES`].
    DepthLimit = 5,
    /// The process has no tables yet (started or exec'd after the tables were loaded); user space
    /// is told through [`MAP_EVENTS`].
    NotLoaded = 6,
    /// The pc's mapping has no table (a binary without unwind info, or JIT code).
    NoTable = 7,
    /// The stack could not be stored ([`MAP_USER_STACKS`] full).
    MapFull = 8,
    /// The user registers of the task could not be read (a kernel thread, or no pt_regs helper).
    NoRegs = 9,
    /// A frame-pointer step was taken for a rule kpath does not interpret (counted per step, on
    /// top of the walk's outcome).
    FpSteps = 10,
}

impl Error {
    pub const ALL: [Error; 11] = [
        Error::Complete,
        Error::NoMapping,
        Error::NoRow,
        Error::CfaFailed,
        Error::ReadFailed,
        Error::DepthLimit,
        Error::NotLoaded,
        Error::NoTable,
        Error::MapFull,
        Error::NoRegs,
        Error::FpSteps,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Error::Complete => "complete",
            Error::NoMapping => "no_mapping",
            Error::NoRow => "no_row",
            Error::CfaFailed => "cfa_failed",
            Error::ReadFailed => "read_failed",
            Error::DepthLimit => "depth_limit",
            Error::NotLoaded => "table_not_loaded",
            Error::NoTable => "no_table",
            Error::MapFull => "map_full",
            Error::NoRegs => "no_regs",
            Error::FpSteps => "fp_steps",
        }
    }
}
/// Entries of [`MAP_ERRORS`].
pub const ERROR_ENTRIES: u32 = Error::ALL.len() as u32;
const _: () = {
    let mut i = 0;
    while i < Error::ALL.len() {
        assert!(Error::ALL[i] as usize == i);
        i += 1;
    }
};

/// A message from the walker to user space in [`MAP_EVENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub tgid: u32,
    /// One of [`event`]'s kinds.
    pub kind: u32,
    /// The pc that had no mapping or table, 0 if none.
    pub pc: u64,
}
const _: () = assert!(core::mem::size_of::<Event>() == 16);

/// Kinds of [`Event`].
pub mod event {
    /// A traced process has no [`super::ProcMaps`] yet.
    pub const NEW_PROCESS: u32 = 1;
    /// A pc fell in no known mapping: the process mapped new code (dlopen, exec).
    pub const UNKNOWN_PC: u32 = 2;
    /// A traced process exec'd a program: its old table is dropped, a new one is wanted now.
    pub const EXEC: u32 = 3;
}
