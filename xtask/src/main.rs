//! `cargo xtask`: set up, build, test, lint and demo kpath. This file only parses and dispatches;
//! each subcommand lives in its own module.

mod bench_agent;
mod bench_overhead;
mod bench_probes;
mod bench_servers;
mod bench_startup;
mod bench_unwind;
mod build;
mod demo;
mod floor;
mod lint;
mod modgraph;
mod peers;
mod proc;
mod record;
mod setup;
mod stats;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "kpath's project tasks",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install whatever is missing: nightly + rust-src, bpf-linker, Debian packages, tracefs.
    Setup(setup::Args),
    /// Set up, then build the kpath binary.
    Build(build::Args),
    /// Set up, build every target, run every test (root-only tests need root).
    Test(test::Args),
    /// Set up, build a release kpath and record the demo run.
    Demo,
    /// rustfmt check, clippy on the workspace and on the eBPF crate, module graph check (no
    /// import cycles; `--graph` prints the graphs).
    Lint(lint::Args),
    /// Set up, then compare kpath's server strategies and load generator with nginx and wrk.
    BenchServers(bench_servers::Args),
    /// Set up, then measure the cost of kpath's syscall probes per traced syscall (getpid loop).
    BenchProbes(bench_probes::Args),
    /// Set up, then measure the reference server's requests/s untraced and with kpath attached.
    BenchOverhead(bench_overhead::Args),
    /// Set up, then time `kpath record -p` from start to attached (and bpftrace, if installed).
    BenchStartup(bench_startup::Args),
    /// Long soak of `kpath agent` on churning targets: VmRSS and CPU% per minute.
    BenchAgent(bench_agent::Args),
    /// Set up, then compare nginx requests/s and BPF run time with `--call-graph dwarf` vs `fp`.
    BenchUnwind(bench_unwind::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Cmd::Setup(args) => setup::run(args),
        Cmd::Build(args) => build::run(args),
        Cmd::Test(args) => test::run(args),
        Cmd::Demo => demo::run(),
        Cmd::Lint(args) => lint::run(args),
        // Setup first: the comparison needs nginx and wrk.
        Cmd::BenchServers(args) => setup::for_run().and_then(|()| bench_servers::run(args)),
        Cmd::BenchProbes(args) => setup::for_run().and_then(|()| bench_probes::run(args)),
        Cmd::BenchOverhead(args) => setup::for_run().and_then(|()| bench_overhead::run(args)),
        Cmd::BenchStartup(args) => setup::for_run().and_then(|()| bench_startup::run(args)),
        Cmd::BenchAgent(args) => setup::for_run().and_then(|()| bench_agent::run(args)),
        Cmd::BenchUnwind(args) => setup::for_run().and_then(|()| bench_unwind::run(args)),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
