//! Which attach methods may work: each family declares its methods as a table (preferred
//! first, with what each needs and which programs it attaches); [`plan`] prunes that table with
//! what [`Features`] detected. Pure, so every kernel's fallback order is unit-tested without it.
use probe_common::Family;

use super::attach::Prog;
use crate::kernel::features::Features;

/// An attach method's identity: its name in run.json and on the command line, and what it is.
/// Declaration order is preference order (`Ord`), so the best of several is the minimum.
pub trait MethodId: Copy + Eq + Ord + std::fmt::Debug + Send + Sync + 'static {
    fn name(self) -> &'static str;
    fn describe(self) -> &'static str;
}

/// One way to attach a unit: what it needs from the kernel and the programs it attaches, in
/// order (a failure unloads those already attached, so a fallback never runs beside it).
#[derive(Debug)]
pub struct MethodSpec<M: 'static> {
    pub method: M,
    /// Why the method cannot work with these features, or `None` when it may (loading has the
    /// last word: fentry's EPERM only shows then).
    pub needs: fn(&Features) -> Option<&'static str>,
    pub programs: &'static [Prog],
    /// A family this method reads from instead of programs of its own (kpaths' sampled
    /// fallback reads the on-CPU sampler's stacks): it is attached too if not requested.
    pub uses: Option<Family>,
}

/// What one fallback chain attaches: the whole family, or one of its parts (each kpaths
/// function falls back on its own).
#[derive(Debug)]
pub struct Unit<M: 'static> {
    /// The family's name, or the part's (a kernel function) in messages.
    pub name: &'static str,
    pub methods: &'static [MethodSpec<M>],
}

/// The reason recorded for candidates passed over because another method was forced.
pub const NOT_FORCED: &str = "not the forced method";

/// The candidates that may work, in order, and the reason for each one skipped.
#[derive(Debug)]
pub struct Plan<M: 'static> {
    pub usable: Vec<&'static MethodSpec<M>>,
    pub skipped: Vec<(M, &'static str)>,
}

impl<M: MethodId> Plan<M> {
    /// The usable methods' identities, in order.
    pub fn methods(&self) -> Vec<M> {
        self.usable.iter().map(|s| s.method).collect()
    }

    /// `name: why` for each skipped candidate, forced-away ones left out.
    pub fn reasons(&self) -> Vec<String> {
        self.skipped
            .iter()
            .filter(|(_, why)| *why != NOT_FORCED)
            .map(|(m, why)| format!("{}: {why}", m.name()))
            .collect()
    }
}

/// Prunes `unit`'s methods with the detected features; `forced` keeps only that method.
pub fn plan<M: MethodId>(unit: &'static Unit<M>, f: &Features, forced: Option<M>) -> Plan<M> {
    let mut p = Plan {
        usable: Vec::new(),
        skipped: Vec::new(),
    };
    for spec in unit.methods {
        if forced.is_some_and(|want| want != spec.method) {
            p.skipped.push((spec.method, NOT_FORCED));
        } else if let Some(why) = (spec.needs)(f) {
            p.skipped.push((spec.method, why));
        } else {
            p.usable.push(spec);
        }
    }
    p
}

/// Reasons shared by several families' methods, worded once.
pub mod needs {
    use crate::kernel::features::Features;

    pub const TRACEFS: &str =
        "tracefs is not mounted (mount -t tracefs tracefs /sys/kernel/tracing)";
    pub const KPROBES: &str = "kprobes are not available (no kprobe PMU: CONFIG_KPROBES off)";
    pub const RAW_TRACEPOINTS: &str = "no BPF raw tracepoints (Linux 4.17+)";
    pub const PERF_EVENTS: &str = "perf events are not available";

    pub fn tracefs(f: &Features) -> Option<&'static str> {
        f.tracefs.is_none().then_some(TRACEFS)
    }
    pub fn kprobes(f: &Features) -> Option<&'static str> {
        (!f.kprobes).then_some(KPROBES)
    }
    pub fn raw_tracepoints(f: &Features) -> Option<&'static str> {
        (!f.raw_tracepoints).then_some(RAW_TRACEPOINTS)
    }
    pub fn perf_events(f: &Features) -> Option<&'static str> {
        (!f.perf_events).then_some(PERF_EVENTS)
    }
}
