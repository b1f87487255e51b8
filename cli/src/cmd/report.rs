//! `kpath report DIR`: re-render a recorded run from its `run.json`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::render::{html, json, table};

#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Run directory written by `kpath record` (or its run.json).
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ReportFormat,
    /// Rows per syscalls and locks table.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Show a latency histogram under each table row.
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
    /// Writes DIR/report.html (a bench directory's when DIR holds bench.json).
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
}

fn run_json_path(dir: &Path) -> PathBuf {
    if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join("run.json")
    }
}

/// `--format html`: the report goes to a file next to the data, since it inlines the graphs.
fn write_html(dir: &Path) -> anyhow::Result<()> {
    let bench_json = dir.join("bench.json");
    let out = if bench_json.is_file() {
        let bench = crate::bench::read_bench(&bench_json)?;
        crate::bench::report::write_bench_report(dir, &bench)?
    } else {
        let path = run_json_path(dir);
        let run = json::from_file(&path)
            .with_context(|| format!("cannot report on {}", dir.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        html::write_run_report(dir, &run)?
    };
    eprintln!("kpath: wrote {}", out.display());
    Ok(())
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    if args.format == ReportFormat::Html {
        return write_html(&args.dir);
    }
    let path = args.run_json();
    let run = json::from_file(&path)
        .with_context(|| format!("cannot report on {}", args.dir.display()))?;
    let text = match args.format {
        ReportFormat::Table => {
            let opts = args.table_options();
            let mut text = table::render(&run, &opts);
            if args.histograms {
                text.push_str(&table::histograms(&run, &opts));
            }
            text
        }
        ReportFormat::Json => json::to_string_pretty(&run),
        ReportFormat::Html => unreachable!("written to a file above"),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // `kpath report DIR | head` is fine.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write the report to stdout"),
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

    #[test]
    fn parses_defaults_and_flags() {
        let a = Cli::parse_from(["kpath", "runs/1"]).report;
        assert_eq!(a.dir, PathBuf::from("runs/1"));
        assert_eq!(a.format, ReportFormat::Table);
        assert_eq!(a.top, 25);
        assert!(!a.histograms);
        let a = Cli::parse_from(["kpath", "d", "--format", "json", "--top", "5"]).report;
        assert_eq!((a.format, a.top), (ReportFormat::Json, 5));
        assert_eq!(
            Cli::parse_from(["kpath", "d", "--format", "html"])
                .report
                .format,
            ReportFormat::Html
        );
        assert!(Cli::try_parse_from(["kpath", "d", "--format", "xml"]).is_err());
    }

    #[test]
    fn missing_run_names_the_file() {
        let dir = std::env::temp_dir().join(format!("kpath-report-missing-{}", std::process::id()));
        let e = run(ReportArgs {
            dir: dir.clone(),
            format: ReportFormat::Table,
            top: 25,
            histograms: false,
            locks_by: Default::default(),
        })
        .unwrap_err();
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
        let e = run(ReportArgs {
            dir: dir.clone(),
            format: ReportFormat::Json,
            top: 25,
            histograms: false,
            locks_by: Default::default(),
        })
        .unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        let msg = format!("{e:#}");
        assert!(msg.contains("run.json is not a valid run.json"), "{msg}");
    }
}
