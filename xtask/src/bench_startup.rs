//! `cargo xtask bench-startup`: how long `kpath record -p PID` takes from being started until
//! every probe is attached, and the same for bpftrace with a comparable program when it is
//! installed. The target is an idle `sleep 600`, so the time is kpath's own start-up (load,
//! verify, attach, read what it needs from /proc and BTF), not the target's.
//!
//! kpath: the clock starts right before spawning `kpath record -p PID -d 0.2 --ready-file F`
//! and stops when F exists, polled every millisecond (kpath creates F once every probe is
//! attached). The exit column is spawn to exit: attach, 0.2 s of recording, then collecting and
//! writing the run.
//!
//! bpftrace: the clock starts right before spawning `bpftrace -B line -e PROGRAM`; "attaching"
//! is when it prints `Attaching N probes...` (the program is parsed and compiled), "ready" when
//! the line that its BEGIN probe printf()s reaches stdout. BEGIN fires before the other probes
//! are attached, but bpftrace reads printf output from its perf buffer only once it enters its
//! event loop, after attaching every probe (bpftrace 0.17's `BPFtrace::run`), so "ready" is the
//! fair counterpart of kpath's ready file, give or take reading one perf buffer.
//!
//! A benchmark, not a test: it prints what it measured and asserts nothing about the times.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::Proc;
use crate::record::{build_release_kpath, RecordSpec, Recording, ALL_FAMILIES};
use crate::stats::Summary;
use crate::util;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rounds; each starts kpath (and bpftrace, when installed) once.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Probe families to attach (kpath record --probes); bpftrace gets the matching probes.
    #[arg(long, default_value = ALL_FAMILIES)]
    pub probes: String,
}

/// How long kpath records once attached.
const RECORD_SECS: &str = "0.2";

/// bpftrace probes standing in for each kpath family, filtered to the target like kpath's
/// (`PID` is replaced by the target's pid). kpaths on this kernel falls back to on-CPU stack
/// samples, hence a profile probe.
const BPFTRACE_PROBES: &[(&str, &str)] = &[
    (
        "syscalls",
        "tracepoint:raw_syscalls:sys_enter /pid == PID/ { @sys_start[tid] = nsecs; }
tracepoint:raw_syscalls:sys_exit /pid == PID && @sys_start[tid]/ {
  @syscall_ns[args->id] = hist(nsecs - @sys_start[tid]); delete(@sys_start[tid]); }",
    ),
    (
        "kpaths",
        "profile:hz:99 /pid == PID/ { @kpaths[kstack] = count(); }",
    ),
    (
        "sched",
        "tracepoint:sched:sched_switch /args->prev_pid == PID || args->next_pid == PID/ {
  @switches = count(); }
tracepoint:sched:sched_wakeup /args->pid == PID/ { @wakeups = count(); }
tracepoint:sched:sched_wakeup_new /args->pid == PID/ { @wakeups_new = count(); }",
    ),
    (
        "locks",
        "tracepoint:lock:contention_begin /pid == PID/ { @lock_start[tid] = nsecs; }
tracepoint:lock:contention_end /pid == PID && @lock_start[tid]/ {
  @lock_ns = hist(nsecs - @lock_start[tid]); delete(@lock_start[tid]); }",
    ),
    (
        "oncpu",
        "profile:hz:99 /pid == PID/ { @oncpu[kstack, ustack] = count(); }",
    ),
];

pub fn run(args: &Args) -> Result<()> {
    if !util::is_root() {
        bail!("bench-startup loads BPF programs: run it as root");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let program_for = |pid: u32| bpftrace_program(&args.probes, pid);
    program_for(0)?; // unknown family names fail before anything is built
    let kpath = build_release_kpath()?;
    let dir = util::target_dir().join("bench-startup");
    std::fs::create_dir_all(&dir)?;
    let bpftrace = util::which("bpftrace");
    let idle = Proc::spawn(Command::new("sleep").arg("600"))?;
    let program = program_for(idle.id())?;

    let (mut kpath_ms, mut bpftrace_ms) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        kpath_ms.push(kpath_round(&kpath, idle.id(), &args.probes, &dir)?);
        if let Some(bpftrace) = &bpftrace {
            bpftrace_ms.push(bpftrace_round(bpftrace, &program, &dir)?);
        }
    }
    drop(idle);

    println!(
        "\nstart-up to attached, {} rounds, --probes {}, target: an idle `sleep 600`",
        args.rounds, args.probes
    );
    println!(
        "\nkpath record -p PID -d {RECORD_SECS} --ready-file F: attached = spawn -> F exists \
         (polled every 1 ms); exit = spawn -> exit"
    );
    print_table(&["attached", "exit"], &kpath_ms);
    match &bpftrace {
        Some(bpftrace) => {
            println!(
                "\n{} -B line, {} probes plus BEGIN: attaching = spawn -> 'Attaching N \
                 probes...'; ready = spawn -> BEGIN's printf on stdout (read only once every \
                 probe is attached)",
                version(bpftrace),
                probe_count(&program) - 1
            );
            print_table(&["attaching", "ready"], &bpftrace_ms);
        }
        None => println!("\nbpftrace: not installed (apt-get install bpftrace), not compared"),
    }
    Ok(())
}

/// One kpath round: ms from spawn to attached, and from spawn to exit.
fn kpath_round(kpath: &Path, pid: u32, probes: &str, dir: &Path) -> Result<Vec<f64>> {
    let mut rec = Recording::start(&RecordSpec {
        kpath,
        pid,
        probes,
        secs: RECORD_SECS,
        dir,
        extra: &[],
    })?;
    let attached = rec.wait_attached(Duration::from_millis(1))?;
    let (status, exited) = rec.wait_exit()?;
    if !status.success() {
        bail!("kpath record failed: {status}");
    }
    Ok(vec![ms(attached), ms(exited)])
}

/// One bpftrace round: ms from spawn to "Attaching N probes...", and to BEGIN's "ready" line.
fn bpftrace_round(bpftrace: &Path, program: &str, dir: &Path) -> Result<Vec<f64>> {
    let err_path = dir.join("bpftrace.stderr");
    let mut cmd = Command::new(bpftrace);
    cmd.args(["-B", "line", "-e", program])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&err_path)?);
    let started = Instant::now();
    let mut bt = Proc::spawn(&mut cmd)?;
    let stdout = bt.take_stdout().context("bpftrace has no stdout")?;
    let (tx, rx) = mpsc::channel();
    // Lines with the time they arrived; the thread ends at EOF, when bpftrace exits.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send((line, started.elapsed()));
        }
    });
    let mut attaching = None;
    let ready = loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((line, at)) if line.starts_with("Attaching ") => attaching = Some(at),
            Ok((line, at)) if line == "ready" => break at,
            Ok(_) => {}
            Err(_) => {
                drop(bt);
                let err = std::fs::read_to_string(&err_path).unwrap_or_default();
                bail!("bpftrace printed no 'ready' line; its stderr:\n{err}");
            }
        }
    };
    // SIGINT: bpftrace prints its maps and exits; the reader drains them.
    bt.stop(libc::SIGINT)?;
    let _ = reader.join();
    let attaching = attaching.context("bpftrace printed 'ready' before 'Attaching N probes'")?;
    Ok(vec![ms(attaching), ms(ready)])
}

/// The bpftrace program for `probes` (kpath's family names) tracing `pid`.
fn bpftrace_program(probes: &str, pid: u32) -> Result<String> {
    let mut program = String::from("BEGIN { printf(\"ready\\n\"); }\n");
    for family in probes.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (_, text) = BPFTRACE_PROBES
            .iter()
            .find(|(name, _)| *name == family)
            .with_context(|| format!("unknown probe family {family:?} (known: {ALL_FAMILIES})"))?;
        program.push_str(&text.replace("PID", &pid.to_string()));
        program.push('\n');
    }
    Ok(program)
}

/// Probes in a bpftrace program: one per line that opens a block at the top level.
fn probe_count(program: &str) -> usize {
    program
        .lines()
        .filter(|l| !l.starts_with(' ') && l.contains('{'))
        .count()
}

fn version(bpftrace: &Path) -> String {
    util::stdout_if_ok(Command::new(bpftrace).arg("--version"))
        .ok()
        .flatten()
        .map_or_else(|| "bpftrace".to_string(), |v| v.trim().to_string())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Per-round rows (one value per column, in ms), then median, min and max per column.
fn print_table(columns: &[&str], rounds: &[Vec<f64>]) {
    let header: String = columns.iter().map(|c| format!(" {c:>10}")).collect();
    println!("{:<8}{header}", "round");
    for (i, row) in rounds.iter().enumerate() {
        let cells: String = row.iter().map(|v| format!(" {v:>7.1} ms")).collect();
        println!("{:<8}{cells}", i + 1);
    }
    let summaries: Vec<Option<Summary>> = (0..columns.len())
        .map(|c| Summary::of(&rounds.iter().map(|r| r[c]).collect::<Vec<_>>()))
        .collect();
    for name in ["median", "min", "max"] {
        let cells: String = summaries
            .iter()
            .map(|s| match s {
                Some(s) => {
                    let v = match name {
                        "median" => s.median,
                        "min" => s.min,
                        _ => s.max,
                    };
                    format!(" {v:>7.1} ms")
                }
                None => format!(" {:>10}", "-"),
            })
            .collect();
        println!("{name:<8}{cells}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_bpftrace_probes() {
        let program = bpftrace_program(ALL_FAMILIES, 42).unwrap();
        assert!(program.starts_with("BEGIN"));
        assert!(!program.contains("PID"));
        assert!(program.contains("/pid == 42/"));
        // BEGIN plus 2 + 1 + 3 + 2 + 1.
        assert_eq!(probe_count(&program), 10);
        let sched = bpftrace_program("sched", 1).unwrap();
        assert_eq!(probe_count(&sched), 4);
        assert!(bpftrace_program("syscalls,nope", 1).is_err());
    }
}
