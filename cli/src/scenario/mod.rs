//! `kpath scenario NAME`: built-in experiments that reproduce a known kernel finding under kpath,
//! on the host and in stock-kernel guests side by side.
//!
//! A scenario has two halves: `run` (on the host: records the load once per target and renders
//! the comparison) and `drive` (the load itself, started by `kpath record` on each target,
//! so that the recording covers exactly it). Add a scenario by adding a module and a
//! [`SCENARIOS`] entry.
pub mod epoll_close;

use std::path::PathBuf;

use anyhow::bail;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sudo kpath scenario epoll-close                       on this machine's kernel
  sudo kpath scenario epoll-close --kernel bullseye --kernel bookworm --host
Scenarios: epoll-close (close-per-request load over sockets in epoll: the global epmutex era)")]
pub struct ScenarioArgs {
    /// Scenario name.
    pub name: String,
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

pub const SCENARIOS: &[Scenario] = &[Scenario {
    name: "epoll-close",
    about: "close-per-request load over sockets in epoll: which kernels take the global epmutex",
    run: epoll_close::run,
    drive: epoll_close::drive,
}];

pub fn run(args: ScenarioArgs) -> anyhow::Result<()> {
    let Some(s) = SCENARIOS.iter().find(|s| s.name == args.name) else {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        bail!(
            "unknown scenario {:?} (known: {})",
            args.name,
            names.join(", ")
        );
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
