//! kpath's peers, measured beside it in `cargo xtask bench-overhead`'s interleaved rounds:
//! bpftrace running a program comparable to kpath's default families (shipped as
//! `xtask/peers/kpath-families.bt`), `perf record -g -F 99` and `perf trace -s`, each attached
//! to the server's pid. Each is started, waited for until it has attached, and stopped with
//! SIGINT (as Ctrl-C would) after the load, so its exit work is not in the measured window.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::Proc;
use crate::util;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Bpftrace,
    PerfRecord,
    PerfTrace,
}

/// How long a peer may take to attach.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

impl Peer {
    pub const ALL: [Peer; 3] = [Peer::Bpftrace, Peer::PerfRecord, Peer::PerfTrace];

    pub fn label(self) -> &'static str {
        match self {
            Peer::Bpftrace => "bpftrace, comparable program",
            Peer::PerfRecord => "perf record -g -F 99",
            Peer::PerfTrace => "perf trace -s",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Peer::Bpftrace => "bpftrace",
            Peer::PerfRecord | Peer::PerfTrace => "perf",
        }
    }

    /// Whether the peer's tool is installed (`cargo xtask setup` installs both).
    pub fn available(self) -> bool {
        util::which(self.tool()).is_some()
    }

    /// The bpftrace program, in the repository.
    pub fn bpftrace_program() -> PathBuf {
        util::repo_root().join("xtask/peers/kpath-families.bt")
    }

    fn command(self, pid: u32, work: &Path) -> Command {
        let pid = pid.to_string();
        let mut cmd = Command::new(self.tool());
        match self {
            Peer::Bpftrace => {
                cmd.args(["-B", "line"])
                    .arg(Self::bpftrace_program())
                    .arg(&pid)
                    .stdout(Stdio::piped());
            }
            Peer::PerfRecord => {
                cmd.args(["record", "-g", "-F", "99", "-q", "-p", &pid, "-o"])
                    .arg(work.join("perf.data"))
                    .stdout(Stdio::null());
            }
            Peer::PerfTrace => {
                cmd.args(["trace", "-s", "-p", &pid, "-o"])
                    .arg(work.join("perf-trace.txt"))
                    .stdout(Stdio::null());
            }
        }
        cmd.stderr(Stdio::null());
        cmd
    }

    /// Starts the peer on `pid` and returns once it has attached: bpftrace prints `ready` from
    /// its BEGIN probe, which runs after every probe is attached; perf has attached once it
    /// holds perf-event descriptors and their number stopped growing.
    pub fn attach(self, pid: u32, work: &Path) -> Result<Attached> {
        std::fs::create_dir_all(work)?;
        let mut proc =
            Proc::spawn(&mut self.command(pid, work))?.with_grace(Duration::from_secs(20));
        match self {
            Peer::Bpftrace => wait_ready_line(&mut proc)?,
            Peer::PerfRecord | Peer::PerfTrace => wait_perf_events(&mut proc)?,
        }
        Ok(Attached { proc })
    }
}

/// A running peer; [`Attached::stop`] ends it as Ctrl-C would (dropping it terminates it too).
pub struct Attached {
    proc: Proc,
}

impl Attached {
    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    pub fn stop(self) -> Result<()> {
        self.proc.stop(libc::SIGINT)?;
        Ok(())
    }
}

fn wait_ready_line(proc: &mut Proc) -> Result<()> {
    let out = proc
        .take_stdout()
        .context("bpftrace's stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = false;
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if !ready && line.trim() == "ready" {
                ready = true;
                let _ = tx.send(());
            }
            // Keep reading (and discarding) so bpftrace never blocks on a full pipe.
        }
    });
    match rx.recv_timeout(ATTACH_TIMEOUT) {
        Ok(()) => Ok(()),
        Err(_) => match proc.try_wait()? {
            Some(status) => bail!("bpftrace exited before attaching: {status}"),
            None => bail!("bpftrace did not attach within {ATTACH_TIMEOUT:?}"),
        },
    }
}

fn wait_perf_events(proc: &mut Proc) -> Result<()> {
    let started = Instant::now();
    let (mut last, mut stable_since) = (0usize, Instant::now());
    while started.elapsed() < ATTACH_TIMEOUT {
        if let Some(status) = proc.try_wait()? {
            bail!("perf exited before attaching: {status}");
        }
        let n = perf_event_fds(proc.id());
        if n != last {
            (last, stable_since) = (n, Instant::now());
        } else if n > 0 && stable_since.elapsed() >= Duration::from_millis(300) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("perf did not attach within {ATTACH_TIMEOUT:?}")
}

/// How many perf-event file descriptors process `pid` holds.
fn perf_event_fds(pid: u32) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| is_perf_event_link(l))
        .count()
}

fn is_perf_event_link(link: &Path) -> bool {
    link.to_str() == Some("anon_inode:[perf_event]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bpftrace_program_is_shipped_and_filters_by_its_argument() {
        let p = std::fs::read_to_string(Peer::bpftrace_program()).unwrap();
        assert!(p.contains("printf(\"ready\\n\")"));
        for probe in [
            "raw_syscalls:sys_enter",
            "raw_syscalls:sys_exit",
            "sched:sched_switch",
            "sched:sched_wakeup",
            "lock:contention_begin",
            "lock:contention_end",
            "profile:hz:99",
        ] {
            assert!(p.contains(probe), "{probe} missing");
        }
        assert!(p.matches("$1").count() >= 4);
    }

    #[test]
    fn perf_event_descriptors_are_told_by_their_link() {
        assert!(is_perf_event_link(Path::new("anon_inode:[perf_event]")));
        assert!(!is_perf_event_link(Path::new("anon_inode:[eventpoll]")));
        assert!(!is_perf_event_link(Path::new("/dev/null")));
    }

    #[test]
    fn perf_attaches_to_a_process_and_is_seen_to() {
        if !util::is_root() || !Peer::PerfRecord.available() {
            return;
        }
        let mut sleeper = Proc::spawn(Command::new("sleep").arg("30")).unwrap();
        let work = util::target_dir().join("peers-test");
        let a = Peer::PerfRecord.attach(sleeper.id(), &work).unwrap();
        assert!(perf_event_fds(a.id()) > 0);
        a.stop().unwrap();
        assert!(sleeper.try_wait().unwrap().is_none());
    }
}
