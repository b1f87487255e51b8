//! `kpath flame DIR`: re-render a run's flame graph (on-CPU, or off-CPU with --offcpu) from its
//! folded stacks.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::render::{
    flame::{FlameKind, FlameOptions},
    json,
};
use crate::run::Run;
use crate::stacks::folded;
use probe_common::Family;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath flame runs/run-1700000000                 rewrite runs/run-1700000000/oncpu.svg
  kpath flame runs/run-1700000000 --offcpu -o off.svg
  kpath flame runs/run-1700000000 --wall          rewrite wall.svg (on-CPU and off-CPU time per thread)
  kpath flame runs/run-1700000000 -o - > oncpu.svg   -o - writes the SVG to stdout")]
pub struct FlameArgs {
    /// Run directory written by `kpath record`.
    pub dir: PathBuf,
    /// Off-CPU time instead of on-CPU samples.
    #[arg(long)]
    pub offcpu: bool,
    /// The wall-clock view (wall.folded) instead: on-CPU and off-CPU time of each thread.
    #[arg(long, conflicts_with = "offcpu")]
    pub wall: bool,
    /// SVG to write, `-` for stdout (default: oncpu.svg, offcpu.svg or wall.svg in DIR).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn run(args: FlameArgs) -> anyhow::Result<()> {
    let kind = if args.wall {
        FlameKind::Wall
    } else {
        FlameKind::new(args.offcpu)
    };
    let src = args.dir.join(kind.folded_name());
    let text = std::fs::read_to_string(&src).with_context(|| {
        format!(
            "reading {} (was the run recorded with the {} probes?)",
            src.display(),
            match kind {
                FlameKind::OffCpu => Family::Sched.name(),
                FlameKind::OnCpu => Family::Oncpu.name(),
                FlameKind::Wall => "oncpu and sched",
            }
        )
    })?;
    let run = read_run(&args.dir);
    let out = args
        .output
        .unwrap_or_else(|| args.dir.join(kind.svg_name()));
    if folded::total(&text) == 0 {
        eprintln!("kpath: {} holds no stacks", src.display());
    }
    super::output::write_svg(&text, &FlameOptions::for_run(kind, &run), &out)
        .with_context(|| format!("rendering {}", src.display()))
}

/// The run's metadata for titles; a directory holding only folded files still renders.
pub(crate) fn read_run(dir: &Path) -> Run {
    json::from_file(&dir.join("run.json")).unwrap_or_default()
}
