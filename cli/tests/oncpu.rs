//! oncpu family: the number of samples follows frequency x CPU time.
//!
//! `burn 2` (tests/workloads/burn.c) spins one thread until it has used 2 s of CPU time (measured
//! with CLOCK_PROCESS_CPUTIME_ID, capped at 15 s of wall time) and prints the CPU time it got, so
//! the expected count does not depend on other load: 999 Hz x 2 s = ~2000 samples (bpftrace
//! profile:hz:999 on the same burn: 2004). The bound, 0.5..1.2 x 999 x CPU seconds (1000..2400 for
//! the full 2 s), leaves room for timer slack in a VM and the process's start-up and exit, and still
//! catches a wrong frequency, a missing filter (the other CPU's samples) or samples counted twice.
mod common;

use common::*;

#[test]
fn samples_follow_frequency_and_cpu_time() {
    if !require_root() {
        return;
    }
    let bin = workload("burn");
    let (run, stderr) = record(
        &["--probes", "oncpu", "-F", "999"],
        &[bin.to_str().unwrap(), "2"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let oncpu = &run["oncpu"];
    assert!(oncpu.is_object(), "no oncpu section\n{}", context());
    assert_eq!(u64_of(oncpu, "frequency_hz"), 999, "{}", context());
    let samples = u64_of(oncpu, "samples");
    // The burn's own report of its CPU time, passed through kpath's stderr.
    let cpu: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("burn: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no `burn: X s of CPU` line on stderr\n{}", context()));
    assert!(
        cpu > 0.5,
        "burn got only {cpu} s of CPU in 15 s: machine too busy\n{}",
        context()
    );
    let expected = 999.0 * cpu;
    let (lo, hi) = ((0.5 * expected) as u64, (1.2 * expected) as u64);
    assert!(
        (lo..=hi).contains(&samples),
        "{samples} samples for {cpu} s of CPU at 999 Hz, want {lo}..{hi}\n{}",
        context()
    );
    let unique = u64_of(oncpu, "unique_stacks");
    assert!(unique > 0, "unique_stacks is 0\n{}", context());
    assert!(
        unique <= samples,
        "unique_stacks {unique} > samples {samples}"
    );
    assert!(
        u64_of(oncpu, "lost_stacks") <= samples / 10,
        "many lost stacks\n{}",
        context()
    );
}

/// The flat profile in run.json agrees with the folded stacks written next to it: each
/// function's self samples are the samples whose innermost frame it is, its total the samples
/// with it anywhere below the thread-name root (once per sample). Counted here independently.
#[test]
fn flat_profile_matches_the_folded_stacks() {
    if !require_root() {
        return;
    }
    let bin = workload("burn");
    let (run, stderr, dir) = record_dir(
        &["--probes", "oncpu", "-F", "999"],
        &[bin.to_str().unwrap(), "1"],
    );
    let context = || format!("kpath stderr:\n{stderr}\nrun:\n{}", summary(&run));
    let funcs = run["oncpu"]["functions"]
        .as_array()
        .unwrap_or_else(|| panic!("no oncpu.functions\n{}", context()));
    assert!(!funcs.is_empty(), "empty flat profile\n{}", context());
    let folded = std::fs::read_to_string(dir.join("oncpu.folded")).expect("oncpu.folded");
    let mut total = 0u64;
    let mut lines = Vec::new();
    for l in folded.lines().filter(|l| !l.is_empty()) {
        let (stack, n) = l.rsplit_once(' ').expect("folded line");
        let n: u64 = n.parse().expect("count");
        total += n;
        lines.push((stack.split(';').skip(1).collect::<Vec<_>>(), n));
    }
    let mut self_sum = 0.0;
    for f in funcs {
        let name = str_of(f, "function");
        let (s, t) = (u64_of(f, "self_samples"), u64_of(f, "total_samples"));
        let want_self: u64 = lines
            .iter()
            .filter(|(fr, _)| fr.last() == Some(&name))
            .map(|(_, n)| n)
            .sum();
        let want_total: u64 = lines
            .iter()
            .filter(|(fr, _)| fr.contains(&name))
            .map(|(_, n)| n)
            .sum();
        assert_eq!((s, t), (want_self, want_total), "{name}\n{}", context());
        let share = f64_of(f, "total_share");
        assert!(
            (share - t as f64 / total as f64).abs() < 1e-9,
            "{name}: share {share}"
        );
        self_sum += f64_of(f, "self_share");
    }
    assert!(self_sum <= 1.0 + 1e-9, "self shares add to {self_sum}");
    // burn spins in user space: its busiest leaf holds most samples.
    let top_self = funcs
        .iter()
        .map(|f| u64_of(f, "self_samples"))
        .max()
        .unwrap_or(0);
    assert!(
        top_self * 2 > total,
        "top self {top_self} of {total}\n{}",
        context()
    );
}
