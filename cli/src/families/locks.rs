//! `locks`: kernel lock contention by first non-locking caller, lock (symbol of a static lock,
//! else its address) and lock type, with wait time.
//!
//! Kernel side: probe-ebpf/src/locks.rs; shared types: probe-common/src/locks.rs; tests:
//! cli/tests/locks.rs, cli/tests/vm.rs (epmutex on 5.10 through the kprobe).
use std::collections::BTreeMap;

use probe_common::{
    locks::{lock_flags, LockKey, LockStats, MAP_STATS},
    Family,
};

use super::{
    section::{table, Align::*, Section, SectionOptions},
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
    run::{LockRow, Run},
    stacks::symbolize::{RawStack, StackSymbolizer},
};

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
    let ebpf = &probes.ebpf;
    let per_key = hash_entries::<LockKey, LockStats>(ebpf, MAP_STATS)?;
    let (stacks, ksyms) = c.stacks_and_ksyms()?;
    // Keys differ by full stack and tgid; rows are per caller, lock and type.
    let mut rows: BTreeMap<(String, u64, u32), LockRow> = BTreeMap::new();
    // Per row, the user stack (dwarf) of its longest-waiting key: (wait, tgid, stack key).
    let mut user: BTreeMap<(String, u64, u32), (u64, u32, u64)> = BTreeMap::new();
    for (key, s) in per_key {
        let stack = stacks.kernel_frames(key.kstack_id, ksyms);
        let caller = kallsyms::lock_caller(&stack)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if stack.is_empty() {
                    "[stack lost]".into()
                } else {
                    "[lock code only]".into()
                }
            });
        let caller_fn = caller.split('+').next().unwrap_or_default().to_string();
        let row_key = (caller_fn.clone(), key.lock_addr, key.flags);
        if key.user_stack != 0 {
            let u = user.entry(row_key.clone()).or_insert((0, 0, 0));
            if s.wait_ns >= u.0 {
                *u = (s.wait_ns, key.tgid, key.user_stack);
            }
        }
        let row = rows.entry(row_key).or_insert_with(|| LockRow {
            caller: caller_fn,
            lock: lock_name(key.lock_addr, ksyms),
            lock_addr: format!("{:#x}", key.lock_addr),
            lock_type: lock_type(key.flags).to_string(),
            stack,
            ..Default::default()
        });
        row.count += s.count;
        row.wait_ns += s.wait_ns;
        row.max_ns = row.max_ns.max(s.max_ns);
    }
    user_stacks(c, &mut rows, &user);
    let mut rows: Vec<LockRow> = rows.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.wait_ns));
    run.locks = rows;
    Ok(())
}

/// Symbolizes each row's heaviest user stack into `LockRow::user_stack` (dwarf recordings,
/// with the `/proc/PID/maps` snapshots the stack families keep).
fn user_stacks(
    c: &mut Collector,
    rows: &mut BTreeMap<(String, u64, u32), LockRow>,
    user: &BTreeMap<(String, u64, u32), (u64, u32, u64)>,
) {
    if user.is_empty() {
        return;
    }
    let raws: Vec<(&(String, u64, u32), RawStack)> = user
        .iter()
        .map(|(k, &(_, tgid, stack))| {
            let raw = RawStack {
                tgid,
                comm: String::new(),
                kernel: Vec::new(),
                user: c.stacks.dwarf_ips(stack).to_vec(),
                user_ret: 0,
                weight: 1,
            };
            (k, raw)
        })
        .collect();
    let Ok((ksyms, Some(maps))) = c.ksyms_and_maps() else {
        return;
    };
    for (_, r) in &raws {
        maps.ensure(r.tgid);
    }
    let only: Vec<RawStack> = raws.iter().map(|(_, r)| r.clone()).collect();
    let folded = StackSymbolizer::new(ksyms, &maps.snapshots).symbolize(&only);
    for ((k, _), f) in raws.iter().zip(folded) {
        if let Some(row) = rows.get_mut(*k) {
            // Root first, without the placeholder thread name.
            row.user_stack = f.frames.into_iter().skip(1).collect();
        }
    }
}

fn section(run: &Run, opts: &SectionOptions) -> Option<Section> {
    let mut s = Section::of(run, Family::Locks, "Lock contention")?;
    if run.locks.is_empty() {
        s.line("no lock contention recorded");
        return Some(s);
    }
    let mut rows: Vec<&LockRow> = run.locks.iter().collect();
    rows.sort_by(|a, b| {
        b.wait_ns
            .cmp(&a.wait_ns)
            .then(a.caller.cmp(&b.caller))
            .then(a.lock.cmp(&b.lock))
    });
    let shown = &rows[..rows.len().min(opts.top)];
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
    t.hidden_what = "locks";
    s.table(t);
    Some(s)
}

/// The static lock's symbol (`epmutex`), else its address.
pub fn lock_name(addr: u64, ksyms: &Kallsyms) -> String {
    ksyms
        .data_symbol(addr)
        .map(|s| s.name.to_string())
        .unwrap_or_else(|| format!("{addr:#x}"))
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
}
