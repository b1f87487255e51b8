//! `kpath diff` states what each side rests on: both runs' sample counts on stderr, and a
//! warning when either has fewer than 500 on-CPU samples (no root: folded files written here).
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn run_dir(parent: &Path, name: &str, folded: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("oncpu.folded"), folded).unwrap();
    std::fs::write(d.join("offcpu.folded"), folded).unwrap();
    d
}

fn diff(a: &Path, b: &Path, extra: &[&str]) -> common::Finished {
    let out = a.parent().unwrap().join("diff.svg");
    let f = common::run_with_timeout(
        Command::new(common::KPATH)
            .arg("diff")
            .arg(a)
            .arg(b)
            .args(extra)
            .arg("-o")
            .arg(&out),
        Duration::from_secs(30),
    );
    assert!(f.status.success(), "kpath diff: {}", f.stderr);
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("Differential"));
    f
}

#[test]
fn diff_states_both_counts_and_warns_below_500_samples() {
    let dir = common::tmpdir("diff-counts");
    let small = run_dir(
        &dir,
        "small",
        "srv;read;tcp_recvmsg_[k] 40\nsrv;close;tcp_close_[k] 24\n",
    );
    let big = run_dir(
        &dir,
        "big",
        "srv;read;tcp_recvmsg_[k] 600\nsrv;close;tcp_close_[k] 230\n",
    );
    let big2 = run_dir(&dir, "big2", "srv;read;tcp_recvmsg_[k] 500\nsrv;writev 9\n");

    let f = diff(&small, &big, &[]);
    assert!(
        f.stderr
            .contains("kpath diff: small 64 samples (baseline) vs big 830 samples"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr
            .contains("warning: too few samples to trust: small has 64 (under 500)"),
        "{}",
        f.stderr
    );
    assert!(f.stderr.contains("-F"), "{}", f.stderr);

    let f = diff(&big, &big2, &[]);
    assert!(
        f.stderr
            .contains("big 830 samples (baseline) vs big2 509 samples"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("warning"), "{}", f.stderr);

    // Off-CPU counts are nanoseconds: stated, never judged by the sample threshold.
    let f = diff(&small, &big, &["--offcpu"]);
    assert!(
        f.stderr
            .contains("small 64ns off-CPU (baseline) vs big 830ns off-CPU"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("warning"), "{}", f.stderr);
}
