//! `kpath record`: attach, wait for the target (or the duration, or Ctrl-C), collect, report.
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use probe_common::Family;

use crate::{
    collect::{self, Stacks},
    features::{self, Features},
    kallsyms::Kallsyms,
    loader::{self, LoadOptions, Method, Probes},
    progstats::ProgStats,
    run::{Run, Target, RUN_FORMAT_VERSION},
    stacks::{self, maps::MapsRecorder},
    target::{self, Child},
};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath record -- ./my-server --port 8080      start a command and trace it (and its children)
  kpath record -p $(pidof nginx | tr ' ' '\\n' | tail -1) -d 10
  kpath record --probes syscalls,sched -d 5 -o runs/idle --json > run.json
  kpath record --method kpaths=sampled -F 999 -- ./workload")]
pub struct RecordArgs {
    /// Trace this process (all its threads, and children it forks while traced).
    #[arg(short, long, conflicts_with = "command")]
    pub pid: Option<u32>,
    /// Stop after this many seconds (default: when the target exits, or Ctrl-C).
    #[arg(short, long)]
    pub duration: Option<f64>,
    /// Probe families, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "syscalls,kpaths,sched,locks,oncpu"
    )]
    pub probes: Vec<String>,
    /// On-CPU sampling frequency (Hz) per CPU.
    #[arg(short = 'F', long, default_value_t = 99)]
    pub frequency: u64,
    /// Run directory to write (default: runs/run-<unix time>).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Print run.json to stdout instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Force an attach method: FAMILY=METHOD, e.g. kpaths=kprobe (repeatable).
    #[arg(long = "method", value_name = "FAMILY=METHOD")]
    pub methods: Vec<String>,
    /// Off-CPU periods shorter than this (µs) are not charged to a stack (still counted in totals).
    #[arg(long, default_value_t = 0)]
    pub offcpu_min_us: u64,
    /// Rows per table.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Measure kpath's own BPF run time (events/s, ns per event per family) with the kernel's
    /// BPF statistics, which time every BPF program run on the machine: on this project's
    /// machine that added ~80 ns to each program run, so it is off unless asked for.
    #[arg(long)]
    pub bpf_stats: bool,
    /// Create this file once every probe is attached (for scripts that start load then).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// The command to start and trace.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Parses `--probes`.
pub fn parse_families(names: &[String]) -> anyhow::Result<Vec<Family>> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let f = Family::ALL
            .into_iter()
            .find(|f| f.name() == n)
            .with_context(|| {
                format!("unknown probe family {n:?} (known: syscalls, kpaths, sched, locks, oncpu)")
            })?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        bail!("--probes names no family");
    }
    Ok(out)
}

/// Parses `--method FAMILY=METHOD`.
pub fn parse_forced(specs: &[String]) -> anyhow::Result<BTreeMap<&'static str, Method>> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (fam, m) = s
            .split_once('=')
            .with_context(|| format!("--method {s:?}: expected FAMILY=METHOD"))?;
        let family = Family::ALL
            .into_iter()
            .find(|f| f.name() == fam)
            .with_context(|| format!("--method {s:?}: unknown family {fam:?}"))?;
        let method = Method::from_name(m).with_context(|| {
            let names: Vec<&str> = loader::candidates(family)
                .iter()
                .map(|m| m.name())
                .collect();
            format!(
                "--method {s:?}: unknown method {m:?} (for {fam}: {})",
                names.join(", ")
            )
        })?;
        out.insert(family.name(), method);
    }
    Ok(out)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
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

pub fn run(args: RecordArgs) -> anyhow::Result<()> {
    let families = parse_families(&args.probes)?;
    let forced = parse_forced(&args.methods)?;
    if args.frequency == 0 || args.frequency > 100_000 {
        bail!(
            "-F {}: the sampling frequency must be between 1 and 100000 Hz",
            args.frequency
        );
    }
    if let Some(d) = args.duration {
        if !(d > 0.0 && d.is_finite()) {
            bail!("-d {d}: the duration must be a positive number of seconds");
        }
    }
    if !features::is_root() {
        bail!("kpath record needs root (CAP_BPF and CAP_PERFMON) to load BPF programs: run it with sudo");
    }
    if let Some(pid) = args.pid {
        target::check_pid(pid)?;
    }

    let mut warnings = Vec::new();
    match features::mount_tracefs() {
        Ok(true) => warnings
            .push("tracefs was not mounted: kpath mounted it at /sys/kernel/tracing".to_string()),
        Ok(false) => {}
        Err(e) => warnings.push(format!(
            "mounting tracefs at /sys/kernel/tracing failed: {e}"
        )),
    }
    let feats = Features::detect();

    let mut child = if args.command.is_empty() {
        None
    } else {
        Some(Child::spawn(&args.command)?)
    };
    let target_pid = args.pid.or(child.as_ref().map(|c| c.pid));
    let opts = LoadOptions {
        families: families.clone(),
        targets: target_pid.into_iter().collect(),
        sample_hz: args.frequency,
        offcpu_min_ns: args.offcpu_min_us * 1000,
        forced,
    };
    let mut probes = loader::load(&opts, &feats).context("attaching probes")?;
    for w in &probes.warnings {
        log::info!("{w}");
    }
    warnings.append(&mut probes.warnings);
    // Opt-in: the statistics slow every BPF program run on the machine down (see progstats).
    let mut prog_stats = ProgStats::start(&probes, args.bpf_stats);
    if let Some(why) = &prog_stats.error {
        warnings.push(format!("BPF run-time statistics unavailable: {why}"));
    }
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"")
            .with_context(|| format!("--ready-file: writing {}", path.display()))?;
    }

    install_signal_handlers();
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let start = Instant::now();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    // Stacks are symbolized from maps snapshots taken while the targets live.
    let mut maps =
        (probes.has(Family::Oncpu) || probes.has(Family::Sched)).then(MapsRecorder::default);
    let stop = wait(
        &args,
        &probes,
        child.as_mut(),
        start,
        maps.as_mut(),
        &mut prog_stats,
    );
    let duration = start.elapsed();
    let mut exit_code = None;
    if let Some(c) = child.as_mut() {
        exit_code = c.try_wait();
        if exit_code.is_none() {
            warnings.push(format!(
                "recording ended ({stop:?}) before the command: kpath terminated it"
            ));
            exit_code = c.terminate(Duration::from_secs(1));
        }
    }
    let overhead = prog_stats.finish(&probes);

    let mut run = collect_run(&probes, duration)?;
    let profiles = maps.as_mut().and_then(|m| {
        stacks::collect(&probes, m, opts.offcpu_min_ns)
            .map_err(|e| run.warnings.push(format!("flame graphs: {e:#}")))
            .ok()
    });
    probes.detach();
    drop(probes);
    run.warnings.splice(0..0, warnings);
    run.started_unix_ms = started_unix_ms;
    run.overhead = overhead;
    run.target = Target {
        kind: if child.is_some() {
            "command"
        } else if args.pid.is_some() {
            "pid"
        } else {
            "system"
        }
        .into(),
        pid: target_pid,
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        exit_code,
        tgids_seen: 0,
    };

    let dir = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/run-{}", started_unix_ms / 1000)));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating run directory {}", dir.display()))?;
    if let Some(p) = &profiles {
        run.offcpu = p.offcpu_summary.clone();
        run.artifacts = Some(stacks::write_artifacts(&dir, p, &run)?);
    }
    let json = serde_json::to_string_pretty(&run)?;
    let path = dir.join("run.json");
    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    if args.json {
        println!("{json}");
    } else {
        print!(
            "{}",
            crate::render::table::render(
                &run,
                &crate::render::table::TableOptions { top: args.top }
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
    mut child: Option<&mut Child>,
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
        let gone = match child.as_deref_mut() {
            Some(c) => c.try_wait().is_some(),
            None => args.pid.is_some_and(|p| !target::pid_alive(p)),
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

/// Ids in the kernel's target filter (tgids, and thread ids passing through).
fn traced_ids(probes: &Probes) -> Vec<u32> {
    probes
        .ebpf
        .map(probe_common::MAP_TARGETS)
        .and_then(|m| aya::maps::HashMap::<_, u32, u32>::try_from(m).ok())
        .map(|t| t.keys().filter_map(Result::ok).collect())
        .unwrap_or_default()
}

/// Reads every attached family's maps into a [`Run`].
pub fn collect_run(probes: &Probes, duration: Duration) -> anyhow::Result<Run> {
    let ebpf = &probes.ebpf;
    let mut run = Run {
        format_version: RUN_FORMAT_VERSION,
        kpath_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: features::uname(),
        duration_ns: duration.as_nanos() as u64,
        ..Default::default()
    };
    for (fam, m) in &probes.methods {
        run.methods.insert(fam.to_string(), m.name().to_string());
    }
    let (lost, lost_stacks) = collect::lost(ebpf)?;
    run.lost = lost
        .into_iter()
        .filter(|(f, _)| probes.methods.contains_key(f.as_str()))
        .collect();
    let needs_ksyms = probes.has(Family::Locks) || probes.has(Family::Oncpu);
    let ksyms = if needs_ksyms {
        Kallsyms::load().context("reading /proc/kallsyms")?
    } else {
        Kallsyms::default()
    };
    let mut stacks = Stacks::new(ebpf);

    if probes.has(Family::Syscalls) {
        run.syscalls = collect::syscalls::collect(ebpf)?;
    }
    if probes.has(Family::Sched) {
        run.sched = Some(collect::sched::collect(ebpf)?);
    }
    if probes.has(Family::Locks) {
        run.locks = collect::locks::collect(ebpf, &mut stacks, &ksyms)?;
    }
    let oncpu = if probes.has(Family::Oncpu) {
        let stacks_lost = lost_stacks.get(Family::Oncpu.name()).copied().unwrap_or(0);
        Some(collect::oncpu::collect(
            ebpf,
            probes.sample_hz,
            stacks_lost,
        )?)
    } else {
        None
    };
    if probes.has(Family::Kpaths) {
        let (under, total) = match &oncpu {
            Some(o) => (
                collect::kpaths::samples_under(o, &mut stacks, &ksyms),
                o.summary.samples,
            ),
            None => ([0; 4], 0),
        };
        run.kpaths =
            collect::kpaths::collect(ebpf, &probes.kpath_methods, under, total, &run.syscalls)?;
    }
    for (fam, n) in &lost_stacks {
        if *n > 0 && probes.methods.contains_key(fam.as_str()) {
            run.warnings.push(format!(
                "{fam}: {n} stacks could not be stored (stack map full or hash collision)"
            ));
        }
    }
    run.oncpu = oncpu.map(|o| o.summary);
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_parse_dedup_and_reject_unknown_names() {
        let v = parse_families(&["syscalls".into(), "sched".into(), "syscalls".into()]).unwrap();
        assert_eq!(v, vec![Family::Syscalls, Family::Sched]);
        let e = parse_families(&["sycalls".into()]).unwrap_err().to_string();
        assert!(e.contains("sycalls") && e.contains("known"), "{e}");
    }

    #[test]
    fn forced_methods_parse_and_list_alternatives_on_error() {
        let m = parse_forced(&["kpaths=kprobe".into()]).unwrap();
        assert_eq!(m.get("kpaths"), Some(&Method::Kprobe));
        let e = parse_forced(&["kpaths=kprob".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("fentry, kprobe, sampled"), "{e}");
        assert!(parse_forced(&["kpaths".into()]).is_err());
    }
}
