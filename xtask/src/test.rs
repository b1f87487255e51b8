//! `cargo xtask test`: set up, build every target, run every test, summarize.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::proc::Proc;
use crate::util::{self, Stopwatch};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Passed to `cargo test` (e.g. `-- -p kpath -- --nocapture`); without `-p`, every host
    /// member of the workspace is tested.
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

/// Totals over every `test result:` line of one `cargo test` run.
#[derive(Debug, Default, PartialEq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    suites: u64,
    failures: Vec<String>,
}

impl Totals {
    fn add_line(&mut self, line: &str) {
        if let Some(result) = line.strip_prefix("test result: ") {
            self.suites += 1;
            // "ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s"
            for part in result.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                let (Some(count), Some(kind)) = (words.iter().rev().nth(1), words.last()) else {
                    continue;
                };
                let Ok(count) = count.parse::<u64>() else {
                    continue;
                };
                match *kind {
                    "passed" => self.passed += count,
                    "failed" => self.failed += count,
                    "ignored" => self.ignored += count,
                    _ => {}
                }
            }
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.strip_suffix(" ... FAILED"))
        {
            self.failures.push(name.to_string());
        }
    }
}

/// Whether the pass-through args pick packages themselves (cargo ignores `-p` next to
/// `--workspace`, so we leave `--workspace` out then).
fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-p" || a.starts_with("--package") || (a.starts_with("-p") && a.len() > 2))
}

/// The release build of the reference server the unwinding tests use.
const RELEASE_SERVER: [&str; 6] = [
    "build",
    "--release",
    "-p",
    "servers",
    "--example",
    "kpath-serve-bench",
];

pub fn run(args: &Args) -> Result<()> {
    crate::setup::for_run()?;
    let root = util::is_root();

    let clock = Stopwatch::start();
    util::run(
        util::cargo()
            .arg("build")
            .args(util::HOST_WORKSPACE)
            .arg("--all-targets"),
    )?;
    // The unwinding tests read the reference server as users run it: a release build, which
    // keeps no frame pointers (cli/tests/common::release_server).
    util::run(util::cargo().args(RELEASE_SERVER))?;
    let build_time = clock.secs();

    let clock = Stopwatch::start();
    let mut cmd = util::cargo();
    cmd.arg("test");
    if !selects_packages(&args.cargo_test_args) {
        cmd.args(util::HOST_WORKSPACE);
    }
    if !args.cargo_test_args.iter().any(|a| a == "--no-fail-fast") {
        // Run every suite even after a failure, so the summary lists every failing test.
        cmd.arg("--no-fail-fast");
    }
    cmd.args(&args.cargo_test_args).stdout(Stdio::piped());
    cmd.env(
        "KPATH_RELEASE_SERVER",
        util::target_dir().join("release/examples/kpath-serve-bench"),
    );
    if root {
        // Root-only tests must fail here rather than skip quietly.
        cmd.env("KPATH_REQUIRE_ROOT_TESTS", "1");
    }
    let shown = util::display(&cmd);
    // A Proc, so an error while reading its output does not leave the tests running.
    let mut child = Proc::spawn(&mut cmd)?;
    let mut totals = Totals::default();
    let stdout = child.take_stdout().context("cargo test has no stdout")?;
    // Test output need not be UTF-8; pass it through and parse it lossily.
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line.context("could not read cargo test output")?;
        let line = String::from_utf8_lossy(&line);
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait()?;
    let test_time = clock.secs();

    println!();
    println!("summary:");
    println!("  build (all targets): ok in {build_time}");
    println!(
        "  tests: {} passed, {} failed, {} ignored in {} suites, {test_time}{}",
        totals.passed,
        totals.failed,
        totals.ignored,
        totals.suites,
        if root {
            " (as root: root-only tests required)"
        } else {
            " (not root: root-only tests may skip)"
        }
    );
    for name in &totals.failures {
        println!("  FAILED: {name}");
    }
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_selection_is_seen_before_the_test_binary_args() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(selects_packages(&args(&["-p", "kpath"])));
        assert!(selects_packages(&args(&["-pkpath"])));
        assert!(selects_packages(&args(&["--package=kpath"])));
        assert!(!selects_packages(&args(&["hist", "--", "-p"])));
        assert!(!selects_packages(&args(&[])));
    }

    #[test]
    fn totals_add_up_over_suites() {
        let mut t = Totals::default();
        for line in [
            "running 2 tests",
            "test a::b ... ok",
            "test a::c ... FAILED",
            "test result: FAILED. 1 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; \
             finished in 0.01s",
            "test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
             finished in 0.00s",
        ] {
            t.add_line(line);
        }
        assert_eq!(
            t,
            Totals {
                passed: 5,
                failed: 1,
                ignored: 2,
                suites: 2,
                failures: vec!["a::c".to_string()],
            }
        );
    }
}
