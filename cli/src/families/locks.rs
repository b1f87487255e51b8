//! `locks`: kernel lock contention by first non-locking caller and lock class (see
//! `locks_class`: a static lock's symbol, a known heap lock, else `<type> in <caller>`), by lock
//! class, or by thread (`--locks-by`), with wait time: `perf lock contention`'s three views.
//!
//! Kernel side: probe-ebpf/src/locks.rs; shared types: probe-common/src/locks.rs; tests:
//! cli/tests/locks.rs, cli/tests/vm.rs (epmutex on 5.10 through the kprobe).
use std::collections::BTreeMap;

use probe_common::{
    locks::{LockKey, LockStats, MAP_STATS},
    Family,
};

use super::{
    locks_class::{self, lock_type},
    section::{table, Align::*, Section, SectionOptions, Table},
    Collector, FamilyPath, Method,
};
use crate::{
    fmt,
    kernel::kallsyms::{self, Kallsyms},
    probes::{
        attach::Prog,
        maps::hash_entries,
        plan::{needs, MethodSpec, Unit},
        FamilyTable,
    },
    run::{LockRow, LockTaskRow, Run},
    stacks::{
        stack::{FrameKind, SymStacks},
        symbolize::{RawStack, StackSymbolizer},
        LockStacks, LockWait,
    },
};

pub use super::section::LocksBy;

pub static PATH: FamilyPath = FamilyPath {
    table: FamilyTable {
        family: Family::Locks,
        units: &[Unit {
            name: "locks",
            methods: &METHODS,
        }],
        globals: |_, _| Vec::new(),
    },
    maps: &[MAP_STATS],
    reads: &[],
    // For the waiters' user stacks (dwarf), symbolized from the maps snapshots.
    folds_stacks: true,
    collect,
    section,
};

const METHODS: [MethodSpec<Method>; 2] = [
    MethodSpec {
        method: Method::LockTracepoints,
        needs: |f| {
            needs::tracefs(f).or((!f.lock_tracepoints)
                .then_some("no lock:contention_* tracepoints (they arrived in Linux 5.19)"))
        },
        programs: &[
            Prog::TracePoint {
                prog: "locks_contention_begin",
                category: "lock",
                event: "contention_begin",
            },
            Prog::TracePoint {
                prog: "locks_contention_end",
                category: "lock",
                event: "contention_end",
            },
        ],
        uses: None,
    },
    // Mutexes only (spinning included). The kretprobe first: handlers on one address run
    // newest first, and the kretprobe's entry handler replaces the return address with its
    // trampoline, which unwinders before Linux 5.13 cannot see past. So the kprobe, attached
    // last, runs first and takes the stack with the real caller (eventpoll_release_file, not
    // kretprobe_trampoline).
    MethodSpec {
        method: Method::MutexKprobe,
        needs: needs::kprobes,
        programs: &[
            Prog::KProbe {
                prog: "locks_mutex_slowpath_kretprobe",
                symbol: "__mutex_lock_slowpath",
            },
            Prog::KProbe {
                prog: "locks_mutex_slowpath_kprobe",
                symbol: "__mutex_lock_slowpath",
            },
        ],
        uses: None,
    },
];

fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    let probes = c.probes;
    let per_key = hash_entries::<LockKey, LockStats>(&probes.ebpf, MAP_STATS)?;
    let (stacks, ksyms) = c.stacks_and_ksyms()?;
    let mut waits = Vec::with_capacity(per_key.len());
    for (key, s) in &per_key {
        let mut stack = stacks.kernel_frames(key.kstack_id, ksyms);
        // The lock tracepoint's own program and glue are the innermost frames.
        crate::stacks::bpf_frames::fold_bpf_frames(
            &mut stack,
            |f| f.split_once('+').map_or(f, |(n, _)| n),
            str::to_string,
        );
        waits.push(classify(key, s, stack, ksyms));
    }
    // Per row, the user stack (dwarf) of its longest-waiting key: (wait, index in `waits`).
    let mut user: BTreeMap<RowKey, (u64, usize)> = BTreeMap::new();
    for (i, w) in waits.iter().enumerate().filter(|(_, w)| w.user_stack != 0) {
        let k = (
            w.caller.clone(),
            w.class.clone(),
            lock_type(w.flags).to_string(),
        );
        let u = user.entry(k).or_insert((0, usize::MAX));
        if u.1 == usize::MAX || w.stats.wait_ns >= u.0 {
            *u = (w.stats.wait_ns, i);
        }
    }
    let profile = lock_stacks(c, &per_key, &waits)?;
    run.lock_tasks = by_task(&waits);
    run.locks = by_caller(waits);
    if let Some(p) = &profile {
        user_stacks(&mut run.locks, &user, &p.stacks);
    }
    c.profiles.locks = profile;
    Ok(())
}

/// Every contention key's stacks, kernel and user, symbolized once (with the `/proc/PID/maps`
/// snapshots the stack families keep): the pprof profile and the rows' user stacks come from
/// them. `None` when no profile is wanted.
fn lock_stacks(
    c: &mut Collector,
    per_key: &[(LockKey, LockStats)],
    waits: &[Wait],
) -> anyhow::Result<Option<LockStacks>> {
    if c.maps.is_none() {
        return Ok(None);
    }
    let raws: Vec<RawStack> = per_key
        .iter()
        .map(|(k, s)| RawStack {
            tgid: k.tgid,
            comm: comm(&k.comm),
            kernel: c.stacks.ips(k.kstack_id).to_vec(),
            user: if k.user_stack != 0 {
                c.stacks.dwarf_ips(k.user_stack).to_vec()
            } else {
                Vec::new()
            },
            user_ret: 0,
            weight: s.wait_ns,
            kernel_from_task: false,
        })
        .collect();
    let (ksyms, Some(maps)) = c.ksyms_and_maps()? else {
        return Ok(None);
    };
    for r in raws.iter().filter(|r| !r.user.is_empty()) {
        maps.ensure(r.tgid);
    }
    let stacks = StackSymbolizer::new(ksyms, &maps.snapshots).symbolize_stacks(&raws);
    let waits = waits
        .iter()
        .map(|w| LockWait {
            tid: w.tid,
            contentions: w.stats.count,
            lock: w.class.clone(),
            lock_type: lock_type(w.flags).to_string(),
        })
        .collect();
    Ok(Some(LockStacks { stacks, waits }))
}

/// A caller row's identity: (caller, lock class, lock type).
type RowKey = (String, String, String);

/// One kernel map entry, classified: a (lock, stack, flags, thread) key and its waits.
#[derive(Debug, Clone)]
pub struct Wait {
    pub caller: String,
    pub class: String,
    pub flags: u32,
    pub addr: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: String,
    pub stack: Vec<String>,
    /// The waiter's dwarf user stack key, 0 when none was taken.
    pub user_stack: u64,
    pub stats: LockStats,
}

fn classify(key: &LockKey, s: &LockStats, stack: Vec<String>, ksyms: &Kallsyms) -> Wait {
    let caller = match kallsyms::lock_caller(&stack) {
        Some(c) => c.split('+').next().unwrap_or_default().to_string(),
        None if stack.is_empty() => "[stack lost]".into(),
        None => "[lock code only]".into(),
    };
    let class = locks_class::lock_class(key.lock_addr, key.flags, &stack, &caller, ksyms);
    Wait {
        caller,
        class,
        flags: key.flags,
        addr: key.lock_addr,
        tgid: key.tgid,
        tid: key.tid,
        comm: comm(&key.comm),
        stack,
        user_stack: key.user_stack,
        stats: *s,
    }
}

fn comm(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// Rows per (caller, lock class, type), like `perf lock contention`'s default: instances of
/// one class (every socket's slock) merge, and so do the threads and stacks above the caller.
/// The row keeps the stack and address of its largest wait.
pub fn by_caller(waits: Vec<Wait>) -> Vec<LockRow> {
    struct Acc {
        row: LockRow,
        addrs: BTreeMap<u64, u64>,
        stack_wait: u64,
    }
    let mut acc: BTreeMap<(String, String, u32), Acc> = BTreeMap::new();
    for w in waits {
        let a = acc
            .entry((w.caller.clone(), w.class.clone(), w.flags))
            .or_insert_with(|| Acc {
                row: LockRow {
                    caller: w.caller.clone(),
                    lock: w.class.clone(),
                    lock_type: lock_type(w.flags).to_string(),
                    ..Default::default()
                },
                addrs: BTreeMap::new(),
                stack_wait: 0,
            });
        a.row.count += w.stats.count;
        a.row.wait_ns += w.stats.wait_ns;
        a.row.max_ns = a.row.max_ns.max(w.stats.max_ns);
        *a.addrs.entry(w.addr).or_default() += w.stats.wait_ns;
        if a.row.stack.is_empty() || w.stats.wait_ns > a.stack_wait {
            a.stack_wait = w.stats.wait_ns;
            a.row.stack = w.stack;
        }
    }
    let mut rows: Vec<LockRow> = acc
        .into_values()
        .map(|mut a| {
            a.row.lock_addrs = a.addrs.len() as u64;
            let top = a
                .addrs
                .iter()
                .max_by_key(|&(addr, w)| (*w, std::cmp::Reverse(*addr)));
            a.row.lock_addr = top
                .map(|(addr, _)| format!("{addr:#x}"))
                .unwrap_or_default();
            a.row
        })
        .collect();
    rows.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.caller.cmp(&b.caller)));
    rows
}

/// Rows per waiting thread (`perf lock contention -t`).
pub fn by_task(waits: &[Wait]) -> Vec<LockTaskRow> {
    let mut acc: BTreeMap<(u32, u32), LockTaskRow> = BTreeMap::new();
    for w in waits {
        let r = acc.entry((w.tgid, w.tid)).or_insert_with(|| LockTaskRow {
            tgid: w.tgid,
            tid: w.tid,
            comm: w.comm.clone(),
            ..Default::default()
        });
        r.count += w.stats.count;
        r.wait_ns += w.stats.wait_ns;
        r.max_ns = r.max_ns.max(w.stats.max_ns);
    }
    let mut rows: Vec<LockTaskRow> = acc.into_values().collect();
    rows.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.tid.cmp(&b.tid)));
    rows
}

/// One row per lock class and type (`--locks-by lock`), summed over callers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassRow {
    pub lock: String,
    pub lock_type: String,
    pub callers: usize,
    /// The caller with the most wait.
    pub top_caller: String,
    pub lock_addrs: u64,
    pub count: u64,
    pub wait_ns: u64,
    pub max_ns: u64,
}

pub fn by_lock(rows: &[LockRow]) -> Vec<ClassRow> {
    let mut acc: BTreeMap<(&str, &str), (ClassRow, u64)> = BTreeMap::new();
    for r in rows {
        let (c, top_wait) = acc
            .entry((r.lock.as_str(), r.lock_type.as_str()))
            .or_insert_with(|| {
                (
                    ClassRow {
                        lock: r.lock.clone(),
                        lock_type: r.lock_type.clone(),
                        ..Default::default()
                    },
                    0,
                )
            });
        c.callers += 1;
        // Instances are counted per caller row, so a lock two callers share counts twice:
        // an upper bound, said in the column name.
        c.lock_addrs += r.lock_addrs;
        c.count += r.count;
        c.wait_ns += r.wait_ns;
        c.max_ns = c.max_ns.max(r.max_ns);
        if c.top_caller.is_empty() || r.wait_ns > *top_wait {
            *top_wait = r.wait_ns;
            c.top_caller = r.caller.clone();
        }
    }
    let mut out: Vec<ClassRow> = acc.into_values().map(|(c, _)| c).collect();
    out.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.lock.cmp(&b.lock)));
    out
}

/// Each row's heaviest user stack (dwarf recordings) into `LockRow::user_stack`, root first,
/// from the symbolized contention stacks (indexed like the waits).
fn user_stacks(rows: &mut [LockRow], user: &BTreeMap<RowKey, (u64, usize)>, stacks: &SymStacks) {
    for (k, &(_, i)) in user {
        let Some(stack) = stacks.stacks.get(i) else {
            continue;
        };
        if let Some(row) = rows
            .iter_mut()
            .find(|r| r.caller == k.0 && r.lock == k.1 && r.lock_type == k.2)
        {
            row.user_stack = stack
                .frames
                .iter()
                .filter(|f| f.kind == FrameKind::User)
                .flat_map(|f| f.folded_names())
                .collect();
        }
    }
}

fn section(run: &Run, opts: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Locks, "Lock contention")?;
    if run.locks.is_empty() {
        s.line("no lock contention recorded");
        return Some(s);
    }
    let mut t = match opts.locks_by {
        LocksBy::Caller => caller_table(run, opts.top),
        LocksBy::Lock => lock_table(run, opts.top),
        LocksBy::Task if run.lock_tasks.is_empty() => {
            s.line("no per-thread lock figures in this run (recorded before --locks-by task)");
            return Some(s);
        }
        LocksBy::Task => task_table(run, opts.top),
    };
    t.hidden_what = "locks";
    s.table(t);
    Some(s)
}

fn caller_table(run: &Run, top: usize) -> Table {
    let mut rows: Vec<&LockRow> = run.locks.iter().collect();
    rows.sort_by(|a, b| {
        b.wait_ns
            .cmp(&a.wait_ns)
            .then(a.caller.cmp(&b.caller))
            .then(a.lock.cmp(&b.lock))
    });
    let shown = &rows[..rows.len().min(top)];
    let mut t = table(
        "locks",
        &[
            ("caller", Left),
            ("lock", Left),
            ("type", Left),
            ("count", Right),
            ("total wait", Right),
            ("max wait", Right),
        ],
        shown.iter().map(|r| {
            vec![
                r.caller.clone(),
                r.lock.clone(),
                r.lock_type.clone(),
                r.count.to_string(),
                fmt::ns(r.wait_ns),
                fmt::ns(r.max_ns),
            ]
        }),
    );
    t.hidden = rows.len() - shown.len();
    t
}

fn lock_table(run: &Run, top: usize) -> Table {
    let rows = by_lock(&run.locks);
    let shown = &rows[..rows.len().min(top)];
    let mut t = table(
        "locks",
        &[
            ("lock", Left),
            ("type", Left),
            ("callers", Right),
            ("top caller", Left),
            ("count", Right),
            ("total wait", Right),
            ("max wait", Right),
        ],
        shown.iter().map(|r| {
            vec![
                r.lock.clone(),
                r.lock_type.clone(),
                r.callers.to_string(),
                r.top_caller.clone(),
                r.count.to_string(),
                fmt::ns(r.wait_ns),
                fmt::ns(r.max_ns),
            ]
        }),
    );
    t.hidden = rows.len() - shown.len();
    t
}

fn task_table(run: &Run, top: usize) -> Table {
    let rows = &run.lock_tasks;
    let shown = &rows[..rows.len().min(top)];
    let mut t = table(
        "locks",
        &[
            ("pid", Right),
            ("tid", Right),
            ("comm", Left),
            ("count", Right),
            ("total wait", Right),
            ("max wait", Right),
        ],
        shown.iter().map(|r| {
            vec![
                r.tgid.to_string(),
                r.tid.to_string(),
                r.comm.clone(),
                r.count.to_string(),
                fmt::ns(r.wait_ns),
                fmt::ns(r.max_ns),
            ]
        }),
    );
    t.hidden = rows.len() - shown.len();
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::locks::lock_flags;

    #[test]
    fn lock_types_follow_the_tracepoint_flags() {
        use lock_flags::*;
        assert_eq!(lock_type(MUTEX), "mutex");
        assert_eq!(lock_type(SPIN), "spinlock");
        assert_eq!(lock_type(SPIN | READ), "rwlock:read");
        assert_eq!(lock_type(READ), "rwsem:read");
        assert_eq!(lock_type(WRITE), "rwsem:write");
        assert_eq!(lock_type(PERCPU | WRITE), "percpu-rwsem:write");
        assert_eq!(lock_type(RT), "rtmutex");
    }

    fn wait(caller: &str, class: &str, addr: u64, tid: u32, count: u64, wait_ns: u64) -> Wait {
        Wait {
            caller: caller.into(),
            class: class.into(),
            flags: lock_flags::SPIN,
            addr,
            tgid: 7,
            tid,
            comm: format!("t{tid}"),
            stack: vec![format!("{caller}+0x{addr:x}")],
            user_stack: 0,
            stats: LockStats {
                count,
                wait_ns,
                max_ns: wait_ns / count,
            },
        }
    }

    #[test]
    fn instances_of_a_class_merge_into_one_row_per_caller() {
        // 20 sockets' slocks under tcp_v4_rcv, from two threads, and one other caller.
        let mut waits: Vec<Wait> = (0..20)
            .map(|i| {
                wait(
                    "tcp_v4_rcv",
                    "sk_lock.slock",
                    0x1000 + i * 64,
                    1 + (i as u32 % 2),
                    2,
                    100 + i,
                )
            })
            .collect();
        waits.push(wait("release_sock", "sk_lock.slock", 0x1000, 1, 1, 50));
        let tasks = by_task(&waits);
        let rows = by_caller(waits);
        assert_eq!(rows.len(), 2);
        let rcv = &rows[0];
        assert_eq!(
            (rcv.caller.as_str(), rcv.lock.as_str()),
            ("tcp_v4_rcv", "sk_lock.slock")
        );
        assert_eq!((rcv.count, rcv.lock_addrs), (40, 20));
        assert_eq!(rcv.wait_ns, (100..120).sum::<u64>());
        assert_eq!(rcv.max_ns, 119 / 2);
        // The address and stack of the largest wait.
        assert_eq!(rcv.lock_addr, format!("{:#x}", 0x1000 + 19 * 64));
        assert_eq!(
            rcv.stack,
            vec![format!("tcp_v4_rcv+0x{:x}", 0x1000 + 19 * 64)]
        );

        let classes = by_lock(&rows);
        assert_eq!(classes.len(), 1);
        assert_eq!((classes[0].callers, classes[0].count), (2, 41));
        assert_eq!(classes[0].top_caller, "tcp_v4_rcv");

        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks.iter().map(|t| t.count).sum::<u64>(), 41);
        assert!(tasks
            .iter()
            .all(|t| t.tgid == 7 && t.comm == format!("t{}", t.tid)));
    }
}
