//! `kpath diff DIR_A DIR_B`: a differential flame graph of two runs (inferno's differential
//! folding). Widths are run B's; red frames grew from A to B, blue ones shrank. A is normalized
//! to B's total first, so runs of different length or load compare by share, not by count.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use inferno::differential;

use crate::flame::{self, FlameKind, FlameOptions};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("differential folding failed")]
    Fold(#[source] std::io::Error),
}

/// Two-count folded lines (`stack countA countB`), A scaled to B's total.
pub fn diff_folded(a: &str, b: &str) -> Result<String, DiffError> {
    let mut out = Vec::new();
    let opts = differential::Options {
        normalize: true,
        strip_hex: false,
    };
    differential::from_readers(opts, a.as_bytes(), b.as_bytes(), &mut out)
        .map_err(DiffError::Fold)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Options for a differential graph of `kind` between runs named `a` and `b`.
pub fn diff_options(kind: FlameKind, a: &str, b: &str) -> FlameOptions {
    let what = match kind {
        FlameKind::OnCpu => "On-CPU samples",
        FlameKind::OffCpu => "Off-CPU time (ns)",
    };
    FlameOptions {
        kind,
        title: format!("Differential {what}: {a} -> {b}"),
        subtitle: Some(format!(
            "widths: {b}; red grew, blue shrank ({a} normalized to {b}'s total)"
        )),
        differential: true,
    }
}

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath diff runs/keepalive runs/close          what closing every connection adds
  kpath diff runs/a runs/b --offcpu -o blocked-diff.svg")]
pub struct DiffArgs {
    /// The baseline run directory.
    pub dir_a: PathBuf,
    /// The run compared with it.
    pub dir_b: PathBuf,
    /// Compare off-CPU time instead of on-CPU samples.
    #[arg(long)]
    pub offcpu: bool,
    /// SVG to write (default: oncpu-diff.svg or offcpu-diff.svg in the current directory).
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
    let opts = diff_options(kind, &name(&args.dir_a), &name(&args.dir_b));
    let out = args.output.unwrap_or_else(|| {
        PathBuf::from(match kind {
            FlameKind::OnCpu => "oncpu-diff.svg",
            FlameKind::OffCpu => "offcpu-diff.svg",
        })
    });
    flame::render_file(&lines, &opts, &out)?;
    eprintln!("kpath: wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_the_baseline_to_the_other_total() {
        // A has 10 samples, B has 100: A's counts are scaled by 10.
        let d = diff_folded("x;a 5\nx;b 5\n", "x;a 20\nx;c 80\n").unwrap();
        let mut lines: Vec<&str> = d.lines().collect();
        lines.sort();
        assert_eq!(lines, ["x;a 50 20", "x;b 50 0", "x;c 0 80"]);
    }
}
