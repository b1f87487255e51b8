//! The `kpath` binary: parses and dispatches; each subcommand lives in its own module.
use clap::{Parser, Subcommand};
use kpath::cmd::{bench, costs, diff, doctor, flame, record, report, scenario, vm, workload};

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
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// What this kernel offers and which method each probe family will use.
    Doctor(doctor::DoctorArgs),
    /// Attach probes to a process or command, print tables, write a run directory.
    Record(record::RecordArgs),
    /// Re-render a recorded run.
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
    /// Run a kpath subcommand inside a stock Debian kernel (bookworm, bullseye) under qemu.
    Vm(vm::VmArgs),
    /// A built-in experiment with its explanation and measured findings (`--list` names them).
    Scenario(scenario::ScenarioArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp(None)
        .init();
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Record(a) => record::run(a),
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
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
