//! `kpath scenario NAME`: built-in experiments that reproduce a known kernel finding under kpath,
//! on the host and in stock-kernel guests side by side.
//!
//! A scenario has up to two halves: `run` (on the host: records the load once per kernel and
//! renders the comparison) and, for a scenario that brings its own load, `drive` (that load
//! itself, which `run` starts as the command of `kpath record` on each kernel, so that the
//! recording covers exactly it). Add a scenario by adding a module and a [`SCENARIOS`] entry.
pub mod compare;
pub mod cork;
pub mod epoll_close;
pub mod fanout;

use std::path::{Path, PathBuf};

/// What a scenario is given (`kpath scenario`'s arguments, less the name).
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioOptions {
    /// Guest kernels to run in too (bookworm, bullseye, or a path); epoll-close only.
    pub kernels: Vec<String>,
    /// Run on this machine's kernel too (always when `kernels` is empty).
    pub host: bool,
    /// Seconds of load per kernel.
    pub duration_secs: f64,
    /// Concurrent connections of the load; `None`: the scenario's own (epoll-close: 4 client
    /// threads, one connection each at a time; the comparisons: `kpath bench`'s).
    pub connections: Option<usize>,
    /// Where the runs go (default `runs/scenario-NAME-<unix time>`).
    pub out_dir: Option<PathBuf>,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            kernels: Vec::new(),
            host: false,
            duration_secs: 3.0,
            connections: None,
            out_dir: None,
        }
    }
}

/// The load half of a scenario that brings its own: runs it under `opts` and writes its own
/// figures to the file given.
pub type Drive = fn(&ScenarioOptions, &Path) -> anyhow::Result<()>;

/// One built-in scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The host half: records on each kernel and prints the comparison.
    pub run: fn(&ScenarioOptions) -> anyhow::Result<()>,
    /// The load half, run under `kpath record` (`kpath scenario NAME --drive RESULT`); `None`
    /// when the scenario's load is `kpath bench`'s own.
    pub drive: Option<Drive>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        // Named after the author (Gulan) of the blog post whose server it retraces: a file
        // server taken from mmap+write per request to sendfile, to an in-memory cache, and then
        // behind a thread pool that made it slower. The name stays: tests and README use it.
        name: "gulan",
        about: "mmap+write per request -> sendfile -> in-memory cache -> a thread pool that makes it \
                worse (the steps of Gulan's blog post)",
        run: |o| compare::run(&compare::GULAN, o),
        drive: None,
    },
    Scenario {
        name: "epoll-close",
        about: "close-per-request load over sockets in epoll: which kernels take the global epmutex",
        run: epoll_close::run,
        drive: Some(epoll_close::drive),
    },
    Scenario {
        name: "cork",
        about: "sendfile with TCP_CORK vs header write + sendfile vs writev of header and cached body: \
                segments and syscalls per request",
        run: |o| compare::run(&cork::CORK, o),
        drive: None,
    },
    Scenario {
        name: "sendfile-fanout",
        about: "one file sent to many connections vs many files: opens, lock waits and kernel time \
                per request",
        run: |o| compare::run(&fanout::FANOUT, o),
        drive: None,
    },
    Scenario {
        name: "batching",
        about: "epoll loop vs io_uring batched submission: syscalls per request",
        run: |o| compare::run(&compare::BATCHING, o),
        drive: None,
    },
    Scenario {
        name: "threadpool",
        about: "event loop vs thread pool vs thread per connection: context switches per request",
        run: |o| compare::run(&compare::THREADPOOL, o),
        drive: None,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario {name:?} (known: {known})")]
    Unknown { name: String, known: String },
    #[error("scenario {name} has no --drive half: bench drives its load")]
    NoDrive { name: &'static str },
}

/// The scenario called `name`.
pub fn find(name: &str) -> Result<&'static Scenario, ScenarioError> {
    SCENARIOS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ScenarioError::Unknown {
            name: name.to_string(),
            known: SCENARIOS
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Where a scenario's recordings happen: this machine's kernel, or a guest booted with a
/// Debian suite's kernel (or one from a path) under qemu.
#[derive(Debug, Clone, PartialEq)]
pub enum Where {
    Host,
    Guest(String),
}

impl Where {
    /// `host`, or the guest kernel's name made safe for a directory name.
    pub fn label(&self) -> String {
        match self {
            Where::Host => "host".into(),
            Where::Guest(k) => {
                let base = std::path::Path::new(k)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| k.clone());
                base.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            }
        }
    }
}

/// Where `opts` asks to record, in order: the host first when included.
pub fn places(opts: &ScenarioOptions) -> Vec<Where> {
    let mut v = Vec::new();
    if opts.host || opts.kernels.is_empty() {
        v.push(Where::Host);
    }
    v.extend(opts.kernels.iter().cloned().map(Where::Guest));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_first_and_guests_by_safe_label() {
        let o = ScenarioOptions {
            kernels: vec!["bullseye".into(), "/boot/vmlinuz 6.1".into()],
            host: true,
            ..Default::default()
        };
        let labels: Vec<String> = places(&o).iter().map(Where::label).collect();
        assert_eq!(labels, ["host", "bullseye", "vmlinuz_6.1"]);
        assert_eq!(places(&ScenarioOptions::default()), [Where::Host]);
    }

    #[test]
    fn scenarios_are_found_by_name() {
        assert!(find("epoll-close").unwrap().drive.is_some());
        assert!(find("gulan").unwrap().drive.is_none());
        let e = find("nope").err().expect("no such scenario").to_string();
        assert!(e.contains("nope") && e.contains("sendfile-fanout"), "{e}");
    }

    #[test]
    fn every_finding_names_a_scenario_that_exists() {
        for r in crate::findings::rules::RULES {
            if let Some(s) = r.scenario {
                assert!(find(s).is_ok(), "finding {}: no scenario {s}", r.id);
            }
        }
    }

    #[test]
    fn comparisons_run_distinct_strategies() {
        use crate::bench::json::Strategy;
        for c in [
            compare::GULAN,
            compare::BATCHING,
            compare::THREADPOOL,
            cork::CORK,
            fanout::FANOUT,
        ] {
            let mut names: Vec<String> = c.strategies.iter().map(Strategy::name).collect();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                c.strategies.len(),
                "{}: run directories must differ",
                c.name
            );
        }
    }
}
