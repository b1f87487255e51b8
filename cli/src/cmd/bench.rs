//! `kpath bench`: its arguments, converted into [`BenchOptions`] for [`crate::bench::bench`].
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use servers::serve::{Io, Model};

use crate::bench::{self, json::Strategy, table, BenchOptions};

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  sudo kpath bench --io mmap,sendfile,cached --model epoll --keepalive 1 -d 3 -o runs/bench
  sudo kpath bench --io cached --model epoll,threadpool,uring --keepalive 1,100
  sudo kpath bench --io sendfile --keepalive 0 --files 1,1000     one file for all vs 1000 files
  sudo kpath bench --io mmap,cached -d 2 --json | jq '.runs[].requests_per_sec'
  kpath report runs/bench-1700000000                  its tables again")]
pub struct BenchArgs {
    /// File strategies, comma separated (read, mmap, sendfile, sendfile-nocork, cached).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cached")]
    pub io: Vec<Io>,
    /// Threading models, comma separated (epoll, threadpool, thread, tokio, uring).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "epoll")]
    pub model: Vec<Model>,
    /// Requests per connection, comma separated (1 closes after every reply; 0 is unlimited).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub keepalive: Vec<u32>,
    /// Concurrent connections of the load generator (`kpath load -c`).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// Seconds of load per strategy (fractions allowed).
    #[arg(short = 'd', long, default_value_t = 5.0, value_parser = servers::args::seconds)]
    pub duration: f64,
    /// Size in bytes of the file every request fetches.
    #[arg(long = "file", default_value_t = 1400)]
    pub file_size: usize,
    /// Distinct files (each --file bytes) the requests rotate over, comma separated: 1 sends
    /// one file to every connection, N spreads each connection's requests over N files.
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    pub files: Vec<u32>,
    /// On-CPU sampling frequency (Hz) of each recording.
    #[arg(short = 'F', long, default_value_t = 99)]
    pub frequency: u64,
    /// Print bench.json to stdout instead of the tables (it is written to the directory too).
    #[arg(long)]
    pub json: bool,
    /// How each recording takes user stacks (`dwarf` or `fp`; default: dwarf where the kernel
    /// supports it), as `kpath record --call-graph`.
    #[arg(long, value_name = "dwarf|fp")]
    pub call_graph: Option<crate::probes::CallGraph>,
    /// Bench directory (default: runs/bench-<unix time>); `-o -` is refused.
    #[arg(short, long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

impl BenchArgs {
    /// Every combination, io outermost, so `--io a,b` reads as the comparison's rows.
    pub fn strategies(&self) -> Vec<Strategy> {
        let mut out = Vec::new();
        for &io in &self.io {
            for &model in &self.model {
                for &ka in &self.keepalive {
                    for &files in &self.files {
                        let s = Strategy {
                            files: (files > 1).then_some(files),
                            ..Strategy::new(io, model, ka)
                        };
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                }
            }
        }
        out
    }

    pub fn into_options(self, kpath: PathBuf, now_secs: u64) -> BenchOptions {
        BenchOptions {
            strategies: self.strategies(),
            connections: self.connections,
            duration: Duration::from_secs_f64(self.duration),
            file_size: self.file_size,
            frequency: self.frequency,
            call_graph: self.call_graph,
            out_dir: self
                .output
                .unwrap_or_else(|| PathBuf::from(format!("runs/bench-{now_secs}"))),
            kpath,
            ..BenchOptions::default()
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    super::output::directory(
        args.output.as_ref(),
        "a bench",
        "kpath report DIR prints its tables",
    )?;
    if !crate::kernel::features::is_root() {
        anyhow::bail!("kpath bench records with BPF and needs root: run it with sudo");
    }
    let exe = std::env::current_exe().context("locating the kpath binary")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let json = args.json;
    let opts = args.into_options(exe, now);
    let bench = bench::bench(&opts).context("kpath bench")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&bench)?);
    } else {
        print!("{}", table::render(&bench));
    }
    eprintln!(
        "kpath: bench written to {} (report.html, bench.json, runs/, diff/)",
        opts.out_dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn every_combination_in_order() {
        let a = Cli::parse_from([
            "kpath",
            "--io",
            "mmap,cached",
            "--model",
            "epoll",
            "--keepalive",
            "1,0",
        ])
        .bench;
        let names: Vec<String> = a.strategies().iter().map(Strategy::name).collect();
        assert_eq!(
            names,
            [
                "mmap-epoll-ka1",
                "mmap-epoll-kainf",
                "cached-epoll-ka1",
                "cached-epoll-kainf"
            ]
        );
        let o = a.into_options(PathBuf::from("/k"), 7);
        assert_eq!(o.out_dir, PathBuf::from("runs/bench-7"));
        assert_eq!(o.duration, Duration::from_secs(5));
        assert!(Cli::try_parse_from(["kpath", "--io", "bogus"]).is_err());

        let a = Cli::parse_from(["kpath", "--io", "sendfile-nocork", "--files", "1,1000"]).bench;
        let names: Vec<String> = a.strategies().iter().map(Strategy::name).collect();
        assert_eq!(
            names,
            [
                "sendfile-nocork-epoll-ka1",
                "sendfile-nocork-epoll-ka1-1000files"
            ]
        );
        assert!(Cli::try_parse_from(["kpath", "--files", "0"]).is_err());
    }

    #[test]
    fn defaults_match_the_library() {
        let o = Cli::parse_from(["kpath"])
            .bench
            .into_options(PathBuf::from("/k"), 7);
        let d = BenchOptions::default();
        assert_eq!(o.strategies, d.strategies);
        assert_eq!(
            (o.connections, o.duration, o.file_size, o.frequency),
            (d.connections, d.duration, d.file_size, d.frequency)
        );
    }
}
