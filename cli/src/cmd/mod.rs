//! One module per `kpath` subcommand: its clap arguments and its `run`; [`Cli`] gathers them
//! here (not in `main.rs`) so tests can render every `--help` and parse its examples.

pub mod agent;
pub mod bench;
pub mod costs;
pub mod diff;
pub mod doctor;
pub mod flame;
#[cfg(test)]
mod help_examples;
pub mod output;
pub mod record;
pub mod report;
pub mod scenario;
pub mod vm;
pub mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kpath",
    version,
    about = "Where a network server's time goes inside the kernel"
)]
#[command(after_help = "Examples:
  sudo kpath doctor
  sudo kpath record -- ./my-server          trace a command and its children until it exits
  sudo kpath record -p 1234 -d 10           trace a running process for 10 s
  kpath report runs/run-1700000000          re-render a recorded run")]
pub struct Cli {
    /// Log more: -v shows the libraries' warnings (aya, blazesym, inferno), -vv kpath's info,
    /// -vvv debug. RUST_LOG, when set, decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The log filter without RUST_LOG: kpath's own warnings only. The libraries' messages
    /// (inferno's "No stack counts found", blazesym's and aya's warnings about files and maps
    /// kpath already handles) are noise in a normal run; -v brings them back.
    pub fn log_filter(&self) -> &'static str {
        match self.verbose {
            0 => "kpath=warn,servers=warn",
            1 => "warn",
            2 => "warn,kpath=info,servers=info",
            _ => "debug",
        }
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// What this kernel offers and which method each probe family will use.
    Doctor(doctor::DoctorArgs),
    /// Attach probes to a process or command, print tables, write a run directory.
    Record(record::RecordArgs),
    /// Record continuously: a window directory every --window seconds, Prometheus metrics.
    Agent(agent::AgentArgs),
    /// Re-render a recorded run, or print a bench directory's tables.
    Report(report::ReportArgs),
    /// Re-render a run's flame graph (on-CPU, or off-CPU with --offcpu) from its folded stacks.
    Flame(flame::FlameArgs),
    /// Differential flame graph of two runs (normalized to the second run's total).
    Diff(diff::DiffArgs),
    /// Serve, record and load every strategy combination; compare them side by side.
    Bench(bench::BenchArgs),
    /// What kernel paths cost on this machine: syscalls, context switches, mmap, sendfile, ...
    Costs(costs::CostsArgs),
    /// Run the reference HTTP server (io and threading strategies are switches).
    Serve(servers::serve::ServeArgs),
    /// Drive an HTTP server with load (closed loop, or constant rate with --rate).
    Load(servers::load::LoadArgs),
    /// A built-in workload that opens, maps and closes files and connections (for demos).
    Workload(workload::WorkloadArgs),
    /// Run a kpath subcommand inside a stock Debian kernel (bookworm, bullseye, trixie, or a
    /// kernel image) under qemu.
    Vm(vm::VmArgs),
    /// A built-in experiment with its explanation and measured findings (`--list` names them).
    Scenario(scenario::ScenarioArgs),
}

/// Runs the parsed subcommand.
pub fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Record(a) => record::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Report(a) => report::run(a),
        Command::Flame(a) => flame::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Costs(a) => costs::run(a),
        Command::Serve(a) => servers::serve::run(a),
        Command::Load(a) => servers::load::run(a),
        Command::Workload(a) => workload::run(&a),
        Command::Vm(a) => vm::run(a),
        Command::Scenario(a) => scenario::run(a),
    }
}
