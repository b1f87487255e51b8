//! The engine: loads the embedded eBPF object, plans each family's attach methods against what
//! the kernel offers, attaches them with fallback and rollback, and reads maps. It names no
//! family: each family hands it a [`FamilyTable`] (see `families/`), and the fallback order is
//! that table's order.
//!
//! [`plan`](plan::plan) prunes a table with what [`Features`] detected (pure, unit-tested);
//! [`load`] tries the survivors in order, because some failures only show at load time
//! (fentry's EPERM here), and records every fallback as a warning.
use std::collections::BTreeMap;

use aya::{programs::ProgramError, Btf, Ebpf};
use probe_common::{
    targets::{
        GLOBAL_CGROUP_ID, GLOBAL_CGROUP_LEVEL, GLOBAL_COMM_HI, GLOBAL_COMM_LO, GLOBAL_PER_PROCESS,
        GLOBAL_THREADS, MAP_PROCS, MAP_THREADS,
    },
    unwind::GLOBAL_DWARF,
    Family, GLOBAL_FILTER, GLOBAL_SELF_TGID, GLOBAL_USER_RET, MAP_LOST, MAP_STACKS, MAP_TARGETS,
    MAP_TARGETS_GEN, MAP_TARGET_HINTS,
};

use crate::kernel::features::Features;

pub mod attach;
pub mod call_graph;
pub mod maps;
pub mod object;
pub mod plan;
pub mod stats;
pub mod targets;

pub use attach::error_chain;
use attach::{explain, Attacher, Prog};
pub use call_graph::CallGraph;
use object::Global;
use plan::{plan, MethodId, MethodSpec, Unit};
pub use targets::Targets;

/// Label of the programs that follow fork children and thread exits for every family.
pub const FOLLOW: &str = "follow";

/// The fork follower: traced processes' children join the filter; exits free per-thread slots;
/// with `--comm`, processes that take the name by exec or rename join.
pub const FOLLOW_PROGRAMS: [Prog; 4] = [
    Prog::TracePoint {
        prog: "target_sched_process_fork",
        category: "sched",
        event: "sched_process_fork",
    },
    Prog::TracePoint {
        prog: "target_sched_process_exit",
        category: "sched",
        event: "sched_process_exit",
    },
    Prog::TracePoint {
        prog: "target_sched_process_exec",
        category: "sched",
        event: "sched_process_exec",
    },
    Prog::TracePoint {
        prog: "target_task_rename",
        category: "task",
        event: "task_rename",
    },
];

/// Maps and globals the engine itself uses (the families list theirs).
pub const ENGINE_MAPS: [&str; 7] = [
    MAP_TARGETS,
    MAP_TARGET_HINTS,
    MAP_TARGETS_GEN,
    MAP_THREADS,
    MAP_PROCS,
    MAP_LOST,
    MAP_STACKS,
];
pub const ENGINE_GLOBALS: [&str; 10] = [
    GLOBAL_FILTER,
    GLOBAL_SELF_TGID,
    GLOBAL_USER_RET,
    GLOBAL_THREADS,
    GLOBAL_COMM_LO,
    GLOBAL_COMM_HI,
    GLOBAL_CGROUP_ID,
    GLOBAL_CGROUP_LEVEL,
    GLOBAL_PER_PROCESS,
    GLOBAL_DWARF,
];

/// What the engine needs to know of one family.
#[derive(Debug)]
pub struct FamilyTable<M: 'static> {
    pub family: Family,
    /// Fallback chains; most families have one, kpaths one per kernel function.
    pub units: &'static [Unit<M>],
    /// Globals the family's programs read, from what the kernel offers and the options.
    pub globals: fn(&Features, &LoadOptions<M>) -> Globals,
}

/// Global names and their values.
pub type Globals = Vec<(&'static str, Global)>;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the BPF object failed")]
    Object(#[source] aya::EbpfError),
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
    #[error(
        "following fork children, thread exits and renames needs sched:sched_process_fork/exit/exec \
         and task:task_rename"
    )]
    FollowForks(#[source] ProgramError),
    #[error("--method {family}={method}: {family} cannot use {method}")]
    BadForce {
        family: &'static str,
        method: &'static str,
    },
}

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions<M> {
    pub families: Vec<Family>,
    /// What to trace; nothing selected traces every task but kpath.
    pub targets: Targets,
    pub sample_hz: u64,
    pub offcpu_min_ns: u64,
    /// Families whose method the user forced (`--method kpaths=kprobe`).
    pub forced: BTreeMap<&'static str, M>,
    /// Kernel functions to follow besides a family's built-in ones (`--kpath FUNC`); the
    /// family that follows functions turns them into units of its table.
    pub extra_functions: Vec<String>,
    /// How user stacks are taken, already checked against the kernel ([`CallGraph::choose`]).
    pub call_graph: CallGraph,
    /// Maps sized at load time (map name, entries), e.g. the unwind rows to the tables built.
    pub max_entries: Vec<(&'static str, u32)>,
    /// Count syscalls per (comm, syscall) too (`kpath agent`'s comm label; off for record,
    /// so the verifier prunes the branch and the hot path pays nothing).
    pub syscalls_by_comm: bool,
}

impl<M> Default for LoadOptions<M> {
    fn default() -> Self {
        LoadOptions {
            families: Family::ALL.to_vec(),
            targets: Targets::default(),
            sample_hz: 99,
            offcpu_min_ns: 0,
            forced: BTreeMap::new(),
            extra_functions: Vec::new(),
            call_graph: CallGraph::Fp,
            max_entries: Vec::new(),
            syscalls_by_comm: false,
        }
    }
}

/// Loaded and attached probes. Dropping it detaches every link and unloads every program.
pub struct Probes<M: 'static> {
    pub ebpf: Ebpf,
    /// Family name -> method used (absent when the family was not attached).
    pub methods: BTreeMap<&'static str, M>,
    /// Per unit (family, unit name), the method used.
    pub units: Vec<(Family, &'static str, M)>,
    /// Loaded programs and what each serves: a family name, or [`FOLLOW`].
    pub programs: Vec<(&'static str, String)>,
    pub warnings: Vec<String>,
    /// Methods passed over before any attach because this kernel lacks what they need
    /// (family, `family: method skipped: why`): the same on every run of a kernel, so doctor
    /// lists them and record says one line ([`Probes::skipped_note`]), not a warning each.
    pub skipped: Vec<(&'static str, String)>,
    pub sample_hz: u64,
    /// Processes that had the `--comm` name when the recording started.
    pub named_at_start: Vec<u32>,
}

impl<M: MethodId> Probes<M> {
    /// One line for everything [`Probes::skipped`] holds: `note: kprobes, fentry unavailable
    /// on this kernel: kpaths use sampled, locks use lock_tracepoints; see kpath doctor`.
    pub fn skipped_note(&self, features: &Features) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let mut lacks = Vec::new();
        if !features.kprobes {
            lacks.push("kprobes");
        }
        if features.fentry != crate::kernel::tracing_prog::Fentry::Loads {
            lacks.push("fentry");
        }
        if lacks.is_empty() {
            lacks.push("some attach methods");
        }
        let mut uses: Vec<String> = Vec::new();
        for (family, _) in &self.skipped {
            let Some(m) = self.methods.get(family) else {
                continue;
            };
            let u = format!("{family} use {}", m.name());
            if !uses.contains(&u) {
                uses.push(u);
            }
        }
        Some(format!(
            "note: {} unavailable on this kernel{}{}; see kpath doctor",
            lacks.join(", "),
            if uses.is_empty() { "" } else { ": " },
            uses.join(", ")
        ))
    }

    pub fn has(&self, f: Family) -> bool {
        self.methods.contains_key(f.name())
    }

    /// The method of one unit of a family.
    pub fn unit_method(&self, f: Family, unit: &str) -> Option<M> {
        self.units
            .iter()
            .find(|(g, u, _)| *g == f && *u == unit)
            .map(|&(_, _, m)| m)
    }

    /// Detaches every link and unloads every program, all at once: each tracepoint detach waits
    /// for an RCU grace period (70-100 ms each on a busy machine), so one after another they
    /// made Ctrl-C take over a second.
    pub fn detach(&mut self) {
        let progs: Vec<&mut aya::programs::Program> =
            self.ebpf.programs_mut().map(|(_, p)| p).collect();
        std::thread::scope(|s| {
            for p in progs {
                s.spawn(move || attach::unload(p));
            }
        });
    }
}

/// Loads the object with every family's globals, fills the target filter, attaches the fork
/// follower and each requested family (from `tables`, in `opts.families` order).
pub fn load<M: MethodId>(
    loader: object::Loader,
    opts: &LoadOptions<M>,
    features: &Features,
    tables: &[&'static FamilyTable<M>],
) -> Result<Probes<M>, LoadError> {
    let mut globals = opts.targets.globals();
    globals.extend([
        (GLOBAL_SELF_TGID, Global::U32(std::process::id())),
        // Stacks recover the caller of frameless syscall wrappers where the kernel lets them.
        (GLOBAL_USER_RET, Global::from(features.task_pt_regs)),
        (
            GLOBAL_DWARF,
            Global::from(opts.call_graph == CallGraph::Dwarf),
        ),
    ]);
    let offsets = crate::kernel::tracefs::event_offsets(features.tracefs.as_deref());
    globals.extend(offsets.into_iter().map(|(g, off)| (g, Global::U32(off))));
    for t in tables {
        globals.extend((t.globals)(features, opts));
    }
    globals.sort_by_key(|g| g.0);
    globals.dedup_by_key(|g| g.0);
    // aya parses the kernel's BTF again for the programs that attach by BTF id (fentry, BTF
    // tracepoints: ~40 ms here); where one of them will be tried, on another thread while the
    // object loads.
    let btf =
        needs_btf(opts, features, tables).then(|| std::thread::spawn(|| Btf::from_sys_fs().ok()));
    let t0 = std::time::Instant::now();
    let ebpf = object::load(loader, &globals, &opts.max_entries).map_err(LoadError::Object)?;
    log::debug!(
        "start-up: object loaded (maps created) in {:?}",
        t0.elapsed()
    );
    let mut p = Probes {
        ebpf,
        methods: BTreeMap::new(),
        units: Vec::new(),
        programs: Vec::new(),
        warnings: Vec::new(),
        skipped: Vec::new(),
        sample_hz: opts.sample_hz,
        named_at_start: Vec::new(),
    };
    opts.targets.fill(&mut p.ebpf)?;
    let mut session = Session {
        probes: p,
        features,
        btf: btf.and_then(|t| t.join().ok().flatten()),
        uses: Vec::new(),
        fp: opts.call_graph != CallGraph::Dwarf,
    };
    // Always: the exit hook also frees per-thread syscall slots in system-wide mode.
    session
        .attach(FOLLOW, &FOLLOW_PROGRAMS)
        .map_err(LoadError::FollowForks)?;
    session.probes.named_at_start = opts.targets.fill_named(&mut session.probes.ebpf)?;
    for &family in &opts.families {
        let Some(table) = tables.iter().find(|t| t.family == family) else {
            continue;
        };
        let forced = opts.forced.get(family.name()).copied();
        let t = std::time::Instant::now();
        session.attach_family(table, forced)?;
        log::debug!("start-up: {} attached in {:?}", family.name(), t.elapsed());
    }
    session.attach_used(tables)?;
    for (name, prog) in session.probes.ebpf.programs() {
        if let Some(n) = prog
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count())
        {
            log::debug!("program {name}: {n} instructions verified");
        }
    }
    Ok(session.probes)
}

/// Whether a program that attaches by BTF id will be tried: the first usable method of a
/// requested family's unit has one (fentry, fexit, a BTF tracepoint).
pub(crate) fn needs_btf<M: MethodId>(
    opts: &LoadOptions<M>,
    features: &Features,
    tables: &[&'static FamilyTable<M>],
) -> bool {
    tables
        .iter()
        .filter(|t| opts.families.contains(&t.family))
        .any(|t| {
            let forced = opts.forced.get(t.family.name()).copied();
            t.units.iter().any(|u| {
                plan(u, features, forced)
                    .usable
                    .first()
                    .is_some_and(|s| s.programs.iter().any(Prog::attaches_by_btf))
            })
        })
}

/// One load in progress.
struct Session<'f, M: 'static> {
    probes: Probes<M>,
    features: &'f Features,
    btf: Option<aya::Btf>,
    /// (family, family it reads) for every chosen method with [`MethodSpec::uses`].
    uses: Vec<(Family, Family)>,
    /// Frame-pointer stacks: load the programs' twins without the DWARF walker.
    fp: bool,
}

impl<M: MethodId> Session<'_, M> {
    fn attach(&mut self, label: &'static str, progs: &[Prog]) -> Result<(), ProgramError> {
        let mut a = Attacher {
            ebpf: &mut self.probes.ebpf,
            sample_hz: self.probes.sample_hz,
            btf: self.btf.take(),
            tracefs: self.features.tracefs.as_deref(),
            fp: self.fp,
        };
        let r = a.attach_all(progs);
        self.btf = a.btf.take();
        if r.is_ok() {
            for p in progs {
                for name in p.with_twins(self.fp).names() {
                    if !self.probes.programs.iter().any(|(_, n)| n == name) {
                        self.probes.programs.push((label, name.to_string()));
                    }
                }
            }
        }
        r
    }

    /// Attaches every unit of a family by the first of its methods that works.
    fn attach_family(
        &mut self,
        table: &'static FamilyTable<M>,
        forced: Option<M>,
    ) -> Result<(), LoadError> {
        let family = table.family.name();
        if let Some(m) = forced {
            let known = table
                .units
                .iter()
                .all(|u| u.methods.iter().any(|s| s.method == m));
            if !known {
                return Err(LoadError::BadForce {
                    family,
                    method: m.name(),
                });
            }
        }
        // A method failing the same way for every unit (fentry here) is said once.
        let mut said: Vec<(M, String)> = Vec::new();
        for unit in table.units {
            let plan = plan(unit, self.features, forced);
            // Units share their methods' needs: skipped methods are said for the first only.
            if forced.is_none() && std::ptr::eq(unit, &table.units[0]) {
                for (m, why) in &plan.skipped {
                    self.probes
                        .skipped
                        .push((family, format!("{family}: {} skipped: {why}", m.describe())));
                }
            }
            let mut reasons = plan.reasons();
            let mut chosen = None;
            for spec in &plan.usable {
                match self.attach(family, spec.programs) {
                    Ok(()) => {
                        chosen = Some(spec.method);
                        if let Some(used) = spec.uses {
                            if !self.uses.contains(&(table.family, used)) {
                                self.uses.push((table.family, used));
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        let why = explain(spec.programs, &e);
                        let msg = failure(family, unit, table.units.len(), spec, &why);
                        reasons.push(msg.clone());
                        if !said.iter().any(|(m, w)| *m == spec.method && *w == why) {
                            self.probes.warnings.push(msg);
                            said.push((spec.method, why));
                        }
                    }
                }
            }
            let Some(m) = chosen else {
                let reasons = reasons.join("; ");
                return Err(LoadError::NoMethod {
                    family,
                    reasons: if table.units.len() > 1 {
                        format!("{}: {reasons}", unit.name)
                    } else {
                        reasons
                    },
                });
            };
            self.probes.units.push((table.family, unit.name, m));
        }
        // The family's method is the best one any unit got (all agree in practice).
        let best = self
            .probes
            .units
            .iter()
            .filter(|(f, _, _)| *f == table.family)
            .map(|&(_, _, m)| m)
            .min();
        if let Some(m) = best {
            self.probes.methods.insert(family, m);
        }
        Ok(())
    }

    /// Attaches the families that chosen methods read from (see [`MethodSpec::uses`]).
    fn attach_used(&mut self, tables: &[&'static FamilyTable<M>]) -> Result<(), LoadError> {
        let needed = std::mem::take(&mut self.uses);
        for (by, used) in needed {
            if self.probes.has(used) {
                continue;
            }
            let Some(table) = tables.iter().find(|t| t.family == used) else {
                continue;
            };
            let before = (self.probes.warnings.len(), self.probes.skipped.len());
            self.attach_family(table, None)
                .map_err(|e| LoadError::NoMethod {
                    family: by.name(),
                    reasons: format!("it reads {}: {}", used.name(), error_chain(&e)),
                })?;
            // Its skipped-method notes were not asked for.
            self.probes.warnings.truncate(before.0);
            self.probes.skipped.truncate(before.1);
        }
        Ok(())
    }
}

/// `family: <method> failed: why`, naming the unit when the family has several.
fn failure<M: MethodId>(
    family: &str,
    unit: &Unit<M>,
    units: usize,
    spec: &MethodSpec<M>,
    why: &str,
) -> String {
    if units > 1 {
        format!(
            "{family}: {} for {} failed: {why}",
            spec.method.describe(),
            unit.name
        )
    } else {
        format!("{family}: {} failed: {why}", spec.method.describe())
    }
}
