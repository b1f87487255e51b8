//! The processes kpath traces: an existing one (`-p PID`), or a command it starts (`-- CMD
//! ARGS`) as a [`HeldChild`]; and [`KillOnDrop`], the one way kpath owns a child process.
//!
//! A started command is forked and held before `exec` until the probes are attached and its
//! pid is in the kernel filter, so counting starts exactly at its exec.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    os::unix::process::ExitStatusExt,
    path::Path,
    process::ExitStatus,
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
    #[error("{program}: command not found (searched PATH)")]
    NotFound { program: String },
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

/// The file `program` names: itself when it contains a `/` (as a shell runs it), else the
/// first match on PATH.
pub fn resolve(program: &str) -> Result<std::path::PathBuf, ProcessError> {
    if program.contains('/') {
        return Ok(program.into());
    }
    which::which(program).map_err(|_| ProcessError::NotFound {
        program: program.to_string(),
    })
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

/// The child processes of `pid` (from every thread's `/proc/PID/task/TID/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
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

/// A child process that is terminated if it still runs when this is dropped: SIGTERM, up to a
/// grace period to exit, then SIGKILL; reaped either way. Errors and early returns never leave a
/// server, a recording or a guest behind.
///
/// It waits by pid (waitpid), so it owns children from [`std::process::Command`]
/// ([`KillOnDrop::adopt`]) and children kpath forks itself ([`HeldChild`]) alike.
#[derive(Debug)]
pub struct KillOnDrop {
    pid: u32,
    status: Option<ExitStatus>,
    grace: Duration,
}

impl KillOnDrop {
    /// How long a dropped child has between SIGTERM and SIGKILL, unless [`KillOnDrop::grace`]
    /// says otherwise.
    pub const GRACE: Duration = Duration::from_secs(2);

    /// Takes over a child spawned by [`std::process::Command`]. Only the process is kept: piped
    /// stdio handles still in `child` are closed, so take them out first if they are needed.
    pub fn adopt(child: std::process::Child) -> KillOnDrop {
        KillOnDrop::from_pid(child.id())
    }

    fn from_pid(pid: u32) -> KillOnDrop {
        KillOnDrop {
            pid,
            status: None,
            grace: KillOnDrop::GRACE,
        }
    }

    /// Sets the SIGTERM-to-SIGKILL grace period used on drop.
    pub fn grace(mut self, grace: Duration) -> KillOnDrop {
        self.grace = grace;
        self
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Reaps the child if it exited; its status, or `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let mut st = 0;
            // SAFETY: waitpid only writes the status through the valid pointer; WNOHANG never
            // blocks. `pid` is our unreaped child, so no other process can be reaped.
            let r = unsafe { libc::waitpid(self.pid as libc::pid_t, &mut st, libc::WNOHANG) };
            if r == self.pid as libc::pid_t {
                self.status = Some(ExitStatus::from_raw(st));
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the child to exit; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
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

    /// Sends `signal` unless the child has already been reaped (its pid may be reused by then).
    pub fn signal(&mut self, signal: libc::c_int) -> io::Result<()> {
        if self.try_wait().is_some() {
            return Ok(());
        }
        // SAFETY: kill takes no pointers; the pid is our child, not yet reaped, so it cannot
        // name another process.
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; the status, or `None` if even SIGKILL did
    /// not reap it within 2 s.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        let _ = self.signal(libc::SIGTERM);
        if let Some(s) = self.wait_timeout(grace) {
            return Some(s);
        }
        let _ = self.signal(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(2))
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.terminate(self.grace);
        }
    }
}

/// How to start a [`HeldChild`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    /// The command's stdout goes to kpath's stderr (kpath's stdout carries JSON).
    pub stdout_to_stderr: bool,
}

/// A command forked by kpath and held before exec until [`HeldChild::release`]; like every
/// [`KillOnDrop`], terminated and reaped if it still runs when dropped.
pub struct HeldChild {
    pub pid: u32,
    child: KillOnDrop,
    go: Option<OwnedFd>,
    exec_err: Option<OwnedFd>,
    program: String,
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
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        return Err(ProcessError::Sys {
            call: "pipe2",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `128 + signal` for a killed child, like a shell's `$?`.
fn exit_code(s: ExitStatus) -> i32 {
    s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(-1)
}

impl HeldChild {
    /// Forks `argv`; the child waits for [`HeldChild::release`] before it execs.
    pub fn spawn(argv: &[String]) -> Result<HeldChild, ProcessError> {
        HeldChild::spawn_with(argv, SpawnOptions::default())
    }

    /// [`HeldChild::spawn`] with options.
    pub fn spawn_with(argv: &[String], opts: SpawnOptions) -> Result<HeldChild, ProcessError> {
        let program = argv.first().ok_or(ProcessError::EmptyCommand)?.clone();
        // Resolved here, not by execvp in the child: execvp tries each PATH entry with an
        // execve of its own, and those failed execve calls were counted as the command's.
        let path = resolve(&program)?;
        let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
            ProcessError::NulInArgument {
                arg: program.clone(),
            }
        })?;
        let parent = std::process::id() as libc::pid_t;
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

        // SAFETY: the child runs only async-signal-safe calls (prctl, getppid, dup2, close, read,
        // execv, write, _exit) on memory prepared before the fork, so forking a multithreaded process is
        // sound; it never returns into Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(ProcessError::Sys {
                call: "fork",
                source: io::Error::last_os_error(),
            });
        }
        if pid == 0 {
            // SAFETY: the fds are the child's copies of open pipe ends; `b` and `errno` are
            // live locals of the sizes passed; `path` is a C string and `ptrs` a
            // NULL-terminated array of pointers into `args`, all of which outlive the exec. The OwnedFds are never dropped here.
            unsafe {
                // Die with kpath (even SIGKILLed) instead of running on orphaned; if kpath
                // already died before this line, the parent is no longer it.
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != parent {
                    libc::_exit(126);
                }
                if opts.stdout_to_stderr {
                    libc::dup2(2, 1);
                }
                let mut b = 0u8;
                libc::close(go_w.as_raw_fd());
                libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                // kpath dropped the pipe without releasing us: it failed, do not run.
                if b != 1 {
                    libc::_exit(126);
                }
                // No other syscall between release and exec: counting starts at execve.
                // (exec itself resets kpath's signal handlers to the default.)
                libc::execv(path.as_ptr(), ptrs.as_ptr());
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
            child: KillOnDrop::from_pid(pid as u32),
            go: Some(go_w),
            exec_err: Some(err_r),
            program,
        })
    }

    /// Lets the child exec; reports exec failure (e.g. command not found).
    pub fn release(&mut self) -> Result<(), ProcessError> {
        if let Some(go) = self.go.take() {
            let b = 1u8;
            // SAFETY: `go` is the open write end of the go pipe; one byte from a live local.
            unsafe { libc::write(go.as_raw_fd(), (&b as *const u8).cast(), 1) };
        }
        if let Some(err) = self.exec_err.take() {
            let mut errno = 0i32;
            // SAFETY: `err` is the open read end of the exec-error pipe; at most 4 bytes into
            // a live i32. It returns 0 (EOF) when the exec closed the CLOEXEC write end.
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
        self.child.try_wait().map(exit_code)
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<i32> {
        self.child.wait_timeout(timeout).map(exit_code)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<i32> {
        self.child.terminate(grace).map(exit_code)
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        // An unreleased child sees the go pipe close and exits (126) without running the
        // command; `child`, dropped next, reaps it (or terminates a released one still running).
        if self.go.take().is_some() {
            let _ = self.child.wait_timeout(Duration::from_millis(200));
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
    fn programs_resolve_before_the_fork_like_a_shell() {
        let sh = resolve("sh").unwrap();
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(resolve("./x").unwrap(), std::path::PathBuf::from("./x"));
        let e = resolve("kpath-no-such-program-xyz").unwrap_err();
        assert!(matches!(e, ProcessError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("command not found"), "{e}");
        assert!(matches!(
            HeldChild::spawn(&["kpath-no-such-program-xyz".into()]),
            Err(ProcessError::NotFound { .. })
        ));
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
        let mut kid = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert!(children(std::process::id()).contains(&kid.id()));
        let _ = kid.kill();
        let _ = kid.wait();
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

    /// Whether `pid` is gone entirely (reaped, not a zombie).
    fn reaped(pid: u32) -> bool {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    fn kill_on_drop_terminates_and_reaps() {
        let c = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let c = KillOnDrop::adopt(c);
        let pid = c.pid();
        let t = Instant::now();
        drop(c);
        assert!(reaped(pid), "sleep {pid} left behind");
        assert!(t.elapsed() < KillOnDrop::GRACE, "SIGTERM was enough");
    }

    #[test]
    fn kill_on_drop_kills_what_ignores_sigterm_after_the_grace() {
        let c = std::process::Command::new("sh")
            .args([
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut c = c;
        let mut line = String::new();
        use std::io::BufRead as _;
        std::io::BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let c = KillOnDrop::adopt(c).grace(Duration::from_millis(300));
        let pid = c.pid();
        let t = Instant::now();
        drop(c);
        assert!(reaped(pid), "sh {pid} left behind");
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn kill_on_drop_reports_the_exit_status() {
        let c = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let mut c = KillOnDrop::adopt(c);
        let s = c.wait_timeout(Duration::from_secs(5)).expect("exits");
        assert_eq!(s.code(), Some(3));
        assert!(c.signal(libc::SIGTERM).is_ok(), "no signal after the reap");
    }

    #[test]
    fn dropping_an_unreleased_child_does_not_run_it() {
        let dir =
            std::env::temp_dir().join(format!("kpath-held-child-test-{}", std::process::id()));
        let c = HeldChild::spawn(&["touch".into(), dir.display().to_string()]).unwrap();
        drop(c);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!dir.exists());
    }
}
