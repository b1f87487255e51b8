//! Plans per kernel (pure), argument parsing, and the names the families use checked against
//! the embedded eBPF object (no root needed: a misspelled program fails here, not at load).
use super::*;
use crate::kernel::tracing_prog::Fentry;
use crate::probes::{
    object,
    plan::{plan, Plan, NOT_FORCED},
};

/// The plan of a family's first unit (every kpaths function has the same methods).
fn plan_of(f: Family, feats: &Features, forced: Option<Method>) -> Plan<Method> {
    plan(&path(f).table.units[0], feats, forced)
}

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
        bpf_loop: true,
        sched_btf: Some(SCHED_BTF_618),
        // The loader's test: not tried, so plans keep fentry and loading has the last word.
        fentry: Fentry::Untried,
        // This machine's 6.18 kernel loads a test BTF tracepoint (while refusing fentry).
        tp_btf: Fentry::Loads,
    }
}

/// What this machine's 6.18 BTF gives (offsets are illustrative; the plan only looks at
/// whether there are any).
const SCHED_BTF_618: crate::kernel::btf::SchedBtf = crate::kernel::btf::SchedBtf {
    task_pid: 2464,
    task_state: 24,
    task_exit_state: 2452,
    switch_prev_state_arg: true,
};

#[test]
fn sched_prefers_the_btf_tracepoint_then_raw_tracepoints_then_the_trace_events() {
    assert_eq!(
        plan_of(Family::Sched, &host(), None).methods(),
        vec![
            Method::SchedTpBtf,
            Method::SchedRawTp,
            Method::SchedTracepoints
        ]
    );
    assert_eq!(Method::from_name("sched_tp_btf"), Some(Method::SchedTpBtf));
}

#[test]
fn sched_skips_the_btf_tracepoint_where_its_test_did_not_load_and_says_why() {
    for (tp_btf, why) in [
        (Fentry::Refused, "EPERM"),
        (Fentry::Failed(libc::EINVAL), "did not load"),
        (Fentry::Untried, "bpf_get_task_stack"),
    ] {
        let f = Features { tp_btf, ..host() };
        let p = plan_of(Family::Sched, &f, None);
        assert_eq!(
            p.methods(),
            vec![Method::SchedRawTp, Method::SchedTracepoints]
        );
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(p.skipped[0].0, Method::SchedTpBtf);
        assert!(
            p.skipped[0].1.contains(why),
            "{tp_btf:?}: {}",
            p.skipped[0].1
        );
    }
    // A refused fentry says nothing about BTF tracepoints (this machine refuses one only).
    let f = Features {
        fentry: Fentry::Refused,
        ..host()
    };
    assert_eq!(
        plan_of(Family::Sched, &f, None).methods()[0],
        Method::SchedTpBtf
    );
}

#[test]
fn sched_without_btf_offsets_uses_the_trace_events_and_says_why() {
    let f = Features {
        sched_btf: None,
        ..host()
    };
    let p = plan_of(Family::Sched, &f, None);
    assert_eq!(p.methods(), vec![Method::SchedTracepoints]);
    assert_eq!(p.skipped.len(), 2);
    assert_eq!(p.skipped[0].0, Method::SchedTpBtf);
    assert_eq!(p.skipped[1].0, Method::SchedRawTp);
    assert!(p.skipped.iter().all(|(_, why)| why.contains("BTF")));
    let f = Features {
        raw_tracepoints: false,
        ..host()
    };
    assert_eq!(
        plan_of(Family::Sched, &f, None).methods(),
        vec![Method::SchedTracepoints]
    );
}

#[test]
fn forcing_sched_tracepoints_skips_the_raw_tracepoints() {
    let p = plan_of(Family::Sched, &host(), Some(Method::SchedTracepoints));
    assert_eq!(p.methods(), vec![Method::SchedTracepoints]);
    assert_eq!(
        p.skipped,
        vec![
            (Method::SchedTpBtf, NOT_FORCED),
            (Method::SchedRawTp, NOT_FORCED)
        ]
    );
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
        assert_eq!(
            plan_of(fam, &f, None).methods()[0],
            candidates(fam)[0],
            "{fam:?}"
        );
    }
}

#[test]
fn host_kpaths_try_fentry_then_sampling_and_say_why_kprobes_are_skipped() {
    let p = plan_of(Family::Kpaths, &host(), None);
    assert_eq!(p.methods(), vec![Method::Fentry, Method::Sampled]);
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
        plan_of(Family::Kpaths, &f, None).methods(),
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
    let p = plan_of(Family::Kpaths, &f, None);
    assert_eq!(p.methods(), vec![Method::Kprobe, Method::Sampled]);
    assert!(p.skipped[0].1.contains("BTF"));
}

#[test]
fn old_kernel_locks_fall_back_to_the_mutex_kprobe() {
    let f = Features {
        lock_tracepoints: false,
        kprobes: true,
        ..host()
    };
    let p = plan_of(Family::Locks, &f, None);
    assert_eq!(p.methods(), vec![Method::MutexKprobe]);
    assert!(p.skipped[0].1.contains("5.19"));
}

#[test]
fn locks_have_no_method_without_tracepoints_or_kprobes() {
    let f = Features {
        lock_tracepoints: false,
        ..host()
    };
    assert!(plan_of(Family::Locks, &f, None).usable.is_empty());
}

#[test]
fn missing_raw_syscalls_falls_back_to_per_syscall_tracepoints() {
    let f = Features {
        raw_tracepoints: false,
        raw_syscalls_tracepoints: false,
        ..host()
    };
    assert_eq!(
        plan_of(Family::Syscalls, &f, None).methods(),
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
    assert_eq!(
        plan_of(Family::Syscalls, &f, None).methods(),
        vec![Method::RawTp]
    );
    let sched = plan_of(Family::Sched, &f, None);
    assert_eq!(
        sched.methods(),
        vec![Method::SchedTpBtf, Method::SchedRawTp]
    );
    assert_eq!(sched.skipped.len(), 1);
    assert!(sched.skipped[0].1.contains("mount -t tracefs"));
    // Locks still name tracefs for their tracepoints (and kprobes for the fallback).
    let locks = plan_of(Family::Locks, &f, None);
    assert!(locks.skipped[0].1.contains("mount -t tracefs"));
    // Perf events do not need tracefs.
    assert_eq!(
        plan_of(Family::Oncpu, &f, None).methods(),
        vec![Method::PerfEvent]
    );
}

#[test]
fn forcing_a_method_keeps_only_it() {
    let f = Features {
        kprobes: true,
        ..host()
    };
    let p = plan_of(Family::Kpaths, &f, Some(Method::Kprobe));
    assert_eq!(p.methods(), vec![Method::Kprobe]);
    assert_eq!(p.skipped.len(), 2);
    // Forcing what the kernel lacks leaves nothing: the loader reports that, not a fallback.
    assert!(plan_of(Family::Kpaths, &host(), Some(Method::Kprobe))
        .usable
        .is_empty());
}

#[test]
fn sampling_needs_readable_kallsyms() {
    let f = Features {
        kallsyms_readable: false,
        ..host()
    };
    assert_eq!(
        plan_of(Family::Kpaths, &f, None).methods(),
        vec![Method::Fentry]
    );
}

#[test]
fn method_names_round_trip_and_are_unique() {
    let all: Vec<Method> = Method::all().collect();
    for m in &all {
        assert_eq!(Method::from_name(m.name()), Some(*m));
    }
    let mut names: Vec<&str> = all.iter().map(|m| m.name()).collect();
    names.sort();
    names.dedup();
    // Every family's methods, kpaths' once per function.
    assert_eq!(names.len(), 12);
}

#[test]
fn every_name_the_engine_and_families_use_is_in_the_object() {
    let n = object::names().expect("the embedded object parses");
    let mut missing = Vec::new();
    for p in ALL {
        for u in p.table.units {
            for spec in u.methods {
                for prog in spec.programs {
                    for name in prog.names() {
                        if !n.programs.iter().any(|x| x == name) {
                            missing.push(format!("program {name}"));
                        }
                    }
                }
            }
        }
        for m in p.maps {
            if !n.maps.iter().any(|x| x == m) {
                missing.push(format!("map {m}"));
            }
        }
        let globals = (p.table.globals)(&host(), &LoadOptions::default());
        for (g, _) in globals {
            if !n.globals.iter().any(|x| x == g) {
                missing.push(format!("global {g}"));
            }
        }
    }
    for name in crate::probes::FOLLOW_PROGRAMS
        .iter()
        .flat_map(|p| p.names())
        .chain(
            crate::probes::attach::FP_TWINS
                .iter()
                .flat_map(|&(a, b)| [a, b]),
        )
    {
        if !n.programs.iter().any(|x| x == name) {
            missing.push(format!("program {name}"));
        }
    }
    for m in crate::probes::ENGINE_MAPS
        .iter()
        .chain(crate::unwind::bpf::MAPS.iter())
    {
        if !n.maps.iter().any(|x| x == m) {
            missing.push(format!("map {m}"));
        }
    }
    for g in crate::probes::ENGINE_GLOBALS
        .iter()
        .copied()
        .chain(probe_common::offsets::ALL.iter().map(|o| o.0))
    {
        if !n.globals.iter().any(|x| x == g) {
            missing.push(format!("global {g}"));
        }
    }
    assert!(missing.is_empty(), "not in the eBPF object: {missing:?}");
    // And the check can fail: a name that is not there is found missing.
    assert!(!n.programs.iter().any(|x| x == "syscalls_raw_sys_entr"));
}

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
    // A method of another family is not one of this family's.
    assert!(parse_forced(&["sched=raw_tp".into()]).is_err());
}

#[test]
fn kpaths_are_collected_after_what_they_read() {
    let order: Vec<Family> = collect_order().iter().map(|p| p.table.family).collect();
    let at = |f| order.iter().position(|&g| g == f).unwrap();
    assert_eq!(order.len(), 5);
    assert!(at(Family::Kpaths) > at(Family::Syscalls));
    assert!(at(Family::Kpaths) > at(Family::Oncpu));
}

#[test]
fn a_kernel_that_refuses_tracing_programs_skips_fentry_and_says_why() {
    let f = Features {
        fentry: Fentry::Refused,
        ..host()
    };
    let p = plan_of(Family::Kpaths, &f, None);
    assert_eq!(p.methods(), vec![Method::Sampled]);
    let why = p
        .skipped
        .iter()
        .find(|(m, _)| *m == Method::Fentry)
        .map(|s| s.1)
        .unwrap();
    assert!(why.contains("does not allow fentry/fexit"), "{why}");
    // Other load errors also skip it; a kernel that loads the test program keeps it.
    let f = Features {
        fentry: Fentry::Failed(libc::EINVAL),
        ..host()
    };
    assert_eq!(
        plan_of(Family::Kpaths, &f, None).methods(),
        vec![Method::Sampled]
    );
    let f = Features {
        fentry: Fentry::Loads,
        kprobes: true,
        ..host()
    };
    assert_eq!(
        plan_of(Family::Kpaths, &f, None).methods(),
        vec![Method::Fentry, Method::Kprobe, Method::Sampled]
    );
}

#[test]
fn aya_parses_btf_ahead_only_where_a_method_attaching_by_btf_id_is_tried_first() {
    use crate::probes::needs_btf;
    let tables: Vec<&'static FamilyTable<Method>> = ALL.iter().map(|p| &p.table).collect();
    let opts = |families: &[Family], forced: &[(&'static str, Method)]| LoadOptions {
        families: families.to_vec(),
        forced: forced.iter().copied().collect(),
        ..Default::default()
    };
    // This host: fentry refused, BTF tracepoints load.
    let here = Features {
        fentry: Fentry::Refused,
        ..host()
    };
    assert!(needs_btf(&opts(&[Family::Sched], &[]), &here, &tables));
    assert!(!needs_btf(
        &opts(&[Family::Syscalls, Family::Kpaths, Family::Locks], &[]),
        &here,
        &tables
    ));
    assert!(!needs_btf(
        &opts(&[Family::Sched], &[("sched", Method::SchedRawTp)]),
        &here,
        &tables
    ));
    // Debian 6.1: fentry loads, so kpaths tries it first.
    let bookworm = Features {
        fentry: Fentry::Loads,
        tp_btf: Fentry::Refused,
        ..host()
    };
    assert!(needs_btf(&opts(&[Family::Kpaths], &[]), &bookworm, &tables));
    assert!(!needs_btf(&opts(&[Family::Sched], &[]), &bookworm, &tables));
}
