//! The one way xtask runs a long-lived child (servers, `kpath record`, `sleep`, `cargo test`):
//! a [`Proc`] is stopped and reaped when dropped, so an error anywhere leaves nothing running.

use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

/// How long a child gets to exit after the stop signal before it is killed.
pub const GRACE: Duration = Duration::from_secs(3);

/// A running child process. Dropping it sends SIGTERM, waits up to its grace period, then sends
/// SIGKILL, and always reaps it.
pub struct Proc {
    /// `None` once reaped.
    child: Option<Child>,
    shown: String,
    grace: Duration,
}

impl Proc {
    /// Starts `cmd`; errors name the command as typed in a shell.
    pub fn spawn(cmd: &mut Command) -> Result<Proc> {
        let shown = util::display(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start `{shown}`"))?;
        Ok(Proc {
            child: Some(child),
            shown,
            grace: GRACE,
        })
    }

    /// Gives the child longer (or less) than [`GRACE`] to exit once signalled.
    pub fn with_grace(mut self, grace: Duration) -> Proc {
        self.grace = grace;
        self
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Polls every `poll` until `path` exists (kpath's `--ready-file`), failing when the child
    /// exits first or `timeout` passes; `what` names the child in the errors.
    pub fn wait_for_file(
        &mut self,
        path: &std::path::Path,
        what: &str,
        poll: Duration,
        timeout: Duration,
    ) -> Result<()> {
        let t = Instant::now();
        while !path.exists() {
            if let Some(status) = self.try_wait()? {
                bail!("{what} exited before attaching: {status}");
            }
            if t.elapsed() > timeout {
                bail!("{what} did not attach within {} s", timeout.as_secs());
            }
            std::thread::sleep(poll);
        }
        Ok(())
    }

    /// The child's piped stdout, once.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Its exit status if it has exited (then it is reaped), else `None`.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        let status = child
            .try_wait()
            .with_context(|| format!("waiting for `{}`", self.shown))?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// Waits for the child to exit by itself, however long that takes.
    pub fn wait(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("process already reaped")?;
        child
            .wait()
            .with_context(|| format!("waiting for `{}`", self.shown))
    }

    /// Sends `sig` (SIGINT lets `kpath record` write its run), waits up to the grace period,
    /// then kills. Returns the exit status.
    pub fn stop(mut self, sig: libc::c_int) -> Result<ExitStatus> {
        let child = self.child.take().context("process already reaped")?;
        terminate(child, sig, self.grace).with_context(|| format!("stopping `{}`", self.shown))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = terminate(child, libc::SIGTERM, self.grace);
        }
    }
}

fn terminate(mut child: Child, sig: libc::c_int, grace: Duration) -> std::io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    signal(child.id(), sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL; an already-exited child makes this fail harmlessly.
    let _ = child.kill();
    child.wait()
}

/// Sends `sig` to `pid` (std's Child offers only SIGKILL). Only called on children we have not
/// reaped yet, so the pid cannot have been reused by another process.
fn signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes two integers and touches no memory of ours; a pid that is already
    // gone only makes it return ESRCH, which we ignore.
    unsafe { libc::kill(pid, sig) };
}

/// utime + stime of a process (all its threads), in seconds.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let fields = stat_fields(&stat)?;
    Ok((fields[11] + fields[12]) as f64 / clock_ticks())
}

/// cutime + cstime of this process: the CPU time of children already waited for (wrk).
pub fn children_cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields = stat_fields(&stat)?;
    Ok((fields[13] + fields[14]) as f64 / clock_ticks())
}

/// The numeric fields after `(comm)`, starting with field 3 (state, parsed as 0).
fn stat_fields(stat: &str) -> Result<Vec<u64>> {
    let (_, rest) = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat format")?;
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    if fields.len() < 15 {
        bail!("short /proc/PID/stat: {stat}");
    }
    Ok(fields)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf(3) takes an integer name and reads no memory of ours; _SC_CLK_TCK is a
    // valid name, and an error (-1) is handled below.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// VmRSS of a process in kB, from /proc/PID/status.
pub fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn alive(pid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn drop_terminates_and_reaps() {
        let p = Proc::spawn(Command::new("sleep").arg("600")).unwrap();
        let pid = p.id();
        assert!(alive(pid));
        drop(p);
        // Reaped, so not even a zombie is left.
        assert!(!alive(pid));
    }

    #[test]
    fn stop_kills_a_child_that_ignores_the_signal() {
        let mut cmd = Command::new("sh");
        // exec keeps the ignored disposition, so the signalled process is sleep itself.
        cmd.args(["-c", "trap '' TERM; echo up; exec sleep 600"])
            .stdout(std::process::Stdio::piped());
        let mut p = Proc::spawn(&mut cmd)
            .unwrap()
            .with_grace(Duration::from_millis(200));
        // Wait until the trap is set.
        let mut out = p.take_stdout().unwrap();
        let mut buf = [0u8; 3];
        std::io::Read::read_exact(&mut out, &mut buf).unwrap();
        let started = Instant::now();
        let status = p.stop(libc::SIGTERM).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[test]
    fn stat_fields_survive_spaces_and_parens_in_comm() {
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 7 3 20 0";
        let f = stat_fields(stat).unwrap();
        assert_eq!(f[11] + f[12], 300);
        assert_eq!(f[13] + f[14], 10);
        assert!(stat_fields("1 (x) S 2").is_err());
    }

    #[test]
    fn wait_returns_the_exit_status() {
        let p = Proc::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(p.wait().unwrap().code(), Some(3));
        assert!(Proc::spawn(&mut Command::new("/no/such/program")).is_err());
    }
}
