//! `kpath scenario epoll-close`: a close-per-request HTTP load over sockets in epoll, recorded on
//! each kernel asked for (this machine's, and guests').
//!
//! Until the refcount rework (Linux 6.4, "epoll: use refcount to reduce ep_mutex contention", also
//! backported to some stable series), closing a file that is still registered in epoll ran
//! eventpoll_release_file under the global `epmutex`: every close-per-request server with more
//! than one event loop serialized its closes on it. Which kernels still do is read from their
//! symbols (`ep_free` without `ep_clear_and_put`, see [`crate::kernel::epoll::epoll_close_era`]), never
//! from version numbers, since distributions backport.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::{places, ScenarioOptions, Where};
use crate::{
    kernel::epoll::{epoll_close_era, EpollClose},
    kernel::kallsyms::Kallsyms,
    render::fmt_ns,
    run::{LockRow, Run},
    vm,
};

/// What the load itself reports, written by [`drive`] next to run.json (as `drive.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DriveReport {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub errors: u64,
    /// `global_epmutex`, `refcounted` or `unknown`, from the kernel's symbols.
    pub epoll_close: String,
    pub release: String,
}

/// The scenario's load half, which [`run`] starts under `kpath record` on each kernel (`kpath
/// scenario epoll-close --drive RESULT`): an epoll server (two loops per CPU, each with its own
/// epoll instance; every accepted socket is registered and closed while still registered, as
/// nginx does) and blocking clients that close their side too, in this one process, for
/// `opts.duration_secs`. It writes its [`DriveReport`] to `result`. The reference server (`kpath
/// serve`) is not used: it answers a request that arrived with the accept before registering the
/// socket, so its close-per-request sockets never enter epoll.
pub fn drive(opts: &ScenarioOptions, result: &Path) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding a listener")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let listener = std::sync::Arc::new(listener);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Two loops per CPU: closes on different CPUs overlap, and a loop preempted inside the
    // critical section makes the others wait, as on a busy server.
    let loops = 2 * std::thread::available_parallelism().map_or(1, |n| n.get());
    let servers: Vec<_> = (0..loops)
        .map(|_| {
            let (l, stop) = (listener.clone(), stop.clone());
            std::thread::spawn(move || serve_loop(&l, &stop))
        })
        .collect();
    let report = close_per_request_load(
        addr,
        opts.connections.unwrap_or(CLIENTS),
        Duration::from_secs_f64(opts.duration_secs),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in servers {
        s.join()
            .map_err(|_| anyhow::anyhow!("a server loop panicked"))?
            .context("server loop")?;
    }
    let era = Kallsyms::load()
        .ok()
        .and_then(|k| epoll_close_era(|s| k.has_symbol(s)));
    let d = DriveReport {
        requests: report.requests,
        requests_per_sec: report.requests as f64 / report.secs.max(1e-9),
        errors: report.errors,
        epoll_close: era_name(era).into(),
        release: crate::kernel::features::uname().release,
    };
    if let Some(p) = result.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(result, serde_json::to_string_pretty(&d)?)
        .with_context(|| format!("writing {}", result.display()))?;
    Ok(())
}

/// One server loop: accept, register in this loop's epoll, wait for the request, answer, close
/// while registered (so close runs eventpoll_release_file).
fn serve_loop(
    listener: &std::net::TcpListener,
    stop: &std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const REPLY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    // SAFETY: epoll_create1 takes no pointers; it returns a new fd (owned just below) or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `ep` is the open fd epoll_create1 just returned, owned by nothing else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let add = |fd: i32| {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `ep` is an open epoll fd, `fd` an open socket, `ev` a live event struct the
        // kernel copies before returning.
        if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let lfd = listener.as_raw_fd();
    add(lfd)?;
    let mut conns: std::collections::HashMap<i32, std::net::TcpStream> = Default::default();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut buf = [0u8; 4096];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: `ep` is an open epoll fd; `events` has room for the 64 events asked for.
        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), events.as_mut_ptr(), 64, 100) };
        for ev in &events[..n.max(0) as usize] {
            let fd = ev.u64 as i32;
            if fd == lfd {
                while let Ok((s, _)) = listener.accept() {
                    s.set_nonblocking(true)?;
                    add(s.as_raw_fd())?;
                    conns.insert(s.as_raw_fd(), s);
                }
                continue;
            }
            let Some(s) = conns.get_mut(&fd) else {
                continue;
            };
            let done = match s.read(&mut buf) {
                Ok(0) => true,
                Ok(_) => {
                    let _ = s.write_all(REPLY);
                    true
                }
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            if done {
                conns.remove(&fd); // closes while still registered in `ep`
            }
        }
    }
    Ok(())
}
struct LoadResult {
    requests: u64,
    errors: u64,
    secs: f64,
}

/// `clients` threads, each in a loop: connect, one GET, read to EOF, close. Blocking sockets and
/// plain syscalls only, so it runs on any kernel a guest boots, inside the recorded process.
/// Client threads of the close-per-request load unless `-c` says otherwise: each holds one
/// connection at a time, so this is also its concurrent connections.
const CLIENTS: usize = 4;

fn close_per_request_load(
    addr: std::net::SocketAddr,
    clients: usize,
    duration: Duration,
) -> LoadResult {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..clients.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut err) = (0u64, 0u64);
                let mut buf = [0u8; 4096];
                while std::time::Instant::now() < deadline {
                    let r = (|| -> std::io::Result<bool> {
                        let mut s = std::net::TcpStream::connect(addr)?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        s.write_all(
                            b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        )?;
                        let mut got = Vec::new();
                        loop {
                            let n = s.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                        Ok(got.starts_with(b"HTTP/1.1 200"))
                    })();
                    match r {
                        Ok(true) => ok += 1,
                        _ => err += 1,
                    }
                }
                (ok, err)
            })
        })
        .collect();
    let (mut requests, mut errors) = (0, 0);
    for t in threads {
        let (ok, err) = t.join().unwrap_or((0, 1));
        requests += ok;
        errors += err;
    }
    LoadResult {
        requests,
        errors,
        secs: start.elapsed().as_secs_f64(),
    }
}

fn era_name(e: Option<EpollClose>) -> &'static str {
    match e {
        Some(EpollClose::GlobalEpmutex) => "global_epmutex",
        Some(EpollClose::Refcounted) => "refcounted",
        None => "unknown",
    }
}

/// One kernel's outcome: a column of the table.
struct Column {
    label: String,
    result: anyhow::Result<(Run, DriveReport)>,
    note: Option<String>,
}

/// The host half: records [`drive`] on each kernel `opts` names and prints them side by side.
pub fn run(opts: &ScenarioOptions) -> anyhow::Result<()> {
    if !(opts.duration_secs > 0.0 && opts.duration_secs.is_finite()) {
        bail!(
            "-d {}: the duration must be a positive number of seconds",
            opts.duration_secs
        );
    }
    let out = opts.out_dir.clone().unwrap_or_else(|| {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("runs/scenario-epoll-close-{t}"))
    });
    let mut cols = Vec::new();
    for place in places(opts) {
        let label = place.label();
        eprintln!(
            "kpath scenario: epoll-close on {label} ({:.0} s of load)",
            opts.duration_secs
        );
        let dir = out.join(&label);
        let (result, note) = match &place {
            Where::Host => (record_host(opts, &dir), None),
            Where::Guest(k) => match record_guest(opts, k, &dir) {
                Ok((r, note)) => (Ok(r), Some(note)),
                Err(e) => (Err(e), None),
            },
        };
        if let Err(e) = &result {
            eprintln!("kpath scenario: {label}: {e:#}");
        }
        cols.push(Column {
            label,
            result,
            note,
        });
    }
    print!("{}", render(&cols));
    // The same rules as record and report, per kernel.
    for c in &cols {
        if let Ok((run, _)) = &c.result {
            print!(
                "\n{}:{}",
                c.label,
                crate::findings::text(&crate::findings::for_run(run))
            );
        }
    }
    eprintln!("kpath scenario: runs written under {}", out.display());
    if cols.iter().all(|c| c.result.is_err()) {
        bail!("no kernel produced a run");
    }
    Ok(())
}

/// `kpath record` arguments that run this scenario's load ([`drive`]), writing under `run_dir`.
fn record_args(opts: &ScenarioOptions, kpath: &str, run_dir: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "record",
        "--probes",
        "kpaths,locks",
        "-o",
        run_dir,
        "--",
        kpath,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend([
        "scenario".into(),
        "epoll-close".into(),
        "--drive".into(),
        format!("{run_dir}/drive.json"),
        "-d".into(),
        opts.duration_secs.to_string(),
        "-c".into(),
        opts.connections.unwrap_or(CLIENTS).to_string(),
    ]);
    v
}

fn read(run_dir: &Path) -> anyhow::Result<(Run, DriveReport)> {
    let load = |name: &str| -> anyhow::Result<String> {
        let p = run_dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let run: Run = serde_json::from_str(&load("run.json")?).context("parsing run.json")?;
    let drive: DriveReport =
        serde_json::from_str(&load("drive.json")?).context("parsing drive.json")?;
    Ok((run, drive))
}

fn record_host(opts: &ScenarioOptions, dir: &Path) -> anyhow::Result<(Run, DriveReport)> {
    let exe = std::env::current_exe().context("locating the kpath binary")?;
    let run_dir = dir.join("run");
    let out = Command::new(&exe)
        .args(record_args(
            opts,
            &exe.to_string_lossy(),
            &run_dir.to_string_lossy(),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running kpath record")?;
    if !out.status.success() {
        bail!(
            "kpath record failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    read(&run_dir)
}

fn record_guest(
    opts: &ScenarioOptions,
    kernel: &str,
    dir: &Path,
) -> anyhow::Result<((Run, DriveReport), String)> {
    let o = vm::run_guest(&vm::VmOptions {
        kernel: kernel.into(),
        out_dir: dir.to_path_buf(),
        timeout: Duration::from_secs_f64(opts.duration_secs + 300.0),
        args: record_args(opts, "kpath", "run"),
        ..Default::default()
    })?;
    if o.exit_code != 0 {
        bail!(
            "kpath record in the guest exited with {}: {}",
            o.exit_code,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    let note = format!(
        "{} guest under {}, {:.1} s wall",
        o.release,
        o.accel.describe(),
        o.wall.as_secs_f64()
    );
    Ok((read(&dir.join("run"))?, note))
}

fn is_epoll_caller(c: &str) -> bool {
    c.contains("eventpoll") || c.contains("epoll") || c.starts_with("ep_")
}

/// Contention count and wait of the rows `keep` selects.
fn locks_sum(rows: &[LockRow], keep: impl Fn(&LockRow) -> bool) -> (u64, u64) {
    rows.iter()
        .filter(|r| keep(r))
        .fold((0, 0), |(n, w), r| (n + r.count, w + r.wait_ns))
}

fn fmt_calls(run: &Run, function: &str) -> String {
    let Some(r) = run.kpaths.iter().find(|r| r.function == function) else {
        return "-".into();
    };
    match (r.calls, r.total_ns) {
        (Some(c), Some(t)) => format!(
            "{c} calls, {} total, {} avg ({})",
            fmt_ns(t),
            fmt_ns(t / c.max(1)),
            r.method
        ),
        _ => format!(
            "{:.1}% of on-CPU samples ({})",
            r.oncpu_share * 100.0,
            r.method
        ),
    }
}

fn fmt_locks((n, w): (u64, u64)) -> String {
    if n == 0 {
        "none".into()
    } else {
        format!("{n} waits, {} total", fmt_ns(w))
    }
}

/// The rows of the table, in order; [`values`] gives a column's cells in the same order.
const ROWS: &[&str] = &[
    "kernel",
    "close of an epoll-watched file",
    "requests/s",
    "eventpoll_release_file",
    "epmutex contention",
    "  from eventpoll_release_file",
    "ep->mtx contention",
    "tcp_close",
    "lock method",
];

/// One kernel's cells, row by row ([`ROWS`]).
fn values(run: &Run, d: &DriveReport) -> Vec<String> {
    let epmutex = |r: &LockRow| r.lock == "epmutex";
    vec![
        run.kernel.release.clone(),
        match d.epoll_close.as_str() {
            "global_epmutex" => "takes the GLOBAL epmutex".into(),
            "refcounted" => "refcounted, no global mutex".into(),
            _ => "unknown (symbols unreadable)".into(),
        },
        format!(
            "{:.0} ({} requests, {} errors)",
            d.requests_per_sec, d.requests, d.errors
        ),
        fmt_calls(run, "eventpoll_release_file"),
        fmt_locks(locks_sum(&run.locks, epmutex)),
        fmt_locks(locks_sum(&run.locks, |r| {
            epmutex(r) && r.caller.starts_with("eventpoll_release_file")
        })),
        fmt_locks(locks_sum(&run.locks, |r| {
            !epmutex(r) && r.lock_type.contains("mutex") && is_epoll_caller(&r.caller)
        })),
        fmt_calls(run, "tcp_close"),
        run.methods
            .get(probe_common::Family::Locks.name())
            .cloned()
            .unwrap_or_else(|| "-".into()),
    ]
}

/// The side-by-side table, then a line per kernel on how it closes epoll-watched files.
fn render(cols: &[Column]) -> String {
    let cells: Vec<Vec<String>> = cols
        .iter()
        .map(|c| match &c.result {
            Ok((run, d)) => values(run, d),
            Err(e) => {
                let mut v = vec![format!("failed: {e:#}")];
                v.resize(ROWS.len(), String::new());
                v
            }
        })
        .collect();
    let mut s = table(cols, &cells);
    s.push('\n');
    s += &verdicts(cols);
    s
}

/// Rows are [`ROWS`], columns the kernels, each as wide as its widest cell.
fn table(cols: &[Column], cells: &[Vec<String>]) -> String {
    use std::fmt::Write as _;
    let w0 = ROWS.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> = cols
        .iter()
        .zip(cells)
        .map(|(c, v)| {
            v.iter()
                .map(String::len)
                .chain([c.label.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = format!("{:w0$}", "");
    for (c, w) in cols.iter().zip(&widths) {
        let _ = write!(s, "  {:w$}", c.label);
    }
    s.push('\n');
    for (i, name) in ROWS.iter().enumerate() {
        let _ = write!(s, "{name:w0$}");
        for (v, w) in cells.iter().zip(&widths) {
            let _ = write!(s, "  {:w$}", v[i]);
        }
        s.push('\n');
    }
    s
}

/// Per kernel: the guest's note, and what its symbols say about closing epoll-watched files.
fn verdicts(cols: &[Column]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for c in cols {
        if let Some(n) = &c.note {
            let _ = writeln!(s, "{}: {n}", c.label);
        }
        if let Ok((run, d)) = &c.result {
            let verdict = match d.epoll_close.as_str() {
                "global_epmutex" => {
                    "ep_free and epmutex, no ep_clear_and_put: every close of an epoll-watched \
                     file takes the global epmutex"
                }
                "refcounted" => "ep_clear_and_put: closes take only that epoll instance's ep->mtx",
                _ => "epoll close era unknown",
            };
            let _ = writeln!(s, "{} ({}): {verdict}", c.label, run.kernel.release);
        }
    }
    if cols.iter().any(|c| c.note.is_some()) {
        let _ = writeln!(
            s,
            "guests run under qemu (software emulation unless KVM is named above): compare \
             requests/s between guests, not with the host"
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(caller: &str, lock: &str, count: u64, wait_ns: u64) -> LockRow {
        LockRow {
            caller: caller.into(),
            lock: lock.into(),
            lock_type: "mutex".into(),
            count,
            wait_ns,
            ..Default::default()
        }
    }

    #[test]
    fn table_separates_epmutex_from_per_instance_epoll_mutexes() {
        let run = Run {
            kernel: crate::run::KernelInfo {
                release: "5.10.0-46-amd64".into(),
                ..Default::default()
            },
            locks: vec![
                lock("eventpoll_release_file+0x2f", "epmutex", 10, 5000),
                lock("do_epoll_wait+0x1", "0xffff888001", 3, 300),
                lock("tcp_v4_rcv+0x1", "0xffff888002", 7, 700),
            ],
            ..Default::default()
        };
        let drive = DriveReport {
            requests: 100,
            requests_per_sec: 50.0,
            epoll_close: "global_epmutex".into(),
            ..Default::default()
        };
        let s = render(&[Column {
            label: "bullseye".into(),
            result: Ok((run, drive)),
            note: None,
        }]);
        let line = |name: &str| s.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(line("epmutex contention").contains("10 waits"), "{s}");
        assert!(
            line("  from eventpoll_release_file").contains("10 waits"),
            "{s}"
        );
        assert!(line("ep->mtx contention").contains("3 waits"), "{s}");
        assert!(line("close of an epoll").contains("GLOBAL epmutex"), "{s}");
        assert!(s.contains("no ep_clear_and_put"), "{s}");
    }
}
