//! The probe families, one file each: `syscalls`, `kpaths`, `sched`, `locks`, `oncpu`. A family
//! file holds its attach methods and programs (one table the engine plans and attaches from),
//! its `collect()` (kernel maps -> its part of the [`Run`]) and its `section()` (what every
//! renderer draws). This module lists them and runs them in order.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use probe_common::{Family, StackKey};
use serde::Serialize;

use crate::{
    kernel::{features::Features, kallsyms::Kallsyms},
    probes::{
        self,
        maps::{hash_entries, CollectError, PerFamily, Stacks},
        plan::MethodId,
        FamilyTable,
    },
    run::{Run, RUN_FORMAT_VERSION},
    stacks::{maps::MapsRecorder, stack::SymStacks, Profiles},
};

pub mod kpaths;
pub mod locks;
pub mod locks_class;
pub mod oncpu;
pub mod procs;
pub mod sched;
pub mod section;
pub mod syscalls;

pub use section::{Section, SectionOptions};

/// How a family (or one kpaths function) gets its numbers. Declaration order is each family's
/// preference order.
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
    /// sched_switch as a BTF tracepoint (kernel stacks of kept off-CPU periods taken at
    /// switch-in), sched_wakeup and sched_wakeup_new as raw tracepoints.
    SchedTpBtf,
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

impl MethodId for Method {
    /// The name used in run.json and on the command line.
    fn name(self) -> &'static str {
        match self {
            Method::RawTp => "raw_tp",
            Method::RawSyscalls => "raw_syscalls",
            Method::SyscallTracepoints => "syscall_tracepoints",
            Method::Fentry => "fentry",
            Method::Kprobe => "kprobe",
            Method::Sampled => "sampled",
            Method::SchedTpBtf => "sched_tp_btf",
            Method::SchedRawTp => "sched_raw_tp",
            Method::SchedTracepoints => "sched_tracepoints",
            Method::LockTracepoints => "lock_tracepoints",
            Method::MutexKprobe => "mutex_kprobe",
            Method::PerfEvent => "perf_event",
        }
    }

    /// What the method is, for messages and section titles.
    fn describe(self) -> &'static str {
        match self {
            Method::RawTp => "BPF raw tracepoints sys_enter/sys_exit",
            Method::RawSyscalls => "raw_syscalls:sys_enter/sys_exit tracepoints",
            Method::SyscallTracepoints => "syscalls:sys_enter_*/sys_exit_* tracepoints",
            Method::Fentry => "fentry/fexit (BTF trampolines)",
            Method::Kprobe => "kprobe/kretprobe",
            Method::Sampled => "on-CPU stack samples (inclusive share)",
            Method::SchedTpBtf => {
                "BTF tracepoint sched_switch (kernel stacks at switch-in), raw tracepoints sched_wakeup/sched_wakeup_new"
            }
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

impl Method {
    /// Every method of every family.
    pub fn all() -> impl Iterator<Item = Method> {
        ALL.iter()
            .flat_map(|p| p.table.units.iter())
            .flat_map(|u| u.methods.iter())
            .map(|s| s.method)
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::all().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        MethodId::name(self)
    }

    pub fn describe(self) -> &'static str {
        MethodId::describe(self)
    }
}

pub type Probes = probes::Probes<Method>;
pub type LoadOptions = probes::LoadOptions<Method>;

/// A family's whole user-side path.
pub struct FamilyPath {
    pub table: FamilyTable<Method>,
    /// Maps the family's `collect` reads (checked against the object by a unit test).
    pub maps: &'static [&'static str],
    /// Families whose collected part of the run this one reads (collected first).
    pub reads: &'static [Family],
    /// Whether the family symbolizes user frames (folded stacks, or locks' waiter stacks):
    /// then `record` keeps `/proc/PID/maps` snapshots of the targets while it waits.
    pub folds_stacks: bool,
    /// Reads the family's maps into its part of the run.
    pub collect: fn(&mut Collector, &mut Run) -> anyhow::Result<()>,
    /// What the report shows of the family; `None` when the run did not record it.
    pub section: fn(&Run, &SectionOptions) -> Option<Section>,
}

/// Every family, in report order.
pub static ALL: [&FamilyPath; 5] = [
    &syscalls::PATH,
    &kpaths::PATH,
    &sched::PATH,
    &locks::PATH,
    &oncpu::PATH,
];

pub fn path(f: Family) -> &'static FamilyPath {
    ALL.iter()
        .copied()
        .find(|p| p.table.family == f)
        .expect("every family has a path")
}

/// Whether any attached family folds stacks with user frames.
pub fn folds_stacks(probes: &Probes) -> bool {
    ALL.iter()
        .any(|p| p.folds_stacks && probes.has(p.table.family))
}

/// The family a name stands for.
pub fn by_name(name: &str) -> Option<Family> {
    Family::ALL.into_iter().find(|f| f.name() == name)
}

/// The methods one family can use, preferred first.
pub fn candidates(f: Family) -> Vec<Method> {
    let mut v: Vec<Method> = path(f).table.units[0]
        .methods
        .iter()
        .map(|s| s.method)
        .collect();
    v.dedup();
    v
}

/// Loads the object and attaches the requested families.
pub fn load(opts: &LoadOptions, features: &Features) -> Result<Probes, probes::LoadError> {
    load_with(probes::object::Loader::start(), opts, features)
}

/// [`load`] with aya's loader started earlier (its BTF parse overlaps feature detection).
pub fn load_with(
    loader: probes::object::Loader,
    opts: &LoadOptions,
    features: &Features,
) -> Result<Probes, probes::LoadError> {
    // `--kpath FUNC` adds units to the kpaths table.
    let kpaths_table = kpaths::table_with(&opts.extra_functions);
    let tables: Vec<&'static FamilyTable<Method>> = ALL
        .iter()
        .map(|p| {
            if p.table.family == Family::Kpaths {
                kpaths_table
            } else {
                &p.table
            }
        })
        .collect();
    probes::load(loader, opts, features, &tables)
}

/// Parses `--probes`.
pub fn parse_families(names: &[String]) -> anyhow::Result<Vec<Family>> {
    let mut out = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let f = by_name(n)
            .with_context(|| format!("unknown probe family {n:?} (known: {})", known_families()))?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    if out.is_empty() {
        bail!("--probes names no family");
    }
    Ok(out)
}

fn known_families() -> String {
    Family::ALL.map(|f| f.name()).join(", ")
}

/// Parses `--method FAMILY=METHOD`.
pub fn parse_forced(specs: &[String]) -> anyhow::Result<BTreeMap<&'static str, Method>> {
    let mut out = BTreeMap::new();
    for s in specs {
        let (fam, m) = s
            .split_once('=')
            .with_context(|| format!("--method {s:?}: expected FAMILY=METHOD"))?;
        let family =
            by_name(fam).with_context(|| format!("--method {s:?}: unknown family {fam:?}"))?;
        let known = candidates(family);
        let method = known
            .iter()
            .copied()
            .find(|k| k.name() == m)
            .with_context(|| {
                let names: Vec<&str> = known.iter().map(|m| m.name()).collect();
                format!(
                    "--method {s:?}: unknown method {m:?} (for {fam}: {})",
                    names.join(", ")
                )
            })?;
        out.insert(family.name(), method);
    }
    Ok(out)
}

/// Stack-key counts, the stack cache and kernel symbols, borrowed together.
pub type CountsView<'c, 'a> = (&'c [(StackKey, u64)], &'c mut Stacks<'a>, &'c Kallsyms);

/// What the families share while reading their maps at the end of a recording: each thing is
/// read once (the lost counters, kallsyms, every stack, the on-CPU counts).
pub struct Collector<'a> {
    pub probes: &'a Probes,
    pub stacks: Stacks<'a>,
    pub lost_stacks: PerFamily,
    /// Off-CPU periods shorter than this were not charged to a stack.
    pub offcpu_min_ns: u64,
    /// `/proc/PID/maps` snapshots for user frames; `None` when no flame graph is wanted.
    pub maps: Option<&'a mut MapsRecorder>,
    pub profiles: Profiles,
    ksyms: Option<Kallsyms>,
    /// Stack-key counts read so far, by map: each map is read once however many families use it.
    counts: BTreeMap<&'static str, Vec<(StackKey, u64)>>,
}

impl<'a> Collector<'a> {
    pub fn new(
        probes: &'a Probes,
        maps: Option<&'a mut MapsRecorder>,
        offcpu_min_ns: u64,
    ) -> Result<(Collector<'a>, PerFamily), CollectError> {
        let (lost, lost_stacks) = probes::maps::lost(&probes.ebpf)?;
        let mut c = Collector {
            probes,
            stacks: Stacks::new(&probes.ebpf),
            lost_stacks,
            offcpu_min_ns,
            maps,
            profiles: Profiles::default(),
            ksyms: None,
            counts: BTreeMap::new(),
        };
        if let Some(m) = c.maps.as_deref_mut() {
            m.refresh();
        }
        Ok((c, lost))
    }

    /// Kernel symbols, loaded on first use.
    pub fn ksyms(&mut self) -> anyhow::Result<&Kallsyms> {
        if self.ksyms.is_none() {
            self.ksyms = Some(Kallsyms::load().context("reading /proc/kallsyms")?);
        }
        Ok(self.ksyms.as_ref().expect("set above"))
    }

    /// Kernel symbols and the maps snapshots together (both borrowed from the collector).
    pub fn ksyms_and_maps(&mut self) -> anyhow::Result<(&Kallsyms, Option<&mut MapsRecorder>)> {
        self.ksyms()?;
        Ok((
            self.ksyms.as_ref().expect("loaded above"),
            self.maps.as_deref_mut(),
        ))
    }

    /// Stacks and kernel symbols together (both borrowed from the collector).
    pub fn stacks_and_ksyms(&mut self) -> anyhow::Result<(&mut Stacks<'a>, &Kallsyms)> {
        self.ksyms()?;
        Ok((&mut self.stacks, self.ksyms.as_ref().expect("loaded above")))
    }

    /// The weights per key of a stack-key map, largest first, read once for every family that
    /// uses them (the on-CPU samples serve oncpu's flame graph and kpaths' shares).
    pub fn counts(&mut self, map: &'static str) -> Result<&[(StackKey, u64)], CollectError> {
        if !self.counts.contains_key(map) {
            let mut v = hash_entries::<StackKey, u64>(&self.probes.ebpf, map)?;
            v.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
            self.counts.insert(map, v);
        }
        Ok(&self.counts[map])
    }

    /// A map's counts with the stack cache and kernel symbols to read them.
    pub fn counts_view(&mut self, map: &'static str) -> anyhow::Result<CountsView<'_, 'a>> {
        self.counts(map)?;
        self.ksyms()?;
        Ok((
            &self.counts[map],
            &mut self.stacks,
            self.ksyms.as_ref().expect("loaded above"),
        ))
    }

    /// Folds a stack-key map's counts into flame-graph text; see [`Collector::symbolize`].
    pub fn fold(
        &mut self,
        map: &'static str,
        strip: fn(&mut Vec<u64>, &Kallsyms),
    ) -> anyhow::Result<Option<String>> {
        Ok(self.symbolize(map, strip)?.map(|s| s.folded_text()))
    }

    /// Symbolizes a stack-key map's counts (read once, see [`Collector::counts`]) into
    /// structured stacks, one per key in the map's order, with a snapshot of every process they
    /// name; `strip` edits each kernel stack first (the sched family drops tracing frames).
    /// `None` when no profile is wanted.
    pub fn symbolize(
        &mut self,
        map: &'static str,
        strip: fn(&mut Vec<u64>, &Kallsyms),
    ) -> anyhow::Result<Option<SymStacks>> {
        if self.maps.is_none() {
            return Ok(None);
        }
        self.counts(map)?;
        let mut raws: Vec<_> = self.counts[map]
            .iter()
            .map(|(k, n)| crate::stacks::raw_stack(k, *n, &mut self.stacks))
            .collect();
        self.ksyms()?;
        let ksyms = self.ksyms.as_ref().expect("loaded");
        for r in &mut raws {
            strip(&mut r.kernel, ksyms);
        }
        let maps = self.maps.as_deref_mut().expect("checked above");
        for r in &raws {
            maps.ensure(r.tgid);
        }
        Ok(Some(crate::stacks::symbolize(
            &raws,
            ksyms,
            &maps.snapshots,
        )))
    }
}

/// Reads every attached family's maps into a [`Run`] and the folded profiles (when `maps`).
pub fn collect_run(
    probes: &Probes,
    duration: Duration,
    maps: Option<&mut MapsRecorder>,
    offcpu_min_ns: u64,
) -> anyhow::Result<(Run, Profiles)> {
    collect_run_sums(probes, duration, maps, offcpu_min_ns).map(|(r, p, _)| (r, p))
}

/// [`collect_run`], also giving the sum of the weights read from each stack-key map (the
/// agent clears those maps after each window and counts what arrived after this read).
pub fn collect_run_sums(
    probes: &Probes,
    duration: Duration,
    maps: Option<&mut MapsRecorder>,
    offcpu_min_ns: u64,
) -> anyhow::Result<(Run, Profiles, BTreeMap<&'static str, u64>)> {
    let mut run = Run {
        format_version: RUN_FORMAT_VERSION,
        kpath_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: crate::kernel::features::uname(),
        duration_ns: duration.as_nanos() as u64,
        ..Default::default()
    };
    for (fam, m) in &probes.methods {
        run.methods.insert(fam.to_string(), m.name().to_string());
    }
    let (mut c, lost) = Collector::new(probes, maps, offcpu_min_ns)?;
    run.lost = lost
        .into_iter()
        .filter(|(f, _)| probes.methods.contains_key(f.as_str()))
        .collect();
    for p in collect_order() {
        if probes.has(p.table.family) {
            (p.collect)(&mut c, &mut run)
                .with_context(|| format!("reading the {} maps", p.table.family.name()))?;
        }
    }
    procs::collect(&mut c, &mut run).context("reading the per-process breakdown")?;
    wall(&mut c.profiles, &mut run).context("building the wall-clock view")?;
    for (fam, n) in &c.lost_stacks {
        if *n > 0 && probes.methods.contains_key(fam.as_str()) {
            run.warnings.push(format!(
                "{fam}: {n} stacks could not be stored (stack map full or hash collision)"
            ));
        }
    }
    let sums = c
        .counts
        .iter()
        .map(|(m, v)| (*m, v.iter().map(|(_, n)| n).sum()))
        .collect();
    Ok((run, c.profiles, sums))
}

/// The wall-clock view, when the run has both on-CPU samples and off-CPU stacks.
fn wall(p: &mut Profiles, run: &mut Run) -> anyhow::Result<()> {
    let (Some(oncpu), Some(waiting), Some(runnable), Some(o)) =
        (&p.oncpu, &p.offcpu_waiting, &p.offcpu_runnable, &run.oncpu)
    else {
        return Ok(());
    };
    let w = crate::stacks::wall::build(crate::stacks::wall::WallInput {
        oncpu,
        period_ns: 1_000_000_000 / o.frequency_hz.max(1),
        waiting,
        runnable,
    })?;
    p.wall = Some(w.folded);
    run.wall = Some(w.summary);
    Ok(())
}

/// [`ALL`], each family after those it reads.
fn collect_order() -> Vec<&'static FamilyPath> {
    let mut order: Vec<&'static FamilyPath> = Vec::new();
    fn visit(p: &'static FamilyPath, order: &mut Vec<&'static FamilyPath>) {
        if order.iter().any(|q| std::ptr::eq(*q, p)) {
            return;
        }
        for &f in p.reads {
            visit(path(f), order);
        }
        order.push(p);
    }
    for p in ALL {
        visit(p, &mut order);
    }
    order
}

/// The sections of every family the run recorded, in report order.
pub fn sections(run: &Run, opts: &SectionOptions) -> Vec<Section> {
    procs::section(run, opts)
        .into_iter()
        .chain(ALL.iter().filter_map(|p| (p.section)(run, opts)))
        .collect()
}

#[cfg(test)]
mod tests;
