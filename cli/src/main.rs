//! The `kpath` binary: parses and dispatches; the subcommands live in `kpath::cmd`.
use clap::Parser;
use kpath::cmd::{self, Cli};

fn main() {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_filter()))
        .format_timestamp(None)
        .init();
    if let Err(e) = cmd::execute(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
