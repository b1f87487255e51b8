//! The rules, as data: when each fires (conditions on [`super::facts::FACTS`]), and what it
//! says. Adding a rule is one entry here and its two unit tests (fires, does not fire).
use super::{Cond, Op::*, Rule, Severity::*};

const fn ge(fact: &'static str, value: f64) -> Cond {
    Cond {
        fact,
        op: Ge,
        value,
    }
}

pub const RULES: &[Rule] = &[
    Rule {
        id: "mmap-lock",
        severity: High,
        title: "mmap/munmap per request serialize the threads on mmap_lock",
        when: &[
            &[ge("munmap_per_req", 0.5), ge("vm_munmap_share", 0.05)],
            &[ge("munmap_per_req", 0.5), ge("mmap_lock_share", 0.10)],
        ],
        evidence: "{munmap_per_req} munmap and {mmap_per_req} mmap per request ({requests_how}; \
                   syscalls: {m_syscalls})[[; __vm_munmap in {vm_munmap_share} of on-CPU \
                   samples (sampled stacks)]][[; mmap_lock waits from vm_mmap_pgoff/__vm_munmap \
                   {mmap_lock_wait_ns}, {mmap_lock_share} of all lock wait (locks: {m_locks})]]",
        meaning: "every mmap and munmap changes the process's address space under mmap_lock \
                  taken for writing, so all threads of the process take turns; munmap also \
                  flushes the TLB of every CPU the process ran on",
        try_: "serve files without mapping them per request: sendfile, read into a reused \
               buffer, or keep hot files mapped (or cached in memory) for the process's life",
        scenario: Some("gulan"),
    },
    Rule {
        id: "close-path",
        severity: Medium,
        title: "a connection closed after every reply: the close path takes a large share of CPU",
        when: &[&[ge("close_path_share", 0.05), ge("accept_per_req", 0.5)]],
        evidence: "tcp_close in {tcp_close_share} and eventpoll_release_file in \
                   {eventpoll_release_share} of on-CPU samples (sampled stacks); \
                   {accept_per_req} accepted connections and {close_per_req} close per request \
                   ({requests_how})",
        meaning: "each request pays a TCP handshake and the teardown in tcp_close, and a socket \
                  still in an epoll set leaves it in eventpoll_release_file under the epoll \
                  instance's mutex",
        try_: "keep connections alive (HTTP keep-alive; nginx's keepalive_requests above 1; \
               pooled client connections); before Linux 6.4 an event loop that closes per \
               request also contends on the global epmutex",
        scenario: Some("epoll-close"),
    },
    Rule {
        id: "epmutex",
        severity: High,
        title: "closes of epoll-watched files serialize on the global epmutex",
        when: &[
            &[ge("epmutex_count", 10.0)],
            &[ge("epmutex_count", 1.0), ge("epmutex_share", 0.10)],
        ],
        evidence: "{epmutex_count} waits on epmutex, {epmutex_wait_ns} in all, {epmutex_share} \
                   of lock wait, callers {epmutex_callers} (locks: {m_locks}) on kernel {kernel}, \
                   which still has the global mutex (before 6.4's refcounted epoll)",
        meaning: "until Linux 6.4 (\"epoll: use refcount to reduce ep_mutex contention\", \
                  backported to some stable series) closing a file still registered in epoll \
                  runs eventpoll_release_file under one mutex for the whole machine: every event \
                  loop's closes take turns",
        try_: "remove the socket from the epoll set (EPOLL_CTL_DEL) before close, keep \
               connections alive, or run a kernel with the refcounted epoll (6.4+, Debian's 6.1)",
        scenario: Some("epoll-close"),
    },
    Rule {
        id: "tcp-cork",
        severity: Medium,
        title: "TCP_CORK set and cleared around every reply",
        when: &[&[ge("setsockopt_per_req", 1.5)]],
        evidence: "{setsockopt_per_req} setsockopt per request ({requests_how}; syscalls: \
                   {m_syscalls})[[; {reply_segments_per_req} reply segments per request]]",
        meaning: "two extra syscalls per reply only to make the header and the body leave in \
                  one segment; the send path gets the same segments without them",
        try_: "send the header with MSG_MORE before sendfile, or one writev of header and body \
               (from a cache), instead of TCP_CORK on/off pairs",
        scenario: Some("cork"),
    },
    Rule {
        id: "syscalls-per-request",
        severity: Medium,
        title: "many syscalls per request",
        when: &[&[ge("syscalls_per_req", 8.0)]],
        evidence: "{syscalls_per_req} syscalls per request ({requests_how}; syscalls: \
                   {m_syscalls}); most called: {top_syscalls}",
        meaning: "every syscall is a kernel entry and exit (about 0.1 µs before any work here, \
                  `kpath costs`) plus its own work, paid for each request",
        try_: "batch: one writev of header and body, files kept open or cached, accept4 with \
               SOCK_NONBLOCK, io_uring to submit many connections' operations per kernel entry",
        scenario: Some("batching"),
    },
    Rule {
        id: "ctx-switches-per-request",
        severity: Medium,
        title: "a context switch or more per request",
        when: &[&[ge("switches_per_req", 1.0)]],
        evidence: "{switches_per_req} context switches per request ({voluntary} voluntary, \
                   {involuntary} involuntary; sched: {m_sched}; {requests_how})",
        meaning: "a thread that blocks for each request (a thread per connection, a hand-off to \
                  a pool) pays a sleep, a wakeup and a switch every time; an event loop serves \
                  every ready connection per wakeup",
        try_: "an event loop per core (epoll, io_uring) instead of a thread per connection, and \
               no hand-off between threads per request",
        scenario: Some("threadpool"),
    },
    Rule {
        id: "runq-delay",
        severity: High,
        title: "threads wait for a CPU: high run-queue delay",
        when: &[
            &[ge("runnable_share", 0.10)],
            // A p99 of a handful of delays is one delay: ask for enough of them.
            &[ge("runq_p99_ns", 5e6), ge("runq_count", 100.0)],
        ],
        evidence: "runnable (ready, waiting for a CPU) {runnable_share} of the threads' wall time \
                   (wall-clock view); run-queue delay p99 {runq_p99_ns}, max {runq_max_ns} over \
                   {runq_count} delays (sched: {m_sched})",
        meaning: "the threads were ready to run but every CPU was busy: CPU saturation, or more \
                  runnable threads than cores",
        try_: "fewer busy threads than cores, less CPU per request, or more CPUs; `kpath record \
               -a` shows what else competes for them",
        scenario: Some("threadpool"),
    },
    Rule {
        id: "dominant-lock",
        severity: Medium,
        title: "one lock class takes most of the lock wait",
        when: &[&[ge("top_lock_share", 0.5), ge("lock_wait_share", 0.01)]],
        evidence: "{top_lock} ({top_lock_type}, first caller {top_lock_caller}) has \
                   {top_lock_share} of lock wait: {top_lock_wait_ns} of {lock_wait_ns}, which is \
                   {lock_wait_share} of the threads' wall time (locks: {m_locks})",
        meaning: "one lock serializes the threads that take it; the other locks hardly matter \
                  until it is gone",
        try_: "read the lock's stacks (run.json `locks[].stack`, `--locks-by task`): take it less \
               often, shard it, or move work out from under it",
        scenario: None,
    },
    Rule {
        id: "futex-offcpu",
        severity: Medium,
        title: "off-CPU time dominated by futex waits: user-space lock contention",
        when: &[&[ge("futex_lock_share", 0.25)]],
        evidence: "{futex_lock_share} of off-CPU time ({futex_lock_ns}) waits on a futex outside \
                   a condition wait (wall-clock view, sched: {m_sched}); longest waiters' user \
                   stack: {futex_stack} (call graph {call_graph})",
        meaning: "threads sleep in the kernel because a lock in user space (a pthread mutex, a \
                  Rust Mutex or RwLock) is held by another thread",
        try_: "the stacks name the lock's callers: hold it shorter, shard it, or keep the data \
               per thread",
        scenario: None,
    },
    Rule {
        id: "lost-data",
        severity: Info,
        title: "events or stacks were lost: the shares are computed from what was kept",
        when: &[&[ge("lost_events", 1.0)], &[ge("lost_stack_share", 0.01)]],
        evidence: "{lost_events} events lost ({lost_detail}); {lost_stacks} stacks not stored \
                   (stack map full or hash collision)[[, {lost_stack_share} of the stacks taken]]",
        meaning: "a BPF map was full or two stacks hashed to one slot: the tables and flame \
                  graphs miss those events, which may skew shares",
        try_: "lower -F, record for less time, or use --offcpu-min-us to skip short off-CPU \
               periods; map sizes are in probe-common",
        scenario: None,
    },
];
