//! `kpath agent`: record continuously, write a window directory every `--window` seconds
//! (run.json, folded stacks, flame graphs, pprof), keep the last `--keep`, and serve
//! cumulative Prometheus metrics on `--listen` until SIGINT/SIGTERM.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use aya::maps::{MapData, PerCpuHashMap};
use probe_common::{
    locks::{LockKey, LockStats},
    syscalls::{ByCommKey, ByCommStats, MAP_BY_COMM},
    targets::MAP_PROCS,
    Family, StackKey, MAP_STACKS,
};

use super::record::{self, ProbeArgs, TargetArgs};
use crate::{
    agent::{
        delta::Snapshot,
        drain, http,
        metrics::{self, Capper, Log2Hist, Shared},
        windows,
    },
    families::{self, Probes},
    kernel::{features, syscall_names},
    probes::{object, stats::ProgStats, CallGraph},
    process::{self, HeldChild},
    render::flame,
    run::Run,
    stacks::{maps::MapsRecorder, Profiles},
};

#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Every --window seconds the agent writes DIR/window-<unix seconds>/ with the \
same files as a run directory (run.json, folded stacks, flame graphs, pprof profiles) and removes \
the oldest beyond --keep. The numbers of a window are that window's; the metrics on --listen are \
cumulative since the agent started. A target that exits does not stop the agent (with -- CMD, the \
command's end does, after a last window). Stacks follow frame pointers: --call-graph dwarf is \
refused here.

Examples:
  kpath agent --comm nginx -o /var/lib/kpath/agent     every nginx process, windows of 60 s
  kpath agent -a --probes syscalls,sched --window 10 -o /tmp/kpath
  kpath agent --cgroup system.slice/nginx.service --listen 127.0.0.1:9500
  kpath agent -p 1234 --window 30 --keep 120 --max-label-values 20
  kpath agent --comm myserver --listen 0.0.0.0:9464    metrics reachable from other machines"
)]
pub struct AgentArgs {
    #[command(flatten)]
    pub sel: TargetArgs,
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// Seconds per window directory (fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = servers::args::seconds)]
    pub window: f64,
    /// Directory of the window directories; `-o -` is refused.
    #[arg(short, long, value_name = "DIR", default_value = "runs/agent")]
    pub output: PathBuf,
    /// Window directories to keep (the oldest are removed).
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub keep: usize,
    /// Where to serve /metrics and /healthz (default 127.0.0.1:9464, loopback only; an
    /// address given here is used as given, any interface included).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Distinct values per label (comm, lock caller) before the rest are folded into `other`.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub max_label_values: usize,
    /// Create this file once every probe is attached and the metrics are served.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// The default `--listen`: the port registered for kpath's metrics would be here; 9464 is
/// the one OpenTelemetry's Prometheus exporter uses, free on the machines kpath runs on.
const DEFAULT_LISTEN: &str = "127.0.0.1:9464";
/// How often the cheap per-CPU statistics (syscalls) refresh the metrics.
const METRICS_TICK: Duration = Duration::from_secs(1);
/// How often new traced processes get their /proc maps read.
const MAPS_TICK: Duration = Duration::from_millis(200);

impl AgentArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.probe.call_graph == Some(CallGraph::Dwarf) {
            bail!(
                "--call-graph dwarf: the agent does not evict DWARF unwind tables as processes \
                 exit, so it records with frame pointers (--call-graph fp, the default here)"
            );
        }
        if self.output.as_os_str() == "-" {
            bail!("-o -: the agent writes window directories; give a directory");
        }
        if self.keep == 0 {
            bail!("--keep 0: keep at least one window");
        }
        if self.max_label_values == 0 {
            bail!("--max-label-values 0: allow at least one value per label");
        }
        Ok(())
    }
}

/// Label caps, one per label drawn from the traced system.
struct Caps {
    comm: Capper,
    caller: Capper,
}

/// What the agent adds up across windows.
#[derive(Default)]
struct Totals {
    /// Events drained after a window's read (so in no window), by family.
    drain_lost: BTreeMap<String, u64>,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    args.check()?;
    let explicit = args.listen.is_some();
    let listen = args
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("static address"));
    http::check_listen(&listen, explicit).map_err(anyhow::Error::msg)?;
    let mut opts = args.probe.load_options(args.sel.targets()?)?;
    opts.syscalls_by_comm = true;
    opts.call_graph = CallGraph::Fp;
    if let Some(w) = record::frequency_warning(args.probe.frequency) {
        eprintln!("kpath: {w}");
    }
    let loader = object::Loader::start();
    let (feats, mut warnings) = features::for_attaching("kpath agent")?;
    let mut child = if args.sel.command.is_empty() {
        None
    } else {
        Some(HeldChild::spawn_with(
            &args.sel.command,
            Default::default(),
        )?)
    };
    if let Some(c) = &child {
        opts.targets.pids.push(c.pid);
    }
    let mut probes = families::load_with(loader, &opts, &feats).context("attaching probes")?;
    for w in &probes.warnings {
        log::info!("{w}");
    }
    if let Some(note) = probes.skipped_note(&feats) {
        eprintln!("kpath: {note}");
    }
    warnings.append(&mut probes.warnings);
    let prog_stats = ProgStats::start(&probes, args.probe.bpf_stats);
    if let Some(why) = &prog_stats.error {
        warnings.push(format!("BPF run-time statistics unavailable: {why}"));
    }
    let state: Shared = Shared::default();
    state.lock().expect("not poisoned").info = info(&probes);
    let bound = http::serve(listen, metrics::registry(state.clone()))?;
    eprintln!(
        "kpath agent: metrics on http://{bound}/metrics, a window every {}s in {}",
        args.window,
        args.output.display()
    );
    if let Some(path) = &args.ready_file {
        std::fs::write(path, b"")
            .with_context(|| format!("--ready-file: writing {}", path.display()))?;
    }
    record::install_signal_handlers();
    if let Some(c) = child.as_mut() {
        c.release()?;
    }
    let mut caps = Caps {
        comm: Capper::new(args.max_label_values),
        caller: Capper::new(args.max_label_values),
    };
    let mut totals = Totals::default();
    let mut maps = MapsRecorder::default();
    let mut prev = Snapshot::default();
    let window = Duration::from_secs_f64(args.window);
    let mut window_start = Instant::now();
    let mut window_start_ms = unix_ms();
    let mut last_tick = Instant::now();
    let mut last_maps = Instant::now();
    loop {
        let stop = record::stopped() || child.as_mut().is_some_and(|c| c.try_wait().is_some());
        if stop || window_start.elapsed() >= window {
            let w = Window {
                started_unix_ms: window_start_ms,
                duration: window_start.elapsed(),
            };
            window_start = Instant::now();
            window_start_ms = unix_ms();
            if let Err(e) = end_window(
                &args,
                &probes,
                &opts,
                &w,
                &mut maps,
                &mut prev,
                &mut caps,
                &mut totals,
                &state,
                &warnings,
            ) {
                log::warn!("window ending at {}: {e:#}", unix_ms() / 1000);
                eprintln!("kpath agent: window not written: {e:#}");
                state.lock().expect("not poisoned").window_write_failures += 1;
            }
            tick(&probes, &prog_stats, &mut caps, &totals, &state);
            if stop {
                break;
            }
        }
        if last_maps.elapsed() >= MAPS_TICK {
            last_maps = Instant::now();
            maps.poll(record::traced_ids(&probes));
        }
        if last_tick.elapsed() >= METRICS_TICK {
            last_tick = Instant::now();
            tick(&probes, &prog_stats, &mut caps, &totals, &state);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(c) = child.as_mut() {
        if c.try_wait().is_none() {
            c.terminate(Duration::from_secs(1));
        }
    }
    probes.detach();
    eprintln!("kpath agent: stopped; windows in {}", args.output.display());
    Ok(())
}

/// `kpath_info`'s labels.
fn info(probes: &Probes) -> Vec<(String, String)> {
    let k = features::uname();
    let mut v = vec![
        ("kernel".to_string(), k.release),
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("call_graph".to_string(), "fp".to_string()),
    ];
    for (fam, m) in &probes.methods {
        v.push((format!("{fam}_method"), m.name().to_string()));
    }
    v
}

/// The cheap refresh: syscall statistics (per-CPU arrays and the per-comm map), lost
/// counters, the agent's CPU time and the BPF run time.
fn tick(probes: &Probes, prog_stats: &ProgStats, caps: &mut Caps, totals: &Totals, state: &Shared) {
    let rows = families::syscalls::rows(&probes.ebpf).unwrap_or_default();
    let by_comm = syscalls_by_comm(probes);
    let mut per_comm: BTreeMap<&str, u64> = BTreeMap::new();
    for ((_, comm), (n, _)) in &by_comm {
        *per_comm.entry(comm.as_str()).or_default() += n;
    }
    caps.comm.admit(per_comm);
    let mut syscalls: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for ((nr, comm), (n, e)) in &by_comm {
        let k = (syscall_names::display_name(*nr), caps.comm.label(comm));
        let v = syscalls.entry(k).or_default();
        v.0 += n;
        v.1 += e;
    }
    let mut lost = lost_events(probes);
    for (f, n) in &totals.drain_lost {
        *lost.entry(f.clone()).or_default() += n;
    }
    let bpf = prog_stats.error.is_none() && probes_stats_on(prog_stats);
    let overhead = bpf.then(|| prog_stats.so_far(probes));
    let mut s = state.lock().expect("not poisoned");
    s.syscalls = syscalls;
    s.syscall_duration = rows
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                Log2Hist {
                    buckets: r.hist_log2_ns.clone(),
                    sum_ns: r.total_ns,
                },
            )
        })
        .collect();
    s.lost = lost;
    s.agent_cpu_seconds = cpu_seconds();
    if let Some(o) = overhead {
        s.bpf_run_ns = Some(
            o.families
                .iter()
                .map(|(f, o)| (f.clone(), o.bpf_run_ns))
                .collect(),
        );
    }
    s.folded = [
        ("comm".to_string(), caps.comm.folded() as u64),
        ("caller".to_string(), caps.caller.folded() as u64),
    ]
    .into();
}

fn probes_stats_on(p: &ProgStats) -> bool {
    p.enabled()
}

/// The probes' lost-event counters of the attached families.
fn lost_events(probes: &Probes) -> BTreeMap<String, u64> {
    crate::probes::maps::lost(&probes.ebpf)
        .map(|(events, _)| events)
        .unwrap_or_default()
        .into_iter()
        .filter(|(f, _)| probes.methods.contains_key(f.as_str()))
        .collect()
}

/// (syscall number, task name) -> (calls, errors), summed over CPUs.
fn syscalls_by_comm(probes: &Probes) -> BTreeMap<(u32, String), (u64, u64)> {
    let mut out = BTreeMap::new();
    let Some(map) = probes
        .ebpf
        .map(MAP_BY_COMM)
        .and_then(|m| PerCpuHashMap::<&MapData, ByCommKey, ByCommStats>::try_from(m).ok())
    else {
        return out;
    };
    for (k, per_cpu) in map.iter().filter_map(Result::ok) {
        let v: &mut (u64, u64) = out.entry((k.nr, comm_str(&k.comm))).or_default();
        for s in per_cpu.iter() {
            v.0 += s.count;
            v.1 += s.errors;
        }
    }
    out
}

fn comm_str(c: &[u8; 16]) -> String {
    let n = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..n]).into_owned()
}

/// User + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes the struct it is given; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The window being closed.
struct Window {
    started_unix_ms: u64,
    duration: Duration,
}

/// Reads the window, clears what must be cleared, updates the metrics, writes the directory.
#[allow(clippy::too_many_arguments)]
fn end_window(
    args: &AgentArgs,
    probes: &Probes,
    opts: &families::LoadOptions,
    w: &Window,
    maps: &mut MapsRecorder,
    prev: &mut Snapshot,
    caps: &mut Caps,
    totals: &mut Totals,
    state: &Shared,
    warnings: &[String],
) -> anyhow::Result<()> {
    let (mut run, profiles, sums) =
        families::collect_run_sums(probes, w.duration, Some(maps), opts.offcpu_min_ns)?;
    // Clear the stack-key maps and the stack map; count what arrived after the read.
    let locks_read: u64 = run.locks.iter().map(|r| r.count).sum();
    clear_stack_maps(probes, &sums, locks_read, totals)?;
    let mut next = Snapshot::of(&run);
    {
        let mut s = state.lock().expect("not poisoned");
        for r in run.kpaths.iter().filter(|r| r.calls.is_some()) {
            s.kfunc_calls
                .insert(r.function.clone(), r.calls.unwrap_or(0));
            s.kfunc_ns
                .insert(r.function.clone(), r.total_ns.unwrap_or(0));
        }
        if let Some(sc) = &run.sched {
            s.switches_by_kind
                .insert("voluntary".into(), sc.voluntary_switches);
            s.switches_by_kind
                .insert("involuntary".into(), sc.involuntary_switches);
            s.runq_delay = Some(Log2Hist {
                buckets: sc.runq_delay_hist_log2_ns.clone(),
                sum_ns: sc.runq_delay_total_ns,
            });
        }
    }
    prev.window(&mut run);
    {
        let mut s = state.lock().expect("not poisoned");
        for r in run.kpaths.iter().filter(|r| r.calls.is_none()) {
            s.kfunc_oncpu_ratio
                .insert(r.function.clone(), r.oncpu_share);
        }
        caps.comm.admit(
            run.processes
                .iter()
                .map(|p| (p.comm.as_str(), p.syscalls + p.switches)),
        );
        for p in &run.processes {
            let c = caps.comm.label(&p.comm);
            *s.switches_by_comm.entry(c.clone()).or_default() += p.switches;
            *s.offcpu_ns.entry(c).or_default() += p.offcpu_ns;
        }
        caps.caller
            .admit(run.locks.iter().map(|r| (r.caller.as_str(), r.wait_ns)));
        for r in &run.locks {
            let k = (caps.caller.label(&r.caller), r.lock_type.clone());
            *s.lock_wait_ns.entry(k.clone()).or_default() += r.wait_ns;
            *s.lock_contentions.entry(k).or_default() += r.count;
        }
    }
    // Exited processes leave the per-process map (their last numbers are in this window).
    let pids: Vec<u32> = drain::all_keys::<u32>(&probes.ebpf, MAP_PROCS)?
        .into_iter()
        .filter(|&p| !process::pid_alive(p))
        .collect();
    drain::remove(&probes.ebpf, MAP_PROCS, &pids)?;
    for p in &pids {
        next.forget_process(*p);
    }
    // The target filter keeps the ids of exited processes (the exit hook frees per-thread
    // slots only): left there, a churn of short-lived targets fills it (16384 ids) and every
    // poll of the traced ids walks them all.
    let gone: Vec<u32> = drain::all_keys::<u32>(&probes.ebpf, probe_common::MAP_TARGETS)?
        .into_iter()
        .filter(|&p| !process::pid_alive(p))
        .collect();
    if drain::remove(&probes.ebpf, probe_common::MAP_TARGETS, &gone)? > 0 {
        drain::targets_changed(&probes.ebpf)?;
    }
    *prev = next;
    let evicted = maps.evict_exited();
    log::debug!(
        "window: {} exited processes left PROCS, {} the target filter, {evicted} the maps cache",
        pids.len(),
        gone.len()
    );
    run.started_unix_ms = w.started_unix_ms;
    run.call_graph = Some("fp".into());
    run.target = args.sel.target(&opts.targets, &probes.named_at_start, None);
    run.warnings.splice(0..0, warnings.iter().cloned());
    run.findings = crate::findings::for_run(&run);
    write_window(&args.output, &mut run, &profiles, w)?;
    state.lock().expect("not poisoned").windows_written += 1;
    for (p, e) in windows::prune(&args.output, args.keep) {
        log::warn!("removing old window {}: {e}", p.display());
    }
    Ok(())
}

/// Drains the on-CPU, off-CPU and lock maps and empties the stack map; what was drained but
/// not read by the window (it arrived in between) is counted as lost.
fn clear_stack_maps(
    probes: &Probes,
    sums: &BTreeMap<&'static str, u64>,
    locks_read: u64,
    totals: &mut Totals,
) -> anyhow::Result<()> {
    let counted = [
        (Family::Oncpu, probe_common::oncpu::MAP_COUNTS),
        (Family::Sched, probe_common::sched::MAP_OFFCPU),
    ];
    for (fam, map) in counted {
        let read_by_kpaths = fam == Family::Oncpu && probes.has(Family::Kpaths);
        if !probes.has(fam) && !read_by_kpaths {
            continue;
        }
        let drained: u64 = drain::drain::<StackKey, u64>(&probes.ebpf, map)?
            .iter()
            .map(|(_, v)| v)
            .sum();
        let late = drained.saturating_sub(sums.get(map).copied().unwrap_or(0));
        // Off-CPU weights are nanoseconds: what is lost there is time, not events; the
        // on-CPU samples are events.
        if late > 0 && fam == Family::Oncpu {
            *totals.drain_lost.entry(fam.name().into()).or_default() += late;
        }
    }
    if probes.has(Family::Locks) {
        let drained: u64 =
            drain::drain::<LockKey, LockStats>(&probes.ebpf, probe_common::locks::MAP_STATS)?
                .iter()
                .map(|(_, v)| v.count)
                .sum();
        let late = drained.saturating_sub(locks_read);
        if late > 0 {
            *totals.drain_lost.entry("locks".into()).or_default() += late;
        }
    }
    let ids = drain::all_keys::<u32>(&probes.ebpf, MAP_STACKS)?;
    drain::remove(&probes.ebpf, MAP_STACKS, &ids)?;
    Ok(())
}

/// Writes one window directory: the run directory's files.
fn write_window(base: &Path, run: &mut Run, profiles: &Profiles, w: &Window) -> anyhow::Result<()> {
    let dir = windows::fresh(base, w.started_unix_ms / 1000)?;
    if profiles.oncpu.is_some() || profiles.offcpu.is_some() || profiles.locks.is_some() {
        run.artifacts = Some(flame::write_artifacts(&dir, profiles, run)?);
    }
    let json = serde_json::to_string_pretty(&run)?;
    let path = dir.join("run.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    log::info!("window written to {}", dir.display());
    Ok(())
}
