//! `kpath report DIR`: re-render a recorded run from its `run.json`, or a bench directory
//! from its `bench.json`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::bench::{self, json::Bench};
use crate::render::{html, json, table};
use crate::run::Run;

#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:
  kpath report runs/run-1700000000                      the tables again
  kpath report runs/run-1700000000 --histograms --top 5   each top row's latency histogram, after the tables
  kpath report runs/run-1700000000 --json | jq .syscalls
  kpath report runs/run-1700000000 --format html        writes runs/run-1700000000/report.html
  kpath report runs/bench --format html -o -            a bench directory's page, to stdout
  kpath report runs/bench                               a bench directory's side-by-side tables")]
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
    /// DIR/report.html for html.
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
}

/// Output formats of `kpath report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    /// Writes DIR/report.html (a bench directory's when DIR holds bench.json), or -o FILE.
    Html,
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
