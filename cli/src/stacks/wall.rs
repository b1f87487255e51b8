//! The wall-clock view: on-CPU samples weighted by the sampling period and off-CPU time in one
//! folded profile, so each thread's width is its wall time. Off-CPU stacks get a leaf frame
//! saying what kind of wait it was:
//!
//! - `[runnable]`: ready but not running (run-queue delay), charged apart by the sched family
//!   (`probe_common::stack_flags::RUNNABLE`);
//! - `[idle]`: waiting for work: epoll_wait, poll, select, accept, a socket or pipe read with
//!   nothing to read, nanosleep, io_uring's completion wait, a signal or child wait, and a
//!   futex wait under a condition variable, a park or a join;
//! - `[blocked]`: everything else: locks (mutex, rwsem, socket lock, a futex that is not a
//!   condition wait), I/O, page faults, other sleeps inside a syscall that does work.
//!
//! The kind is decided by the innermost kernel frame that names a wait ([`KERNEL_WAITS`]),
//! or, for stacks without kernel frames, by the user-space wrapper ([`USER_WAITS`]).
use std::collections::BTreeMap;

use super::folded::{self, FoldedError};
use crate::run::{ThreadWall, WaitShare, WallStack, WallSummary};

/// What an off-CPU period was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wait {
    Idle,
    Blocked,
    Runnable,
}

impl Wait {
    /// The leaf frame in `wall.folded`.
    pub fn frame(self) -> &'static str {
        match self {
            Wait::Idle => "[idle]",
            Wait::Blocked => "[blocked]",
            Wait::Runnable => "[runnable]",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Wait::Idle => "idle",
            Wait::Blocked => "blocked",
            Wait::Runnable => "runnable",
        }
    }
}

/// How a kernel frame classifies the wait it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Is(Wait),
    /// A futex wait: idle under a condition variable, a park or a join, else a lock.
    Futex,
}

/// Kernel frames (function name prefixes) that name a wait, with the wait's kind and label.
/// The innermost frame of a stack that matches decides (a page fault inside epoll_wait is
/// blocked). Function names from Linux 5.10-6.18.
const KERNEL_WAITS: &[(&str, Class, &str)] = &[
    // Locks and I/O first: they also appear inside syscalls that wait for work.
    ("__mutex_lock", Class::Is(Wait::Blocked), "mutex"),
    ("mutex_lock", Class::Is(Wait::Blocked), "mutex"),
    ("rwsem_down_", Class::Is(Wait::Blocked), "rwsem"),
    ("percpu_rwsem_wait", Class::Is(Wait::Blocked), "rwsem"),
    ("__lock_sock", Class::Is(Wait::Blocked), "socket lock"),
    ("lock_sock_nested", Class::Is(Wait::Blocked), "socket lock"),
    ("rt_mutex_", Class::Is(Wait::Blocked), "mutex"),
    ("__down", Class::Is(Wait::Blocked), "semaphore"),
    ("io_schedule", Class::Is(Wait::Blocked), "I/O"),
    ("folio_wait_bit", Class::Is(Wait::Blocked), "I/O"),
    ("wait_on_page_bit", Class::Is(Wait::Blocked), "I/O"),
    ("do_user_addr_fault", Class::Is(Wait::Blocked), "page fault"),
    ("handle_mm_fault", Class::Is(Wait::Blocked), "page fault"),
    ("synchronize_rcu", Class::Is(Wait::Blocked), "rcu"),
    (
        "wait_for_completion",
        Class::Is(Wait::Blocked),
        "completion",
    ),
    ("futex_wait", Class::Futex, "futex"),
    ("__futex_wait", Class::Futex, "futex"),
    ("ep_poll", Class::Is(Wait::Idle), "epoll_wait"),
    ("do_epoll_wait", Class::Is(Wait::Idle), "epoll_wait"),
    ("do_sys_poll", Class::Is(Wait::Idle), "poll"),
    ("do_select", Class::Is(Wait::Idle), "select"),
    ("core_sys_select", Class::Is(Wait::Idle), "select"),
    ("do_nanosleep", Class::Is(Wait::Idle), "nanosleep"),
    ("hrtimer_nanosleep", Class::Is(Wait::Idle), "nanosleep"),
    ("common_nsleep", Class::Is(Wait::Idle), "nanosleep"),
    ("inet_csk_accept", Class::Is(Wait::Idle), "accept"),
    ("inet_csk_wait_for_connect", Class::Is(Wait::Idle), "accept"),
    ("sk_wait_data", Class::Is(Wait::Idle), "socket read"),
    (
        "unix_stream_data_wait",
        Class::Is(Wait::Idle),
        "socket read",
    ),
    ("pipe_read", Class::Is(Wait::Idle), "pipe read"),
    ("anon_pipe_read", Class::Is(Wait::Idle), "pipe read"),
    (
        "__skb_wait_for_more_packets",
        Class::Is(Wait::Idle),
        "socket read",
    ),
    ("io_cqring_wait", Class::Is(Wait::Idle), "io_uring wait"),
    ("do_sigtimedwait", Class::Is(Wait::Idle), "signal wait"),
    ("sigsuspend", Class::Is(Wait::Idle), "signal wait"),
    ("__x64_sys_pause", Class::Is(Wait::Idle), "signal wait"),
    ("do_wait", Class::Is(Wait::Idle), "child wait"),
    // Kernel threads between jobs (system-wide recordings).
    ("worker_thread", Class::Is(Wait::Idle), "kernel thread"),
    ("smpboot_thread_fn", Class::Is(Wait::Idle), "kernel thread"),
    ("rcu_gp_kthread", Class::Is(Wait::Idle), "kernel thread"),
    ("rcu_gp_fqs_loop", Class::Is(Wait::Idle), "kernel thread"),
    ("kcompactd", Class::Is(Wait::Idle), "kernel thread"),
    ("kthreadd", Class::Is(Wait::Idle), "kernel thread"),
];

/// User frames (substrings) that make a futex wait idle: waiting to be handed work or for a
/// thread to end, not for a lock.
const FUTEX_IDLE_USER: &[&str] = &[
    "cond_wait",
    "cond_timedwait",
    "cond_clockwait",
    "Condvar::wait",
    "::park",
    "pthread_join",
    "clockjoin",
    "JoinInner",
    // glibc's wait under condition variables, joins and semaphores (2.34+); a contended
    // pthread mutex waits in __lll_lock_wait instead.
    "__futex_abstimed_wait",
];

/// User-space wrappers (substrings) that name a wait, for stacks without kernel frames.
const USER_WAITS: &[(&str, Wait, &str)] = &[
    ("epoll_wait", Wait::Idle, "epoll_wait"),
    ("epoll_pwait", Wait::Idle, "epoll_wait"),
    ("nanosleep", Wait::Idle, "nanosleep"),
    ("__poll", Wait::Idle, "poll"),
    ("select", Wait::Idle, "select"),
    ("accept", Wait::Idle, "accept"),
    ("cond_wait", Wait::Idle, "futex"),
    ("cond_timedwait", Wait::Idle, "futex"),
    ("__lll_lock_wait", Wait::Blocked, "futex"),
    ("pthread_mutex_lock", Wait::Blocked, "futex"),
];

/// The kind of a blocked-or-idle stack (root first, kernel frames marked `_[k]`) and the label
/// of the frame that decided it.
pub fn classify(frames: &[&str]) -> (Wait, &'static str) {
    for name in frames.iter().rev().filter_map(|f| f.strip_suffix("_[k]")) {
        if let Some(&(_, class, label)) = KERNEL_WAITS.iter().find(|w| name.starts_with(w.0)) {
            return match class {
                Class::Is(w) => (w, label),
                Class::Futex => {
                    // The root frame is the thread name; `[unknown]` frames tell nothing.
                    let user: Vec<&str> = frames
                        .iter()
                        .skip(1)
                        .copied()
                        .filter(|f| !f.ends_with("_[k]") && !f.starts_with("[unknown"))
                        .collect();
                    if user
                        .iter()
                        .any(|f| FUTEX_IDLE_USER.iter().any(|m| f.contains(m)))
                    {
                        (Wait::Idle, "futex (condition wait)")
                    } else if user.len() <= 1 {
                        // At most the libc wrapper: who waits, and for what, is unknown.
                        (Wait::Blocked, "futex (no user stack)")
                    } else {
                        (Wait::Blocked, "futex (lock)")
                    }
                }
            };
        }
    }
    if !frames.iter().any(|f| f.ends_with("_[k]")) {
        for f in frames.iter().rev() {
            if let Some(&(_, w, label)) = USER_WAITS.iter().find(|w| f.contains(w.0)) {
                return (w, label);
            }
        }
    }
    (Wait::Blocked, "other")
}

/// The folded profiles the view is made of (all from one recording).
#[derive(Debug, Clone, Copy)]
pub struct WallInput<'a> {
    /// On-CPU samples per stack.
    pub oncpu: &'a str,
    /// Nanoseconds one on-CPU sample stands for (1e9 / frequency).
    pub period_ns: u64,
    /// Off-CPU ns per stack, before the wakeup (or the whole period when never woken).
    pub waiting: &'a str,
    /// Off-CPU ns per stack, between the wakeup (or preemption) and running again.
    pub runnable: &'a str,
}

/// The wall-clock profile: its folded text and its summary for run.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Wall {
    pub folded: String,
    pub summary: WallSummary,
}

/// Stacks kept per futex lock in the summary.
const FUTEX_STACKS_KEPT: usize = 5;

/// Builds the wall-clock view of one recording.
pub fn build(input: WallInput) -> Result<Wall, FoldedError> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    let mut threads: BTreeMap<String, ThreadWall> = BTreeMap::new();
    let mut waits: BTreeMap<(Wait, &'static str), u64> = BTreeMap::new();
    let mut futex: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, n) in folded::parse(input.oncpu)? {
        let ns = n.saturating_mul(input.period_ns);
        *lines.entry(stack.to_string()).or_default() += ns;
        entry(&mut threads, stack).oncpu_ns += ns;
    }
    for (text, runnable) in [(input.waiting, false), (input.runnable, true)] {
        for (stack, ns) in folded::parse(text)? {
            let frames: Vec<&str> = stack.split(';').collect();
            let (wait, label) = if runnable {
                (Wait::Runnable, "run queue")
            } else {
                classify(&frames)
            };
            *lines
                .entry(format!("{stack};{}", wait.frame()))
                .or_default() += ns;
            *waits.entry((wait, label)).or_default() += ns;
            let t = entry(&mut threads, stack);
            match wait {
                Wait::Idle => t.idle_ns += ns,
                Wait::Blocked => t.blocked_ns += ns,
                Wait::Runnable => t.runnable_ns += ns,
            }
            if label == "futex (lock)" {
                let user: Vec<&str> = frames
                    .iter()
                    .copied()
                    .filter(|f| !f.ends_with("_[k]"))
                    .collect();
                *futex.entry(user.join(";")).or_default() += ns;
            }
        }
    }
    let mut folded = String::new();
    for (line, n) in &lines {
        if *n > 0 {
            folded.push_str(&format!("{line} {n}\n"));
        }
    }
    let mut threads: Vec<ThreadWall> = threads.into_values().map(with_shares).collect();
    threads.sort_by(|a, b| b.wall_ns.cmp(&a.wall_ns).then(a.thread.cmp(&b.thread)));
    let mut waits: Vec<WaitShare> = waits
        .into_iter()
        .map(|((w, label), ns)| WaitShare {
            wait: w.name().to_string(),
            kind: label.to_string(),
            ns,
        })
        .collect();
    waits.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.kind.cmp(&b.kind)));
    let mut futex: Vec<WallStack> = futex
        .into_iter()
        .map(|(stack, ns)| WallStack { stack, ns })
        .collect();
    futex.sort_by(|a, b| b.ns.cmp(&a.ns).then(a.stack.cmp(&b.stack)));
    futex.truncate(FUTEX_STACKS_KEPT);
    let total_ns = threads.iter().map(|t| t.wall_ns).sum();
    Ok(Wall {
        folded,
        summary: WallSummary {
            period_ns: input.period_ns,
            total_ns,
            threads,
            waits,
            futex_stacks: futex,
        },
    })
}

fn entry<'t>(threads: &'t mut BTreeMap<String, ThreadWall>, stack: &str) -> &'t mut ThreadWall {
    let name = stack.split(';').next().unwrap_or_default();
    threads
        .entry(name.to_string())
        .or_insert_with(|| ThreadWall {
            thread: name.to_string(),
            ..Default::default()
        })
}

fn with_shares(mut t: ThreadWall) -> ThreadWall {
    t.wall_ns = t.oncpu_ns + t.idle_ns + t.blocked_ns + t.runnable_ns;
    let share = |n: u64| {
        if t.wall_ns > 0 {
            n as f64 / t.wall_ns as f64
        } else {
            0.0
        }
    };
    t.oncpu_share = share(t.oncpu_ns);
    t.idle_share = share(t.idle_ns);
    t.blocked_share = share(t.blocked_ns);
    t.runnable_share = share(t.runnable_ns);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(stack: &str) -> (Wait, &'static str) {
        let frames: Vec<&str> = stack.split(';').collect();
        classify(&frames)
    }

    #[test]
    fn waits_for_work_are_idle() {
        let epoll = "srv;main;epoll_wait;entry_SYSCALL_64_[k];do_syscall_64_[k];\
                     __x64_sys_epoll_wait_[k];do_epoll_wait_[k];ep_poll_[k];\
                     schedule_hrtimeout_range_[k];schedule_[k];__schedule_[k]";
        assert_eq!(kind(epoll), (Wait::Idle, "epoll_wait"));
        let sleep = "burn;main;kpath_sleep_here;__GI___clock_nanosleep;entry_SYSCALL_64_[k];\
                     __x64_sys_clock_nanosleep_[k];common_nsleep_[k];hrtimer_nanosleep_[k];\
                     do_nanosleep_[k];schedule_[k];__schedule_[k]";
        assert_eq!(kind(sleep), (Wait::Idle, "nanosleep"));
        let accept = "srv;accept4;__sys_accept4_[k];inet_csk_accept_[k];schedule_timeout_[k];\
                      schedule_[k];__schedule_[k]";
        assert_eq!(kind(accept).0, Wait::Idle);
        let kworker = "kworker/0:1;ret_from_fork_asm_[k];ret_from_fork_[k];kthread_[k];\
                       worker_thread_[k];schedule_[k];__schedule_[k]";
        assert_eq!(kind(kworker), (Wait::Idle, "kernel thread"));
        let pipe = "make;read;ksys_read_[k];vfs_read_[k];anon_pipe_read_[k];schedule_[k]";
        assert_eq!(kind(pipe), (Wait::Idle, "pipe read"));
        // Without kernel frames the libc wrapper decides.
        assert_eq!(kind("srv;main;__GI_epoll_wait").0, Wait::Idle);
    }

    #[test]
    fn locks_io_and_faults_are_blocked_even_inside_a_wait_for_work() {
        let mmap = "srv;handle;__munmap;__x64_sys_munmap_[k];__vm_munmap_[k];\
                    down_write_killable_[k];rwsem_down_write_slowpath_[k];schedule_[k];\
                    __schedule_[k]";
        assert_eq!(kind(mmap), (Wait::Blocked, "rwsem"));
        // A page fault while epoll_wait copies events out: the innermost wait decides.
        let fault = "srv;epoll_wait;do_epoll_wait_[k];ep_poll_[k];exc_page_fault_[k];\
                     do_user_addr_fault_[k];lock_mm_and_find_vma_[k];\
                     rwsem_down_read_slowpath_[k];schedule_[k];__schedule_[k]";
        assert_eq!(kind(fault), (Wait::Blocked, "rwsem"));
        let io = "srv;read;vfs_read_[k];filemap_read_[k];folio_wait_bit_common_[k];\
                  io_schedule_[k];schedule_[k];__schedule_[k]";
        assert_eq!(kind(io), (Wait::Blocked, "I/O"));
        assert_eq!(kind("srv;main;something_[k];schedule_[k]").0, Wait::Blocked);
    }

    #[test]
    fn a_futex_is_idle_under_a_condition_variable_and_blocked_under_a_lock() {
        let k = "__x64_sys_futex_[k];do_futex_[k];futex_wait_[k];__futex_wait_[k];\
                 futex_wait_queue_[k];schedule_[k];__schedule_[k]";
        let cond = format!("pool;worker;__pthread_cond_wait;{k}");
        assert_eq!(kind(&cond), (Wait::Idle, "futex (condition wait)"));
        let park = format!("tokio;std::thread::park;{k}");
        assert_eq!(kind(&park).0, Wait::Idle);
        let lock = format!("app;update;pthread_mutex_lock;__lll_lock_wait;{k}");
        assert_eq!(kind(&lock), (Wait::Blocked, "futex (lock)"));
        // Without a user stack (fp unwinding of a frameless binary) nothing says which.
        let join = format!("main;__futex_abstimed_wait_common;{k}");
        assert_eq!(kind(&join), (Wait::Idle, "futex (condition wait)"));
        let bare = format!("rustc;[unknown];syscall;{k}");
        assert_eq!(kind(&bare), (Wait::Blocked, "futex (no user stack)"));
    }

    #[test]
    fn builds_the_profile_with_leaf_kinds_and_per_thread_shares() {
        let sleep = "burn;main;kpath_sleep_here;nanosleep;do_nanosleep_[k];schedule_[k]";
        let lock = "burn;main;pthread_mutex_lock;__lll_lock_wait;futex_wait_[k];schedule_[k]";
        let w = build(WallInput {
            oncpu: "burn;main;kpath_burn_here 200\nother;x 10\n",
            period_ns: 10_000_000,
            waiting: &format!("{sleep} 1000000000\n{lock} 500000000\n"),
            runnable: "burn;main;kpath_burn_here 500000000\n",
        })
        .unwrap();
        let lines: Vec<&str> = w.folded.lines().collect();
        assert!(
            lines.contains(&"burn;main;kpath_burn_here 2000000000"),
            "{lines:#?}"
        );
        assert!(lines.contains(&"burn;main;kpath_burn_here;[runnable] 500000000"));
        assert!(lines.contains(&format!("{sleep};[idle] 1000000000").as_str()));
        assert!(lines.contains(&format!("{lock};[blocked] 500000000").as_str()));
        let s = &w.summary;
        assert_eq!(s.total_ns, 4_100_000_000);
        assert_eq!(s.threads[0].thread, "burn");
        let b = &s.threads[0];
        assert_eq!(
            (
                b.oncpu_ns,
                b.idle_ns,
                b.blocked_ns,
                b.runnable_ns,
                b.wall_ns
            ),
            (
                2_000_000_000,
                1_000_000_000,
                500_000_000,
                500_000_000,
                4_000_000_000
            )
        );
        assert!((b.oncpu_share - 0.5).abs() < 1e-9 && (b.idle_share - 0.25).abs() < 1e-9);
        assert_eq!(s.threads[1].thread, "other");
        assert_eq!(s.waits[0].kind, "nanosleep");
        assert_eq!(
            s.futex_stacks,
            [WallStack {
                stack: "burn;main;pthread_mutex_lock;__lll_lock_wait".into(),
                ns: 500_000_000
            }]
        );
        assert_eq!(folded::total(&w.folded), s.total_ns);
    }

    #[test]
    fn rejects_malformed_input() {
        let bad = WallInput {
            oncpu: "no count\n",
            period_ns: 1,
            waiting: "",
            runnable: "",
        };
        assert!(build(bad).is_err());
    }
}
