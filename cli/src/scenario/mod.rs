//! `kpath scenario NAME`: built-in experiments that reproduce a known kernel finding under kpath,
//! on the host and in stock-kernel guests side by side.
//!
//! A scenario has two halves: `run` (on the host: records the load once per target and renders
//! the comparison) and `drive` (the load itself, started by `kpath record` on each target,
//! so that the recording covers exactly it). Add a scenario by adding a module and a
//! [`SCENARIOS`] entry.
pub mod compare;
pub mod cork;
pub mod epoll_close;
pub mod fanout;

use std::path::PathBuf;

use anyhow::bail;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath scenario --list
  sudo kpath scenario gulan -d 3                        mmap -> sendfile -> cache -> thread pool
  sudo kpath scenario cork -d 3                         TCP_CORK vs header write + sendfile vs writev
  sudo kpath scenario epoll-close                       on this machine's kernel
  sudo kpath scenario epoll-close --kernel bullseye --kernel bookworm --host")]
pub struct ScenarioArgs {
    /// Scenario name (see --list).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the scenarios with what each shows.
    #[arg(long)]
    pub list: bool,
    /// Also run in a guest with this kernel (bookworm, bullseye, or a path; repeatable).
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
    /// Run on the host kernel too (the default when no --kernel is given).
    #[arg(long)]
    pub host: bool,
    /// Seconds of load per target.
    #[arg(short, long, default_value_t = 3.0)]
    pub duration: f64,
    /// Client threads, each with one connection at a time.
    #[arg(short, long, default_value_t = 4)]
    pub connections: usize,
    /// Where each target's run directory goes (`DIR/<target>/run`).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Internal: run the load itself and write its result to this file.
    #[arg(long, hide = true, value_name = "RESULT")]
    pub drive: Option<PathBuf>,
}

/// One built-in scenario.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    pub run: fn(&ScenarioArgs) -> anyhow::Result<()>,
    pub drive: fn(&ScenarioArgs, &std::path::Path) -> anyhow::Result<()>,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "gulan",
        about: "mmap+write per request -> sendfile -> in-memory cache -> a thread pool that makes it worse",
        run: |a| compare::run(&compare::GULAN, a),
        drive: compare::no_drive,
    },
    Scenario {
        name: "epoll-close",
        about: "close-per-request load over sockets in epoll: which kernels take the global epmutex",
        run: epoll_close::run,
        drive: epoll_close::drive,
    },
    Scenario {
        name: "cork",
        about: "sendfile with TCP_CORK vs header write + sendfile vs writev of header and cached body: \
                segments and syscalls per request",
        run: |a| compare::run(&cork::CORK, a),
        drive: compare::no_drive,
    },
    Scenario {
        name: "sendfile-fanout",
        about: "one file sent to many connections vs many files: opens, lock waits and kernel time \
                per request",
        run: |a| compare::run(&fanout::FANOUT, a),
        drive: compare::no_drive,
    },
    Scenario {
        name: "batching",
        about: "epoll loop vs io_uring batched submission: syscalls per request",
        run: |a| compare::run(&compare::BATCHING, a),
        drive: compare::no_drive,
    },
    Scenario {
        name: "threadpool",
        about: "event loop vs thread pool vs thread per connection: context switches per request",
        run: |a| compare::run(&compare::THREADPOOL, a),
        drive: compare::no_drive,
    },
];

pub fn run(args: ScenarioArgs) -> anyhow::Result<()> {
    if args.list {
        for s in SCENARIOS {
            println!("{:<16} {}", s.name, s.about);
        }
        return Ok(());
    }
    let name = args.name.as_deref().unwrap_or_default();
    let Some(s) = SCENARIOS.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        bail!("unknown scenario {name:?} (known: {})", names.join(", "));
    };
    match &args.drive {
        Some(result) => (s.drive)(&args, result),
        None => (s.run)(&args),
    }
}

/// Where a scenario's recordings happen: this kernel, or a guest.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Host,
    Guest(String),
}

impl Target {
    pub fn label(&self) -> String {
        match self {
            Target::Host => "host".into(),
            Target::Guest(k) => {
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

/// The targets `args` asks for, in order: the host first when included.
pub fn targets(args: &ScenarioArgs) -> Vec<Target> {
    let mut v = Vec::new();
    if args.host || args.kernels.is_empty() {
        v.push(Target::Host);
    }
    v.extend(args.kernels.iter().cloned().map(Target::Guest));
    v
}
