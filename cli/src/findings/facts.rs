//! The numbers the rules read, computed once from a [`Run`]: per-request rates, on-CPU shares,
//! lock waits by class, the wall-clock view's waits, losses; and labels that say how each was
//! measured. A fact that a run cannot give (no requests, a family not recorded) is absent,
//! and a rule that needs it does not fire.
use std::collections::BTreeMap;

use crate::run::Run;

/// How a fact is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A plain count (`123`).
    Count,
    /// A rate with two decimals (`1.00`).
    Rate,
    /// A share 0..1 shown as a percentage (`17.5%`).
    Share,
    /// Nanoseconds (`1.2ms`).
    Ns,
}

/// Every fact the engine knows: its name (as rules and templates spell it), unit and
/// meaning (used to state thresholds).
pub const FACTS: &[(&str, Unit, &str)] = &[
    ("requests", Unit::Count, "requests"),
    ("syscalls_per_req", Unit::Rate, "syscalls per request"),
    ("mmap_per_req", Unit::Rate, "mmap per request"),
    ("munmap_per_req", Unit::Rate, "munmap per request"),
    ("close_per_req", Unit::Rate, "close per request"),
    (
        "accept_per_req",
        Unit::Rate,
        "accepted connections per request",
    ),
    ("setsockopt_per_req", Unit::Rate, "setsockopt per request"),
    (
        "switches_per_req",
        Unit::Rate,
        "context switches per request",
    ),
    ("voluntary", Unit::Count, "voluntary switches"),
    ("involuntary", Unit::Count, "involuntary switches"),
    (
        "reply_segments_per_req",
        Unit::Rate,
        "reply segments per request",
    ),
    (
        "vm_munmap_share",
        Unit::Share,
        "__vm_munmap's share of on-CPU samples",
    ),
    (
        "tcp_close_share",
        Unit::Share,
        "tcp_close's share of on-CPU samples",
    ),
    (
        "eventpoll_release_share",
        Unit::Share,
        "eventpoll_release_file's share of on-CPU samples",
    ),
    (
        "close_path_share",
        Unit::Share,
        "tcp_close + eventpoll_release_file share of on-CPU samples",
    ),
    ("lock_wait_ns", Unit::Ns, "lock wait"),
    (
        "lock_wait_share",
        Unit::Share,
        "lock wait as a share of the threads' wall time",
    ),
    (
        "mmap_lock_wait_ns",
        Unit::Ns,
        "mmap_lock wait from vm_mmap_pgoff/__vm_munmap",
    ),
    (
        "mmap_lock_share",
        Unit::Share,
        "mmap/munmap's share of lock wait",
    ),
    ("epmutex_count", Unit::Count, "waits on epmutex"),
    ("epmutex_wait_ns", Unit::Ns, "epmutex wait"),
    ("epmutex_share", Unit::Share, "epmutex's share of lock wait"),
    (
        "top_lock_share",
        Unit::Share,
        "the top lock class's share of lock wait",
    ),
    ("top_lock_wait_ns", Unit::Ns, "the top lock class's wait"),
    (
        "runnable_share",
        Unit::Share,
        "runnable share of the threads' wall time",
    ),
    ("runq_p99_ns", Unit::Ns, "run-queue delay p99"),
    ("runq_max_ns", Unit::Ns, "run-queue delay max"),
    ("runq_count", Unit::Count, "run-queue delays"),
    (
        "futex_lock_share",
        Unit::Share,
        "share of off-CPU time in futex waits outside a condition wait",
    ),
    (
        "futex_lock_ns",
        Unit::Ns,
        "futex wait outside a condition wait",
    ),
    ("lost_events", Unit::Count, "lost events"),
    ("lost_stacks", Unit::Count, "lost stacks"),
    (
        "lost_stack_share",
        Unit::Share,
        "lost stacks as a share of stacks taken",
    ),
];

/// Fewer replies than this and per-request rates are not computed: the target is not
/// serving (or the estimate would be noise).
pub const MIN_REQUESTS: u64 = 100;

/// Syscalls that send a reply; the most called of them estimates the requests of a run that
/// was not driven by kpath's load generator.
const REPLY_SYSCALLS: &[&str] = &[
    "writev", "write", "sendfile", "sendmsg", "sendto", "sendmmsg",
];

/// Facts (numbers) and labels (text) of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub values: BTreeMap<&'static str, f64>,
    pub labels: BTreeMap<&'static str, String>,
}

impl Facts {
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied().filter(|v| v.is_finite())
    }

    fn set(&mut self, name: &'static str, v: f64) {
        if v.is_finite() {
            self.values.insert(name, v);
        }
    }

    fn label(&mut self, name: &'static str, text: impl Into<String>) {
        self.labels.insert(name, text.into());
    }

    /// The facts of a recorded run; requests are estimated from its reply syscalls.
    pub fn from_run(run: &Run) -> Facts {
        let mut f = Facts::default();
        for (fam, m) in &run.methods {
            let key: &'static str = match fam.as_str() {
                "syscalls" => "m_syscalls",
                "kpaths" => "m_kpaths",
                "sched" => "m_sched",
                "locks" => "m_locks",
                "oncpu" => "m_oncpu",
                _ => continue,
            };
            f.label(key, m.clone());
        }
        f.label("kernel", run.kernel.release.clone());
        f.label(
            "call_graph",
            run.call_graph.clone().unwrap_or_else(|| "fp".into()),
        );
        let reply = REPLY_SYSCALLS
            .iter()
            .filter_map(|n| run.syscalls.iter().find(|r| r.name == *n))
            .max_by_key(|r| r.count - r.errors.min(r.count));
        // A system-wide recording has no one server whose replies count requests.
        let reply = reply.filter(|_| run.target.kind != "system");
        if let Some(r) = reply {
            let n = r.count - r.errors.min(r.count);
            f.per_request_from(run, n, format!("estimated: {n} replies = {} calls", r.name));
        } else {
            f.per_request_from(run, 0, String::new());
        }
        f.shares(run);
        f.locks(run);
        f.sched(run);
        f.lost(run);
        f
    }

    /// The same facts with the request count a load generator measured.
    pub fn with_requests(mut self, run: &Run, requests: u64, how: &str) -> Facts {
        for k in [
            "syscalls_per_req",
            "mmap_per_req",
            "munmap_per_req",
            "close_per_req",
            "accept_per_req",
            "setsockopt_per_req",
            "switches_per_req",
        ] {
            self.values.remove(k);
        }
        self.per_request_from(run, requests, format!("{requests} requests, {how}"));
        self
    }

    /// Reply segments per request (counted by the load generator).
    pub fn with_reply_segments(mut self, per_req: Option<f64>) -> Facts {
        if let Some(s) = per_req {
            self.set("reply_segments_per_req", s);
        }
        self
    }

    fn per_request_from(&mut self, run: &Run, n: u64, how: String) {
        self.set("requests", n as f64);
        if n < MIN_REQUESTS {
            self.labels.remove("requests_how");
            return;
        }
        self.label("requests_how", how);
        let per = |x: u64| x as f64 / n as f64;
        let calls = |names: &[&str]| -> u64 {
            run.syscalls
                .iter()
                .filter(|r| names.contains(&r.name.as_str()))
                .map(|r| r.count)
                .sum()
        };
        let ok = |names: &[&str]| -> u64 {
            run.syscalls
                .iter()
                .filter(|r| names.contains(&r.name.as_str()))
                .map(|r| r.count - r.errors.min(r.count))
                .sum()
        };
        if !run.syscalls.is_empty() {
            let all: u64 = run.syscalls.iter().map(|r| r.count).sum();
            self.set("syscalls_per_req", per(all));
            self.set("mmap_per_req", per(calls(&["mmap"])));
            self.set("munmap_per_req", per(calls(&["munmap"])));
            self.set("close_per_req", per(calls(&["close"])));
            self.set("accept_per_req", per(ok(&["accept", "accept4"])));
            self.set("setsockopt_per_req", per(calls(&["setsockopt"])));
            let mut top: Vec<_> = run.syscalls.iter().collect();
            top.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
            let list: Vec<String> = top
                .iter()
                .take(4)
                .map(|r| format!("{} {:.2}", r.name, per(r.count)))
                .collect();
            self.label("top_syscalls", list.join(", "));
        }
        if let Some(s) = &run.sched {
            self.set(
                "switches_per_req",
                per(s.voluntary_switches + s.involuntary_switches),
            );
        }
    }

    /// On-CPU shares of the close and munmap paths: kpaths' rows where sampled, else the
    /// flat profile's total share.
    fn shares(&mut self, run: &Run) {
        let share = |function: &str| -> Option<f64> {
            let row = run
                .kpaths
                .iter()
                .find(|k| k.function == function && k.samples > 0);
            if let Some(k) = row {
                return Some(k.oncpu_share);
            }
            let o = run.oncpu.as_ref()?;
            let k = format!("{function}_[k]");
            Some(
                o.functions
                    .iter()
                    .find(|f| f.function == k)
                    .map_or(0.0, |f| f.total_share),
            )
        };
        let sampled = run.oncpu.as_ref().is_some_and(|o| o.samples > 0)
            || run.kpaths.iter().any(|k| k.samples > 0);
        if !sampled {
            return;
        }
        let munmap = share("__vm_munmap");
        let tcp_close = share("tcp_close");
        let epoll = share("eventpoll_release_file");
        if let Some(v) = munmap {
            self.set("vm_munmap_share", v);
        }
        if let (Some(t), Some(e)) = (tcp_close, epoll) {
            self.set("tcp_close_share", t);
            self.set("eventpoll_release_share", e);
            self.set("close_path_share", t + e);
        }
    }

    fn locks(&mut self, run: &Run) {
        if !run.methods.contains_key("locks") {
            return;
        }
        let caller = |c: &str| c.split('+').next().unwrap_or_default().to_string();
        let total: u64 = run.locks.iter().map(|l| l.wait_ns).sum();
        self.set("lock_wait_ns", total as f64);
        let wall = run
            .wall
            .as_ref()
            .map(|w| w.total_ns)
            .filter(|&n| n > 0)
            .unwrap_or(run.duration_ns);
        if wall > 0 {
            self.set("lock_wait_share", total as f64 / wall as f64);
        }
        let share = |n: u64| {
            if total > 0 {
                n as f64 / total as f64
            } else {
                0.0
            }
        };
        let mmap: u64 = run
            .locks
            .iter()
            .filter(|l| {
                l.lock == "mmap_lock"
                    && matches!(caller(&l.caller).as_str(), "vm_mmap_pgoff" | "__vm_munmap")
            })
            .map(|l| l.wait_ns)
            .sum();
        // Absent when none: the evidence then leaves its lock part out.
        if mmap > 0 {
            self.set("mmap_lock_wait_ns", mmap as f64);
            self.set("mmap_lock_share", share(mmap));
        }
        let ep: Vec<_> = run.locks.iter().filter(|l| l.lock == "epmutex").collect();
        let ep_ns: u64 = ep.iter().map(|l| l.wait_ns).sum();
        self.set(
            "epmutex_count",
            ep.iter().map(|l| l.count).sum::<u64>() as f64,
        );
        self.set("epmutex_wait_ns", ep_ns as f64);
        self.set("epmutex_share", share(ep_ns));
        let mut callers: Vec<String> = ep.iter().map(|l| caller(&l.caller)).collect();
        callers.dedup();
        self.label("epmutex_callers", callers.join(", "));
        // By class: the rows of one class (several callers) together.
        let mut classes: BTreeMap<&str, (u64, &str, &str)> = BTreeMap::new();
        for l in &run.locks {
            let e = classes.entry(l.lock.as_str()).or_insert((
                0,
                l.caller.as_str(),
                l.lock_type.as_str(),
            ));
            e.0 += l.wait_ns;
        }
        if let Some((class, (ns, top_caller, ty))) = classes
            .into_iter()
            .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.0.cmp(a.0)))
        {
            self.set("top_lock_share", share(ns));
            self.set("top_lock_wait_ns", ns as f64);
            self.label("top_lock", class);
            self.label("top_lock_caller", caller(top_caller));
            self.label("top_lock_type", ty);
        }
    }

    fn sched(&mut self, run: &Run) {
        if let Some(s) = &run.sched {
            self.set("voluntary", s.voluntary_switches as f64);
            self.set("involuntary", s.involuntary_switches as f64);
            self.set("runq_p99_ns", s.runq_delay_p99_ns as f64);
            self.set("runq_max_ns", s.runq_delay_max_ns as f64);
            self.set("runq_count", s.runq_delay_count as f64);
        }
        let Some(w) = &run.wall else { return };
        if w.total_ns > 0 {
            let runnable: u64 = w.threads.iter().map(|t| t.runnable_ns).sum();
            self.set("runnable_share", runnable as f64 / w.total_ns as f64);
        }
        let off: u64 = w.waits.iter().map(|x| x.ns).sum();
        let futex: u64 = w
            .waits
            .iter()
            .filter(|x| x.kind == "futex (lock)")
            .map(|x| x.ns)
            .sum();
        if off > 0 {
            self.set("futex_lock_share", futex as f64 / off as f64);
            self.set("futex_lock_ns", futex as f64);
        }
        if let Some(s) = w.futex_stacks.first() {
            // The innermost user frames say where the lock is taken.
            let frames: Vec<&str> = s.stack.split(';').collect();
            let tail = frames[frames.len().saturating_sub(6)..].join(";");
            self.label(
                "futex_stack",
                format!("{} ({})", tail, crate::fmt::ns(s.ns)),
            );
        }
    }

    fn lost(&mut self, run: &Run) {
        let events: u64 = run.lost.values().sum();
        self.set("lost_events", events as f64);
        let on = run.oncpu.as_ref();
        let off = run.offcpu.as_ref();
        let stacks = on.map_or(0, |o| o.lost_stacks) + off.map_or(0, |o| o.lost_stacks);
        self.set("lost_stacks", stacks as f64);
        let taken = on.map_or(0, |o| o.samples)
            + run
                .sched
                .as_ref()
                .map_or(0, |s| s.voluntary_switches + s.involuntary_switches);
        if taken > 0 {
            self.set("lost_stack_share", stacks as f64 / taken as f64);
        }
        let detail: Vec<String> = run
            .lost
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(f, n)| format!("{f} {n}"))
            .collect();
        self.label(
            "lost_detail",
            if detail.is_empty() {
                "no events lost".to_string()
            } else {
                format!("events by family: {}", detail.join(", "))
            },
        );
    }
}
