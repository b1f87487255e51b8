//! How user stacks are taken (`--call-graph dwarf|fp`, perf's spelling), and which one the
//! running kernel allows.
use serde::{Deserialize, Serialize};

use crate::kernel::features::Features;

/// The user-stack method of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CallGraph {
    /// DWARF CFI (`.eh_frame`) walked in BPF: whole stacks of binaries without frame pointers.
    Dwarf,
    /// Frame pointers (`bpf_get_stackid`), plus the caller of a frameless syscall wrapper read
    /// from the word at the user stack pointer.
    Fp,
}

impl CallGraph {
    pub fn name(self) -> &'static str {
        match self {
            CallGraph::Dwarf => "dwarf",
            CallGraph::Fp => "fp",
        }
    }

    /// Why `dwarf` cannot run here, `None` when it can: the walker needs bpf_loop (Linux
    /// 5.17) to step up to 127 frames, and bpf_task_pt_regs with bpf_get_current_task_btf
    /// (5.15) for the user registers of a task inside the kernel.
    pub fn dwarf_unsupported(f: &Features) -> Option<&'static str> {
        if !f.bpf_loop {
            Some("the kernel has no bpf_loop helper (Linux 5.17+)")
        } else if !f.task_pt_regs {
            Some(
                "the kernel has no bpf_task_pt_regs/bpf_get_current_task_btf helpers (Linux 5.15+)",
            )
        } else {
            None
        }
    }

    /// The method for a request (`None`: the default): dwarf where the kernel supports it,
    /// else fp with a warning.
    pub fn choose(requested: Option<CallGraph>, f: &Features) -> (CallGraph, Option<String>) {
        match (requested, Self::dwarf_unsupported(f)) {
            (Some(CallGraph::Fp), _) => (CallGraph::Fp, None),
            (_, None) => (CallGraph::Dwarf, None),
            (Some(CallGraph::Dwarf), Some(why)) => (
                CallGraph::Fp,
                Some(format!(
                    "--call-graph dwarf: {why}; user stacks follow frame pointers instead"
                )),
            ),
            (None, Some(why)) => (
                CallGraph::Fp,
                Some(format!("user stacks follow frame pointers: {why}")),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(bpf_loop: bool, task_pt_regs: bool) -> Features {
        Features {
            bpf_loop,
            task_pt_regs,
            ..Default::default()
        }
    }

    #[test]
    fn dwarf_is_the_default_where_supported() {
        assert_eq!(
            CallGraph::choose(None, &features(true, true)),
            (CallGraph::Dwarf, None)
        );
        assert_eq!(
            CallGraph::choose(Some(CallGraph::Fp), &features(true, true)),
            (CallGraph::Fp, None)
        );
    }

    #[test]
    fn falls_back_to_fp_without_bpf_loop_or_pt_regs() {
        // The bullseye 5.10 guest: neither helper.
        let (m, warn) = CallGraph::choose(None, &features(false, false));
        assert_eq!(m, CallGraph::Fp);
        assert!(warn.unwrap().contains("bpf_loop"));
        let (m, warn) = CallGraph::choose(Some(CallGraph::Dwarf), &features(true, false));
        assert_eq!(m, CallGraph::Fp);
        assert!(warn.unwrap().contains("bpf_task_pt_regs"));
        // fp needs nothing.
        assert_eq!(
            CallGraph::choose(Some(CallGraph::Fp), &features(false, false)),
            (CallGraph::Fp, None)
        );
    }
}
