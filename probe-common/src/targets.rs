//! Which tasks are traced: the kernel-side target filter and the per-process breakdown.
//!
//! Selectors add up (a task is traced when any of them picks it): processes in
//! [`crate::MAP_TARGETS`] (`-p`, `record -- CMD`, processes whose name matched `--comm`, and
//! the children they fork), threads in [`MAP_THREADS`] (`-t`), and the members of one cgroup v2
//! subtree (`--cgroup`, tested with `bpf_get_current_ancestor_cgroup_id` on every event, since
//! tasks move between cgroups without forking).

/// Name of the hash map of traced thread ids (`-t`); values unused.
pub const MAP_THREADS: &str = "TARGET_THREADS";
/// Capacity of [`MAP_THREADS`].
pub const THREADS_CAPACITY: u32 = 1024;

/// Global (set at load time): 1 when [`MAP_THREADS`] selects threads.
pub const GLOBAL_THREADS: &str = "FILTER_THREADS";
/// Globals (set at load time): the `--comm` name, NUL padded to 16 bytes, as two little-endian
/// u64 (bytes 0-7, 8-15); both 0 when no name is selected.
pub const GLOBAL_COMM_LO: &str = "FILTER_COMM_LO";
pub const GLOBAL_COMM_HI: &str = "FILTER_COMM_HI";
/// Globals (set at load time): the `--cgroup` id (0: no cgroup selected) and its level in the
/// v2 hierarchy (the root is level 0).
pub const GLOBAL_CGROUP_ID: &str = "FILTER_CGROUP_ID";
pub const GLOBAL_CGROUP_LEVEL: &str = "FILTER_CGROUP_LEVEL";
/// Global (set at load time): 1 to count syscalls and switches per process in [`MAP_PROCS`].
pub const GLOBAL_PER_PROCESS: &str = "PER_PROCESS";

/// Name of the shared hash map tgid -> [`ProcStats`] (the per-process breakdown).
pub const MAP_PROCS: &str = "PROCS";
/// Capacity of [`MAP_PROCS`]; processes beyond it are counted as lost syscalls events.
pub const PROCS_CAPACITY: u32 = 8192;

/// Per-process totals, added atomically by every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub syscalls: u64,
    pub syscall_errors: u64,
    pub syscall_ns: u64,
    pub switches: u64,
    pub offcpu_ns: u64,
    /// Name of the thread that created the entry (its first counted event), NUL padded.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ProcStats>() == 5 * 8 + 16);

/// The `--comm` name as the two globals [`GLOBAL_COMM_LO`], [`GLOBAL_COMM_HI`]: the kernel
/// keeps only the first 15 bytes of a task name, so longer names are cut the same way.
pub fn comm_words(name: &[u8]) -> (u64, u64) {
    let mut buf = [0u8; 16];
    let n = if name.len() < 15 { name.len() } else { 15 };
    let mut i = 0;
    while i < n {
        buf[i] = name[i];
        i += 1;
    }
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&buf[..8]);
    hi.copy_from_slice(&buf[8..]);
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_words_pad_and_cut_like_the_kernel() {
        let (lo, hi) = comm_words(b"kp_worker");
        assert_eq!(lo.to_le_bytes(), *b"kp_worke");
        assert_eq!(hi.to_le_bytes(), [b'r', 0, 0, 0, 0, 0, 0, 0]);
        let (lo, hi) = comm_words(b"a-very-long-process-name");
        assert_eq!(lo.to_le_bytes(), *b"a-very-l");
        assert_eq!(hi.to_le_bytes(), *b"ong-pro\0");
        assert_eq!(comm_words(b""), (0, 0));
    }
}
