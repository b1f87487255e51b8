//! BPF programs in kernel stacks: a sample that lands while one of kpath's own programs runs
//! (a syscall tracepoint's, a lock tracepoint's, an fentry trampoline) has the program, the
//! helpers it called and the tracing glue that ran it as its innermost kernel frames. Counted
//! as they are, they read as the target's kernel time; folded into one labelled frame they
//! read as what they are, the tracer's cost, placed under the kernel function that fired it.
use probe_common::Family;

/// The frame kpath's own programs fold into.
pub const KPATH_BPF: &str = "[kpath bpf]";
/// The frame other BPF programs (other tools' tracers, XDP, ...) fold into.
pub const OTHER_BPF: &str = "[bpf]";

/// Frames that only run BPF programs, folded together with the program above them: raw
/// tracepoint and trace-event glue, kprobe handlers, trampoline entry/exit.
const GLUE_PREFIXES: &[&str] = &[
    "bpf_trace_run",
    "__bpf_trace_",
    "__traceiter_",
    "trace_call_bpf",
    "perf_trace_run_bpf_submit",
    "perf_trace_",
    "__bpf_prog_enter",
    "__bpf_prog_exit",
    "bpf_dispatcher_",
    "kprobe_perf_func",
    "kretprobe_perf_func",
    "kprobe_dispatcher",
    "kretprobe_dispatcher",
    "kprobe_ftrace_handler",
    "pre_handler_kretprobe",
    "aggr_pre_handler",
];

/// A BPF program's kallsyms name: `bpf_prog_<16 hex digit tag>[_<name>]`; returns the name.
/// (Kernel functions such as `bpf_prog_run_pin_on_cpu` have no tag.)
pub fn bpf_prog_name(sym: &str) -> Option<&str> {
    let rest = sym.strip_prefix("bpf_prog_")?;
    let (tag, name) = rest.split_at_checked(16)?;
    if !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match name {
        "" => Some(""),
        n => n.strip_prefix('_'),
    }
}

/// An fentry/fexit trampoline: `bpf_trampoline_<key>`.
fn is_trampoline(sym: &str) -> bool {
    sym.strip_prefix("bpf_trampoline_")
        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

/// kpath names every program `<family>_<hook>` (and the fork follower `target_*`).
fn is_kpaths_program(name: &str) -> bool {
    Family::ALL
        .iter()
        .map(|f| f.name())
        .chain(["target"])
        .any(|f| name.strip_prefix(f).is_some_and(|r| r.starts_with('_')))
}

/// How many innermost frames of a kernel stack (innermost first, bare symbol names) are BPF
/// machinery, and the label they fold into; `None` when no BPF program is on the stack.
/// Everything inside the outermost program or trampoline goes (helpers, nested programs),
/// then the glue frames right outside it.
pub fn bpf_prefix<S: AsRef<str>>(names: &[S]) -> Option<(usize, &'static str)> {
    let mut outermost = None;
    let mut ours = false;
    for (i, n) in names.iter().enumerate() {
        let n = n.as_ref();
        if let Some(prog) = bpf_prog_name(n) {
            outermost = Some(i);
            ours |= is_kpaths_program(prog);
        } else if is_trampoline(n) {
            outermost = Some(i);
        }
    }
    let mut end = outermost? + 1;
    while names
        .get(end)
        .is_some_and(|n| GLUE_PREFIXES.iter().any(|p| n.as_ref().starts_with(p)))
    {
        end += 1;
    }
    Some((end, if ours { KPATH_BPF } else { OTHER_BPF }))
}

/// Replaces the BPF machinery at the innermost end of `frames` (innermost first) with its
/// label; `name` gives a frame's bare symbol, `label` makes the replacement frame.
pub fn fold_bpf_frames(
    frames: &mut Vec<String>,
    name: impl Fn(&str) -> &str,
    label: impl Fn(&str) -> String,
) {
    let names: Vec<&str> = frames.iter().map(|f| name(f)).collect();
    if let Some((n, l)) = bpf_prefix(&names) {
        frames.splice(..n, [label(l)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "0db7f7bb8e78647a";

    fn prog(name: &str) -> String {
        format!("bpf_prog_{TAG}_{name}")
    }

    #[test]
    fn program_names_need_a_tag() {
        assert_eq!(
            bpf_prog_name(&prog("syscalls_sys_enter")),
            Some("syscalls_sys_enter")
        );
        assert_eq!(bpf_prog_name(&format!("bpf_prog_{TAG}")), Some(""));
        assert_eq!(bpf_prog_name("bpf_prog_run_pin_on_cpu"), None);
        assert_eq!(bpf_prog_name("bpf_prog_array_free_sleepable"), None);
        assert!(is_trampoline("bpf_trampoline_6442522788"));
        assert!(!is_trampoline("bpf_trampoline_link_prog"));
    }

    #[test]
    fn a_syscall_tracepoint_program_and_its_helpers_fold_into_one_frame() {
        let p = prog("syscalls_sys_enter");
        let stack = [
            "htab_map_update_elem",
            "bpf_ktime_get_ns",
            p.as_str(),
            "bpf_trace_run2",
            "__bpf_trace_sys_enter",
            "syscall_trace_enter",
            "do_syscall_64",
            "entry_SYSCALL_64_after_hwframe",
        ];
        assert_eq!(bpf_prefix(&stack), Some((5, KPATH_BPF)));
        let mut frames: Vec<String> = stack.iter().map(|s| format!("{s}_[k]")).collect();
        fold_bpf_frames(
            &mut frames,
            |f| f.strip_suffix("_[k]").unwrap_or(f),
            |l| format!("{l}_[k]"),
        );
        assert_eq!(
            frames,
            [
                "[kpath bpf]_[k]",
                "syscall_trace_enter_[k]",
                "do_syscall_64_[k]",
                "entry_SYSCALL_64_after_hwframe_[k]"
            ]
        );
    }

    #[test]
    fn trampolines_fold_under_the_traced_function() {
        let p = prog("kpaths_tcp_close_fentry");
        let stack = [
            "bpf_get_current_pid_tgid",
            p.as_str(),
            "bpf_trampoline_6442522788",
            "tcp_close",
            "inet_release",
        ];
        assert_eq!(bpf_prefix(&stack), Some((3, KPATH_BPF)));
        // Another tool's program is labelled, but not as kpath's.
        let other = prog("xdp_firewall");
        assert_eq!(
            bpf_prefix(&[other.as_str(), "bpf_trampoline_1", "x"]),
            Some((2, OTHER_BPF))
        );
        // A stack without a program is left alone, glue or not.
        assert_eq!(
            bpf_prefix(&["bpf_trace_run2", "__schedule", "schedule"]),
            None
        );
        let mut frames = vec!["tcp_close".to_string()];
        fold_bpf_frames(&mut frames, |f| f, |l| l.to_string());
        assert_eq!(frames, ["tcp_close"]);
    }
}
