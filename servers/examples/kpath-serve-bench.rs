//! `kpath serve` and `kpath load` without the eBPF side, for `cargo xtask bench-servers`.

use clap::Parser;

#[derive(Parser)]
enum Cmd {
    Serve(servers::serve::ServeArgs),
    Load(servers::load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    match Cmd::parse() {
        Cmd::Serve(args) => servers::serve::run(args),
        Cmd::Load(args) => servers::load::run(args),
    }
}
