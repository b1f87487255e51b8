//! `kpath report DIR`: re-render a recorded run from its `run.json`, or a bench directory
//! from its `bench.json`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::bench::{self, json::Bench};
use crate::export::pprof::{self, PprofKind};
use crate::render::{html, json, table};
use crate::run::Run;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  kpath report runs/run-1700000000                      the tables again
  kpath report runs/run-1700000000 --histograms --top 5   each top row's latency histogram, after the tables
  kpath report runs/run-1700000000 --json | jq .syscalls
  kpath report runs/run-1700000000 --format html        writes runs/run-1700000000/report.html
  kpath report runs/bench --format html -o -            a bench directory's page, to stdout
  kpath report runs/bench                               a bench directory's side-by-side tables
  kpath report runs/run-1700000000 --format pprof -o cpu.pb.gz   the on-CPU pprof profile
  kpath report runs/run-1700000000 --format pprof --profile locks -o -   lock waits, to stdout")]
pub struct ReportArgs {
    /// Run directory written by `kpath record` (or its run.json), or a bench directory (its
    /// bench.json) written by `kpath bench` or `kpath scenario`.
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Where the report goes, `-` for stdout. Default: stdout for table and json,
    /// DIR/report.html for html, DIR/<profile>.pb.gz for pprof.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Rows per syscalls and locks table.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// After the tables, a latency histogram for each row they show (top syscalls, each
    /// kpath, run-queue delay). Runs only.
    #[arg(long)]
    pub histograms: bool,
    /// Group the lock table by caller, lock class or waiting thread (as `record --locks-by`).
    #[arg(long, value_enum, default_value_t = crate::families::locks::LocksBy::Caller)]
    pub locks_by: crate::families::locks::LocksBy,
    /// Which pprof profile --format pprof writes.
    #[arg(long, value_enum, default_value_t = PprofProfile::Oncpu)]
    pub profile: PprofProfile,
}

/// The profiles of `--format pprof`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PprofProfile {
    Oncpu,
    Offcpu,
    Locks,
}

impl PprofProfile {
    fn kind(self) -> PprofKind {
        match self {
            PprofProfile::Oncpu => PprofKind::Oncpu,
            PprofProfile::Offcpu => PprofKind::Offcpu,
            PprofProfile::Locks => PprofKind::Locks,
        }
    }
}

/// Output formats of `kpath report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    /// Writes DIR/report.html (a bench directory's when DIR holds bench.json), or -o FILE.
    Html,
    /// A gzipped pprof profile of a run (--profile), to DIR/<profile>.pb.gz or -o FILE.
    Pprof,
}

impl ReportArgs {
    /// The `run.json` named by `dir`, which may also be the file itself.
    pub fn run_json(&self) -> PathBuf {
        run_json_path(&self.dir)
    }

    pub fn table_options(&self) -> table::TableOptions {
        table::TableOptions {
            top: self.top,
            locks_by: self.locks_by,
        }
    }

    fn format(&self) -> ReportFormat {
        if self.json {
            ReportFormat::Json
        } else {
            self.format
        }
    }
}

fn run_json_path(dir: &Path) -> PathBuf {
    if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join("run.json")
    }
}

/// What DIR holds.
enum Source {
    Run { run: Box<Run>, dir: PathBuf },
    Bench { bench: Box<Bench>, dir: PathBuf },
}

fn read_source(dir: &Path) -> anyhow::Result<Source> {
    let bench_json = dir.join("bench.json");
    if bench_json.is_file() {
        let mut bench = bench::read_bench(&bench_json)?;
        // Today's rules over the strategies' runs (kept as written when none can be read).
        if let Some(f) = bench::findings(dir, &bench) {
            bench.findings = f;
        }
        return Ok(Source::Bench {
            bench: Box::new(bench),
            dir: dir.to_path_buf(),
        });
    }
    let path = run_json_path(dir);
    let mut run: Run =
        json::from_file(&path).with_context(|| format!("cannot report on {}", dir.display()))?;
    // Always today's rules: a run recorded before a rule existed gets it too.
    run.findings = crate::findings::for_run(&run);
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok(Source::Run {
        run: Box::new(run),
        dir,
    })
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let format = args.format();
    let source = read_source(&args.dir)?;
    if format == ReportFormat::Pprof {
        let Source::Run { run, dir } = &source else {
            bail!(
                "{} is a bench directory: --format pprof exports one run (one of its run directories)",
                args.dir.display()
            );
        };
        return write_pprof(dir, run, args.profile.kind(), args.output.as_deref());
    }
    let text = match (&source, format) {
        (Source::Run { run, .. }, ReportFormat::Table) => {
            let opts = args.table_options();
            let mut text = table::render(run, &opts);
            if args.histograms {
                text.push_str(&table::histograms(run, &opts));
            }
            text
        }
        (Source::Run { run, .. }, ReportFormat::Json) => json::to_string_pretty(run),
        (Source::Run { run, dir }, ReportFormat::Html) => {
            html::run_page(run, &html::run_figures(dir, run, "run"))
        }
        (Source::Bench { bench, .. }, ReportFormat::Table) => bench::table::render(bench),
        (Source::Bench { bench, .. }, ReportFormat::Json) => {
            let mut s = serde_json::to_string_pretty(bench)?;
            s.push('\n');
            s
        }
        (Source::Bench { bench, dir }, ReportFormat::Html) => {
            bench::report::bench_report_html(dir, bench)
        }
        (_, ReportFormat::Pprof) => unreachable!("handled above"),
    };
    let output = match (&args.output, format, &source) {
        (Some(o), _, _) => Some(o.clone()),
        // HTML inlines the graphs: by default it goes next to the data.
        (None, ReportFormat::Html, Source::Run { dir, .. } | Source::Bench { dir, .. }) => {
            Some(dir.join("report.html"))
        }
        (None, _, _) => None,
    };
    match output {
        Some(path) if !super::output::is_stdout(&path) => {
            std::fs::write(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("kpath: wrote {}", path.display());
            Ok(())
        }
        _ => super::output::write_stdout(text.as_bytes()),
    }
}

/// Re-exports a run's pprof profile: the one the recording wrote (read and checked), else,
/// for a run recorded before kpath wrote pprof, one made from its folded file (function
/// names only).
fn write_pprof(
    dir: &Path,
    run: &Run,
    kind: PprofKind,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let recorded = dir.join(kind.file_name());
    let profile = if recorded.is_file() {
        pprof::read_file(&recorded)?
    } else if let Some(folded) = kind
        .folded_name()
        .map(|f| dir.join(f))
        .filter(|p| p.is_file())
    {
        let text = std::fs::read_to_string(&folded)
            .with_context(|| format!("reading {}", folded.display()))?;
        pprof::from_folded(&text, kind, run)
            .with_context(|| format!("converting {}", folded.display()))?
    } else {
        bail!(
            "{} has no {} stacks (neither {} nor a folded file): record with the {} family",
            dir.display(),
            kind.name(),
            kind.file_name(),
            match kind {
                PprofKind::Oncpu => "oncpu",
                PprofKind::Offcpu => "sched",
                PprofKind::Locks => "locks",
            }
        );
    };
    let bytes = pprof::encode(&profile);
    match output {
        Some(o) if super::output::is_stdout(o) => super::output::write_stdout(&bytes),
        o => {
            let path = o.map_or(recorded, Path::to_path_buf);
            std::fs::write(&path, &bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("kpath: wrote {}", path.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        report: ReportArgs,
    }

    fn args(dir: &Path, format: ReportFormat) -> ReportArgs {
        ReportArgs {
            dir: dir.to_path_buf(),
            format,
            json: false,
            output: None,
            top: 25,
            histograms: false,
            locks_by: Default::default(),
            profile: PprofProfile::Oncpu,
        }
    }

    #[test]
    fn parses_defaults_and_flags() {
        let a = Cli::parse_from(["kpath", "runs/1"]).report;
        assert_eq!(a.dir, PathBuf::from("runs/1"));
        assert_eq!(a.format(), ReportFormat::Table);
        assert_eq!(a.top, 25);
        assert!(!a.histograms);
        let a = Cli::parse_from(["kpath", "d", "--format", "json", "--top", "5"]).report;
        assert_eq!((a.format(), a.top), (ReportFormat::Json, 5));
        let a = Cli::parse_from(["kpath", "d", "--json", "-o", "-"]).report;
        assert_eq!(a.format(), ReportFormat::Json);
        assert_eq!(a.output, Some(PathBuf::from("-")));
        assert!(Cli::try_parse_from(["kpath", "d", "--json", "--format", "html"]).is_err());
        assert_eq!(
            Cli::parse_from(["kpath", "d", "--format", "html"])
                .report
                .format(),
            ReportFormat::Html
        );
        assert!(Cli::try_parse_from(["kpath", "d", "--format", "xml"]).is_err());
    }

    #[test]
    fn missing_run_names_the_file() {
        let dir = std::env::temp_dir().join(format!("kpath-report-missing-{}", std::process::id()));
        let e = run(args(&dir, ReportFormat::Table)).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&dir.join("run.json").display().to_string()),
            "{msg}"
        );
    }

    #[test]
    fn malformed_run_names_the_file() {
        let dir = std::env::temp_dir().join(format!("kpath-report-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("run.json"), "{ not json").unwrap();
        let e = run(args(&dir, ReportFormat::Json)).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        let msg = format!("{e:#}");
        assert!(msg.contains("run.json is not a valid run.json"), "{msg}");
    }

    #[test]
    fn pprof_of_an_old_run_comes_from_its_folded_file() {
        let dir = std::env::temp_dir().join(format!("kpath-report-pprof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("run.json"),
            serde_json::to_string(&Run::default()).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join("offcpu.folded"),
            "t;main;schedule_[k] 1500\nt;main 500\n",
        )
        .unwrap();
        let mut a = args(&dir, ReportFormat::Pprof);
        a.profile = PprofProfile::Offcpu;
        run(a.clone()).unwrap();
        let p = pprof::read_file(&dir.join("offcpu.pb.gz")).unwrap();
        let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
        // No locks stacks in this run: the error says which family records them.
        a.profile = PprofProfile::Locks;
        let e = format!("{:#}", run(a).unwrap_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(total, 2000);
        assert!(e.contains("record with the locks family"), "{e}");
    }

    #[test]
    fn a_bench_directory_is_read_as_a_bench() {
        let dir = std::env::temp_dir().join(format!("kpath-report-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bench = Bench::default();
        std::fs::write(
            dir.join("bench.json"),
            serde_json::to_string(&bench).unwrap(),
        )
        .unwrap();
        let source = read_source(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(source, Ok(Source::Bench { .. })));
    }
}
