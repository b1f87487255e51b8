//! What the running kernel offers, probed without side effects (except mounting tracefs when
//! asked). `kpath doctor` prints this; the loader plans attach methods from it.
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::btf::{Btf, SchedBtf};
use super::tracefs::tracefs_dir;
use super::tracing_prog::{self, Fentry};

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
    /// bpf_loop (Linux 5.17+): the DWARF walker's loop of up to 127 frames.
    pub bpf_loop: bool,
    /// BPF raw tracepoints (BPF_RAW_TRACEPOINT_OPEN, Linux 4.17+); needs no tracefs.
    pub raw_tracepoints: bool,
    /// `task_struct` offsets and sched_switch's arguments from kernel BTF, which the sched raw
    /// tracepoints need (they get task pointers, not a trace-event record).
    pub sched_btf: Option<SchedBtf>,
    /// Whether a test fentry program loads (on tcp_close): this project's 6.18 hosts refuse
    /// it with EPERM.
    pub fentry: Fentry,
    /// Whether a test BTF tracepoint program loads on sched_switch, on a kernel that has
    /// bpf_get_task_stack (5.9+); untried otherwise. This project's 6.18 hosts load it.
    pub tp_btf: Fentry,
}

impl Features {
    pub fn detect() -> Features {
        let t0 = std::time::Instant::now();
        let f = Features::detect_all();
        log::debug!("start-up: Features::detect took {:?}", t0.elapsed());
        f
    }

    fn detect_all() -> Features {
        let tracefs = tracefs_dir();
        let tp = |cat: &str, name: &str| {
            tracefs
                .as_ref()
                .is_some_and(|t| t.join("events").join(cat).join(name).join("id").exists())
        };
        // Parsed once for everything BTF answers (offsets, helpers, the fentry test's target).
        let t0 = std::time::Instant::now();
        let btf = Btf::from_sys_fs().ok();
        log::debug!("start-up: kernel BTF read by kpath in {:?}", t0.elapsed());
        let helpers = ["bpf_task_pt_regs", "bpf_get_current_task_btf"];
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
            task_pt_regs: match &btf {
                Some(b) => helpers.iter().all(|h| b.has_func(h)),
                None => kallsyms_has_all(&helpers),
            },
            bpf_loop: match &btf {
                Some(b) => b.has_func("bpf_loop"),
                None => kallsyms_has_all(&["bpf_loop"]),
            },
            // No cheap probe short of loading a program; every kernel kpath supports (4.18+)
            // has them, and the loader falls back if attaching fails.
            raw_tracepoints: true,
            sched_btf: btf.as_ref().and_then(SchedBtf::from_btf),
            fentry: match btf.as_ref().and_then(|b| b.func_id("tcp_close")) {
                Some(id) if is_root() => tracing_prog::probe(id),
                _ => Fentry::Untried,
            },
            tp_btf: match btf.as_ref().filter(|b| b.has_func("bpf_get_task_stack")) {
                Some(b) if is_root() => b
                    .typedef_id("btf_trace_sched_switch")
                    .map_or(Fentry::Untried, tracing_prog::probe_tp_btf),
                _ => Fentry::Untried,
            },
            tracefs,
        }
    }
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

#[derive(Debug, thiserror::Error)]
#[error("{what} needs root (CAP_BPF and CAP_PERFMON) to load BPF programs: run it with sudo")]
pub struct NotRoot {
    pub what: &'static str,
}

/// What attaching needs first: root, and tracefs mounted (a fresh machine has none). Returns
/// the features and notes for the run's warnings (tracefs mounted, or mounting it failed).
pub fn for_attaching(what: &'static str) -> Result<(Features, Vec<String>), NotRoot> {
    if !is_root() {
        return Err(NotRoot { what });
    }
    let mut notes = Vec::new();
    match super::tracefs::mount_tracefs() {
        Ok(true) => notes
            .push("tracefs was not mounted: kpath mounted it at /sys/kernel/tracing".to_string()),
        Ok(false) => {}
        Err(e) => notes.push(format!(
            "mounting tracefs at /sys/kernel/tracing failed: {e}"
        )),
    }
    Ok((Features::detect(), notes))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// `uname` fields.
pub fn uname() -> crate::run::KernelInfo {
    // SAFETY: utsname is plain C data (arrays of c_char), for which all-zero bytes are valid.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes at most one utsname into the exclusive reference it gets.
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
