//! The one way xtask runs a long-lived child (servers, `kpath record`, `sleep`, `cargo test`):
//! a [`Proc`] is stopped and reaped when dropped, so an error anywhere leaves nothing running.

use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

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
    fn wait_returns_the_exit_status() {
        let p = Proc::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(p.wait().unwrap().code(), Some(3));
        assert!(Proc::spawn(&mut Command::new("/no/such/program")).is_err());
    }
}
