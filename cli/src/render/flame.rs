//! Flame graph SVGs from folded stacks (inferno), and `kpath flame DIR` to re-render a run's.
use std::{
    io::Write,
    path::{Path, PathBuf},
};

use inferno::differential;
use inferno::flamegraph::{
    self,
    color::{BasicPalette, MultiPalette, Palette},
};

use crate::{
    export::pprof::{self, PprofKind},
    run::{Artifacts, Run},
    stacks::{folded, Profiles},
};

/// Which profile a flame graph shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlameKind {
    OnCpu,
    OffCpu,
    /// On-CPU samples x period plus off-CPU ns, off-CPU split `[idle]`/`[blocked]`/`[runnable]`.
    Wall,
}

impl FlameKind {
    pub fn new(offcpu: bool) -> Self {
        if offcpu {
            FlameKind::OffCpu
        } else {
            FlameKind::OnCpu
        }
    }

    pub fn folded_name(self) -> &'static str {
        match self {
            FlameKind::OnCpu => "oncpu.folded",
            FlameKind::OffCpu => "offcpu.folded",
            FlameKind::Wall => "wall.folded",
        }
    }

    pub fn svg_name(self) -> &'static str {
        match self {
            FlameKind::OnCpu => "oncpu.svg",
            FlameKind::OffCpu => "offcpu.svg",
            FlameKind::Wall => "wall.svg",
        }
    }

    pub fn count_name(self) -> &'static str {
        match self {
            FlameKind::OnCpu => "samples",
            FlameKind::OffCpu | FlameKind::Wall => "ns",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FlameError {
    #[error("bad folded input")]
    Folded(#[from] folded::FoldedError),
    #[error("rendering the SVG failed")]
    Render(#[source] std::io::Error),
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the pprof profiles failed")]
    Pprof(#[from] pprof::PprofError),
}

/// What the flame graph says about itself: title, subtitle, units, palette.
#[derive(Debug, Clone, PartialEq)]
pub struct FlameOptions {
    pub kind: FlameKind,
    pub title: String,
    pub subtitle: Option<String>,
    /// Two-count (before, after) input from differential folding.
    pub differential: bool,
}

impl FlameOptions {
    /// Titles that say what was measured and how, from the run's metadata.
    pub fn for_run(kind: FlameKind, run: &Run) -> Self {
        let who = match run.target.pid {
            Some(p) => format!("pid {p}"),
            None => "all processes".to_string(),
        };
        let (title, subtitle) = match kind {
            FlameKind::OnCpu => {
                let hz = run.oncpu.as_ref().map_or(99, |o| o.frequency_hz);
                (format!("On-CPU, {hz} Hz cpu-clock samples, {who}"), None)
            }
            FlameKind::OffCpu => {
                let min = run.offcpu.as_ref().map_or(0, |o| o.min_block_ns);
                (
                    format!("Off-CPU time (ns), sched_switch, {who}"),
                    (min > 0).then(|| format!("blocks shorter than {} µs not charged", min / 1000)),
                )
            }
            FlameKind::Wall => {
                let hz = run.oncpu.as_ref().map_or(99, |o| o.frequency_hz);
                (
                    format!("Wall clock (ns), {who}"),
                    Some(format!(
                        "on-CPU: {hz} Hz samples x {} µs; off-CPU: sched_switch time, leaf                          [idle] waiting for work, [blocked] locks/I/O/faults, [runnable] run-queue delay",
                        1_000_000 / hz.max(1)
                    )),
                )
            }
        };
        FlameOptions {
            kind,
            title,
            subtitle,
            differential: false,
        }
    }

    fn inferno(&self) -> flamegraph::Options<'static> {
        let mut o = flamegraph::Options::default();
        o.title = self.title.clone();
        o.subtitle = self.subtitle.clone();
        o.count_name = self.kind.count_name().to_string();
        // Stable colors: the same function gets the same color in every graph (and golden files).
        o.hash = true;
        o.colors = match (self.differential, self.kind) {
            // Kernel frames (`_[k]`) orange, inlined (`_[i]`) aqua, user frames red.
            (_, FlameKind::OnCpu | FlameKind::Wall) | (true, _) => {
                Palette::Multi(MultiPalette::Java)
            }
            (false, FlameKind::OffCpu) => Palette::Basic(BasicPalette::Blue),
        };
        o
    }
}

/// Renders folded text as an SVG. An empty profile still yields an SVG, one that says why it
/// is empty and what to change, so a run always has both files (inferno would log an error
/// line and draw a blank page).
pub fn render(text: &str, opts: &FlameOptions, mut out: impl Write) -> Result<(), FlameError> {
    let empty = text.lines().all(|l| l.trim().is_empty());
    if empty {
        return out
            .write_all(empty_svg(opts).as_bytes())
            .map_err(FlameError::Render);
    }
    if !opts.differential {
        folded::parse(text)?;
    }
    let mut o = opts.inferno();
    flamegraph::from_lines(&mut o, text.lines(), out).map_err(FlameError::Render)
}

/// Why a graph has nothing to draw, and what to try.
pub fn empty_reason(opts: &FlameOptions) -> &'static str {
    match (opts.differential, opts.kind) {
        (true, _) => "no stacks in either run",
        (false, FlameKind::OnCpu) => "no on-CPU samples: record longer or raise -F",
        (false, FlameKind::OffCpu) => {
            "no off-CPU time charged to a stack: record longer or lower --offcpu-min-us"
        }
        (false, FlameKind::Wall) => "no on-CPU samples or off-CPU time: record longer",
    }
}

fn empty_svg(opts: &FlameOptions) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    format!(
        "<?xml version=\"1.0\" standalone=\"no\"?>\n\
         <svg version=\"1.1\" width=\"1200\" height=\"90\" xmlns=\"http://www.w3.org/2000/svg\">\
         <text x=\"600\" y=\"30\" text-anchor=\"middle\" font-size=\"17\">{}</text>\
         <text x=\"600\" y=\"65\" text-anchor=\"middle\" font-size=\"14\">{}</text></svg>\n",
        esc(&opts.title),
        esc(empty_reason(opts))
    )
}

/// [`render`] into a file.
pub fn render_file(text: &str, opts: &FlameOptions, path: &Path) -> Result<(), FlameError> {
    let mut buf = Vec::new();
    render(text, opts, &mut buf)?;
    std::fs::write(path, buf).map_err(|source| FlameError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the folded files, their SVGs and the pprof profiles into `dir`; returns their names
/// for run.json.
pub fn write_artifacts(dir: &Path, p: &Profiles, run: &Run) -> Result<Artifacts, FlameError> {
    let mut a = Artifacts::default();
    for (kind, text) in [
        (FlameKind::OnCpu, &p.oncpu),
        (FlameKind::OffCpu, &p.offcpu),
        (FlameKind::Wall, &p.wall),
    ] {
        let Some(text) = text else { continue };
        let folded_name = kind.folded_name().to_string();
        let svg_name = kind.svg_name().to_string();
        let path = dir.join(&folded_name);
        std::fs::write(&path, text).map_err(|source| FlameError::Write {
            path: path.clone(),
            source,
        })?;
        let svg = dir.join(&svg_name);
        render_file(text, &FlameOptions::for_run(kind, run), &svg)?;
        match kind {
            FlameKind::OnCpu => {
                a.oncpu_folded = Some(folded_name);
                a.oncpu_svg = Some(svg_name);
            }
            FlameKind::OffCpu => {
                a.offcpu_folded = Some(folded_name);
                a.offcpu_svg = Some(svg_name);
            }
            FlameKind::Wall => {
                a.wall_folded = Some(folded_name);
                a.wall_svg = Some(svg_name);
            }
        }
    }
    for (kind, name) in pprof::write_run(dir, p, run)? {
        match kind {
            PprofKind::Oncpu => a.oncpu_pprof = Some(name),
            PprofKind::Offcpu => a.offcpu_pprof = Some(name),
            PprofKind::Locks => a.locks_pprof = Some(name),
        }
    }
    Ok(a)
}

/// Differential flame graphs (inferno's differential folding): widths are run B's; red
/// frames grew from A to B, blue ones shrank; A is normalized to B's total first.
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
        FlameKind::Wall => "Wall-clock time (ns)",
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

/// Below this many on-CPU samples on either side a differential graph's colours are mostly
/// sampling noise: a frame holding 2% of 300 samples moves by whole samples between runs.
pub const MIN_DIFF_SAMPLES: u64 = 500;

/// The sum of the counts of folded lines (`stack count`); for two-count differential lines,
/// the last count. Lines without a count are skipped.
pub fn folded_total(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.trim_end().rsplit_once(' '))
        .filter_map(|(_, n)| n.parse::<u64>().ok())
        .fold(0u64, u64::saturating_add)
}

/// What a differential graph rests on, in words: both sides' totals, and a warning when
/// either side of an on-CPU graph has fewer than [`MIN_DIFF_SAMPLES`] samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffNote {
    pub totals: String,
    pub warning: Option<String>,
}

pub fn diff_note(kind: FlameKind, a: (&str, u64), b: (&str, u64)) -> DiffNote {
    let side = |(name, n): (&str, u64)| match kind {
        FlameKind::OnCpu => format!("{name} {n} samples"),
        FlameKind::OffCpu => format!("{name} {} off-CPU", crate::fmt::ns(n)),
        FlameKind::Wall => format!("{name} {} wall-clock", crate::fmt::ns(n)),
    };
    let totals = format!("{} (baseline) vs {}", side(a), side(b));
    let small: Vec<String> = [a, b]
        .into_iter()
        .filter(|&(_, n)| n < MIN_DIFF_SAMPLES)
        .map(|(name, n)| format!("{name} has {n}"))
        .collect();
    let warning = (kind == FlameKind::OnCpu && !small.is_empty()).then(|| {
        format!(
            "too few samples to trust: {} (under {MIN_DIFF_SAMPLES}); record longer (-d) or \
             sample faster (-F) before reading colours as differences",
            small.join(", ")
        )
    });
    DiffNote { totals, warning }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{OffcpuSummary, OncpuSummary, Target};

    #[test]
    fn totals_and_small_sample_warning() {
        assert_eq!(folded_total("a;b 5\na;c 7\n\nbad\n"), 12);
        assert_eq!(folded_total("x;a 50 20\nx;c 0 80\n"), 100);
        let n = diff_note(FlameKind::OnCpu, ("mmap", 64), ("cached", 830));
        assert_eq!(n.totals, "mmap 64 samples (baseline) vs cached 830 samples");
        let w = n.warning.expect("64 < 500");
        assert!(
            w.contains("mmap has 64") && !w.contains("cached has"),
            "{w}"
        );
        assert!(w.contains("-d") && w.contains("-F"), "{w}");
        assert_eq!(
            diff_note(FlameKind::OnCpu, ("a", 500), ("b", 9000)).warning,
            None
        );
        let off = diff_note(FlameKind::OffCpu, ("a", 2_000_000), ("b", 3));
        assert_eq!(off.totals, "a 2.00ms off-CPU (baseline) vs b 3ns off-CPU");
        assert_eq!(off.warning, None, "off-CPU totals are time, not samples");
    }

    #[test]
    fn titles_say_what_and_how() {
        let mut run = Run {
            target: Target {
                pid: Some(42),
                ..Default::default()
            },
            oncpu: Some(OncpuSummary {
                frequency_hz: 999,
                ..Default::default()
            }),
            offcpu: Some(OffcpuSummary {
                min_block_ns: 50_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        let on = FlameOptions::for_run(FlameKind::OnCpu, &run);
        assert_eq!(on.title, "On-CPU, 999 Hz cpu-clock samples, pid 42");
        let off = FlameOptions::for_run(FlameKind::OffCpu, &run);
        assert_eq!(off.title, "Off-CPU time (ns), sched_switch, pid 42");
        assert_eq!(
            off.subtitle.as_deref(),
            Some("blocks shorter than 50 µs not charged")
        );
        run.target.pid = None;
        assert!(FlameOptions::for_run(FlameKind::OnCpu, &run)
            .title
            .ends_with("all processes"));
    }

    #[test]
    fn renders_and_rejects_malformed_input() {
        let opts = FlameOptions::for_run(FlameKind::OffCpu, &Run::default());
        let mut svg = Vec::new();
        render("nginx;ngx_x;schedule_[k] 1500\n", &opts, &mut svg).unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("schedule"), "frame missing");
        assert!(svg.contains("1,500 ns"), "count name missing");
        let mut empty = Vec::new();
        render("", &opts, &mut empty).unwrap();
        let empty = String::from_utf8(empty).unwrap();
        assert!(
            empty.contains("<svg") && empty.ends_with("</svg>\n"),
            "{empty}"
        );
        assert!(
            empty.contains("record longer or lower --offcpu-min-us"),
            "{empty}"
        );
        assert!(render("no count here\n", &opts, Vec::new()).is_err());
    }

    #[test]
    fn normalizes_the_baseline_to_the_other_total() {
        // A has 10 samples, B has 100: A's counts are scaled by 10.
        let d = diff_folded("x;a 5\nx;b 5\n", "x;a 20\nx;c 80\n").unwrap();
        let mut lines: Vec<&str> = d.lines().collect();
        lines.sort();
        assert_eq!(lines, ["x;a 50 20", "x;b 50 0", "x;c 0 80"]);
    }
}
