//! DWARF user stacks (`--call-graph dwarf`): the walker in BPF over kpath's own unwind tables,
//! on a program built without frame pointers.
//!
//! `deep_stacks 3` (tests/workloads/deep_stacks.c, `-O2 -fomit-frame-pointer`) runs two threads
//! 61 `kpath_recurse` frames deep: one spins in `kpath_spin`, main sleeps in
//! `kpath_sleep_here`. With dwarf, >= 95% of its on-CPU samples and of its off-CPU time must
//! end at a real root (`_start`/`__libc_start_*`/`main` for main, `clone3`/`start_thread` for
//! the thread), one stack must hold all 61 recursion frames, and main's off-CPU stack must
//! run `main;...;kpath_sleep_here`. The same program under `--call-graph fp` reaches no root:
//! what dwarf is for, and proof that the bounds can fail.
mod common;

use std::path::Path;

use common::*;

const ROOTS: [&str; 6] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "main",
    "clone3",
    "start_thread",
];

/// One folded line: frames root first (the thread name first), and its weight.
fn folded(dir: &Path, name: &str) -> Vec<(Vec<String>, u64)> {
    let text = std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("reading {name} in {}: {e}", dir.display()));
    text.lines()
        .filter_map(|l| {
            let (stack, n) = l.rsplit_once(' ')?;
            Some((
                stack.split(';').map(str::to_string).collect(),
                n.parse().ok()?,
            ))
        })
        .collect()
}

/// The user frames of a folded stack (after the thread name, before the kernel's `_[k]`).
fn user_frames(stack: &[String]) -> Vec<&str> {
    stack
        .iter()
        .skip(1)
        .take_while(|f| !f.ends_with("_[k]"))
        .map(|f| f.trim_end_matches("_[i]"))
        .collect()
}

fn ends_at_root(stack: &[String]) -> bool {
    user_frames(stack).first().is_some_and(|f| {
        ROOTS
            .iter()
            .any(|r| f == r || f.starts_with("__libc_start"))
    })
}

/// (weight ending at a root, weight with user frames) of `comm`'s stacks.
fn root_share(stacks: &[(Vec<String>, u64)], comm: &str) -> (u64, u64) {
    let mine = stacks
        .iter()
        .filter(|(s, _)| s[0] == comm && !user_frames(s).is_empty());
    mine.fold((0, 0), |(root, all), (s, n)| {
        (root + if ends_at_root(s) { *n } else { 0 }, all + n)
    })
}

fn longest_recursion(stacks: &[(Vec<String>, u64)]) -> usize {
    stacks
        .iter()
        .map(|(s, _)| {
            user_frames(s)
                .iter()
                .filter(|f| **f == "kpath_recurse")
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn dwarf_stacks_of_a_frameless_program_reach_their_roots() {
    if !require_root() {
        return;
    }
    let bin = workload_with("deep_stacks", &["-fomit-frame-pointer"]);
    let (run, stderr, dir) = record_dir(
        &[
            "--probes",
            "oncpu,sched",
            "-F",
            "499",
            "--call-graph",
            "dwarf",
        ],
        &[bin.to_str().unwrap(), "3"],
    );
    let context = || {
        format!(
            "kpath stderr:\n{stderr}\nunwind: {}\n",
            serde_json::to_string_pretty(&run["unwind"]).unwrap_or_default()
        )
    };
    assert_eq!(str_of(&run, "call_graph"), "dwarf", "{}", context());
    let outcomes = &run["unwind"]["outcomes"];
    assert!(u64_of(outcomes, "complete") > 0, "{}", context());

    let oncpu = folded(&dir, "oncpu.folded");
    let (root, all) = root_share(&oncpu, "deep_stacks");
    assert!(
        all >= 500,
        "only {all} on-CPU samples with user frames\n{}",
        context()
    );
    assert!(
        root * 100 >= all * 95,
        "{root} of {all} on-CPU samples end at a root (want >= 95%)\n{}",
        context()
    );
    eprintln!("dwarf on-CPU: {root} of {all} samples end at a root");
    let depth = longest_recursion(&oncpu);
    assert_eq!(
        depth,
        61,
        "deepest on-CPU recursion: {depth} frames\n{}",
        context()
    );

    let offcpu = folded(&dir, "offcpu.folded");
    let (root, all) = root_share(&offcpu, "deep_stacks");
    assert!(
        all > 1_000_000_000,
        "only {all} ns off-CPU with user frames\n{}",
        context()
    );
    assert!(
        root * 100 >= all * 95,
        "{root} of {all} off-CPU ns end at a root (want >= 95%)\n{}",
        context()
    );
    eprintln!("dwarf off-CPU: {root} of {all} ns end at a root");
    let sleeper = offcpu.iter().find(|(s, _)| {
        let u = user_frames(s);
        u.contains(&"main")
            && u.last() != Some(&"main")
            && u.contains(&"kpath_sleep_here")
            && u.iter().filter(|f| **f == "kpath_recurse").count() == 61
    });
    assert!(
        sleeper.is_some(),
        "no off-CPU stack main;...;kpath_recurse x61;kpath_sleep_here\n{}",
        context()
    );

    // Frame pointers on the same program: no root (the frameless code breaks the chain).
    let (run, _stderr, dir) = record_dir(
        &["--probes", "oncpu", "-F", "499", "--call-graph", "fp"],
        &[bin.to_str().unwrap(), "1"],
    );
    assert_eq!(str_of(&run, "call_graph"), "fp");
    assert!(run.get("unwind").is_none_or(|u| u.is_null()));
    let (root, all) = root_share(&folded(&dir, "oncpu.folded"), "deep_stacks");
    eprintln!("fp on-CPU: {root} of {all} samples end at a root");
    assert!(
        root * 100 < all * 50,
        "fp reached a root in {root} of {all} samples: the program is not frameless?"
    );
}
