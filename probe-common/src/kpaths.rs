//! `kpaths`: calls and time of selected kernel functions (fentry/fexit or kprobe/kretprobe).
use crate::HistLog2;

/// Per-CPU array of [`FunctionStats`]: indexed by [`Function`], then [`EXTRA_SLOTS`] entries
/// for the functions of `--kpath FUNC` (index `FUNCTIONS + slot`).
pub const MAP_STATS: &str = "KPATHS_STATS";
/// Entry timestamps keyed by [`StartKey`].
pub const MAP_START: &str = "KPATHS_START";

/// The traced functions, in table order; the discriminant is the index into [`MAP_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    EventpollReleaseFile = 0,
    TcpClose = 1,
    DoSysOpenat2 = 2,
    VmMunmap = 3,
}

/// Built-in functions: the first entries of [`MAP_STATS`].
pub const FUNCTIONS: usize = Function::ALL.len();

/// Generic entry/exit program pairs for any other kernel function (`--kpath FUNC`): slot `i`
/// is `kpaths_slot<i>_{fentry,fexit,kprobe,kretprobe}`, attached to the symbol user space
/// picks, counting into [`MAP_STATS`] entry `FUNCTIONS + i`.
pub const EXTRA_SLOTS: usize = 8;

/// Entries of [`MAP_STATS`].
pub const STATS_ENTRIES: usize = FUNCTIONS + EXTRA_SLOTS;

impl Function {
    pub const ALL: [Function; 4] = [
        Function::EventpollReleaseFile,
        Function::TcpClose,
        Function::DoSysOpenat2,
        Function::VmMunmap,
    ];

    /// The kernel symbol.
    pub const fn symbol(self) -> &'static str {
        match self {
            Function::EventpollReleaseFile => "eventpoll_release_file",
            Function::TcpClose => "tcp_close",
            Function::DoSysOpenat2 => "do_sys_openat2",
            Function::VmMunmap => "__vm_munmap",
        }
    }

    /// The syscalls that reach the function on the paths kpath is about.
    pub const fn syscalls(self) -> &'static [&'static str] {
        match self {
            Function::EventpollReleaseFile | Function::TcpClose => &["close"],
            Function::DoSysOpenat2 => &["openat", "openat2", "open", "creat"],
            Function::VmMunmap => &["munmap"],
        }
    }

    /// Program-name stem: `kpaths_<stem>_{fentry,fexit,kprobe,kretprobe}`.
    pub const fn stem(self) -> &'static str {
        match self {
            Function::EventpollReleaseFile => "eventpoll_release_file",
            Function::TcpClose => "tcp_close",
            Function::DoSysOpenat2 => "do_sys_openat2",
            Function::VmMunmap => "vm_munmap",
        }
    }
}

// The discriminant indexes MAP_STATS and `Function::ALL` lists the functions in that order.
const _: () = {
    let mut i = 0;
    while i < Function::ALL.len() {
        assert!(Function::ALL[i] as usize == i);
        i += 1;
    }
};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FunctionStats {
    pub calls: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub _reserved: u64,
    pub hist_log2_ns: HistLog2,
}
const _: () = assert!(core::mem::size_of::<FunctionStats>() == 32 + 8 * crate::HIST_BUCKETS);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StartKey {
    pub tid: u32,
    pub func: u32,
}
const _: () = assert!(core::mem::size_of::<StartKey>() == 8);
