//! Syscalls per (task name, syscall number), for `kpath agent`'s `comm` label. Off unless the
//! loader sets `SYSCALLS_BY_COMM_ON`: then the verifier prunes the call and `record` pays nothing.
use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_comm, macros::map, maps::PerCpuHashMap, Global,
};
use probe_common::{
    syscalls::{ByCommKey, ByCommStats, BY_COMM_CAPACITY},
    Family,
};

use crate::count_lost;

/// 1: count into `SYSCALLS_BY_COMM` (set by the loader for the agent only).
#[no_mangle]
static SYSCALLS_BY_COMM_ON: Global<u32> = Global::new(0);

#[map]
static SYSCALLS_BY_COMM: PerCpuHashMap<ByCommKey, ByCommStats> =
    PerCpuHashMap::with_max_entries(BY_COMM_CAPACITY, 0);

/// Counts one finished syscall `nr` (errors: `ret` in -4095..0) under the current task's name.
#[inline(always)]
pub(crate) fn count(nr: u64, ret: i64) {
    if SYSCALLS_BY_COMM_ON.load() == 0 {
        return;
    }
    let key = ByCommKey {
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        nr: nr as u32,
        _pad: 0,
    };
    let p = match SYSCALLS_BY_COMM.get_ptr_mut(key) {
        Some(p) => p,
        None => {
            // Another CPU may insert the same key first: either way, the entry exists after.
            let _ = SYSCALLS_BY_COMM.insert(key, ByCommStats::default(), BPF_NOEXIST as u64);
            let Some(p) = SYSCALLS_BY_COMM.get_ptr_mut(key) else {
                count_lost(Family::Syscalls);
                return;
            };
            p
        }
    };
    // SAFETY: this CPU's slot of the entry, valid while the program runs (a deleted entry is
    // freed after an RCU grace period); only syscall exit writes it, with preemption disabled
    // and never from an interrupt, so the reference is unique.
    let s = unsafe { &mut *p };
    s.count += 1;
    if (-4095..0).contains(&ret) {
        s.errors += 1;
    }
}
