//! `kpath scenario`: its arguments, converted into [`ScenarioOptions`] for the scenario named.
use std::path::PathBuf;

use crate::scenario::{self, ScenarioError, ScenarioOptions, SCENARIOS};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath scenario --list
  sudo kpath scenario gulan -d 3                        mmap -> sendfile -> cache -> thread pool
  sudo kpath scenario cork -d 3                         TCP_CORK vs header write + sendfile vs writev
  sudo kpath scenario epoll-close                       on this machine's kernel
  sudo kpath scenario epoll-close --kernel bullseye --kernel bookworm --host
  sudo kpath scenario batching -d 2 -c 64 -o runs/batching")]
pub struct ScenarioArgs {
    /// Scenario name (see --list).
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// List the scenarios with what each shows.
    #[arg(long)]
    pub list: bool,
    /// Also run in a guest with this kernel (bookworm, bullseye, trixie, or a path; repeatable;
    /// epoll-close only).
    #[arg(long = "kernel")]
    pub kernels: Vec<String>,
    /// Run on the host kernel too (the default when no --kernel is given).
    #[arg(long)]
    pub host: bool,
    /// Seconds of load per kernel (epoll-close) or per strategy (the others); fractions
    /// allowed.
    #[arg(short, long, default_value_t = 3.0, value_parser = servers::args::seconds)]
    pub duration: f64,
    /// Concurrent connections of the load (default: 4 for epoll-close, whose clients close
    /// after every request, and `kpath bench`'s 32 for the others).
    #[arg(short, long)]
    pub connections: Option<usize>,
    /// Directory where the runs go (epoll-close: `DIR/<kernel>/run` per kernel; `--out-dir`
    /// still works).
    #[arg(short, long = "output", alias = "out-dir", value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Internal: run only the scenario's load half (what `kpath record` traces on each kernel)
    /// and write its figures to this file.
    #[arg(long, hide = true, value_name = "RESULT")]
    pub drive: Option<PathBuf>,
}

impl ScenarioArgs {
    pub fn options(&self) -> ScenarioOptions {
        ScenarioOptions {
            kernels: self.kernels.clone(),
            host: self.host,
            duration_secs: self.duration,
            connections: self.connections,
            out_dir: self.out_dir.clone(),
        }
    }
}

pub fn run(args: ScenarioArgs) -> anyhow::Result<()> {
    if args.list {
        for s in SCENARIOS {
            println!("{:<16} {}", s.name, s.about);
        }
        return Ok(());
    }
    let s = scenario::find(args.name.as_deref().unwrap_or_default())?;
    let opts = args.options();
    match (&args.drive, s.drive) {
        (Some(result), Some(drive)) => drive(&opts, result),
        (Some(_), None) => Err(ScenarioError::NoDrive { name: s.name }.into()),
        (None, _) => (s.run)(&opts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        scenario: ScenarioArgs,
    }

    #[test]
    fn defaults_match_the_library() {
        let a = Cli::parse_from(["kpath", "gulan"]).scenario;
        assert_eq!(a.options(), ScenarioOptions::default());
        let a = Cli::parse_from(["kpath", "epoll-close", "--kernel", "bullseye", "-d", "1.5"]);
        let o = a.scenario.options();
        assert_eq!((o.kernels, o.duration_secs), (vec!["bullseye".into()], 1.5));
    }
}
