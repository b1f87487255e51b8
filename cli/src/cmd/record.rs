//! `kpath record`: attach, wait for the target (or the duration, or Ctrl-C), collect, report.
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};

use crate::{
    families::{self, LoadOptions, Probes, SectionOptions},
    kernel::features,
    probes::{object, stats::ProgStats, targets, CallGraph, Targets},
    process::{self, HeldChild, SpawnOptions},
    render::{flame, table},
    run::{Run, Target},
    stacks::{maps::MapsRecorder, Profiles},
    unwind,
};

#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Without -o a run goes to a new runs/run-<unix seconds>[-N]; a directory given with -o
loses the previous run's run.json, folded stacks, SVGs and report.html first.

Targets add up: a task is traced when any of -p, -t, --comm, --cgroup or the command picks it;
with none (or -a) every task but kpath is traced. Whenever more than one process can be traced,
tables and run.json break the numbers down by process.

Examples:
  kpath record -- ./my-server --port 8080      start a command and trace it (and its children)
  kpath record --comm nginx -d 10              every nginx process, workers respawned later too
  kpath record -p $(pidof nginx | tr ' ' ,) -d 10    the nginx processes running now
  kpath record -a -d 5                         system-wide, with the top processes
  kpath record --cgroup system.slice/nginx.service -d 10    a cgroup v2 subtree
  kpath record -t 4242 -d 5                    one thread
  kpath record --probes syscalls,sched -d 5 -o runs/idle --json > run.json
  kpath record --method kpaths=sampled -F 999 -- ./workload"
)]
pub struct RecordArgs {
    #[command(flatten)]
    pub sel: TargetArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Stop after this many seconds (fractions allowed; default: when the target exits, or
    /// Ctrl-C).
    #[arg(short, long, value_parser = servers::args::seconds)]
    pub duration: Option<f64>,
    /// Run directory to write (default: runs/run-<unix time>); `-o -` is refused (a run is
    /// several files: --json prints run.json to stdout).
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Print run.json to stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Rows per table.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Group the lock table by caller (and lock class), by lock class, or by waiting thread,
    /// like `perf lock contention` (run.json holds the caller and thread rows either way).
    #[arg(long, value_enum, default_value_t = families::locks::LocksBy::Caller)]
    pub locks_by: families::locks::LocksBy,
    /// Create this file once every probe is attached (for scripts that start load then).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// What to trace: shared by `record` and `agent`. Selectors add up.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// Trace these processes (all their threads, and children they fork while traced):
    /// `-p 1,2` or `-p 1 -p 2`. The recording ends when all have exited.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID[,PID...]",
        value_delimiter = ',',
        conflicts_with = "all"
    )]
    pub pids: Vec<u32>,
    /// Trace these threads only (and the children they fork): `-t 1,2` or `-t 1 -t 2`.
    #[arg(
        short = 't',
        long = "tid",
        value_name = "TID[,TID...]",
        value_delimiter = ',',
        conflicts_with = "all"
    )]
    pub tids: Vec<u32>,
    /// Trace every process whose name (comm, at most 15 bytes) is NAME: those running at the
    /// start, and those that exec a program of that name or fork from one while recording.
    #[arg(long, value_name = "NAME", conflicts_with = "all")]
    pub comm: Option<String>,
    /// Trace every task in this cgroup v2 directory and its descendants (absolute, or relative
    /// to the cgroup2 mount), including tasks moved in while recording.
    #[arg(long, value_name = "PATH", conflicts_with = "all")]
    pub cgroup: Option<PathBuf>,
    /// Trace every task but kpath (the default when no target is given).
    #[arg(short = 'a', long = "all-cpus", conflicts_with = "command")]
    pub all: bool,
    /// The command to start and trace. kpath exits with its status when it ends on its own
    /// (128 + signal number when a signal killed it); it dies with kpath.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Which probes and how: shared by `record` and `agent`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Probe families, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "syscalls,kpaths,sched,locks,oncpu"
    )]
    pub probes: Vec<String>,
    /// On-CPU sampling frequency (Hz) per CPU; above 1000 kpath warns (lost stacks, a slower
    /// target).
    #[arg(short = 'F', long, default_value_t = 99)]
    pub frequency: u64,
    /// Follow this kernel function too (repeatable, up to 8): timed by fentry or kprobe where
    /// the kernel allows, else its share of on-CPU samples and of off-CPU time (labelled
    /// sampled). Adds the kpaths family if --probes left it out.
    #[arg(long = "kpath", value_name = "FUNC")]
    pub kpath: Vec<String>,
    /// Force an attach method: FAMILY=METHOD, e.g. kpaths=kprobe (repeatable).
    #[arg(long = "method", value_name = "FAMILY=METHOD")]
    pub methods: Vec<String>,
    /// Off-CPU periods shorter than this (µs) are not charged to a stack (still counted in
    /// totals). Where the kernel loads BTF tracepoints (see kpath doctor), their kernel stacks
    /// are then not taken at all, which makes short switches much cheaper; a kept period's
    /// kernel stack is taken when its thread runs again and lacks the scheduler's own frames
    /// (its leaf says so).
    #[arg(long, default_value_t = 0)]
    pub offcpu_min_us: u64,
    /// Measure kpath's own BPF run time (events/s, ns per event per family) with the kernel's
    /// BPF statistics, which time every BPF program run on the machine: on this project's
    /// machine that added ~165 ns to each syscall of every process while the syscall probes
    /// were attached, so it is off unless asked for.
    #[arg(long)]
    pub bpf_stats: bool,
    /// How user stacks are taken: `dwarf` unwinds .eh_frame CFI in BPF (whole stacks of
    /// binaries built without frame pointers), `fp` follows frame pointers. Default: dwarf
    /// where the kernel supports it (bpf_loop, bpf_task_pt_regs), else fp.
    #[arg(long, value_name = "dwarf|fp")]
    pub call_graph: Option<CallGraph>,
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether SIGINT or SIGTERM arrived (after [`install_signal_handlers`]).
pub(crate) fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub(crate) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: on_signal only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Why the recording ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    TargetExited,
    Duration,
    Signal,
}

impl TargetArgs {
    /// What was traced, for run.json.
    pub fn target(&self, targets: &Targets, named: &[u32], exit_code: Option<i32>) -> Target {
        let kinds: Vec<&str> = [
            (!self.command.is_empty(), "command"),
            (!self.pids.is_empty(), "pid"),
            (!self.tids.is_empty(), "thread"),
            (self.comm.is_some(), "comm"),
            (self.cgroup.is_some(), "cgroup"),
        ]
        .into_iter()
        .filter_map(|(on, k)| on.then_some(k))
        .collect();
        let pids = &targets.pids;
        Target {
            kind: if kinds.is_empty() {
                "system".into()
            } else {
                kinds.join("+")
            },
            pid: pids.first().copied(),
            pids: if pids.len() > 1 {
                pids.to_vec()
            } else {
                Vec::new()
            },
            tids: targets.threads.iter().map(|&(t, _)| t).collect(),
            comm: targets.comm.clone(),
            comm_pids_at_start: named.to_vec(),
            cgroup: targets
                .cgroup
                .as_ref()
                .map(|c| c.path.display().to_string()),
            cgroup_id: targets.cgroup.as_ref().map(|c| c.id),
            command: (!self.command.is_empty()).then(|| self.command.clone()),
            exit_code,
        }
    }

    /// The selectors, checked (the started command's pid is added once it exists).
    pub fn targets(&self) -> anyhow::Result<Targets> {
        for &pid in &self.pids {
            process::check_pid(pid)?;
        }
        let mut t = Targets::default();
        for &p in &self.pids {
            if !t.pids.contains(&p) {
                t.pids.push(p);
            }
        }
        for &tid in &self.tids {
            let tgid = targets::thread_group(tid)?;
            if !t.threads.iter().any(|&(x, _)| x == tid) {
                t.threads.push((tid, tgid));
            }
        }
        t.comm = self.comm.as_deref().map(targets::check_comm).transpose()?;
        t.cgroup = self.cgroup.as_deref().map(targets::cgroup).transpose()?;
        Ok(t)
    }
}

impl ProbeArgs {
    /// Checks the arguments and converts them into load options for these targets.
    pub fn load_options(&self, targets: Targets) -> anyhow::Result<LoadOptions> {
        if self.frequency == 0 || self.frequency > 100_000 {
            bail!(
                "-F {}: the sampling frequency must be between 1 and 100000 Hz",
                self.frequency
            );
        }
        let mut families = families::parse_families(&self.probes)?;
        if !self.kpath.is_empty() && !families.contains(&probe_common::Family::Kpaths) {
            families.push(probe_common::Family::Kpaths);
        }
        Ok(LoadOptions {
            families,
            targets,
            sample_hz: self.frequency,
            offcpu_min_ns: self.offcpu_min_us * 1000,
            forced: families::parse_forced(&self.methods)?,
            extra_functions: families::kpaths::check_functions(&self.kpath)?,
            call_graph: CallGraph::Fp,
            max_entries: Vec::new(),
            syscalls_by_comm: false,
        })
    }
}

impl RecordArgs {
    /// Checks the arguments and converts them into load options (targets filled in later).
    fn load_options(&self) -> anyhow::Result<LoadOptions> {
        super::output::directory(
            self.output.as_ref(),
            "a run",
            "--json prints run.json to stdout",
        )?;
        let targets = self.sel.targets()?;
        self.probe.load_options(targets)
    }
}

/// The highest `-F` kpath records at without a warning. Every sample interrupts the task on
/// that CPU and walks its kernel and user stacks inside the interrupt, and every new stack
/// takes one of the stack map's STACKS_CAPACITY (32768) slots for the whole recording: at
/// 1000 Hz on each of 16 busy CPUs that is 16000 samples a second, enough to fill the map with
/// a varied workload in seconds, after which new stacks are lost (counted). perf's own default
/// is 4000 Hz, but perf copies raw samples out instead of keeping a map; 99 Hz (kpath's
/// default, as bcc's profile) is plenty for shares above 1%.
pub const SAFE_SAMPLE_HZ: u64 = 1000;

/// The warning for `-F` above [`SAFE_SAMPLE_HZ`].
pub fn frequency_warning(hz: u64) -> Option<String> {
    (hz > SAFE_SAMPLE_HZ).then(|| {
        format!(
            "warning: -F {hz} is above {SAFE_SAMPLE_HZ} Hz: expect lost stacks (the stack map holds \
             {} stacks) and a slower target (each sample interrupts it to walk its stacks)",
            probe_common::STACKS_CAPACITY
        )
    })
}

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut opts = args.load_options()?;
    if let Some(w) = frequency_warning(args.probe.frequency) {
        // kpaths' sampled method reads the on-CPU samples too.
        let samples = [probe_common::Family::Oncpu, probe_common::Family::Kpaths];
        if opts.families.iter().any(|f| samples.contains(f)) {
            eprintln!("kpath: {w}");
        }
    }
    let loader = object::Loader::start();
    let (feats, mut warnings) = features::for_attaching("kpath record")?;
    log::debug!("start-up: features detected at {:?}", t0.elapsed());
    let (call_graph, why) = CallGraph::choose(args.probe.call_graph, &feats);
    opts.call_graph = call_graph;
    warnings.extend(why);
    let mut child = if args.sel.command.is_empty() {
        None
    } else {
        // With --json, kpath's stdout is the run alone: the command's goes to stderr.
        let opts = SpawnOptions {
            stdout_to_stderr: args.json,
        };
        Some(HeldChild::spawn_with(&args.sel.command, opts)?)
    };
    if let Some(c) = &child {
        opts.targets.pids.push(c.pid);
    }
    // DWARF tables of the processes running now (a command is not exec'd yet, and processes
    // found by --comm, --cgroup or -a get theirs when the walker asks for them).
    let tables = (opts.call_graph == CallGraph::Dwarf).then(|| {
        let mut t = unwind::bpf::Prepared::new(&args.sel.pids);
        if let Some(c) = &child {
            // Until its exec the command is kpath's image; its own files are read now.
            t.hold(c.pid);
            t.warm(&unwind::bpf::command_files(&args.sel.command[0]));
        }
        opts.max_entries.extend(t.max_entries());
        t
    });
    let mut probes = families::load_with(loader, &opts, &feats).context("attaching probes")?;
    let tables = match tables {
        Some(t) => Some(
            unwind::bpf::Server::start(&mut probes.ebpf, t).context("loading the unwind tables")?,
        ),
        None => None,
    };
    log::debug!("start-up: every family attached at {:?}", t0.elapsed());
    for w in &probes.warnings {
        log::info!("{w}");
    }
    // What this kernel lacks is the same on every run: one line here, the reasons in doctor.
    for (_, why) in &probes.skipped {
        log::info!("{why}");
    }
    if let Some(note) = probes.skipped_note(&feats) {
        eprintln!("kpath: {note}");
    }
    warnings.append(&mut probes.warnings);
    // Opt-in: the statistics slow every BPF program run on the machine down (see stats).
    let mut prog_stats = ProgStats::start(&probes, args.probe.bpf_stats);
    if let Some(why) = &prog_stats.error {
        warnings.push(format!("BPF run-time statistics unavailable: {why}"));
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"")
            .with_context(|| format!("--ready-file: writing {}", path.display()))?;
    }
    install_signal_handlers();
    let started_unix_ms = unix_ms();
    let start = Instant::now();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    // Stacks are symbolized from maps snapshots taken while the targets live.
    let mut maps = families::folds_stacks(&probes).then(MapsRecorder::default);
    let stop = wait(
        &args,
        &probes,
        child.as_mut(),
        start,
        maps.as_mut(),
        &mut prog_stats,
    );
    let duration = start.elapsed();
    let exit_code = child.as_mut().and_then(|c| {
        c.try_wait().or_else(|| {
            warnings.push(format!(
                "recording ended ({stop:?}) before the command: kpath terminated it"
            ));
            c.terminate(Duration::from_secs(1))
        })
    });
    let overhead = prog_stats.finish(&probes);
    let unwind_report = tables.map(|t| {
        let mut r = t.finish();
        r.outcomes = unwind::bpf::outcomes(&probes.ebpf);
        r
    });
    let (mut run, profiles) =
        families::collect_run(&probes, duration, maps.as_mut(), opts.offcpu_min_ns)?;
    let named_at_start = std::mem::take(&mut probes.named_at_start);
    if probes.has(probe_common::Family::Syscalls) && run.syscalls.is_empty() {
        run.warnings.extend(idle_hints(&opts.targets.pids));
    }
    run.call_graph = Some(opts.call_graph.name().to_string());
    run.unwind = unwind_report;
    probes.detach();
    drop(probes);
    run.warnings.splice(0..0, warnings);
    run.started_unix_ms = started_unix_ms;
    run.overhead = overhead;
    run.target = args.sel.target(&opts.targets, &named_at_start, exit_code);
    run.findings = crate::findings::for_run(&run);
    let dir = match &args.output {
        Some(d) => d.clone(),
        None => fresh_run_dir(Path::new("runs"), started_unix_ms / 1000)?,
    };
    write_run(&dir, &mut run, &profiles, &args)?;
    // As perf and strace do: a command that ended on its own gives kpath its status (128 +
    // signal when a signal killed it); one kpath ended (-d, Ctrl-C) does not.
    match exit_code {
        Some(code) if code != 0 && stop == Stop::TargetExited && child.is_some() => {
            std::process::exit(code)
        }
        _ => Ok(()),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A new directory `base/run-<secs>` (`-2`, `-3`, ... when taken).
fn fresh_run_dir(base: &Path, secs: u64) -> anyhow::Result<PathBuf> {
    crate::agent::windows::fresh_dir(base, "run", secs)
        .context("choosing a run directory (or pass -o)")
}

/// What a recording writes into its directory; an earlier run's are removed first, so a
/// directory never mixes two runs (nothing else in it is touched).
const ARTIFACTS: [&str; 11] = [
    "run.json",
    "oncpu.folded",
    "offcpu.folded",
    "oncpu.svg",
    "offcpu.svg",
    "wall.folded",
    "wall.svg",
    "report.html",
    "oncpu.pb.gz",
    "offcpu.pb.gz",
    "locks.pb.gz",
];

/// Writes the run directory (folded stacks, flame graphs, run.json) and prints the run.
fn write_run(
    dir: &Path,
    run: &mut Run,
    profiles: &Profiles,
    args: &RecordArgs,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating run directory {}", dir.display()))?;
    for name in ARTIFACTS {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("removing the old {name} in {}", dir.display()))
            }
            _ => {}
        }
    }
    if profiles.oncpu.is_some() || profiles.offcpu.is_some() || profiles.locks.is_some() {
        run.artifacts = Some(flame::write_artifacts(dir, profiles, run)?);
    }
    let json = serde_json::to_string_pretty(&run)?;
    let path = dir.join("run.json");
    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    if args.json {
        println!("{json}");
    } else {
        print!(
            "{}",
            table::render(
                run,
                &SectionOptions {
                    top: args.top,
                    locks_by: args.locks_by,
                }
            )
        );
    }
    eprintln!("kpath: run written to {}", dir.display());
    Ok(())
}

/// Waits for the first stop condition, showing progress on a terminal.
fn wait(
    args: &RecordArgs,
    probes: &Probes,
    mut child: Option<&mut HeldChild>,
    start: Instant,
    mut maps: Option<&mut MapsRecorder>,
    prog_stats: &mut ProgStats,
) -> Stop {
    let limit = args.duration.map(Duration::from_secs_f64);
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("static template"),
    );
    loop {
        if !bar.is_hidden() {
            prog_stats.poll(probes);
        }
        if STOP.load(Ordering::SeqCst) {
            bar.finish_and_clear();
            return Stop::Signal;
        }
        if limit.is_some_and(|l| start.elapsed() >= l) {
            bar.finish_and_clear();
            return Stop::Duration;
        }
        // Named processes and threads end the recording when all are gone; a name or a
        // cgroup can gain members at any time, so those record until -d or Ctrl-C.
        let gone = match child.as_deref_mut() {
            Some(c) => c.try_wait().is_some(),
            None => {
                let named: Vec<u32> = args
                    .sel
                    .pids
                    .iter()
                    .chain(&args.sel.tids)
                    .copied()
                    .collect();
                args.sel.comm.is_none()
                    && args.sel.cgroup.is_none()
                    && !named.is_empty()
                    && named.iter().all(|&p| !process::pid_alive(p))
            }
        };
        if gone {
            bar.finish_and_clear();
            return Stop::TargetExited;
        }
        bar.set_message(format!(
            "recording {:.1}s{}{} · Ctrl-C to stop",
            start.elapsed().as_secs_f64(),
            limit
                .map(|l| format!(" of {:.0}s", l.as_secs_f64()))
                .unwrap_or_default(),
            prog_stats
                .rate()
                .map(|r| format!(" · {r:.0} BPF events/s"))
                .unwrap_or_default(),
        ));
        bar.tick();
        if let Some(m) = maps.as_deref_mut() {
            m.poll(traced_ids(probes));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// For processes named with -p that made no syscall at all: a hint that they idled, naming
/// their children (nginx's master idles while its workers serve).
fn idle_hints(pids: &[u32]) -> Vec<String> {
    pids.iter()
        .map(|&pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            let children = process::children(pid);
            let mut hint = format!("pid {pid} ({comm}) made no syscalls while recording: it idled");
            if !children.is_empty() {
                let list: Vec<String> = children.iter().map(u32::to_string).collect();
                hint.push_str(&format!(
                    "; its children are {} (trace them with -p {}, or every {comm} process with \
                     --comm {comm})",
                    list.join(", "),
                    list.join(",")
                ));
            }
            hint
        })
        .collect()
}

/// Ids in the kernel's target filter (tgids, and thread ids passing through), and the
/// processes the per-process breakdown has seen (cgroup members, system-wide processes).
pub(crate) fn traced_ids(probes: &Probes) -> Vec<u32> {
    let mut ids: Vec<u32> = probes
        .ebpf
        .map(probe_common::MAP_TARGETS)
        .and_then(|m| aya::maps::HashMap::<_, u32, u32>::try_from(m).ok())
        .map(|t| t.keys().filter_map(Result::ok).collect())
        .unwrap_or_default();
    if let Some(m) = probes.ebpf.map(probe_common::targets::MAP_PROCS) {
        if let Ok(procs) =
            aya::maps::PerCpuHashMap::<_, u32, probe_common::targets::ProcStats>::try_from(m)
        {
            ids.extend(procs.keys().filter_map(Result::ok));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::flame::FlameKind;

    #[test]
    fn artifacts_name_every_file_a_run_writes() {
        for k in [FlameKind::OnCpu, FlameKind::OffCpu, FlameKind::Wall] {
            assert!(ARTIFACTS.contains(&k.folded_name()), "{}", k.folded_name());
            assert!(ARTIFACTS.contains(&k.svg_name()), "{}", k.svg_name());
        }
        for k in crate::export::pprof::PprofKind::ALL {
            assert!(ARTIFACTS.contains(&k.file_name()), "{}", k.file_name());
        }
    }

    #[test]
    fn run_directories_are_never_shared() {
        let base = std::env::temp_dir().join(format!("kpath-rundirs-{}", std::process::id()));
        let a = fresh_run_dir(&base, 5).unwrap();
        let b = fresh_run_dir(&base, 5).unwrap();
        let c = fresh_run_dir(&base, 6).unwrap();
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(a, base.join("run-5"));
        assert_eq!(b, base.join("run-5-2"));
        assert_eq!(c, base.join("run-6"));
    }
}
