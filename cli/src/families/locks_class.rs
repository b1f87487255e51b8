//! Which lock a contention was on, as a class rather than an address: a socket lock is
//! `sk_lock.slock` whichever socket it was, so one caller contending on many sockets is one row.
//!
//! Recognised, in this order (the README's "Lock classes" lists the same):
//! 1. a static lock: its kallsyms data symbol (`epmutex`, `tasklist_lock`, ...);
//! 2. a known heap lock, from the lock type (lock:contention_begin's flags) and the kernel frames
//!    from the lock primitive up to the first frame outside the locking code (the caller), see
//!    [`RULES`];
//! 3. otherwise `<type> in <caller>`: an unnamed lock of one type taken by one function, still
//!    one class however many instances (addresses) it has.
//!
//! Pure: frames and flags in, a name out; unit-tested without a kernel.
use probe_common::locks::lock_flags;

use crate::kernel::kallsyms::{is_locking_frame, Kallsyms};

/// What kind of primitive a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Spinlocks and rwlocks (flags SPIN, not MUTEX).
    Spin,
    /// Mutexes (MUTEX, with or without SPIN: optimistic spinning sets both).
    Mutex,
    /// rw_semaphores (READ or WRITE without SPIN, MUTEX, PERCPU).
    Rwsem,
}

impl Kind {
    pub fn of(flags: u32) -> Option<Kind> {
        use lock_flags::*;
        if flags & MUTEX != 0 {
            Some(Kind::Mutex)
        } else if flags & SPIN != 0 {
            Some(Kind::Spin)
        } else if flags & PERCPU == 0 && flags & (READ | WRITE) != 0 {
            Some(Kind::Rwsem)
        } else {
            None
        }
    }
}

/// A heap lock kpath names: its class when a frame of the stack, from the innermost up to the
/// caller, is named `frames` (exact function names, or prefixes ending in `*`).
#[derive(Debug)]
pub struct Rule {
    pub class: &'static str,
    pub kind: Kind,
    pub frames: &'static [&'static str],
}

/// Known heap locks. The first match wins, so more specific rules come first (the run-queue
/// lock is taken from inside wakeups and epoll callbacks, so it precedes them).
pub const RULES: &[Rule] = &[
    // raw_spin_rq_lock_nested (kernel/sched/core.c) is what every rq_lock()/task_rq_lock()
    // reaches; __schedule takes it inline.
    Rule {
        class: "rq->__lock",
        kind: Kind::Spin,
        frames: &[
            "raw_spin_rq_lock*",
            "_raw_spin_rq_lock*",
            "double_rq_lock",
            "__schedule",
            "schedule_tail",
            "sched_ttwu_pending",
            "ttwu_queue*",
            "__task_rq_lock",
            "task_rq_lock",
        ],
    },
    // try_to_wake_up takes p->pi_lock with raw_spin_lock_irqsave directly; its rq lock goes
    // through raw_spin_rq_lock_nested (matched above).
    Rule {
        class: "p->pi_lock",
        kind: Kind::Spin,
        frames: &["try_to_wake_up"],
    },
    // The socket lock: lock_sock()/release_sock() spin on sk_lock.slock (and lock_sock sleeps on
    // the owner); softirq receive takes it with bh_lock_sock, inline in tcp_v4_rcv.
    Rule {
        class: "sk_lock.slock",
        kind: Kind::Spin,
        frames: &[
            "lock_sock_nested",
            "__lock_sock*",
            "lock_sock_fast*",
            "release_sock",
            "__release_sock",
            "tcp_v4_rcv",
            "tcp_v6_rcv",
            "tcp_close",
            "__tcp_close",
            "tcp_tasklet_func",
            "tcp_write_timer",
            "tcp_delack_timer",
            "tcp_keepalive_timer",
            "inet_csk_accept",
        ],
    },
    Rule {
        class: "sk_lock",
        kind: Kind::Mutex,
        frames: &["lock_sock_nested", "__lock_sock*"],
    },
    // mmap_lock is the mm's rw_semaphore (mmap_read_lock/mmap_write_lock are inline).
    Rule {
        class: "mmap_lock",
        kind: Kind::Rwsem,
        frames: &[
            "mmap_read_lock*",
            "mmap_write_lock*",
            "lock_mm_and_find_vma",
            "do_user_addr_fault",
            "vm_mmap_pgoff",
            "__vm_munmap",
            "vm_munmap",
            "do_vmi_munmap",
            "__do_sys_brk",
            "__x64_sys_brk",
            "do_mprotect_pkey",
            "do_madvise",
            "__do_sys_mremap",
            "__x64_sys_mremap",
            "get_unmapped_area",
            "mmap_region",
            "do_mmap",
            "exit_mmap",
            "dup_mmap",
            "get_user_pages*",
            "__access_remote_vm",
            "lock_vma_under_rcu",
        ],
    },
    // The rw_semaphore's wait_lock, taken when waking mmap_lock waiters at unlock.
    Rule {
        class: "mmap_lock.wait_lock",
        kind: Kind::Spin,
        frames: &["rwsem_wake", "rwsem_down_*", "vms_complete_munmap_vmas"],
    },
    // The epoll instance's mutex (epoll_ctl, close of a watched file, the instance's release)
    // and its spinlock (ready list: ep_poll, ep_poll_callback, ep_start_scan, ep_done_scan).
    Rule {
        class: "ep->mtx",
        kind: Kind::Mutex,
        frames: &[
            "do_epoll_ctl",
            "eventpoll_release_file",
            "ep_free",
            "ep_clear_and_put",
            "ep_eventpoll_release",
            "__ep_remove",
            "ep_remove*",
            "ep_loop_check*",
            "ep_send_events",
            "ep_show_fdinfo",
        ],
    },
    Rule {
        class: "ep->lock",
        kind: Kind::Spin,
        frames: &[
            "ep_poll",
            "ep_poll_callback",
            "ep_start_scan",
            "ep_done_scan",
            "ep_send_events",
            "ep_insert",
            "ep_modify",
            "__ep_remove",
            "ep_remove*",
            "ep_events_available",
            "do_epoll_ctl",
            "eventpoll_release_file",
        ],
    },
    // The fd table's spinlock (fs/file.c).
    Rule {
        class: "files->file_lock",
        kind: Kind::Spin,
        frames: &[
            "alloc_fd",
            "file_close_fd",
            "close_fd",
            "__close_range",
            "fd_install",
            "do_dup2",
            "replace_fd",
            "put_unused_fd",
            "__get_unused_fd_flags",
            "expand_files",
        ],
    },
    Rule {
        class: "file->f_pos_lock",
        kind: Kind::Mutex,
        frames: &["fdget_pos", "__fdget_pos", "__f_unlock_pos"],
    },
    Rule {
        class: "pipe->mutex",
        kind: Kind::Mutex,
        frames: &["pipe_lock", "__pipe_lock", "pipe_read", "pipe_write"],
    },
    // The page-table lock (split PTE locks included).
    Rule {
        class: "ptl (page table lock)",
        kind: Kind::Spin,
        frames: &[
            "__pte_offset_map_lock",
            "pte_offset_map_lock",
            "pmd_lock",
            "__pmd_lock",
        ],
    },
    Rule {
        class: "sighand->siglock",
        kind: Kind::Spin,
        frames: &[
            "__lock_task_sighand",
            "do_sigaction",
            "get_signal",
            "__set_current_blocked",
            "sigprocmask",
            "do_send_sig_info",
            "force_sig_info_to_task",
        ],
    },
];

/// The function of a frame, without offset and compiler suffixes (`rwsem_wake.isra.0`).
fn name_of(frame: &str) -> &str {
    let name = frame.split_once('+').map_or(frame, |(n, _)| n);
    name.split_once('.').map_or(name, |(n, _)| n)
}

fn frame_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// The frames a rule looks at: the locking code and the caller (innermost first), nothing
/// above it, so a spinlock in `alloc_fd` under `do_epoll_ctl` is not taken for ep->lock.
pub fn lock_frames<S: AsRef<str>>(frames: &[S]) -> impl Iterator<Item = &str> {
    let upto = frames
        .iter()
        .position(|f| !is_locking_frame(f.as_ref()))
        .map_or(frames.len(), |i| i + 1);
    frames[..upto].iter().map(|f| name_of(f.as_ref()))
}

/// The class of a heap lock from its type and stack (innermost first), if a rule knows it.
pub fn known_class<S: AsRef<str>>(flags: u32, frames: &[S]) -> Option<&'static str> {
    let kind = Kind::of(flags)?;
    RULES.iter().find_map(|r| {
        (r.kind == kind
            && lock_frames(frames).any(|f| r.frames.iter().any(|p| frame_matches(p, f))))
        .then_some(r.class)
    })
}

/// The class of the lock at `addr`: a static lock's symbol, a known heap lock, else
/// `<type> in <caller function>`.
pub fn lock_class<S: AsRef<str>>(
    addr: u64,
    flags: u32,
    frames: &[S],
    caller_fn: &str,
    ksyms: &Kallsyms,
) -> String {
    if let Some(s) = ksyms.data_symbol(addr) {
        return s.name.to_string();
    }
    if let Some(c) = known_class(flags, frames) {
        return c.to_string();
    }
    format!("{} in {caller_fn}", lock_type(flags))
}

/// The lock type from lock:contention_begin's flags (include/trace/events/lock.h).
pub fn lock_type(flags: u32) -> &'static str {
    use lock_flags::*;
    if flags & PERCPU != 0 {
        if flags & WRITE != 0 {
            "percpu-rwsem:write"
        } else {
            "percpu-rwsem:read"
        }
    } else if flags & RT != 0 {
        "rtmutex"
    } else if flags & MUTEX != 0 {
        "mutex"
    } else if flags & SPIN != 0 {
        if flags & READ != 0 {
            "rwlock:read"
        } else if flags & WRITE != 0 {
            "rwlock:write"
        } else {
            "spinlock"
        }
    } else if flags & READ != 0 {
        "rwsem:read"
    } else if flags & WRITE != 0 {
        "rwsem:write"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock_flags::*;

    fn ksyms() -> Kallsyms {
        Kallsyms::parse(
            "ffffffff81000000 T _text\n\
             ffffffff81732700 t ep_remove\n\
             ffffffff82600000 D epmutex\n\
             ffffffff82600100 d other_data\n",
        )
        .unwrap()
    }

    #[test]
    fn static_locks_are_named_from_kallsyms() {
        let k = ksyms();
        let frames = ["__mutex_lock_slowpath+0x13", "eventpoll_release_file+0x3c"];
        assert_eq!(
            lock_class(
                0xffffffff82600000,
                MUTEX,
                &frames,
                "eventpoll_release_file",
                &k
            ),
            "epmutex"
        );
        // The same stack on a heap mutex is the instance's ep->mtx.
        assert_eq!(
            lock_class(
                0xffff888100000000,
                MUTEX,
                &frames,
                "eventpoll_release_file",
                &k
            ),
            "ep->mtx"
        );
    }

    #[test]
    fn heap_locks_are_classed_by_type_and_frames() {
        let sock = [
            "native_queued_spin_lock_slowpath+0x6e",
            "_raw_spin_lock+0x30",
            "tcp_v4_rcv+0xd2c",
            "ip_protocol_deliver_rcu+0x32",
        ];
        assert_eq!(known_class(SPIN, &sock), Some("sk_lock.slock"));
        let fault = [
            "rwsem_down_read_slowpath+0x2a",
            "down_read+0x4",
            "lock_mm_and_find_vma+0x9e",
        ];
        assert_eq!(known_class(READ, &fault), Some("mmap_lock"));
        assert_eq!(
            known_class(WRITE, &["down_write_killable+0x1", "vm_mmap_pgoff+0xe0"]),
            Some("mmap_lock")
        );
        let ctl = [
            "__mutex_lock.constprop.0+0x2a1",
            "mutex_lock+0x2e",
            "do_epoll_ctl+0x2da",
        ];
        assert_eq!(known_class(MUTEX | SPIN, &ctl), Some("ep->mtx"));
        let rq = [
            "native_queued_spin_lock_slowpath+0x6e",
            "_raw_spin_lock+0x30",
            "raw_spin_rq_lock_nested+0x1c",
            "try_to_wake_up+0x2b0",
        ];
        assert_eq!(known_class(SPIN, &rq), Some("rq->__lock"));
        let wake = ["_raw_spin_lock_irqsave+0x3d", "rwsem_wake.isra.0+0x8"];
        assert_eq!(known_class(SPIN, &wake), Some("mmap_lock.wait_lock"));
        let pi = ["_raw_spin_lock_irqsave+0x3d", "try_to_wake_up+0x5c"];
        assert_eq!(known_class(SPIN, &pi), Some("p->pi_lock"));
        // The type decides: a mutex in tcp_v4_rcv's stack is not the slock.
        assert_eq!(known_class(MUTEX, &sock), None);
        // Frames above the caller are not looked at.
        let fd = [
            "_raw_spin_lock+0x30",
            "alloc_fd+0x40",
            "do_epoll_create+0x10",
        ];
        assert_eq!(known_class(SPIN, &fd), Some("files->file_lock"));
        let deep = [
            "_raw_spin_lock+0x30",
            "ida_alloc_range+0x40",
            "do_epoll_ctl+0x10",
        ];
        assert_eq!(known_class(SPIN, &deep), None);
    }

    #[test]
    fn unknown_heap_locks_are_one_class_per_type_and_caller() {
        let k = ksyms();
        let frames = ["_raw_spin_lock+0x30", "ida_alloc_range+0x40"];
        let a = lock_class(0xffff888100000040, SPIN, &frames, "ida_alloc_range", &k);
        let b = lock_class(0xffff888200000080, SPIN, &frames, "ida_alloc_range", &k);
        assert_eq!(a, "spinlock in ida_alloc_range");
        assert_eq!(a, b);
    }

    #[test]
    fn kinds_follow_the_flags() {
        assert_eq!(Kind::of(MUTEX | SPIN), Some(Kind::Mutex));
        assert_eq!(Kind::of(SPIN | READ), Some(Kind::Spin));
        assert_eq!(Kind::of(WRITE), Some(Kind::Rwsem));
        assert_eq!(Kind::of(PERCPU | WRITE), None);
        assert_eq!(Kind::of(RT), None);
    }
}
