//! `kpaths`: calls and time of eventpoll_release_file, tcp_close, do_sys_openat2 and __vm_munmap,
//! and of up to `EXTRA_SLOTS` more kernel functions user space attaches the generic slot
//! programs to (`--kpath FUNC`).
//!
//! Two attach variants share one body: fentry/fexit (BTF trampolines, cheapest) and
//! kprobe/kretprobe. On kernels that allow neither, user space falls back to on-CPU stack
//! samples (the `oncpu` family) and loads none of these.
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use probe_common::{
    kpaths::{Function, FunctionStats, StartKey, FUNCTIONS, STATS_ENTRIES},
    Family,
};

use crate::{count_lost, current_ids, hist_add, is_traced, IN_FLIGHT_CAPACITY};

#[map]
static KPATHS_STATS: PerCpuArray<FunctionStats> =
    PerCpuArray::with_max_entries(STATS_ENTRIES as u32, 0);

#[map]
static KPATHS_START: LruHashMap<StartKey, u64> =
    LruHashMap::with_max_entries(IN_FLIGHT_CAPACITY, 0);

#[inline(always)]
fn entry(func: u32) -> u32 {
    let (tgid, tid) = current_ids();
    if !is_traced(tgid) {
        return 0;
    }
    let key = StartKey { tid, func };
    if KPATHS_START
        // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
        .insert(key, unsafe { bpf_ktime_get_ns() }, 0)
        .is_err()
    {
        count_lost(Family::Kpaths);
    }
    0
}

#[inline(always)]
fn exit(func: u32) -> u32 {
    let (_, tid) = current_ids();
    let key = StartKey { tid, func };
    // SAFETY: copied at once; the entry is keyed by this thread, which alone inserts and
    // removes it. An LRU eviction on another CPU reusing the element could make the copy a
    // wrong sample, never an invalid read.
    let Some(start) = (unsafe { KPATHS_START.get(key) }).copied() else {
        return 0;
    };
    let _ = KPATHS_START.remove(key);
    // SAFETY: bpf_ktime_get_ns takes no arguments and cannot fail.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    let Some(stats) = KPATHS_STATS.get_ptr_mut(func) else {
        count_lost(Family::Kpaths);
        return 0;
    };
    // SAFETY: this CPU's slot of a per-CPU array, valid while the program runs, and only used
    // through this reference until the program returns. A kpaths program nesting on this CPU
    // (fentry programs run with only migration disabled) could interleave its update: at worst
    // a lost count, as with any per-CPU map updated without atomics.
    let stats = unsafe { &mut *stats };
    stats.calls += 1;
    stats.total_ns += ns;
    if ns > stats.max_ns {
        stats.max_ns = ns;
    }
    hist_add(&mut stats.hist_log2_ns, ns);
    0
}

/// The four programs of one function: `kpaths_<stem>_{fentry,fexit,kprobe,kretprobe}`.
macro_rules! kpath_programs {
    ($func:expr, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        #[fentry]
        pub fn $fentry(_ctx: FEntryContext) -> i32 {
            entry(($func) as u32) as i32
        }

        #[fexit]
        pub fn $fexit(_ctx: FExitContext) -> i32 {
            exit(($func) as u32) as i32
        }

        #[kprobe]
        pub fn $kprobe(_ctx: ProbeContext) -> u32 {
            entry(($func) as u32)
        }

        #[kretprobe]
        pub fn $kretprobe(_ctx: RetProbeContext) -> u32 {
            exit(($func) as u32)
        }
    };
}

kpath_programs!(
    Function::EventpollReleaseFile,
    kpaths_eventpoll_release_file_fentry,
    kpaths_eventpoll_release_file_fexit,
    kpaths_eventpoll_release_file_kprobe,
    kpaths_eventpoll_release_file_kretprobe
);
kpath_programs!(
    Function::TcpClose,
    kpaths_tcp_close_fentry,
    kpaths_tcp_close_fexit,
    kpaths_tcp_close_kprobe,
    kpaths_tcp_close_kretprobe
);
kpath_programs!(
    Function::DoSysOpenat2,
    kpaths_do_sys_openat2_fentry,
    kpaths_do_sys_openat2_fexit,
    kpaths_do_sys_openat2_kprobe,
    kpaths_do_sys_openat2_kretprobe
);
kpath_programs!(
    Function::VmMunmap,
    kpaths_vm_munmap_fentry,
    kpaths_vm_munmap_fexit,
    kpaths_vm_munmap_kprobe,
    kpaths_vm_munmap_kretprobe
);

// The generic slots: one program set per slot, its index fixed at compile time (the entry is
// `FUNCTIONS + slot`), so no global or cookie lookup runs per call.
kpath_programs!(
    FUNCTIONS,
    kpaths_slot0_fentry,
    kpaths_slot0_fexit,
    kpaths_slot0_kprobe,
    kpaths_slot0_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 1),
    kpaths_slot1_fentry,
    kpaths_slot1_fexit,
    kpaths_slot1_kprobe,
    kpaths_slot1_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 2),
    kpaths_slot2_fentry,
    kpaths_slot2_fexit,
    kpaths_slot2_kprobe,
    kpaths_slot2_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 3),
    kpaths_slot3_fentry,
    kpaths_slot3_fexit,
    kpaths_slot3_kprobe,
    kpaths_slot3_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 4),
    kpaths_slot4_fentry,
    kpaths_slot4_fexit,
    kpaths_slot4_kprobe,
    kpaths_slot4_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 5),
    kpaths_slot5_fentry,
    kpaths_slot5_fexit,
    kpaths_slot5_kprobe,
    kpaths_slot5_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 6),
    kpaths_slot6_fentry,
    kpaths_slot6_fexit,
    kpaths_slot6_kprobe,
    kpaths_slot6_kretprobe
);
kpath_programs!(
    (FUNCTIONS + 7),
    kpaths_slot7_fentry,
    kpaths_slot7_fexit,
    kpaths_slot7_kprobe,
    kpaths_slot7_kretprobe
);
const _: () = assert!(
    probe_common::kpaths::EXTRA_SLOTS == 8,
    "one kpath_programs! line per slot"
);
