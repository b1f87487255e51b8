//! The kpath binary the benchmarks run, and `kpath record -p PID` in the background with
//! `--ready-file`, which kpath creates once every probe is attached.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::proc::Proc;
use crate::util;

/// Every probe family, as `kpath record --probes` takes them.
pub const ALL_FAMILIES: &str = "syscalls,kpaths,sched,locks,oncpu";

/// Builds the release kpath (its build script builds the eBPF programs) and returns its path.
pub fn build_release_kpath() -> Result<PathBuf> {
    util::run(util::cargo().args(["build", "--release", "-p", "kpath"]))?;
    Ok(util::target_dir().join("release/kpath"))
}

/// What to record: `kpath record -p PID --probes PROBES -d SECS -o DIR`.
pub struct RecordSpec<'a> {
    pub kpath: &'a Path,
    pub pid: u32,
    pub probes: &'a str,
    pub secs: &'a str,
    /// Holds the ready file and, as `DIR/run`, the run directory.
    pub dir: &'a Path,
    /// More `kpath record` options.
    pub extra: &'a [&'a str],
}

/// A background `kpath record`, stopped on drop like every [`Proc`].
pub struct Recording {
    proc: Proc,
    ready: PathBuf,
    started: Instant,
}

impl Recording {
    /// Starts the recording (stdout and stderr discarded); the clock of [`Self::wait_attached`]
    /// starts right before the spawn.
    pub fn start(spec: &RecordSpec) -> Result<Recording> {
        let ready = spec.dir.join("record.ready");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(spec.kpath);
        cmd.args(["record", "-p", &spec.pid.to_string()])
            .args(["--probes", spec.probes, "-d", spec.secs])
            .args(spec.extra)
            .arg("--ready-file")
            .arg(&ready)
            .arg("-o")
            .arg(spec.dir.join("run"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let started = Instant::now();
        // kpath record writes its run at the end; give it more than the default grace.
        let proc = Proc::spawn(&mut cmd)?.with_grace(Duration::from_secs(20));
        Ok(Recording {
            proc,
            ready,
            started,
        })
    }

    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    /// Polls for the ready file every `poll` (fails after 20 s or if kpath exits first);
    /// returns the time from spawning kpath until the file was seen.
    pub fn wait_attached(&mut self, poll: Duration) -> Result<Duration> {
        self.proc
            .wait_for_file(&self.ready, "kpath record", poll, Duration::from_secs(20))?;
        Ok(self.started.elapsed())
    }

    /// Waits for a recording with a short `-d` to end by itself; returns the time since spawn.
    pub fn wait_exit(self) -> Result<(ExitStatus, Duration)> {
        let started = self.started;
        let status = self.proc.wait()?;
        Ok((status, started.elapsed()))
    }

    /// Ends the recording as Ctrl-C would, so kpath writes its run.
    pub fn stop(self) -> Result<ExitStatus> {
        self.proc.stop(libc::SIGINT)
    }
}
