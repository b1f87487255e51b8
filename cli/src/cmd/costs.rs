//! `kpath costs`: what kernel paths cost on this machine, LMbench style, so the per-request
//! figures of `kpath bench` can be read against a known price list (a syscall, a context switch,
//! an open+close, an mmap+munmap, a loopback connection).
//!
//! Each benchmark runs a warm-up repetition, then `reps` timed repetitions of a fixed number of
//! operations; the figure is the median of the repetitions' ns per operation, with min and max
//! as the spread. No root needed, no probes attached; with `--traced` (root) every benchmark runs
//! again with kpath's probes attached to this process, and the table adds what they cost per
//! operation (for the null syscall: one traced syscall enter+exit pair).
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:
  kpath costs
  kpath costs --reps 10 --json > costs.json
  sudo kpath costs --traced                    each cost again with every probe family attached
  sudo kpath costs --traced --probes syscalls  what the syscalls family adds per operation
  sudo kpath costs --traced --probes sched --method sched=sched_tracepoints
                                               the same with the trace events instead of raw tracepoints
  sudo kpath costs --traced --probes sched --offcpu-min-us 100
                                               a switch when periods under 100 µs get no stacks")]
pub struct CostsArgs {
    /// Timed repetitions per benchmark (after one warm-up).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Repeat every benchmark with kpath's probes attached to this process (needs root) and
    /// report what they add per operation.
    #[arg(long)]
    pub traced: bool,
    /// Probe families attached for --traced, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "syscalls,kpaths,sched,locks,oncpu",
        requires = "traced"
    )]
    pub probes: Vec<String>,
    /// Force an attach method for --traced: FAMILY=METHOD, e.g. sched=sched_tracepoints
    /// (repeatable), to compare what each method adds.
    #[arg(long = "method", value_name = "FAMILY=METHOD", requires = "traced")]
    pub methods: Vec<String>,
    /// For --traced: off-CPU periods shorter than this (µs) are not charged to a stack, as in
    /// `kpath record --offcpu-min-us` (what a switch costs when most periods are that short).
    #[arg(long, default_value_t = 0, requires = "traced")]
    pub offcpu_min_us: u64,
}

/// Library options for [`measure`].
#[derive(Debug, Clone)]
pub struct CostsOptions {
    pub reps: usize,
    /// Scales every benchmark's operations per repetition (tests use less than 1).
    pub scale: f64,
    /// Directory for the scratch files.
    pub tmp: PathBuf,
}

impl Default for CostsOptions {
    fn default() -> Self {
        CostsOptions {
            reps: 5,
            scale: 1.0,
            tmp: std::env::temp_dir(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CostsError {
    #[error("{name}: {op} failed")]
    Op {
        name: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("setting up the benchmarks: {what} failed")]
    Setup {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("--reps must be at least 1")]
    Reps,
}

/// One benchmark's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cost {
    pub name: String,
    /// Median over the repetitions.
    pub ns_per_op: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    pub reps: usize,
    /// With `--traced`: the median with kpath's probes attached, and the difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traced_ns_per_op: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_ns_per_op: Option<f64>,
}

/// Min, median and max of the samples; `None` when there are none (or one is not a number).
pub fn spread(samples: &[f64]) -> Option<(f64, f64, f64)> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

/// The result of `samples` (ns per operation, one per repetition).
pub fn cost(name: &str, samples: &[f64]) -> Option<Cost> {
    let (min, median, max) = spread(samples)?;
    Some(Cost {
        name: name.to_string(),
        ns_per_op: median,
        min_ns: min,
        max_ns: max,
        reps: samples.len(),
        traced_ns_per_op: None,
        added_ns_per_op: None,
    })
}

/// One benchmark of the price list: [`measure`] runs each of [`BENCHMARKS`] in turn.
struct Benchmark {
    name: &'static str,
    /// The call whose failure stops the benchmark, for the error message.
    op: &'static str,
    /// Operations per timed repetition at scale 1.
    ops: u64,
    /// Times `reps` repetitions of `iters` operations (after a warm-up); ns per operation each.
    run: fn(&Scratch, usize, u64) -> std::io::Result<Vec<f64>>,
}

const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "null syscall (getpid)",
        op: "getpid",
        ops: 200_000,
        run: null_syscall,
    },
    Benchmark {
        name: "context switch (pipe ping-pong, one CPU)",
        op: "pipe ping-pong",
        ops: 20_000,
        run: |_, reps, iters| ctx_switch(reps, iters),
    },
    Benchmark {
        name: "open+close",
        op: "open",
        ops: 50_000,
        run: open_close,
    },
    Benchmark {
        name: "stat",
        op: "stat",
        ops: 100_000,
        run: stat,
    },
    Benchmark {
        name: "mmap+touch+munmap 4 KB file",
        op: "mmap",
        ops: 50_000,
        run: |s, reps, iters| mmap_touch_munmap(s, 4096, reps, iters),
    },
    Benchmark {
        name: "mmap+touch+munmap 1 MB file",
        op: "mmap",
        ops: 2_000,
        run: |s, reps, iters| mmap_touch_munmap(s, BIG, reps, iters),
    },
    Benchmark {
        name: "read+write 64 KB (file to TCP)",
        op: "read+write",
        ops: 5_000,
        run: read_write,
    },
    Benchmark {
        name: "sendfile 64 KB (file to TCP)",
        op: "sendfile",
        ops: 5_000,
        run: sendfile,
    },
    Benchmark {
        name: "loopback connect+accept+close",
        op: "connect",
        ops: 2_000,
        run: connect_accept,
    },
    Benchmark {
        name: "epoll_ctl add+del",
        op: "epoll_ctl",
        ops: 100_000,
        run: epoll_ctl,
    },
];

/// Size of the small scratch file, and of what the file-to-TCP benchmarks send per operation.
const CHUNK: usize = 64 * 1024;
/// Size of the large scratch file.
const BIG: usize = 1 << 20;

/// Runs every benchmark.
pub fn measure(opts: &CostsOptions) -> Result<Vec<Cost>, CostsError> {
    if opts.reps == 0 {
        return Err(CostsError::Reps);
    }
    let scratch = Scratch::new(&opts.tmp)?;
    let mut out = Vec::new();
    for b in BENCHMARKS {
        let iters = ((b.ops as f64 * opts.scale) as u64).max(10);
        let samples = (b.run)(&scratch, opts.reps, iters).map_err(|source| CostsError::Op {
            name: b.name,
            op: b.op,
            source,
        })?;
        out.extend(cost(b.name, &samples));
    }
    Ok(out)
}

/// What the benchmarks share, set up once per [`measure`] and removed when dropped: a 64 KB and
/// a 1 MB scratch file, a loopback connection whose peer drains what is sent to it, a listener
/// to connect to, and an epoll instance with an eventfd to register in it.
struct Scratch {
    small: PathBuf,
    small_path: std::ffi::CString,
    small_file: File,
    big: PathBuf,
    big_file: File,
    listener: TcpListener,
    /// The sending end of the drained connection.
    tx: TcpStream,
    drain: Option<std::thread::JoinHandle<()>>,
    epoll: OwnedFd,
    eventfd: OwnedFd,
}

impl Scratch {
    fn new(dir: &Path) -> Result<Scratch, CostsError> {
        let setup = |what: &'static str| move |source| CostsError::Setup { what, source };
        let (small, small_file) =
            scratch_file(dir, "64k", CHUNK).map_err(setup("creating a scratch file"))?;
        let (big, big_file) =
            scratch_file(dir, "1m", BIG).map_err(setup("creating a scratch file"))?;
        let small_path = std::ffi::CString::new(small.as_os_str().as_encoded_bytes())
            .expect("a temp path has no NUL");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
        let (listener, tx, mut rx) = listener
            .and_then(|l| {
                let tx = TcpStream::connect(l.local_addr()?)?;
                let (rx, _) = l.accept()?;
                Ok((l, tx, rx))
            })
            .map_err(setup("loopback socket"))?;
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
        });
        // SAFETY: epoll_create1 and eventfd take no pointers; each returns a new fd or -1.
        let (ep, ev) = unsafe {
            (
                libc::epoll_create1(libc::EPOLL_CLOEXEC),
                libc::eventfd(0, libc::EFD_CLOEXEC),
            )
        };
        let owned = |fd: i32| {
            // SAFETY: a non-negative `fd` was just returned to us and nothing else owns it.
            errno(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let (epoll, eventfd) = (owned(ep), owned(ev));
        Ok(Scratch {
            small,
            small_path,
            small_file,
            big,
            big_file,
            listener,
            tx,
            drain: Some(drain),
            epoll: epoll.map_err(setup("epoll_create1"))?,
            eventfd: eventfd.map_err(setup("eventfd"))?,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // The drain thread sees EOF once our end shuts down.
        let _ = self.tx.shutdown(std::net::Shutdown::Write);
        if let Some(d) = self.drain.take() {
            let _ = d.join();
        }
        let _ = std::fs::remove_file(&self.small);
        let _ = std::fs::remove_file(&self.big);
    }
}

fn errno<T: PartialOrd + Default>(r: T) -> std::io::Result<T> {
    if r < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Times `op(iters)` `reps` times after one warm-up; returns ns per operation per repetition.
fn time(
    reps: usize,
    iters: u64,
    mut op: impl FnMut(u64) -> std::io::Result<()>,
) -> std::io::Result<Vec<f64>> {
    op(iters.div_ceil(10).max(1))?;
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        op(iters)?;
        out.push(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    Ok(out)
}

fn scratch_file(dir: &Path, name: &str, size: usize) -> std::io::Result<(PathBuf, File)> {
    let path = dir.join(format!("kpath-costs-{}-{name}", std::process::id()));
    let mut f = File::create(&path)?;
    f.write_all(&vec![b'k'; size])?;
    f.sync_all()?;
    Ok((path.clone(), File::open(&path)?))
}

fn null_syscall(_: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    time(reps, iters, |k| {
        for _ in 0..k {
            // SAFETY: getpid takes no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getpid) };
        }
        Ok(())
    })
}

/// Pins the calling thread to `cpu`, returning its previous mask (to restore).
fn pin(cpu: usize) -> Option<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is a plain bit array (all zeroes is the empty set); both calls get a
    // pointer to a live set and its exact size; CPU_SET stays within the set for any `cpu`
    // below CPU_SETSIZE (sched_getcpu's answer always is).
    unsafe {
        let mut old: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of_val(&old), &mut old) != 0 {
            return None;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        Some(old)
    }
}

fn unpin(old: Option<libc::cpu_set_t>) {
    if let Some(old) = old {
        // SAFETY: `old` is a live cpu_set_t from sched_getaffinity, passed with its size.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&old), &old) };
    }
}

/// Pipe ping-pong between two threads pinned to one CPU: every one-byte trip is a wakeup and a
/// switch, so half a round trip is the cost of one switch plus a pipe read and write.
fn ctx_switch(reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    use std::io::{Read, Write};
    let (mut r_ab, mut w_ab) = std::io::pipe()?;
    let (mut r_ba, mut w_ba) = std::io::pipe()?;
    // SAFETY: sched_getcpu takes no arguments.
    let cpu = errno(unsafe { libc::sched_getcpu() }).unwrap_or(0) as usize;
    let total = iters.div_ceil(10).max(1) + iters * reps as u64;
    let echo = std::thread::spawn(move || {
        let old = pin(cpu);
        let mut b = [0u8; 1];
        for _ in 0..total {
            if !matches!(r_ab.read(&mut b), Ok(1)) || !matches!(w_ba.write(&b), Ok(1)) {
                break;
            }
        }
        unpin(old);
    });
    let old = pin(cpu);
    let res = time(reps, iters, |n| {
        let mut b = [7u8; 1];
        for _ in 0..n {
            w_ab.write_all(&b)?;
            r_ba.read_exact(&mut b)?;
        }
        Ok(())
    });
    unpin(old);
    // Closing our ends ends an echo thread still waiting (after an error) with EOF.
    drop((w_ab, r_ba));
    let _ = echo.join();
    // Two switches per round trip.
    res.map(|v| v.into_iter().map(|ns| ns / 2.0).collect())
}

fn open_close(s: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    time(reps, iters, |k| {
        for _ in 0..k {
            // SAFETY: `small_path` is a NUL-terminated path that outlives the call.
            let fd = errno(unsafe { libc::open(s.small_path.as_ptr(), libc::O_RDONLY) })?;
            // SAFETY: `fd` was just opened here and is not used after.
            unsafe { libc::close(fd) };
        }
        Ok(())
    })
}

fn stat(s: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    time(reps, iters, |k| {
        // SAFETY: `struct stat` is plain integers, for which all zeroes is valid.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        for _ in 0..k {
            // SAFETY: a NUL-terminated path and a live `struct stat` to fill.
            errno(unsafe { libc::stat(s.small_path.as_ptr(), &mut st) })?;
        }
        Ok(())
    })
}

/// Maps `size` bytes of the 1 MB file, reads a byte of every page (a server that maps a file
/// then faults it in) and unmaps it.
fn mmap_touch_munmap(
    s: &Scratch,
    size: usize,
    reps: usize,
    iters: u64,
) -> std::io::Result<Vec<f64>> {
    let fd = s.big_file.as_raw_fd();
    time(reps, iters, |k| {
        for _ in 0..k {
            // SAFETY: a new private read-only mapping of an open file at least `size` long;
            // it aliases no Rust memory.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    fd,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            let mut sum = 0u8;
            for off in (0..size).step_by(4096) {
                // SAFETY: `off` < `size`: inside the readable mapping, which the file backs.
                sum =
                    sum.wrapping_add(unsafe { std::ptr::read_volatile((p as *const u8).add(off)) });
            }
            std::hint::black_box(sum);
            // SAFETY: `p` is the mapping made above, `size` its length; nothing refers to it.
            unsafe { libc::munmap(p, size) };
        }
        Ok(())
    })
}

/// 64 KB from the page cache to a loopback TCP socket (whose peer drains it) by pread + write.
fn read_write(s: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    let (ffd, sfd) = (s.small_file.as_raw_fd(), s.tx.as_raw_fd());
    let mut buf = vec![0u8; CHUNK];
    time(reps, iters, |k| {
        for _ in 0..k {
            // SAFETY: `buf` has room for the CHUNK bytes asked for; `ffd` is an open file.
            let r = errno(unsafe { libc::pread(ffd, buf.as_mut_ptr().cast(), CHUNK, 0) })?;
            let mut off = 0;
            while off < r as usize {
                // SAFETY: writes from the initialized `buf[off..r]`; `sfd` is an open socket.
                let w = errno(unsafe {
                    libc::write(sfd, buf[off..].as_ptr().cast(), r as usize - off)
                })?;
                off += w as usize;
            }
        }
        Ok(())
    })
}

/// The same 64 KB by sendfile.
fn sendfile(s: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    let (ffd, sfd) = (s.small_file.as_raw_fd(), s.tx.as_raw_fd());
    time(reps, iters, |k| {
        for _ in 0..k {
            let mut off: libc::off_t = 0;
            while (off as usize) < CHUNK {
                // SAFETY: open socket and file fds; `off` is a live offset sendfile advances.
                errno(unsafe { libc::sendfile(sfd, ffd, &mut off, CHUNK - off as usize) })?;
            }
        }
        Ok(())
    })
}

fn connect_accept(s: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    let addr = s.listener.local_addr()?;
    time(reps, iters, |k| {
        for _ in 0..k {
            let c = TcpStream::connect(addr)?;
            let (server, _) = s.listener.accept()?;
            // The server side closes first, so TIME_WAIT does not pin client ports.
            drop(server);
            drop(c);
        }
        Ok(())
    })
}

/// Registers an eventfd in epoll and removes it again.
fn epoll_ctl(s: &Scratch, reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    let (ep, efd) = (s.epoll.as_raw_fd(), s.eventfd.as_raw_fd());
    time(reps, iters, |k| {
        for _ in 0..k {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 0,
            };
            // SAFETY: open epoll and eventfd fds; `ev` is a live event the kernel copies.
            errno(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev) })?;
            // SAFETY: as above (DEL ignores the event).
            errno(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, efd, &mut ev) })?;
        }
        Ok(())
    })
}

/// Adds each traced median (matched by name) and its difference to the untraced one.
pub fn merge_traced(costs: &mut [Cost], traced: &[Cost]) {
    for c in costs {
        if let Some(t) = traced.iter().find(|t| t.name == c.name) {
            c.traced_ns_per_op = Some(t.ns_per_op);
            c.added_ns_per_op = Some(t.ns_per_op - c.ns_per_op);
        }
    }
}

/// The costs as a table: median ns per operation and the spread over repetitions (and, after
/// `--traced`, the traced median and what the probes added).
pub fn render_table(costs: &[Cost]) -> String {
    use prettytable::{format, row, Cell, Row, Table};
    let traced = costs.iter().any(|c| c.traced_ns_per_op.is_some());
    let mut t = Table::new();
    t.set_format(*format::consts::FORMAT_NO_BORDER_LINE_SEPARATOR);
    let mut titles = row!["operation", "per op (median)", "min", "max", "reps"];
    if traced {
        titles.add_cell(Cell::new("traced"));
        titles.add_cell(Cell::new("added"));
    }
    t.set_titles(titles);
    let ns = |v: f64| crate::render::fmt_ns(v.round() as u64);
    for c in costs {
        let mut cells = vec![
            Cell::new(&c.name),
            Cell::new(&ns(c.ns_per_op)).style_spec("r"),
            Cell::new(&ns(c.min_ns)).style_spec("r"),
            Cell::new(&ns(c.max_ns)).style_spec("r"),
            Cell::new(&c.reps.to_string()).style_spec("r"),
        ];
        if traced {
            let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or("-".into(), f);
            cells.push(Cell::new(&opt(c.traced_ns_per_op, &ns)).style_spec("r"));
            cells.push(
                Cell::new(&opt(c.added_ns_per_op, &|a: f64| {
                    if a < 0.0 {
                        format!("-{}", ns(-a))
                    } else {
                        format!("+{}", ns(a))
                    }
                }))
                .style_spec("r"),
            );
        }
        t.add_row(Row::new(cells));
    }
    t.to_string()
}

#[derive(Serialize)]
struct CostsJson<'a> {
    costs: &'a [Cost],
    /// With `--traced`: the families attached and the method each used.
    #[serde(skip_serializing_if = "Option::is_none")]
    traced_with: Option<&'a std::collections::BTreeMap<&'static str, String>>,
}

pub fn run(args: CostsArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let opts = CostsOptions {
        reps: args.reps,
        ..CostsOptions::default()
    };
    let mut costs = measure(&opts)?;
    let mut methods = None;
    if args.traced {
        let families = crate::families::parse_families(&args.probes)?;
        let forced = crate::families::parse_forced(&args.methods)?;
        let (feats, notes) = crate::kernel::features::for_attaching("kpath costs --traced")?;
        for n in notes {
            log::info!("{n}");
        }
        let load = crate::families::LoadOptions {
            families,
            targets: crate::probes::Targets {
                pids: vec![std::process::id()],
                ..Default::default()
            },
            forced,
            offcpu_min_ns: args.offcpu_min_us.saturating_mul(1000),
            ..Default::default()
        };
        let mut probes = crate::families::load(&load, &feats).context("attaching probes")?;
        let traced = measure(&opts);
        methods = Some(
            probes
                .methods
                .iter()
                .map(|(f, m)| (*f, m.name().to_string()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        );
        probes.detach();
        merge_traced(&mut costs, &traced?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&CostsJson {
                costs: &costs,
                traced_with: methods.as_ref(),
            })?
        );
    } else {
        print!("{}", render_table(&costs));
        if let Some(m) = &methods {
            let list: Vec<String> = m.iter().map(|(f, m)| format!("{f}={m}")).collect();
            println!(
                "traced: kpath's probes attached to this process ({}); added = traced - untraced \
                 median per operation (for the null syscall: one traced enter+exit pair, including \
                 the kernel's syscall-tracing slow path)",
                list.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_of_odd_and_even_counts() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0, 3.0, 2.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(spread(&[5.0]), Some((5.0, 5.0, 5.0)));
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn cost_is_the_median_with_its_spread() {
        let c = cost("x", &[100.0, 900.0, 120.0, 110.0, 130.0]).unwrap();
        assert_eq!(
            (c.ns_per_op, c.min_ns, c.max_ns, c.reps),
            (120.0, 100.0, 900.0, 5)
        );
        let v = serde_json::to_value(&c).unwrap();
        for k in ["name", "ns_per_op", "min_ns", "max_ns", "reps"] {
            assert!(!v[k].is_null(), "{k}");
        }
    }

    #[test]
    fn traced_medians_merge_by_name_and_show_in_the_table() {
        let mut costs = vec![
            cost("null syscall", &[100.0]).unwrap(),
            cost("stat", &[700.0]).unwrap(),
        ];
        assert!(!render_table(&costs).contains("added"));
        merge_traced(&mut costs, &[cost("null syscall", &[370.0]).unwrap()]);
        assert_eq!(costs[0].traced_ns_per_op, Some(370.0));
        assert_eq!(costs[0].added_ns_per_op, Some(270.0));
        assert_eq!(costs[1].added_ns_per_op, None);
        let text = render_table(&costs);
        assert!(text.contains("added"), "{text}");
        assert!(text.contains("+270ns"), "{text}");
        let v = serde_json::to_value(&costs[1]).unwrap();
        assert!(v.get("added_ns_per_op").is_none(), "{v}");
    }

    #[test]
    fn zero_reps_is_an_error() {
        let e = measure(&CostsOptions {
            reps: 0,
            ..Default::default()
        });
        assert!(matches!(e, Err(CostsError::Reps)));
    }

    #[test]
    fn table_lists_every_cost() {
        let t = render_table(&[cost("stat", &[250.0, 260.0]).unwrap()]);
        assert!(t.contains("stat") && t.contains("255ns"), "{t}");
    }
}
