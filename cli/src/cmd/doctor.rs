//! `kpath doctor`: what this kernel offers, which method each family will use, and why.
use std::collections::BTreeMap;

use probe_common::Family;
use serde::Serialize;

use crate::{
    families::{self, LoadOptions, Method},
    kernel::{
        epoll::{epoll_close_era, EpollClose},
        features::{self, Features},
        kallsyms::Kallsyms,
        tracefs,
        tracing_prog::Fentry,
    },
    probes::{self, plan::plan, CallGraph},
};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:\n  sudo kpath doctor\n  sudo kpath doctor --json | jq .methods")]
pub struct DoctorArgs {
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct Diagnosis {
    pub kernel: crate::run::KernelInfo,
    pub root: bool,
    pub tracefs_mounted_by_doctor: bool,
    /// A tracefs /proc/mounts lists that this user may not read (non-root: mode 0700).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracefs_unreadable: Option<std::path::PathBuf>,
    pub features: Features,
    /// fentry/fexit really loaded and attached (tried on tcp_close), with the error otherwise.
    #[serde(serialize_with = "fentry_json")]
    pub fentry: Result<(), String>,
    /// Family -> method the recorder will use, or the reason none works.
    #[serde(serialize_with = "methods_json")]
    pub methods: BTreeMap<&'static str, Result<&'static str, String>>,
    pub warnings: Vec<String>,
    /// Whether closing an epoll-watched file takes the global `epmutex`, from kernel symbols.
    pub epoll_close: Option<EpollClose>,
    /// How `record` takes user stacks by default (`--call-graph`), and why not dwarf.
    pub call_graph: CallGraphChoice,
    pub ready: bool,
}

#[derive(Debug, Serialize)]
pub struct CallGraphChoice {
    pub method: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// How `--json` shows something that works or does not: plain fields, not Rust's Ok/Err.
#[derive(Serialize)]
struct Availability<'a> {
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

fn fentry_json<S: serde::Serializer>(r: &Result<(), String>, s: S) -> Result<S::Ok, S::Error> {
    Availability {
        available: r.is_ok(),
        method: None,
        reason: r.as_ref().err().map(String::as_str),
    }
    .serialize(s)
}

fn methods_json<S: serde::Serializer>(
    m: &BTreeMap<&'static str, Result<&'static str, String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(family, r)| {
        let a = Availability {
            available: r.is_ok(),
            method: r.as_ref().ok().copied(),
            reason: r.as_ref().err().map(String::as_str),
        };
        (family, a)
    }))
}

pub fn diagnose() -> Diagnosis {
    let root = features::is_root();
    let mut warnings = Vec::new();
    let mut mounted = false;
    if root {
        match tracefs::mount_tracefs() {
            Ok(m) => mounted = m,
            Err(e) => warnings.push(format!("mounting tracefs failed: {e}")),
        }
    }
    let feats = Features::detect();
    let ksyms = Kallsyms::load().ok();
    let epoll_close = ksyms
        .as_ref()
        .and_then(|k| epoll_close_era(|s| k.has_symbol(s)));

    let (call_graph, _) = CallGraph::choose(None, &feats);
    let mut methods = BTreeMap::new();
    let mut fentry = Err("not tried: needs root".to_string());
    if root {
        // Load for real: some refusals (fentry's EPERM here) only show at load time.
        // With the default call graph, so the DWARF walker meets the verifier too.
        let opts = LoadOptions {
            targets: crate::probes::Targets {
                pids: vec![std::process::id()],
                ..Default::default()
            },
            call_graph,
            ..Default::default()
        };
        match families::load(&opts, &feats) {
            Ok(p) => {
                for f in Family::ALL {
                    let m = p
                        .methods
                        .get(f.name())
                        .map(|m| m.name())
                        .ok_or_else(|| "not attached".to_string());
                    methods.insert(f.name(), m);
                }
                let skipped = p.skipped.iter().map(|(_, w)| w);
                fentry = if p.units.iter().any(|&(_, _, m)| m == Method::Fentry) {
                    Ok(())
                } else {
                    Err(skipped
                        .clone()
                        .chain(&p.warnings)
                        .find(|w| w.contains("fentry"))
                        .cloned()
                        .unwrap_or_else(|| "not used".into()))
                };
                warnings.extend(skipped.chain(&p.warnings).cloned());
            }
            Err(e) => {
                warnings.push(probes::error_chain(&e));
            }
        }
    } else {
        for f in Family::ALL {
            let plan = plan(&families::path(f).table.units[0], &feats, None);
            let m = plan.usable.first().map(|s| s.method.name()).ok_or_else(|| {
                plan.skipped
                    .iter()
                    .map(|(m, why)| format!("{}: {why}", m.name()))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            methods.insert(f.name(), m);
        }
    }
    let ready =
        root && methods.values().filter(|m| m.is_ok()).count() > 0 && feats.tracefs.is_some();
    Diagnosis {
        kernel: features::uname(),
        root,
        tracefs_mounted_by_doctor: mounted,
        tracefs_unreadable: feats.tracefs.is_none().then(tracefs::mount_point).flatten(),
        fentry,
        methods,
        warnings,
        epoll_close,
        call_graph: CallGraphChoice {
            method: call_graph.name(),
            reason: CallGraph::dwarf_unsupported(&feats),
        },
        features: feats,
        ready,
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<()> {
    let r = diagnose();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", render(&r));
    }
    if !r.ready {
        std::process::exit(1);
    }
    Ok(())
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "ok  "
    } else {
        "MISS"
    }
}

/// One line per kernel feature: present, name, what it means here.
fn feature_rows(r: &Diagnosis) -> [(bool, &'static str, String); 12] {
    let f = &r.features;
    [
        (
            r.root,
            "root",
            if r.root {
                "running as root".into()
            } else {
                "not root: loading BPF needs CAP_BPF and CAP_PERFMON (run with sudo)".into()
            },
        ),
        (
            f.tracefs.is_some(),
            "tracefs",
            match &f.tracefs {
                Some(p) if r.tracefs_mounted_by_doctor => {
                    format!("was not mounted; mounted at {}", p.display())
                }
                Some(p) => format!("mounted at {}", p.display()),
                None => match &r.tracefs_unreadable {
                    Some(p) => format!(
                        "mounted at {} but unreadable by this user (run with sudo)",
                        p.display()
                    ),
                    None => "not mounted: mount -t tracefs tracefs /sys/kernel/tracing".into(),
                },
            },
        ),
        (f.btf, "BTF", "/sys/kernel/btf/vmlinux".into()),
        (
            f.sched_btf.is_some(),
            "task_struct BTF",
            match f.sched_btf {
                Some(b) => format!(
                    "pid @{}, state @{}, exit_state @{}; sched_switch {} (sched raw tracepoints)",
                    b.task_pid,
                    b.task_state,
                    b.task_exit_state,
                    if b.switch_prev_state_arg {
                        "passes prev_state"
                    } else {
                        "has no prev_state argument: read from task_struct"
                    }
                ),
                None => "no task_struct offsets: sched uses its trace events".into(),
            },
        ),
        (
            f.kprobes,
            "kprobes",
            if f.kprobes {
                "kprobe PMU present".into()
            } else {
                "no kprobe PMU (CONFIG_KPROBES off)".into()
            },
        ),
        (
            r.fentry.is_ok(),
            "fentry",
            match &r.fentry {
                Ok(()) => "fentry/fexit attach".into(),
                Err(e) => e.clone(),
            },
        ),
        (
            f.tp_btf == Fentry::Loads,
            "tp_btf",
            match (f.tp_btf.tp_btf_unusable(), f.tp_btf) {
                (None, _) => "a test BTF tracepoint loads: sched_switch as one, kernel stacks of \
                              kept off-CPU periods taken at switch-in (--offcpu-min-us)"
                    .into(),
                (Some(why), Fentry::Failed(e)) => format!(
                    "{why} ({}): sched uses raw tracepoints",
                    std::io::Error::from_raw_os_error(e)
                ),
                (Some(why), _) => format!("{why}: sched uses raw tracepoints"),
            },
        ),
        (
            f.raw_syscalls_tracepoints,
            "raw_syscalls",
            "raw_syscalls:sys_enter/sys_exit".into(),
        ),
        (
            f.lock_tracepoints,
            "lock tracepoints",
            "lock:contention_begin/end (Linux 5.19+)".into(),
        ),
        (f.perf_events, "perf events", "cpu-clock sampling".into()),
        (
            f.bpf_loop && f.task_pt_regs,
            "dwarf stacks",
            match CallGraph::dwarf_unsupported(f) {
                None => "bpf_loop and bpf_task_pt_regs: user stacks unwound from .eh_frame in BPF"
                    .into(),
                Some(why) => format!("{why}: user stacks follow frame pointers"),
            },
        ),
        (
            f.kallsyms_readable,
            "kallsyms",
            "/proc/kallsyms addresses readable".into(),
        ),
    ]
}

pub fn render(r: &Diagnosis) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "kernel {} ({}) {}",
        r.kernel.release, r.kernel.machine, r.kernel.version
    );
    let _ = writeln!(s, "\nkernel features");
    for (ok, name, detail) in feature_rows(r) {
        let _ = writeln!(s, "  [{}] {name:<17} {detail}", mark(ok));
    }
    let _ = writeln!(s, "\nmethod per family");
    for (fam, m) in &r.methods {
        match m {
            Ok(m) => {
                let d = Method::from_name(m)
                    .map(|m| m.describe())
                    .unwrap_or_default();
                let _ = writeln!(s, "  {fam:<9} {m:<18} {d}");
            }
            Err(e) => {
                let _ = writeln!(s, "  {fam:<9} NONE               {e}");
            }
        }
    }
    let _ = writeln!(
        s,
        "  {:<9} {:<18} {}",
        "stacks",
        format!("call-graph={}", r.call_graph.method),
        r.call_graph.reason.unwrap_or(
            "user stacks unwound from DWARF CFI in BPF (record --call-graph fp: frame pointers)"
        )
    );
    if !r.warnings.is_empty() {
        let _ = writeln!(s, "\nfallbacks and warnings");
        for w in &r.warnings {
            let _ = writeln!(s, "  - {w}");
        }
    }
    let _ = writeln!(s, "\nepoll close path");
    let _ = writeln!(s, "  {}", match r.epoll_close {
        Some(EpollClose::GlobalEpmutex) => "eventpoll_release_file takes the global epmutex on every close of an epoll-watched file (ep_free, no ep_clear_and_put)",
        Some(EpollClose::Refcounted) => "refcounted epoll (ep_clear_and_put): no global mutex when closing epoll-watched files",
        None => "unknown (kallsyms unreadable or unfamiliar symbols)",
    });
    let _ = writeln!(
        s,
        "\n{}",
        if r.ready {
            "ready: kpath record can run here"
        } else {
            "NOT ready: see above"
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_plain_fields_not_ok_err_wrappers() {
        let mut methods = BTreeMap::new();
        methods.insert("syscalls", Ok("raw_tp"));
        methods.insert("locks", Err("no lock:contention_* tracepoints".to_string()));
        let d = Diagnosis {
            kernel: Default::default(),
            root: true,
            tracefs_mounted_by_doctor: false,
            tracefs_unreadable: None,
            features: Features::default(),
            fentry: Err("EPERM".into()),
            methods,
            warnings: Vec::new(),
            epoll_close: None,
            call_graph: CallGraphChoice {
                method: "fp",
                reason: Some("no bpf_loop"),
            },
            ready: true,
        };
        let v: serde_json::Value = serde_json::to_value(&d).unwrap();
        let text = v.to_string();
        assert!(
            !text.contains("\"Ok\"") && !text.contains("\"Err\""),
            "{text}"
        );
        assert_eq!(v["methods"]["syscalls"]["method"], "raw_tp");
        assert_eq!(v["methods"]["syscalls"]["available"], true);
        assert_eq!(v["methods"]["locks"]["available"], false);
        let reason = v["methods"]["locks"]["reason"].as_str().unwrap();
        assert!(reason.contains("lock:"), "{reason}");
        assert_eq!(v["fentry"]["available"], false);
        assert_eq!(v["fentry"]["reason"], "EPERM");
    }

    #[test]
    fn unreadable_tracefs_is_not_called_unmounted() {
        let mut d = Diagnosis {
            kernel: Default::default(),
            root: false,
            tracefs_mounted_by_doctor: false,
            tracefs_unreadable: Some("/sys/kernel/tracing".into()),
            features: Features::default(),
            fentry: Err("not tried: needs root".into()),
            methods: BTreeMap::new(),
            warnings: Vec::new(),
            epoll_close: None,
            call_graph: CallGraphChoice {
                method: "fp",
                reason: None,
            },
            ready: false,
        };
        let text = render(&d);
        assert!(
            text.contains("mounted at /sys/kernel/tracing but unreadable by this user"),
            "{text}"
        );
        assert!(!text.contains("not mounted"), "{text}");
        d.tracefs_unreadable = None;
        assert!(render(&d).contains("not mounted"));
    }
}
