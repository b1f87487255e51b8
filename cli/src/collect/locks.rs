//! `locks` collector: contention per (caller, lock, type), callers from symbolized stacks.
use std::collections::BTreeMap;

use probe_common::locks::{lock_flags, LockKey, LockStats, MAP_STATS};

use super::{fold_per_cpu_hash, CollectError, Stacks};
use crate::{kallsyms::Kallsyms, run::LockRow};

pub fn collect(
    ebpf: &aya::Ebpf,
    stacks: &mut Stacks,
    ksyms: &Kallsyms,
) -> Result<Vec<LockRow>, CollectError> {
    let per_key = fold_per_cpu_hash::<LockKey, LockStats, LockStats>(ebpf, MAP_STATS, |acc, v| {
        acc.count += v.count;
        acc.wait_ns += v.wait_ns;
        acc.max_ns = acc.max_ns.max(v.max_ns);
    })?;
    // Keys differ by full stack and tgid; rows are per caller, lock and type.
    let mut rows: BTreeMap<(String, u64, u32), LockRow> = BTreeMap::new();
    for (key, s) in per_key {
        let stack = stacks.kernel_frames(key.kstack_id, ksyms);
        let caller = crate::kallsyms::lock_caller(&stack)
            .map(str::to_string)
            .unwrap_or_else(|| {
                if stack.is_empty() {
                    "[stack lost]".into()
                } else {
                    "[lock code only]".into()
                }
            });
        let caller_fn = caller.split('+').next().unwrap_or_default().to_string();
        let row = rows
            .entry((caller_fn.clone(), key.lock_addr, key.flags))
            .or_insert_with(|| LockRow {
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
    let mut rows: Vec<LockRow> = rows.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.wait_ns));
    Ok(rows)
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
