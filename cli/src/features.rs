//! What the running kernel offers, probed without side effects (except mounting tracefs when
//! asked). `kpath doctor` prints this; the loader plans attach methods from it.
use std::path::{Path, PathBuf};

use serde::Serialize;

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
    /// BPF raw tracepoints (BPF_RAW_TRACEPOINT_OPEN, Linux 4.17+); needs no tracefs.
    pub raw_tracepoints: bool,
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
            // No cheap probe short of loading a program; every kernel kpath supports (4.18+)
            // has them, and the loader falls back if attaching fails.
            raw_tracepoints: true,
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
