//! oncpu family: the number of samples follows frequency x CPU time.
//!
//! `burn 2` (tests/workloads/burn.c) spins one thread until it has used 2 s of CPU time, measured
//! with CLOCK_PROCESS_CPUTIME_ID, so the expected count does not depend on other load: 999 Hz x 2 s
//! = ~2000 samples. The bound 1000..2400 leaves room for timer slack in a VM and the process's
//! start-up and exit, and still catches a wrong frequency, a missing filter (other CPUs' samples)
//! or samples counted twice.
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
    assert!(
        (1000..=2400).contains(&samples),
        "{samples} samples for 2 s of CPU at 999 Hz, want 1000..2400\n{}",
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
