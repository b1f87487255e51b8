//! `kpath diff DIR_A DIR_B`: a differential flame graph of two runs (inferno's differential
//! folding). Widths are run B's; red frames grew from A to B, blue ones shrank. A is normalized
//! to B's total first, so runs of different length or load compare by share, not by count.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::render::flame::{diff_folded, diff_note, diff_options, folded_total, FlameKind};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath diff runs/keepalive runs/close          what closing every connection adds
  kpath diff runs/a runs/b --offcpu -o blocked-diff.svg
  kpath diff runs/a runs/b -o - | gzip > diff.svg.gz      -o - writes the SVG to stdout")]
pub struct DiffArgs {
    /// The baseline run directory.
    pub dir_a: PathBuf,
    /// The run compared with it.
    pub dir_b: PathBuf,
    /// Compare off-CPU time instead of on-CPU samples.
    #[arg(long)]
    pub offcpu: bool,
    /// SVG to write, `-` for stdout (default: oncpu-diff.svg or offcpu-diff.svg in the
    /// current directory).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

fn read_folded(dir: &Path, kind: FlameKind) -> anyhow::Result<String> {
    let p = dir.join(kind.folded_name());
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let kind = FlameKind::new(args.offcpu);
    let a = read_folded(&args.dir_a, kind)?;
    let b = read_folded(&args.dir_b, kind)?;
    let lines = diff_folded(&a, &b)?;
    let name = |d: &Path| {
        d.file_name()
            .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into())
    };
    let (name_a, name_b) = (name(&args.dir_a), name(&args.dir_b));
    // Both sides' totals on stderr (stdout may be the SVG), and whether they are enough.
    let note = diff_note(
        kind,
        (&name_a, folded_total(&a)),
        (&name_b, folded_total(&b)),
    );
    eprintln!("kpath diff: {}", note.totals);
    if let Some(w) = &note.warning {
        eprintln!("warning: {w}");
    }
    let opts = diff_options(kind, &name_a, &name_b);
    let out = args.output.unwrap_or_else(|| {
        PathBuf::from(match kind {
            FlameKind::OnCpu => "oncpu-diff.svg",
            FlameKind::OffCpu => "offcpu-diff.svg",
            FlameKind::Wall => "wall-diff.svg",
        })
    });
    super::output::write_svg(&lines, &opts, &out)
}
