//! `kpaths`: calls and time of selected kernel functions (fentry/fexit or kprobe/kretprobe).
use crate::HistLog2;

/// Per-CPU array of [`KpathStats`], indexed by [`KpathFn`].
pub const MAP_STATS: &str = "KPATHS_STATS";
/// Entry timestamps keyed by [`KpathStartKey`].
pub const MAP_START: &str = "KPATHS_START";

/// The traced functions, in table order; the discriminant is the index into [`MAP_STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KpathFn {
    EventpollReleaseFile = 0,
    TcpClose = 1,
    DoSysOpenat2 = 2,
    VmMunmap = 3,
}

/// Entries of [`MAP_STATS`]: one per traced function.
pub const KPATH_COUNT: usize = KpathFn::ALL.len();

impl KpathFn {
    pub const ALL: [KpathFn; 4] = [
        KpathFn::EventpollReleaseFile,
        KpathFn::TcpClose,
        KpathFn::DoSysOpenat2,
        KpathFn::VmMunmap,
    ];

    /// The kernel symbol.
    pub const fn symbol(self) -> &'static str {
        match self {
            KpathFn::EventpollReleaseFile => "eventpoll_release_file",
            KpathFn::TcpClose => "tcp_close",
            KpathFn::DoSysOpenat2 => "do_sys_openat2",
            KpathFn::VmMunmap => "__vm_munmap",
        }
    }

    /// The syscalls that reach the function on the paths kpath is about.
    pub const fn syscalls(self) -> &'static [&'static str] {
        match self {
            KpathFn::EventpollReleaseFile | KpathFn::TcpClose => &["close"],
            KpathFn::DoSysOpenat2 => &["openat", "openat2", "open", "creat"],
            KpathFn::VmMunmap => &["munmap"],
        }
    }

    /// Program-name stem: `kpaths_<stem>_{fentry,fexit,kprobe,kretprobe}`.
    pub const fn stem(self) -> &'static str {
        match self {
            KpathFn::EventpollReleaseFile => "eventpoll_release_file",
            KpathFn::TcpClose => "tcp_close",
            KpathFn::DoSysOpenat2 => "do_sys_openat2",
            KpathFn::VmMunmap => "vm_munmap",
        }
    }
}

// The discriminant indexes MAP_STATS and `KpathFn::ALL` lists the functions in that order.
const _: () = {
    let mut i = 0;
    while i < KpathFn::ALL.len() {
        assert!(KpathFn::ALL[i] as usize == i);
        i += 1;
    }
};

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KpathStats {
    pub calls: u64,
    pub total_ns: u64,
    pub max_ns: u64,
    pub _reserved: u64,
    pub hist_log2_ns: HistLog2,
}
const _: () = assert!(core::mem::size_of::<KpathStats>() == 32 + 8 * crate::HIST_BUCKETS);

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KpathStartKey {
    pub tid: u32,
    pub func: u32,
}
const _: () = assert!(core::mem::size_of::<KpathStartKey>() == 8);
