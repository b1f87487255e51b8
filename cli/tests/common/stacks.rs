//! Reading folded stacks back in tests: frames, user frames, roots, and the checks the
//! frameless `deep_stacks` workload must pass wherever it is unwound (host and guests).
use std::path::Path;

/// Outermost user frames that count as a thread's real root.
pub const ROOTS: [&str; 6] = [
    "_start",
    "__libc_start_main",
    "__libc_start_call_main",
    "main",
    "clone3",
    "start_thread",
];

/// One folded line: frames root first (the thread name first), and its weight.
pub fn folded(dir: &Path, name: &str) -> Vec<(Vec<String>, u64)> {
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
pub fn user_frames(stack: &[String]) -> Vec<&str> {
    stack
        .iter()
        .skip(1)
        .take_while(|f| !f.ends_with("_[k]"))
        .map(|f| f.trim_end_matches("_[i]"))
        .collect()
}

pub fn ends_at_root(stack: &[String]) -> bool {
    user_frames(stack).first().is_some_and(|f| {
        ROOTS
            .iter()
            .any(|r| f == r || f.starts_with("__libc_start"))
    })
}

/// (weight ending at a root, weight with user frames) of `comm`'s stacks.
pub fn root_share(stacks: &[(Vec<String>, u64)], comm: &str) -> (u64, u64) {
    let mine = stacks
        .iter()
        .filter(|(s, _)| s[0] == comm && !user_frames(s).is_empty());
    mine.fold((0, 0), |(root, all), (s, n)| {
        (root + if ends_at_root(s) { *n } else { 0 }, all + n)
    })
}

pub fn longest_recursion(stacks: &[(Vec<String>, u64)]) -> usize {
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

/// What a dwarf recording of `deep_stacks` (tests/workloads/deep_stacks.c) in `dir` must show:
/// at least 95% of on-CPU samples and of off-CPU time with user frames end at a root, one on-CPU
/// stack holds all 61 recursion frames, and main's off-CPU stack runs
/// `main;...;kpath_recurse x61;kpath_sleep_here`. `context` is printed on failure.
pub fn assert_deep_stacks_complete(dir: &Path, context: &dyn Fn() -> String) {
    let oncpu = folded(dir, "oncpu.folded");
    let (root, all) = root_share(&oncpu, "deep_stacks");
    assert!(
        all >= 200,
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

    let offcpu = folded(dir, "offcpu.folded");
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
}
