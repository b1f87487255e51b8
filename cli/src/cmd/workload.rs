//! `kpath workload`: a built-in demo workload that drives the kernel paths kpath reports on.
//!
//! Each phase makes a known number of syscalls, so a recording of it can be read against the
//! counts: open/read/close of a temp file (do_sys_openat2), mmap/munmap of a page (__vm_munmap),
//! loopback connections closed while registered in epoll (eventpoll_release_file, tcp_close), and
//! a pipe ping-pong with a forked child (context switches, run-queue delay). The syscalls std
//! hides or does not offer (mmap, epoll, fork) go through libc directly.
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// How much of each phase to run.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(after_help = "Examples:
  kpath workload                                   2000 files, 1000 mmaps, 500 connections, 1000 round trips
  sudo kpath record -- kpath workload              trace it: openat, munmap, close counts match the phases
  kpath workload --files 0 --mmaps 0 --pipes 0 --conns 2000    only connections closed while in epoll")]
pub struct WorkloadArgs {
    /// Temp-file open + read + close cycles.
    #[arg(long, default_value_t = 2000)]
    pub files: u64,
    /// mmap + touch + munmap cycles of one anonymous page.
    #[arg(long, default_value_t = 1000)]
    pub mmaps: u64,
    /// Loopback connections, each registered in epoll and closed while still registered.
    #[arg(long, default_value_t = 500)]
    pub conns: u64,
    /// One-byte pipe round trips with a forked child.
    #[arg(long, default_value_t = 1000)]
    pub pipes: u64,
}

impl Default for WorkloadArgs {
    fn default() -> Self {
        WorkloadArgs {
            files: 2000,
            mmaps: 1000,
            conns: 500,
            pipes: 1000,
        }
    }
}

/// Runs every phase in turn and prints a one-line summary to stderr.
pub fn run(args: &WorkloadArgs) -> Result<()> {
    let start = Instant::now();
    let files = files(args.files).context("files phase")?;
    let mmaps = mmaps(args.mmaps).context("mmaps phase")?;
    let conns = conns(args.conns).context("conns phase")?;
    let pipes = pipes(args.pipes).context("pipes phase")?;
    eprintln!(
        "workload: {files} file open+read+close, {mmaps} mmap+munmap, {conns} loopback connections \
         closed while in epoll, {pipes} pipe round trips with a forked child, in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn os_err(what: &str) -> anyhow::Error {
    anyhow::Error::new(std::io::Error::last_os_error()).context(what.to_string())
}

/// A temp file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn create(contents: &[u8]) -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "kpath-workload-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).with_context(|| format!("create {}", path.display()))?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Opens, reads and closes one temp file `n` times (openat, read, close).
pub fn files(n: u64) -> Result<u64> {
    let tmp = TempFile::create(&[b'k'; 512])?;
    let mut buf = [0u8; 1024];
    for _ in 0..n {
        let mut f = File::open(&tmp.0).with_context(|| format!("open {}", tmp.0.display()))?;
        let got = f.read(&mut buf).context("read temp file")?;
        if got != 512 {
            bail!("read {got} bytes of a 512-byte file");
        }
    }
    Ok(n)
}

/// Maps one anonymous page, writes to it (a page fault) and unmaps it, `n` times.
pub fn mmaps(n: u64) -> Result<u64> {
    let len = 4096;
    for _ in 0..n {
        // SAFETY: a fresh private anonymous mapping, touched only within its length, then unmapped.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                return Err(os_err("mmap"));
            }
            p.cast::<u8>().write_volatile(1);
            if libc::munmap(p, len) != 0 {
                return Err(os_err("munmap"));
            }
        }
    }
    Ok(n)
}

/// `n` loopback connections: accept, register the server side in epoll, wait for one request
/// byte, answer one byte, and close the server side while it is still registered, so close runs
/// eventpoll_release_file and tcp_close.
pub fn conns(n: u64) -> Result<u64> {
    let listener = TcpListener::bind("127.0.0.1:0").context("bind loopback listener")?;
    let addr = listener.local_addr()?;
    // SAFETY: epoll_create1 returns a new fd we own, or -1.
    let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if raw < 0 {
        return Err(os_err("epoll_create1"));
    }
    // SAFETY: `raw` is a valid fd owned by nothing else.
    let ep = unsafe { OwnedFd::from_raw_fd(raw) };
    for i in 0..n {
        let mut client = TcpStream::connect(addr).context("connect")?;
        let (mut server, _) = listener.accept().context("accept")?;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i,
        };
        // SAFETY: both fds are open; `ev` outlives the call.
        if unsafe {
            libc::epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                server.as_raw_fd(),
                &mut ev,
            )
        } != 0
        {
            return Err(os_err("epoll_ctl ADD"));
        }
        client.write_all(b"q").context("client write")?;
        let mut out = [libc::epoll_event { events: 0, u64: 0 }];
        // SAFETY: `out` has room for the one event asked for.
        let ready = unsafe { libc::epoll_wait(ep.as_raw_fd(), out.as_mut_ptr(), 1, 5000) };
        if ready != 1 {
            if ready < 0 {
                return Err(os_err("epoll_wait"));
            }
            bail!("epoll_wait: no readiness within 5 s");
        }
        let mut b = [0u8; 1];
        server.read_exact(&mut b).context("server read")?;
        server.write_all(&b).context("server write")?;
        client.read_exact(&mut b).context("client read")?;
        drop(server); // still registered in `ep`
        drop(client);
    }
    Ok(n)
}

/// `n` one-byte round trips over two pipes with a forked child that echoes each byte.
pub fn pipes(n: u64) -> Result<u64> {
    let (to_child_r, to_child_w) = pipe()?;
    let (to_parent_r, to_parent_w) = pipe()?;
    // SAFETY: the child only calls read, write and _exit (async-signal-safe), so forking a
    // multithreaded process is sound; it never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        // SAFETY: closing the child's copies of the parent's ends, so that it sees EOF if the
        // parent goes away; the OwnedFds are never dropped in the child.
        unsafe {
            libc::close(to_child_w.as_raw_fd());
            libc::close(to_parent_r.as_raw_fd());
        }
        let mut b = 0u8;
        let mut ok = true;
        for _ in 0..n {
            // SAFETY: valid fds inherited from the parent and a one-byte buffer.
            unsafe {
                if libc::read(to_child_r.as_raw_fd(), (&raw mut b).cast(), 1) != 1
                    || libc::write(to_parent_w.as_raw_fd(), (&raw const b).cast(), 1) != 1
                {
                    ok = false;
                    break;
                }
            }
        }
        // SAFETY: ends the child without running the parent's atexit handlers or destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    drop(to_child_r);
    drop(to_parent_w);
    let mut w = File::from(to_child_w);
    let mut r = File::from(to_parent_r);
    let mut result = Ok(n);
    let mut b = [b'p'];
    for i in 0..n {
        if let Err(e) = w.write_all(&b).and_then(|()| r.read_exact(&mut b)) {
            result = Err(anyhow::Error::new(e).context(format!("round trip {i}")));
            break;
        }
    }
    // Closing our ends lets a child stuck in read() see EOF and exit.
    drop(w);
    drop(r);
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a valid out pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        return Err(os_err("waitpid"));
    }
    if result.is_ok() && !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("pipe child failed (wait status {status:#x})");
    }
    result
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two fds pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe2"));
    }
    // SAFETY: both fds are new and owned by nothing else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_returns_count() {
        assert_eq!(files(25).unwrap(), 25);
        assert_eq!(files(0).unwrap(), 0);
    }

    #[test]
    fn mmaps_returns_count() {
        assert_eq!(mmaps(40).unwrap(), 40);
    }

    #[test]
    fn conns_returns_count() {
        assert_eq!(conns(20).unwrap(), 20);
    }

    #[test]
    fn pipes_returns_count() {
        assert_eq!(pipes(50).unwrap(), 50);
        assert_eq!(pipes(0).unwrap(), 0);
    }

    #[test]
    fn run_small() {
        let args = WorkloadArgs {
            files: 3,
            mmaps: 3,
            conns: 3,
            pipes: 3,
        };
        run(&args).unwrap();
    }

    #[test]
    fn defaults_match_clap() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            w: WorkloadArgs,
        }
        assert_eq!(Cli::parse_from(["workload"]).w, WorkloadArgs::default());
        let c = Cli::parse_from(["workload", "--files", "7", "--pipes", "9"]);
        assert_eq!((c.w.files, c.w.pipes, c.w.mmaps), (7, 9, 1000));
    }
}
