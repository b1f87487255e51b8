//! Loading, attaching and falling back: the one place that decides how each family attaches.
//!
//! [`candidates`] is the declarative fallback order; [`plan`] prunes it with what
//! [`Features`] detected (pure, unit-tested); [`load`] tries the survivors in order, because some
//! failures only show at load time (fentry's EPERM here), and records every fallback as a warning.
use std::collections::BTreeMap;

use aya::{
    programs::{
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
        FEntry, FExit, KProbe, PerfEvent, Program, ProgramError, RawTracePoint, TracePoint,
    },
    Btf, Ebpf, EbpfLoader,
};
use probe_common::{
    kpaths::KpathFn, Family, GLOBAL_FILTER, GLOBAL_OFFCPU_MIN_NS, GLOBAL_SELF_TGID,
    GLOBAL_SWITCH_PREV_STATE_ARG, GLOBAL_TASK_EXIT_STATE, GLOBAL_TASK_PID, GLOBAL_TASK_STATE,
    GLOBAL_USER_RET, MAP_TARGETS, MAP_TARGET_HINTS,
};
use serde::Serialize;

use crate::features::Features;

/// The `programs` label of the fork follower, which serves every family.
pub const TARGET: &str = "target";

/// The BPF object built from probe-ebpf by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kpath"));

/// How a family (or one kpaths function) gets its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// BPF raw tracepoints sys_enter/sys_exit.
    RawTp,
    /// raw_syscalls:sys_enter/sys_exit.
    RawSyscalls,
    /// syscalls:sys_enter_*/sys_exit_*, one attachment per syscall.
    SyscallTracepoints,
    /// fentry/fexit trampolines (BTF).
    Fentry,
    /// kprobe/kretprobe.
    Kprobe,
    /// Inclusive share of on-CPU stack samples.
    Sampled,
    /// BPF raw tracepoints sched_switch, sched_wakeup, sched_wakeup_new (offsets from BTF).
    SchedRawTp,
    /// sched:sched_switch, sched_wakeup, sched_wakeup_new.
    SchedTracepoints,
    /// lock:contention_begin/end.
    LockTracepoints,
    /// kprobe/kretprobe on __mutex_lock_slowpath.
    MutexKprobe,
    /// perf_event cpu-clock sampling on every CPU.
    PerfEvent,
}

impl Method {
    /// The name used in run.json and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Method::RawTp => "raw_tp",
            Method::RawSyscalls => "raw_syscalls",
            Method::SyscallTracepoints => "syscall_tracepoints",
            Method::Fentry => "fentry",
            Method::Kprobe => "kprobe",
            Method::Sampled => "sampled",
            Method::SchedRawTp => "sched_raw_tp",
            Method::SchedTracepoints => "sched_tracepoints",
            Method::LockTracepoints => "lock_tracepoints",
            Method::MutexKprobe => "mutex_kprobe",
            Method::PerfEvent => "perf_event",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        ALL_METHODS.iter().copied().find(|m| m.name() == name)
    }

    /// What the method needs, for messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Method::RawTp => "BPF raw tracepoints sys_enter/sys_exit",
            Method::RawSyscalls => "raw_syscalls:sys_enter/sys_exit tracepoints",
            Method::SyscallTracepoints => "syscalls:sys_enter_*/sys_exit_* tracepoints",
            Method::Fentry => "fentry/fexit (BTF trampolines)",
            Method::Kprobe => "kprobe/kretprobe",
            Method::Sampled => "on-CPU stack samples (inclusive share)",
            Method::SchedRawTp => {
                "BPF raw tracepoints sched_switch/sched_wakeup/sched_wakeup_new (task_struct offsets from BTF)"
            }
            Method::SchedTracepoints => {
                "sched:sched_switch/sched_wakeup/sched_wakeup_new tracepoints"
            }
            Method::LockTracepoints => "lock:contention_begin/end tracepoints",
            Method::MutexKprobe => "kprobe on __mutex_lock_slowpath",
            Method::PerfEvent => "perf_event cpu-clock sampling",
        }
    }
}

const ALL_METHODS: [Method; 11] = [
    Method::RawTp,
    Method::RawSyscalls,
    Method::SyscallTracepoints,
    Method::Fentry,
    Method::Kprobe,
    Method::Sampled,
    Method::SchedRawTp,
    Method::SchedTracepoints,
    Method::LockTracepoints,
    Method::MutexKprobe,
    Method::PerfEvent,
];

/// The fallback order of each family, preferred first (design.md, "Probe families").
pub const fn candidates(family: Family) -> &'static [Method] {
    match family {
        Family::Syscalls => &[
            Method::RawTp,
            Method::RawSyscalls,
            Method::SyscallTracepoints,
        ],
        Family::Kpaths => &[Method::Fentry, Method::Kprobe, Method::Sampled],
        Family::Sched => &[Method::SchedRawTp, Method::SchedTracepoints],
        Family::Locks => &[Method::LockTracepoints, Method::MutexKprobe],
        Family::Oncpu => &[Method::PerfEvent],
    }
}

/// Why `method` cannot work with `f`, or `None` when it may (loading has the last word).
pub fn unmet(method: Method, f: &Features) -> Option<&'static str> {
    let no_tracefs = "tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)";
    match method {
        Method::RawSyscalls
        | Method::SyscallTracepoints
        | Method::SchedTracepoints
        | Method::LockTracepoints
            if f.tracefs.is_none() =>
        {
            Some(no_tracefs)
        }
        Method::RawSyscalls if !f.raw_syscalls_tracepoints => Some("no raw_syscalls tracepoints"),
        Method::RawTp | Method::SchedRawTp if !f.raw_tracepoints => {
            Some("no BPF raw tracepoints (Linux 4.17+)")
        }
        Method::SchedRawTp if f.sched_btf.is_none() => Some(
            "no task_struct offsets or sched_switch prototype in kernel BTF (/sys/kernel/btf/vmlinux)",
        ),
        Method::SyscallTracepoints if !f.syscalls_tracepoints => {
            Some("no syscalls:* tracepoints (CONFIG_FTRACE_SYSCALLS off)")
        }
        Method::SchedTracepoints if !f.sched_tracepoints => Some("no sched:* tracepoints"),
        Method::LockTracepoints if !f.lock_tracepoints => {
            Some("no lock:contention_* tracepoints (they arrived in Linux 5.19)")
        }
        Method::Fentry if !f.btf => Some("no kernel BTF (/sys/kernel/btf/vmlinux)"),
        Method::Kprobe | Method::MutexKprobe if !f.kprobes => {
            Some("kprobes are not available (no kprobe PMU: CONFIG_KPROBES off)")
        }
        Method::Sampled | Method::PerfEvent if !f.perf_events => {
            Some("perf events are not available")
        }
        Method::Sampled if !f.kallsyms_readable => Some(
            "/proc/kallsyms shows no addresses (kernel.kptr_restrict), so stacks cannot be named",
        ),
        _ => None,
    }
}

/// The reason recorded for candidates passed over because another method was forced.
const NOT_FORCED: &str = "not the forced method";

/// The candidates that may work, in order, and the reason for each one skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub usable: Vec<Method>,
    pub skipped: Vec<(Method, &'static str)>,
}

/// Prunes [`candidates`] with the detected features; `forced` keeps only that method.
pub fn plan(family: Family, f: &Features, forced: Option<Method>) -> Plan {
    let mut p = Plan {
        usable: Vec::new(),
        skipped: Vec::new(),
    };
    for &m in candidates(family) {
        if forced.is_some_and(|want| want != m) {
            p.skipped.push((m, NOT_FORCED));
        } else if let Some(why) = unmet(m, f) {
            p.skipped.push((m, why));
        } else {
            p.usable.push(m);
        }
    }
    p
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the BPF object failed")]
    Object(#[source] aya::EbpfError),
    #[error("BPF program {name} is missing from the object")]
    MissingProgram { name: String },
    #[error("BPF program {name} has an unexpected type")]
    ProgramType {
        name: String,
        #[source]
        source: ProgramError,
    },
    #[error("BPF map {name} is missing or has an unexpected type")]
    Map { name: &'static str },
    #[error("adding pid {pid} to the target filter failed")]
    Target {
        pid: u32,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{family}: no attach method works on this kernel: {reasons}")]
    NoMethod {
        family: &'static str,
        reasons: String,
    },
    #[error("following fork children and thread exits needs sched:sched_process_fork/exit")]
    FollowForks(#[source] ProgramError),
    #[error("--method {family}={method}: {family} cannot use {method}")]
    BadForce {
        family: &'static str,
        method: &'static str,
    },
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub families: Vec<Family>,
    /// Thread-group ids to trace; empty traces every task but kpath.
    pub targets: Vec<u32>,
    pub sample_hz: u64,
    pub offcpu_min_ns: u64,
    /// Families whose method the user forced (`--method kpaths=kprobe`).
    pub forced: BTreeMap<&'static str, Method>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            families: Family::ALL.to_vec(),
            targets: Vec::new(),
            sample_hz: 99,
            offcpu_min_ns: 0,
            forced: BTreeMap::new(),
        }
    }
}

/// Loaded and attached probes. Dropping it detaches every link and unloads every program.
pub struct Probes {
    pub ebpf: Ebpf,
    /// Family name -> method used (absent when the family was not requested).
    pub methods: BTreeMap<&'static str, Method>,
    /// Per kpaths function, the method used.
    pub kpath_methods: Vec<(KpathFn, Method)>,
    /// Loaded programs and the family each belongs to (for overhead figures).
    /// Loaded programs and what each serves: a family name, or `target` for the fork follower.
    pub programs: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
    pub sample_hz: u64,
}

impl Probes {
    pub fn has(&self, f: Family) -> bool {
        self.methods.contains_key(f.name())
    }

    /// Detaches every link and unloads every program, all at once: each tracepoint detach waits
    /// for an RCU grace period (70-100 ms each on a busy machine), so one after another they
    /// made Ctrl-C take over a second.
    pub fn detach(&mut self) {
        let progs: Vec<&mut Program> = self.ebpf.programs_mut().map(|(_, p)| p).collect();
        std::thread::scope(|s| {
            for p in progs {
                s.spawn(move || unload(p));
            }
        });
    }
}

/// Unloads through the typed program, which detaches its links first.
fn unload(p: &mut Program) {
    let _ = match p {
        Program::TracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::PerfEvent(p) => p.unload(),
        _ => Ok(()),
    };
}

/// Loads the object, fills the target filter, and attaches each requested family.
pub fn load(opts: &LoadOptions, features: &Features) -> Result<Probes, LoadError> {
    let filter = u32::from(!opts.targets.is_empty());
    let self_tgid = std::process::id();
    let user_ret = u32::from(features.task_pt_regs);
    let mut loader = EbpfLoader::new();
    loader
        .override_global(GLOBAL_FILTER, &filter, true)
        .override_global(GLOBAL_SELF_TGID, &self_tgid, true)
        .override_global(GLOBAL_OFFCPU_MIN_NS, &opts.offcpu_min_ns, true)
        .override_global(GLOBAL_USER_RET, &user_ret, true);
    // Trace-event layouts differ between kernels: take field offsets from the format files.
    let offsets: Vec<(&'static str, u32)> = probe_common::offsets::ALL
        .iter()
        .map(|&(global, cat, ev, field, default)| {
            let off = features
                .tracefs
                .as_deref()
                .and_then(|t| crate::features::field_offset(t, cat, ev, field))
                .unwrap_or(default);
            (global, off)
        })
        .collect();
    for (global, off) in &offsets {
        loader.override_global(global, off, true);
    }
    // task_struct offsets for the sched raw tracepoints (zeros when BTF gave none: then the
    // plan never picks them).
    let b = features.sched_btf.unwrap_or_default();
    let sched_btf = [
        (GLOBAL_TASK_PID, b.task_pid),
        (GLOBAL_TASK_STATE, b.task_state),
        (GLOBAL_TASK_EXIT_STATE, b.task_exit_state),
        (
            GLOBAL_SWITCH_PREV_STATE_ARG,
            u32::from(b.switch_prev_state_arg),
        ),
    ];
    for (global, v) in &sched_btf {
        loader.override_global(global, v, true);
    }
    let ebpf = loader.load(EBPF_OBJECT).map_err(LoadError::Object)?;
    let mut p = Probes {
        ebpf,
        methods: BTreeMap::new(),
        kpath_methods: Vec::new(),
        programs: Vec::new(),
        warnings: Vec::new(),
        sample_hz: opts.sample_hz,
    };

    {
        let mut targets: aya::maps::HashMap<_, u32, u32> = p
            .ebpf
            .map_mut(MAP_TARGETS)
            .and_then(|m| aya::maps::HashMap::try_from(m).ok())
            .ok_or(LoadError::Map { name: MAP_TARGETS })?;
        for &pid in &opts.targets {
            targets
                .insert(pid, probe_common::target_flags::ROOT, 0)
                .map_err(|source| LoadError::Target { pid, source })?;
        }
        let mut hints: aya::maps::Array<_, u32> = p
            .ebpf
            .map_mut(MAP_TARGET_HINTS)
            .and_then(|m| aya::maps::Array::try_from(m).ok())
            .ok_or(LoadError::Map {
                name: MAP_TARGET_HINTS,
            })?;
        for &pid in &opts.targets {
            hints
                .set(probe_common::hint_slot(pid), 1, 0)
                .map_err(|source| LoadError::Target { pid, source })?;
        }
    }
    // Always: the exit hook also frees per-thread syscall slots in system-wide mode.
    {
        attach_tracepoint(
            &mut p,
            TARGET,
            "target_sched_process_fork",
            "sched",
            "sched_process_fork",
        )
        .and_then(|_| {
            attach_tracepoint(
                &mut p,
                TARGET,
                "target_sched_process_exit",
                "sched",
                "sched_process_exit",
            )
        })
        .map_err(LoadError::FollowForks)?;
    }

    for &family in &opts.families {
        let forced = opts.forced.get(family.name()).copied();
        if let Some(m) = forced {
            if !candidates(family).contains(&m) {
                return Err(LoadError::BadForce {
                    family: family.name(),
                    method: m.name(),
                });
            }
        }
        let plan = plan(family, features, forced);
        for (m, why) in &plan.skipped {
            if forced.is_none() {
                p.warnings.push(format!(
                    "{}: {} skipped: {why}",
                    family.name(),
                    m.describe()
                ));
            }
        }
        if family == Family::Kpaths {
            attach_kpaths(&mut p, &plan)?;
            continue;
        }
        let mut reasons: Vec<String> = plan
            .skipped
            .iter()
            .map(|(m, why)| format!("{}: {why}", m.name()))
            .collect();
        let mut done = false;
        for &m in &plan.usable {
            match attach_method(&mut p, family, m) {
                Ok(()) => {
                    p.methods.insert(family.name(), m);
                    done = true;
                    break;
                }
                Err(e) => {
                    let msg = format!(
                        "{}: {} failed: {}",
                        family.name(),
                        m.describe(),
                        error_chain(&e)
                    );
                    reasons.push(msg.clone());
                    p.warnings.push(msg);
                }
            }
        }
        if !done {
            return Err(LoadError::NoMethod {
                family: family.name(),
                reasons: reasons.join("; "),
            });
        }
    }
    // The kpaths fallback reads the on-CPU sampler's stacks: make sure it runs.
    if p.kpath_methods.iter().any(|&(_, m)| m == Method::Sampled) && !p.has(Family::Oncpu) {
        attach_method(&mut p, Family::Oncpu, Method::PerfEvent).map_err(|e| {
            LoadError::NoMethod {
                family: "kpaths",
                reasons: format!("sampling fallback: {}", error_chain(&e)),
            }
        })?;
        p.methods.insert(Family::Oncpu.name(), Method::PerfEvent);
    }
    Ok(p)
}

/// Attaches kpaths function by function: each tries fentry, then kprobe, then sampling.
fn attach_kpaths(p: &mut Probes, plan: &Plan) -> Result<(), LoadError> {
    let btf = if plan.usable.contains(&Method::Fentry) {
        match Btf::from_sys_fs() {
            Ok(b) => Some(b),
            Err(e) => {
                p.warnings.push(format!(
                    "kpaths: fentry skipped: reading kernel BTF failed: {e}"
                ));
                None
            }
        }
    } else {
        None
    };
    let mut fentry_error_reported = false;
    for f in KpathFn::ALL {
        let mut chosen = None;
        for &m in &plan.usable {
            let r = match m {
                Method::Fentry => match &btf {
                    Some(btf) => attach_kpath_fentry(p, f, btf),
                    None => continue,
                },
                Method::Kprobe => attach_kpath_kprobe(p, f),
                Method::Sampled => Ok(()),
                _ => continue,
            };
            match r {
                Ok(()) => {
                    chosen = Some(m);
                    break;
                }
                Err(e) => {
                    // fentry fails the same way for all four on a kernel that refuses tracing
                    // programs: say it once.
                    if m != Method::Fentry || !fentry_error_reported {
                        p.warnings.push(format!(
                            "kpaths: {} for {} failed: {}",
                            m.describe(),
                            f.symbol(),
                            explain(m, &e)
                        ));
                    }
                    fentry_error_reported |= m == Method::Fentry;
                }
            }
        }
        match chosen {
            Some(m) => p.kpath_methods.push((f, m)),
            None => {
                let mut reasons: Vec<String> = plan
                    .skipped
                    .iter()
                    .filter(|(_, why)| *why != NOT_FORCED)
                    .map(|(m, why)| format!("{}: {why}", m.name()))
                    .collect();
                reasons.extend(
                    p.warnings
                        .iter()
                        .filter(|w| w.contains(f.symbol()))
                        .cloned(),
                );
                return Err(LoadError::NoMethod {
                    family: "kpaths",
                    reasons: format!("{}: {}", f.symbol(), reasons.join("; ")),
                });
            }
        }
    }
    // The family's method is the best one any function got (all agree in practice).
    if let Some(m) = p.kpath_methods.iter().map(|&(_, m)| m).min() {
        p.methods.insert(Family::Kpaths.name(), m);
    }
    Ok(())
}

fn attach_kpath_fentry(p: &mut Probes, f: KpathFn, btf: &Btf) -> Result<(), ProgramError> {
    let entry = format!("kpaths_{}_fentry", f.stem());
    let exit = format!("kpaths_{}_fexit", f.stem());
    {
        let prog: &mut FEntry = program(&mut p.ebpf, &entry)?;
        prog.load(f.symbol(), btf)?;
        prog.attach()?;
    }
    let r = (|| {
        let prog: &mut FExit = program(&mut p.ebpf, &exit)?;
        prog.load(f.symbol(), btf)?;
        prog.attach().map(|_| ())
    })();
    if let Err(e) = r {
        if let Ok(prog) = program::<FEntry>(&mut p.ebpf, &entry) {
            let _ = prog.unload();
        }
        return Err(e);
    }
    p.programs.push((Family::Kpaths.name(), entry));
    p.programs.push((Family::Kpaths.name(), exit));
    Ok(())
}

fn attach_kpath_kprobe(p: &mut Probes, f: KpathFn) -> Result<(), ProgramError> {
    let entry = format!("kpaths_{}_kprobe", f.stem());
    let exit = format!("kpaths_{}_kretprobe", f.stem());
    attach_kprobe(p, Family::Kpaths.name(), &entry, f.symbol())?;
    if let Err(e) = attach_kprobe(p, Family::Kpaths.name(), &exit, f.symbol()) {
        if let Ok(prog) = program::<KProbe>(&mut p.ebpf, &entry) {
            let _ = prog.unload();
        }
        p.programs.retain(|(_, n)| n != &entry);
        return Err(e);
    }
    Ok(())
}

fn attach_kprobe(
    p: &mut Probes,
    family: &'static str,
    name: &str,
    symbol: &str,
) -> Result<(), ProgramError> {
    let prog: &mut KProbe = program(&mut p.ebpf, name)?;
    prog.load()?;
    prog.attach(symbol, 0)?;
    p.programs.push((family, name.to_string()));
    Ok(())
}

fn attach_tracepoint(
    p: &mut Probes,
    family: &'static str,
    name: &str,
    cat: &str,
    event: &str,
) -> Result<(), ProgramError> {
    let prog: &mut TracePoint = program(&mut p.ebpf, name)?;
    if prog.fd().is_err() {
        prog.load()?;
    }
    prog.attach(cat, event)?;
    if !p.programs.iter().any(|(_, n)| n == name) {
        p.programs.push((family, name.to_string()));
    }
    Ok(())
}

/// Loads and attaches each (program, raw tracepoint); on a failure, unloads those already
/// attached so the fallback method does not run beside them.
fn attach_raw_tracepoints(
    p: &mut Probes,
    family: &'static str,
    progs: &[(&str, &str)],
) -> Result<(), ProgramError> {
    for (i, &(name, tp)) in progs.iter().enumerate() {
        let r = (|| {
            let prog: &mut RawTracePoint = program(&mut p.ebpf, name)?;
            prog.load()?;
            prog.attach(tp).map(|_| ())
        })();
        if let Err(e) = r {
            for &(done, _) in &progs[..=i] {
                if let Ok(prog) = program::<RawTracePoint>(&mut p.ebpf, done) {
                    let _ = prog.unload();
                }
                p.programs.retain(|(_, n)| n != done);
            }
            return Err(e);
        }
        p.programs.push((family, name.to_string()));
    }
    Ok(())
}

/// Attaches `family` by `method` (not kpaths, which goes function by function).
fn attach_method(p: &mut Probes, family: Family, method: Method) -> Result<(), ProgramError> {
    let family = family.name();
    match method {
        Method::RawTp => attach_raw_tracepoints(
            p,
            family,
            &[
                ("syscalls_raw_sys_enter", "sys_enter"),
                ("syscalls_raw_sys_exit", "sys_exit"),
            ],
        ),
        Method::SchedRawTp => attach_raw_tracepoints(
            p,
            family,
            &[
                ("sched_raw_sched_switch", "sched_switch"),
                ("sched_raw_sched_wakeup", "sched_wakeup"),
                ("sched_raw_sched_wakeup_new", "sched_wakeup_new"),
            ],
        ),
        Method::RawSyscalls => {
            attach_tracepoint(p, family, "syscalls_sys_enter", "raw_syscalls", "sys_enter")?;
            attach_tracepoint(p, family, "syscalls_sys_exit", "raw_syscalls", "sys_exit")
        }
        Method::SyscallTracepoints => {
            let events = crate::features::tracefs_dir()
                .map(|t| list_syscall_events(&t.join("events/syscalls")))
                .unwrap_or_default();
            for ev in &events {
                attach_tracepoint(
                    p,
                    family,
                    "syscalls_sys_enter_each",
                    "syscalls",
                    &format!("sys_enter_{ev}"),
                )?;
                attach_tracepoint(
                    p,
                    family,
                    "syscalls_sys_exit_each",
                    "syscalls",
                    &format!("sys_exit_{ev}"),
                )?;
            }
            Ok(())
        }
        Method::SchedTracepoints => {
            attach_tracepoint(p, family, "sched_sched_switch", "sched", "sched_switch")?;
            attach_tracepoint(p, family, "sched_sched_wakeup", "sched", "sched_wakeup")?;
            attach_tracepoint(
                p,
                family,
                "sched_sched_wakeup_new",
                "sched",
                "sched_wakeup_new",
            )
        }
        Method::LockTracepoints => {
            attach_tracepoint(
                p,
                family,
                "locks_contention_begin",
                "lock",
                "contention_begin",
            )?;
            attach_tracepoint(p, family, "locks_contention_end", "lock", "contention_end")
        }
        Method::MutexKprobe => {
            // The kretprobe first: handlers on one address run newest first, and the kretprobe's
            // entry handler replaces the return address with its trampoline, which unwinders
            // before Linux 5.13 cannot see past. So the kprobe, attached last, runs first and
            // takes the stack with the real caller (eventpoll_release_file, not
            // kretprobe_trampoline).
            attach_kprobe(
                p,
                family,
                "locks_mutex_slowpath_kretprobe",
                "__mutex_lock_slowpath",
            )?;
            attach_kprobe(
                p,
                family,
                "locks_mutex_slowpath_kprobe",
                "__mutex_lock_slowpath",
            )
        }
        Method::PerfEvent => {
            let cpus = aya::util::online_cpus().map_err(|(_, e)| ProgramError::IOError(e))?;
            let hz = p.sample_hz;
            let prog: &mut PerfEvent = program(&mut p.ebpf, "oncpu_sample")?;
            prog.load()?;
            for cpu in cpus {
                prog.attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(hz),
                    false,
                )?;
            }
            p.programs
                .push((Family::Oncpu.name(), "oncpu_sample".to_string()));
            Ok(())
        }
        Method::Fentry | Method::Kprobe | Method::Sampled => Ok(()),
    }
}

/// Syscall names with both enter and exit events under `events/syscalls`.
fn list_syscall_events(dir: &std::path::Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix("sys_enter_").map(str::to_string))
        .filter(|n| dir.join(format!("sys_exit_{n}")).exists())
        .collect();
    v.sort();
    v
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, ProgramError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    prog.try_into()
}

/// The error, with what an EPERM on loading a tracing program means (the host kernel of these
/// machines refuses BPF_PROG_TYPE_TRACING with an empty verifier log).
fn explain(m: Method, e: &ProgramError) -> String {
    let chain = error_chain(e);
    if m == Method::Fentry && chain.contains("Operation not permitted") {
        "the kernel refused the tracing program (EPERM at load, empty verifier log): \
         this kernel does not allow fentry/fexit"
            .to_string()
    } else {
        chain
    }
}

/// `e: cause: cause` on one line (aya's errors nest the errno two levels down).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host kernel of these machines: tracepoints, BTF and perf events, no kprobes, and
    /// fentry refused at load time (which `plan` cannot see).
    fn host() -> Features {
        Features {
            tracefs: Some("/sys/kernel/tracing".into()),
            btf: true,
            kprobes: false,
            raw_syscalls_tracepoints: true,
            syscalls_tracepoints: true,
            sched_tracepoints: true,
            lock_tracepoints: true,
            perf_events: true,
            kallsyms_readable: true,
            raw_tracepoints: true,
            task_pt_regs: true,
            sched_btf: Some(SCHED_BTF_618),
        }
    }

    /// What this machine's 6.18 BTF gives (offsets are illustrative; the plan only looks at
    /// whether there are any).
    const SCHED_BTF_618: crate::btf::SchedBtf = crate::btf::SchedBtf {
        task_pid: 2464,
        task_state: 24,
        task_exit_state: 2452,
        switch_prev_state_arg: true,
    };

    #[test]
    fn sched_prefers_raw_tracepoints_and_keeps_the_trace_events_as_fallback() {
        assert_eq!(
            plan(Family::Sched, &host(), None).usable,
            vec![Method::SchedRawTp, Method::SchedTracepoints]
        );
    }

    #[test]
    fn sched_without_btf_offsets_uses_the_trace_events_and_says_why() {
        let f = Features {
            sched_btf: None,
            ..host()
        };
        let p = plan(Family::Sched, &f, None);
        assert_eq!(p.usable, vec![Method::SchedTracepoints]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].0, Method::SchedRawTp);
        assert!(p.skipped[0].1.contains("BTF"));
        let f = Features {
            raw_tracepoints: false,
            ..host()
        };
        assert_eq!(
            plan(Family::Sched, &f, None).usable,
            vec![Method::SchedTracepoints]
        );
    }

    #[test]
    fn forcing_sched_tracepoints_skips_the_raw_tracepoints() {
        let p = plan(Family::Sched, &host(), Some(Method::SchedTracepoints));
        assert_eq!(p.usable, vec![Method::SchedTracepoints]);
        assert_eq!(p.skipped, vec![(Method::SchedRawTp, NOT_FORCED)]);
        assert_eq!(
            Method::from_name("sched_tracepoints"),
            Some(Method::SchedTracepoints)
        );
        assert_eq!(Method::from_name("sched_raw_tp"), Some(Method::SchedRawTp));
    }

    #[test]
    fn every_family_prefers_its_first_candidate() {
        let f = Features {
            kprobes: true,
            ..host()
        };
        for fam in Family::ALL {
            assert_eq!(plan(fam, &f, None).usable[0], candidates(fam)[0], "{fam:?}");
        }
    }

    #[test]
    fn host_kpaths_try_fentry_then_sampling_and_say_why_kprobes_are_skipped() {
        let p = plan(Family::Kpaths, &host(), None);
        assert_eq!(p.usable, vec![Method::Fentry, Method::Sampled]);
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].0, Method::Kprobe);
        assert!(p.skipped[0].1.contains("CONFIG_KPROBES"));
    }

    #[test]
    fn stock_kernel_with_kprobes_keeps_all_three_kpaths_methods_in_order() {
        let f = Features {
            kprobes: true,
            ..host()
        };
        assert_eq!(
            plan(Family::Kpaths, &f, None).usable,
            vec![Method::Fentry, Method::Kprobe, Method::Sampled]
        );
    }

    #[test]
    fn no_btf_skips_fentry() {
        let f = Features {
            btf: false,
            kprobes: true,
            ..host()
        };
        let p = plan(Family::Kpaths, &f, None);
        assert_eq!(p.usable, vec![Method::Kprobe, Method::Sampled]);
        assert!(p.skipped[0].1.contains("BTF"));
    }

    #[test]
    fn old_kernel_locks_fall_back_to_the_mutex_kprobe() {
        let f = Features {
            lock_tracepoints: false,
            kprobes: true,
            ..host()
        };
        let p = plan(Family::Locks, &f, None);
        assert_eq!(p.usable, vec![Method::MutexKprobe]);
        assert!(p.skipped[0].1.contains("5.19"));
    }

    #[test]
    fn locks_have_no_method_without_tracepoints_or_kprobes() {
        let f = Features {
            lock_tracepoints: false,
            ..host()
        };
        assert!(plan(Family::Locks, &f, None).usable.is_empty());
    }

    #[test]
    fn missing_raw_syscalls_falls_back_to_per_syscall_tracepoints() {
        let f = Features {
            raw_tracepoints: false,
            raw_syscalls_tracepoints: false,
            ..host()
        };
        assert_eq!(
            plan(Family::Syscalls, &f, None).usable,
            vec![Method::SyscallTracepoints]
        );
    }

    #[test]
    fn unmounted_tracefs_blocks_every_tracepoint_method_with_the_mount_command() {
        let f = Features {
            tracefs: None,
            ..host()
        };
        // Raw tracepoints attach by name, without tracefs.
        assert_eq!(plan(Family::Syscalls, &f, None).usable, vec![Method::RawTp]);
        let sched = plan(Family::Sched, &f, None);
        assert_eq!(sched.usable, vec![Method::SchedRawTp]);
        assert_eq!(sched.skipped.len(), 1);
        assert!(sched.skipped[0].1.contains("mount -t tracefs"));
        // Locks still name tracefs for their tracepoints (and kprobes for the fallback).
        let locks = plan(Family::Locks, &f, None);
        assert!(locks.skipped[0].1.contains("mount -t tracefs"));
        // Perf events do not need tracefs.
        assert_eq!(
            plan(Family::Oncpu, &f, None).usable,
            vec![Method::PerfEvent]
        );
    }

    #[test]
    fn forcing_a_method_keeps_only_it() {
        let f = Features {
            kprobes: true,
            ..host()
        };
        let p = plan(Family::Kpaths, &f, Some(Method::Kprobe));
        assert_eq!(p.usable, vec![Method::Kprobe]);
        assert_eq!(p.skipped.len(), 2);
        // Forcing what the kernel lacks leaves nothing: the loader reports that, not a fallback.
        assert!(plan(Family::Kpaths, &host(), Some(Method::Kprobe))
            .usable
            .is_empty());
    }

    #[test]
    fn sampling_needs_readable_kallsyms() {
        let f = Features {
            kallsyms_readable: false,
            ..host()
        };
        assert_eq!(plan(Family::Kpaths, &f, None).usable, vec![Method::Fentry]);
    }

    #[test]
    fn method_names_round_trip() {
        for m in ALL_METHODS {
            assert_eq!(Method::from_name(m.name()), Some(m));
        }
    }
}
