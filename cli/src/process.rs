//! The processes kpath traces: an existing one (`-p PID`), or a command it starts (`-- CMD
//! ARGS`) as a [`HeldChild`].
//!
//! A started command is forked and held before `exec` until the probes are attached and its
//! pid is in the kernel filter, so counting starts exactly at its exec.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    time::{Duration, Instant},
};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process with pid {pid}")]
    NoSuchPid { pid: u32 },
    #[error("pid {pid}")]
    Pid {
        pid: u32,
        #[source]
        source: io::Error,
    },
    #[error("empty command")]
    EmptyCommand,
    #[error("command argument contains a NUL byte: {arg:?}")]
    NulInArgument { arg: String },
    #[error("cannot run {program:?}")]
    Exec {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{call} failed")]
    Sys {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Checks that `pid` names a live process (threads' ids are not accepted: use the tgid).
pub fn check_pid(pid: u32) -> Result<(), ProcessError> {
    if pid == 0 || pid > i32::MAX as u32 {
        return Err(ProcessError::NoSuchPid { pid });
    }
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => {
            let tgid = status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok());
            if tgid.is_some_and(|t| t != pid) {
                return Err(ProcessError::Pid {
                    pid,
                    source: io::Error::other(format!(
                        "is a thread of process {}; pass that pid",
                        tgid.unwrap_or_default()
                    )),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ProcessError::NoSuchPid { pid }),
        Err(source) => Err(ProcessError::Pid { pid, source }),
    }
}

/// Whether `pid` still runs (a zombie counts as gone).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised comm, which may itself contain ')'.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// A command forked by kpath and held before exec until [`HeldChild::release`].
pub struct HeldChild {
    pub pid: u32,
    go: Option<OwnedFd>,
    exec_err: Option<OwnedFd>,
    program: String,
    status: Option<i32>,
}

/// Waits until `pid` is blocked in read(2) (from /proc/PID/syscall), or `limit` passes, or the
/// kernel does not say (no /proc/PID/syscall): best effort, never an error.
fn wait_blocked_in_read(pid: u32, limit: Duration) {
    let start = Instant::now();
    let path = format!("/proc/{pid}/syscall");
    while start.elapsed() < limit {
        match std::fs::read_to_string(&path) {
            Ok(text) if in_syscall(&text, libc::SYS_read) => return,
            Ok(_) => std::thread::sleep(Duration::from_micros(200)),
            Err(_) => return,
        }
    }
}

/// Whether a /proc/PID/syscall line ("NR arg1 ... sp pc", or "running"/"-1 ...") shows the task
/// blocked in syscall `nr`.
fn in_syscall(text: &str, nr: libc::c_long) -> bool {
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse::<libc::c_long>().ok())
        == Some(nr)
}

fn pipe(flags: libc::c_int) -> Result<(OwnedFd, OwnedFd), ProcessError> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        return Err(ProcessError::Sys {
            call: "pipe2",
            source: io::Error::last_os_error(),
        });
    }
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl HeldChild {
    /// Forks `argv`; the child waits for [`HeldChild::release`] before it execs.
    pub fn spawn(argv: &[String]) -> Result<HeldChild, ProcessError> {
        let program = argv.first().ok_or(ProcessError::EmptyCommand)?.clone();
        let args: Vec<CString> = argv
            .iter()
            .map(|a| {
                CString::new(a.as_bytes())
                    .map_err(|_| ProcessError::NulInArgument { arg: a.clone() })
            })
            .collect::<Result<_, _>>()?;
        let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let (go_r, go_w) = pipe(libc::O_CLOEXEC)?;
        let (err_r, err_w) = pipe(libc::O_CLOEXEC)?;

        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(ProcessError::Sys {
                call: "fork",
                source: io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            // HeldChild: only async-signal-safe calls from here on.
            unsafe {
                let mut b = 0u8;
                libc::close(go_w.as_raw_fd());
                libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                // kpath dropped the pipe without releasing us: it failed, do not run.
                if b != 1 {
                    libc::_exit(126);
                }
                // No other syscall between release and exec: counting starts at execve.
                // (exec itself resets kpath's signal handlers to the default.)
                libc::execvp(ptrs[0], ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(err_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(go_r);
        drop(err_w);
        // Attach only once the child sits in its read: a close or read it entered after the
        // probes came up would be counted as the command's.
        wait_blocked_in_read(pid as u32, Duration::from_secs(5));
        Ok(HeldChild {
            pid: pid as u32,
            go: Some(go_w),
            exec_err: Some(err_r),
            program,
            status: None,
        })
    }

    /// Lets the child exec; reports exec failure (e.g. command not found).
    pub fn release(&mut self) -> Result<(), ProcessError> {
        if let Some(go) = self.go.take() {
            let b = 1u8;
            unsafe { libc::write(go.as_raw_fd(), (&b as *const u8).cast(), 1) };
        }
        if let Some(err) = self.exec_err.take() {
            let mut errno = 0i32;
            let n = unsafe { libc::read(err.as_raw_fd(), (&mut errno as *mut i32).cast(), 4) };
            if n == 4 {
                let _ = self.wait_timeout(Duration::from_secs(1));
                return Err(ProcessError::Exec {
                    program: self.program.clone(),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
        }
        Ok(())
    }

    /// Reaps the child if it exited; returns its status (`128 + signal` when killed).
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_some() {
            return self.status;
        }
        let mut st = 0;
        let r = unsafe { libc::waitpid(self.pid as i32, &mut st, libc::WNOHANG) };
        if r == self.pid as i32 {
            self.status = Some(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else if libc::WIFSIGNALED(st) {
                128 + libc::WTERMSIG(st)
            } else {
                -1
            });
        }
        self.status
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        if self.try_wait().is_some() {
            return self.status;
        }
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        self.wait_timeout(Duration::from_secs(2))
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        // Never leave a held child behind: closing the go pipe makes it exit (126).
        self.go.take();
        if self.status.is_none() {
            let _ = self.wait_timeout(Duration::from_millis(200));
        }
    }
}

/// Whether `path` exists and is executable, to fail early with a clear message.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_syscall_lines() {
        // x86_64 read(2) is 0; "running" and "-1 sp pc" (not in a syscall) are not.
        assert!(in_syscall(
            "0 0x5 0x7ffd 0x1 0x0 0x0 0x0 0x7ffc 0x7f12\n",
            0
        ));
        assert!(!in_syscall(
            "232 0x5 0x7ffd 0x1 0x0 0x0 0x0 0x7ffc 0x7f12\n",
            0
        ));
        assert!(!in_syscall("running\n", 0));
        assert!(!in_syscall("-1 0x7ffc 0x7f12\n", 0));
        assert!(!in_syscall("", 0));
    }

    #[test]
    fn spawned_child_waits_in_read() {
        let mut child = HeldChild::spawn(&["true".to_string()]).expect("spawn");
        let text = std::fs::read_to_string(format!("/proc/{}/syscall", child.pid));
        if let Ok(text) = text {
            assert!(in_syscall(&text, libc::SYS_read), "{text}");
        }
        child.release().expect("release");
        assert_eq!(child.wait_timeout(Duration::from_secs(5)), Some(0));
    }

    #[test]
    fn missing_pid_is_named() {
        let e = check_pid(999_999_999).unwrap_err();
        assert!(e.to_string().contains("999999999"), "{e}");
        assert!(matches!(
            check_pid(0),
            Err(ProcessError::NoSuchPid { pid: 0 })
        ));
    }

    #[test]
    fn own_pid_is_alive() {
        check_pid(std::process::id()).unwrap();
        assert!(pid_alive(std::process::id()));
    }

    #[test]
    fn held_child_runs_only_after_release_and_reports_its_status() {
        let mut c = HeldChild::spawn(&["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.try_wait(), None, "child must wait for release");
        c.release().unwrap();
        assert_eq!(c.wait_timeout(Duration::from_secs(5)), Some(7));
    }

    #[test]
    fn exec_failure_is_reported() {
        let mut c = HeldChild::spawn(&["/nonexistent/kpath-test".into()]).unwrap();
        let e = c.release().unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kpath-test"), "{e}");
    }

    #[test]
    fn dropping_an_unreleased_child_does_not_run_it() {
        let dir = std::env::temp_dir().join(format!("kpath-target-test-{}", std::process::id()));
        let c = HeldChild::spawn(&["touch".into(), dir.display().to_string()]).unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!dir.exists());
    }
}
