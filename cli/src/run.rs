//! The `Run`: everything one recording produced, serialized as `run.json`.
//!
//! Field names are the contract later commands (`report`, `flame`, `diff`, `bench`) and users'
//! scripts build on: add fields freely, never rename. Times are nanoseconds, named `*_ns`.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped when a field changes meaning.
pub const RUN_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub format_version: u32,
    /// kpath version that wrote the run.
    pub kpath_version: String,
    pub kernel: KernelInfo,
    pub target: Target,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    pub duration_ns: u64,
    /// Family name -> attach method that produced its numbers (see `loader::Method`).
    pub methods: BTreeMap<String, String>,
    /// Family name -> events dropped in the kernel (map full, stack not taken, ...).
    pub lost: BTreeMap<String, u64>,
    /// Fallbacks and other things the reader should know, in the order they happened.
    pub warnings: Vec<String>,
    pub overhead: Overhead,
    pub syscalls: Vec<SyscallRow>,
    pub kpaths: Vec<KpathRow>,
    /// `None` when the family was not recorded.
    pub sched: Option<SchedRow>,
    /// Lock contention by caller and lock class (`perf lock contention`'s caller mode).
    pub locks: Vec<LockRow>,
    /// Lock contention by waiting thread (`--locks-by task`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_tasks: Vec<LockTaskRow>,
    pub oncpu: Option<OncpuSummary>,
    /// Per process (pid), when the recording could see more than one: syscalls, switches,
    /// off-CPU time and on-CPU samples; busiest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<ProcessRow>,
    /// Off-CPU stacks (from the `sched` family); absent when it was not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offcpu: Option<OffcpuSummary>,
    /// How user stacks were taken (`dwarf` or `fp`); absent in runs before `--call-graph`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_graph: Option<String>,
    /// DWARF unwinding: tables loaded, map sizes, walk outcomes by reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unwind: Option<crate::unwind::bpf::UnwindReport>,
    /// Files written next to run.json (folded stacks, flame graphs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// The wall-clock view (oncpu and sched together): per thread, how much of its wall time
    /// was on-CPU, idle, blocked and runnable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall: Option<WallSummary>,
    /// What the findings engine (`cli/src/findings/`) concluded from this run.
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// The wall-clock view's totals (`wall.folded` holds its stacks).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WallSummary {
    /// Nanoseconds one on-CPU sample stands for (1e9 / the sampling frequency).
    pub period_ns: u64,
    /// Sum over threads of their wall time.
    pub total_ns: u64,
    /// Per thread name (threads of one name are summed), the longest first.
    pub threads: Vec<ThreadWall>,
    /// Off-CPU time by kind of wait (`idle`, `blocked`, `runnable`) and the frame that told
    /// (`epoll_wait`, `rwsem`, `futex (lock)`, ...), the largest first.
    pub waits: Vec<WaitShare>,
    /// The user stacks (root first) that waited longest on a futex that is not a condition
    /// wait: user-space lock contention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub futex_stacks: Vec<WallStack>,
}

/// One thread's wall time and its parts; the shares are of `wall_ns`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ThreadWall {
    pub thread: String,
    pub wall_ns: u64,
    pub oncpu_ns: u64,
    pub idle_ns: u64,
    pub blocked_ns: u64,
    pub runnable_ns: u64,
    pub oncpu_share: f64,
    pub idle_share: f64,
    pub blocked_share: f64,
    pub runnable_share: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WaitShare {
    /// `idle`, `blocked` or `runnable`.
    pub wait: String,
    pub kind: String,
    pub ns: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WallStack {
    pub stack: String,
    pub ns: u64,
}

/// One conclusion of the findings engine: what was measured (and how), what it means, what
/// to try, and the built-in scenario that reproduces it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// The rule's id (`mmap-lock`, `close-path`, ...).
    pub id: String,
    /// `high`, `medium` or `info`.
    pub severity: String,
    pub title: String,
    /// The measured numbers with their methods, and the rule's thresholds.
    pub evidence: String,
    pub meaning: String,
    #[serde(rename = "try")]
    pub try_: String,
    /// `kpath scenario NAME` that reproduces it, when there is one.
    pub scenario: Option<String>,
    /// In bench.json: the strategy whose run it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KernelInfo {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    pub machine: String,
    pub hostname: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Target {
    /// `system`, or the selectors joined by `+`: `command`, `pid`, `thread`, `comm`, `cgroup`.
    pub kind: String,
    /// The traced process (the started command's pid for `command`; the first of several).
    pub pid: Option<u32>,
    /// Every process named with `-p` when there were several (else empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// Threads named with `-t`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tids: Vec<u32>,
    /// The `--comm` name, and the processes that had it when the recording started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comm_pids_at_start: Vec<u32>,
    /// The `--cgroup` directory and its cgroup id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    pub command: Option<Vec<String>>,
    /// Exit status of a started command (`128 + signal` when killed).
    pub exit_code: Option<i32>,
}

/// One process of the per-process breakdown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessRow {
    pub pid: u32,
    /// The process's name (its main thread's at the end of the recording, or if it had exited,
    /// the name of its first counted thread).
    pub comm: String,
    pub syscalls: u64,
    pub syscall_errors: u64,
    pub syscall_ns: u64,
    /// Context switches away from its threads.
    pub switches: u64,
    pub offcpu_ns: u64,
    pub oncpu_samples: u64,
}

impl ProcessRow {
    pub fn new(pid: u32) -> ProcessRow {
        ProcessRow {
            pid,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Overhead {
    /// Whether BPF run-time statistics were on (`record --bpf-stats`), so the figures are measured.
    pub bpf_stats_enabled: bool,
    /// How long the statistics were on (0 in runs written before this field existed).
    #[serde(default)]
    pub stats_sampled_ns: u64,
    /// Family name -> figures.
    pub families: BTreeMap<String, FamilyOverhead>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FamilyOverhead {
    /// BPF program invocations (all tasks, before the target filter) while statistics were on.
    pub events: u64,
    pub events_per_sec: f64,
    /// Total time spent in the family's BPF programs.
    pub bpf_run_ns: u64,
    /// `bpf_run_ns / events`.
    pub ns_per_event: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SyscallRow {
    pub name: String,
    pub nr: u32,
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    /// Estimated by linear interpolation within the log2 bucket holding the percentile (as
    /// Prometheus' histogram_quantile), never above `max_ns` (format 1 runs before 2026-12
    /// held the bucket's upper bound).
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub hist_log2_ns: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KpathRow {
    pub function: String,
    /// `fentry`, `kprobe`, `sampled` or `unavailable`.
    pub method: String,
    /// `None` when sampled.
    pub calls: Option<u64>,
    /// `None` when sampled.
    pub total_ns: Option<u64>,
    pub max_ns: Option<u64>,
    /// Share (0..1) of the target's on-CPU samples whose kernel stack contains the function.
    pub oncpu_share: f64,
    /// On-CPU samples under the function.
    pub samples: u64,
    pub hist_log2_ns: Vec<u64>,
    /// The syscall that contains the function, with its traced figures for context.
    pub syscall: String,
    pub syscall_count: Option<u64>,
    pub syscall_total_ns: Option<u64>,
    /// Followed because of `--kpath` (not one of the built-in functions).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requested: bool,
    /// `--kpath` functions, sampled with the sched family: off-CPU time whose kernel stack
    /// contains the function, and its share (0..1) of the off-CPU time charged to stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offcpu_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offcpu_share: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SchedRow {
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub offcpu_ns: u64,
    pub wakeups: u64,
    pub runq_delay_count: u64,
    pub runq_delay_total_ns: u64,
    pub runq_delay_p50_ns: u64,
    pub runq_delay_p99_ns: u64,
    pub runq_delay_max_ns: u64,
    pub runq_delay_hist_log2_ns: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockRow {
    /// First kernel frame outside the locking code: its function name (runs before 2026-12
    /// had per-address rows).
    pub caller: String,
    /// The lock class: a static lock's symbol (`epmutex`), a known heap lock (`mmap_lock`,
    /// `sk_lock.slock`, `rq->__lock`, `ep->mtx`, ...), else `<type> in <caller>`.
    pub lock: String,
    /// The address with the most wait time among those of the class.
    pub lock_addr: String,
    /// Distinct lock addresses (instances) merged into the row.
    #[serde(default)]
    pub lock_addrs: u64,
    /// `mutex`, `spinlock`, `rwsem:read`, ... from the contention flags.
    #[serde(rename = "type")]
    pub lock_type: String,
    pub count: u64,
    pub wait_ns: u64,
    pub max_ns: u64,
    /// The symbolized kernel stack, innermost first.
    pub stack: Vec<String>,
    /// The user stack of the row's longest-waiting waiter, root first (`--call-graph dwarf`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_stack: Vec<String>,
}

/// Lock contention of one thread, all locks together.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LockTaskRow {
    pub tgid: u32,
    pub tid: u32,
    /// Thread name at the wait.
    pub comm: String,
    pub count: u64,
    pub wait_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OncpuSummary {
    pub frequency_hz: u64,
    /// Samples of the target (including those whose stacks were lost).
    pub samples: u64,
    /// Distinct (process, thread name, kernel stack, user stack) keys.
    pub unique_stacks: u64,
    /// Samples whose kernel or user stack could not be stored.
    pub lost_stacks: u64,
    /// The flat profile: the top functions by self samples and by total samples (kernel
    /// frames end in `_[k]`), largest self first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<FunctionShare>,
}

/// One function of the flat profile (`perf report --no-children` / `--children`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FunctionShare {
    pub function: String,
    /// Samples with the function as the innermost frame.
    pub self_samples: u64,
    /// Samples with the function anywhere on the stack (once per sample, recursion or not).
    pub total_samples: u64,
    /// Shares (0..1) of the samples with a stack.
    pub self_share: f64,
    pub total_share: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OffcpuSummary {
    /// Blocked time charged to stacks (periods of at least `min_block_ns`).
    pub total_ns: u64,
    /// Distinct (process, thread name, kernel stack, user stack) keys.
    pub stacks: u64,
    /// Switches whose kernel or user stack could not be stored.
    pub lost_stacks: u64,
    /// `--offcpu-min-us` in ns: shorter periods count in `sched.offcpu_ns` only.
    pub min_block_ns: u64,
}

/// File names, relative to the run directory; `None` when not written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Artifacts {
    pub oncpu_folded: Option<String>,
    pub offcpu_folded: Option<String>,
    pub oncpu_svg: Option<String>,
    pub offcpu_svg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_folded: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_svg: Option<String>,
    /// pprof profiles (gzipped profile.proto); absent in runs before kpath wrote them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oncpu_pprof: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offcpu_pprof: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks_pprof: Option<String>,
}
