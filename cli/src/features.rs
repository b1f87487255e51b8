//! What the running kernel offers, probed without side effects (except mounting tracefs when
//! asked). `kpath doctor` prints this; the loader plans attach methods from it.
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::btf::{Btf, SchedBtf};

/// The places tracefs may be mounted, in the order the kernel documentation prefers.
const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Features {
    /// Mounted tracefs (its `events/` exists).
    pub tracefs: Option<PathBuf>,
    pub btf: bool,
    /// CONFIG_KPROBES: the kprobe PMU is registered.
    pub kprobes: bool,
    pub raw_syscalls_tracepoints: bool,
    pub syscalls_tracepoints: bool,
    pub sched_tracepoints: bool,
    pub lock_tracepoints: bool,
    /// perf_event_open is available (perf_event_paranoid exists).
    pub perf_events: bool,
    pub kallsyms_readable: bool,
    /// bpf_get_current_task_btf and bpf_task_pt_regs (Linux 5.15+): lets stacks recover the
    /// caller of frameless syscall wrappers (`StackKey::user_ret`).
    pub task_pt_regs: bool,
    /// BPF raw tracepoints (BPF_RAW_TRACEPOINT_OPEN, Linux 4.17+); needs no tracefs.
    pub raw_tracepoints: bool,
    /// `task_struct` offsets and sched_switch's arguments from kernel BTF, which the sched raw
    /// tracepoints need (they get task pointers, not a trace-event record).
    pub sched_btf: Option<SchedBtf>,
}

impl Features {
    pub fn detect() -> Features {
        let tracefs = tracefs_dir();
        let tp = |cat: &str, name: &str| {
            tracefs
                .as_ref()
                .is_some_and(|t| t.join("events").join(cat).join(name).join("id").exists())
        };
        Features {
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            kprobes: Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            raw_syscalls_tracepoints: tp("raw_syscalls", "sys_enter")
                && tp("raw_syscalls", "sys_exit"),
            syscalls_tracepoints: tp("syscalls", "sys_enter_close")
                && tp("syscalls", "sys_exit_close"),
            sched_tracepoints: tp("sched", "sched_switch")
                && tp("sched", "sched_wakeup")
                && tp("sched", "sched_wakeup_new"),
            lock_tracepoints: tp("lock", "contention_begin") && tp("lock", "contention_end"),
            perf_events: Path::new("/proc/sys/kernel/perf_event_paranoid").exists(),
            kallsyms_readable: kallsyms_has_addresses(),
            task_pt_regs: kallsyms_has_all(&["bpf_task_pt_regs", "bpf_get_current_task_btf"]),
            // No cheap probe short of loading a program; every kernel kpath supports (4.18+)
            // has them, and the loader falls back if attaching fails.
            raw_tracepoints: true,
            sched_btf: Btf::from_sys_fs().ok().and_then(|b| SchedBtf::from_btf(&b)),
            tracefs,
        }
    }
}

/// The mounted tracefs directory, if any.
pub fn tracefs_dir() -> Option<PathBuf> {
    TRACEFS_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Mounts tracefs at /sys/kernel/tracing when no tracefs is mounted. Returns whether it mounted.
pub fn mount_tracefs() -> std::io::Result<bool> {
    if tracefs_dir().is_some() {
        return Ok(false);
    }
    let target = c"/sys/kernel/tracing";
    let ret = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// The byte offset of `field` in a trace event record, from the event's tracefs `format` file.
pub fn field_offset(tracefs: &Path, category: &str, event: &str, field: &str) -> Option<u32> {
    let text = std::fs::read_to_string(
        tracefs
            .join("events")
            .join(category)
            .join(event)
            .join("format"),
    )
    .ok()?;
    parse_field_offset(&text, field)
}

/// Finds `field:<type> <field>[...];\toffset:N;` in a tracefs format text.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        // The name is the declaration's last word, without an array suffix.
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:")?.trim().parse().ok())
    })
}

/// Whether every name is a kernel symbol (BPF helpers are named after their implementation).
fn kallsyms_has_all(names: &[&str]) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return false;
    };
    let mut found = vec![false; names.len()];
    for line in text.lines() {
        let Some(sym) = line.split_whitespace().nth(2) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == sym) {
            found[i] = true;
        }
    }
    found.iter().all(|&f| f)
}

/// True when /proc/kallsyms shows real addresses (kptr_restrict lets us see them).
fn kallsyms_has_addresses() -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(f) = std::fs::File::open("/proc/kallsyms") else {
        return false;
    };
    BufReader::new(f)
        .lines()
        .take(10)
        .map_while(Result::ok)
        .any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|a| a.chars().any(|c| c != '0'))
        })
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// `uname` fields.
pub fn uname() -> crate::run::KernelInfo {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Default::default();
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    crate::run::KernelInfo {
        release: s(&u.release),
        version: s(&u.version),
        machine: s(&u.machine),
        hostname: s(&u.nodename),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_field_offset;

    /// sched_process_fork on Linux 6.18 (`__data_loc` comms) and on 5.10/6.1.
    const FORK_618: &str = "name: sched_process_fork
ID: 320
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;
";
    const FORK_510: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;
";

    #[test]
    fn offsets_follow_the_kernels_layout() {
        assert_eq!(parse_field_offset(FORK_618, "child_pid"), Some(20));
        assert_eq!(parse_field_offset(FORK_510, "child_pid"), Some(44));
        assert_eq!(parse_field_offset(FORK_510, "child_comm"), Some(28));
        assert_eq!(parse_field_offset(FORK_618, "parent_comm"), Some(8));
        assert_eq!(parse_field_offset(FORK_618, "nope"), None);
    }

    #[test]
    fn offsets_of_this_kernel_match_or_defaults_hold() {
        // Where tracefs is mounted, every offset kpath patches must be found.
        let Some(t) = super::tracefs_dir() else {
            return;
        };
        for (_, cat, ev, field, _) in probe_common::offsets::ALL {
            if t.join("events").join(cat).join(ev).exists() {
                assert!(
                    super::field_offset(&t, cat, ev, field).is_some(),
                    "{cat}:{ev} {field}"
                );
            }
        }
    }
}
