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
use std::os::fd::AsRawFd;
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
                                               the same with the trace events instead of raw tracepoints")]
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

type Op<'a> = Box<dyn FnMut(u64) -> std::io::Result<()> + 'a>;

fn errno<T: PartialOrd + Default>(r: T) -> std::io::Result<T> {
    if r < T::default() {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Times `op(iters)` `reps` times after one warm-up; returns ns per operation per repetition.
fn time(reps: usize, iters: u64, mut op: Op<'_>) -> std::io::Result<Vec<f64>> {
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

/// Pins the calling thread to `cpu`, returning its previous mask (to restore).
fn pin(cpu: usize) -> Option<libc::cpu_set_t> {
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
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&old), &old) };
    }
}

/// Pipe ping-pong between two threads pinned to one CPU: every one-byte trip is a wakeup and a
/// switch, so half a round trip is the cost of one switch plus a pipe read and write.
fn ctx_switch(reps: usize, iters: u64) -> std::io::Result<Vec<f64>> {
    let mut ab = [0; 2];
    let mut ba = [0; 2];
    errno(unsafe { libc::pipe(ab.as_mut_ptr()) })?;
    errno(unsafe { libc::pipe(ba.as_mut_ptr()) })?;
    let cpu = errno(unsafe { libc::sched_getcpu() }).unwrap_or(0) as usize;
    let total = iters.div_ceil(10).max(1) + iters * reps as u64;
    let (r_ab, w_ba) = (ab[0], ba[1]);
    let echo = std::thread::spawn(move || {
        let old = pin(cpu);
        let mut b = [0u8; 1];
        for _ in 0..total {
            if unsafe { libc::read(r_ab, b.as_mut_ptr().cast(), 1) } != 1
                || unsafe { libc::write(w_ba, b.as_ptr().cast(), 1) } != 1
            {
                break;
            }
        }
        unpin(old);
    });
    let old = pin(cpu);
    let (w_ab, r_ba) = (ab[1], ba[0]);
    let res = time(
        reps,
        iters,
        Box::new(|n| {
            let mut b = [7u8; 1];
            for _ in 0..n {
                errno(unsafe { libc::write(w_ab, b.as_ptr().cast(), 1) })?;
                errno(unsafe { libc::read(r_ba, b.as_mut_ptr().cast(), 1) })?;
            }
            Ok(())
        }),
    );
    unpin(old);
    for fd in [ab[1], ba[0]] {
        unsafe { libc::close(fd) };
    }
    let _ = echo.join();
    for fd in [ab[0], ba[1]] {
        unsafe { libc::close(fd) };
    }
    // Two switches per round trip.
    res.map(|v| v.into_iter().map(|ns| ns / 2.0).collect())
}

/// Runs every benchmark.
pub fn measure(opts: &CostsOptions) -> Result<Vec<Cost>, CostsError> {
    if opts.reps == 0 {
        return Err(CostsError::Reps);
    }
    let n = |base: u64| ((base as f64 * opts.scale) as u64).max(10);
    let reps = opts.reps;
    let mut out = Vec::new();
    let mut push = |name: &'static str, r: std::io::Result<Vec<f64>>, op: &'static str| {
        let samples = r.map_err(|source| CostsError::Op { name, op, source })?;
        out.extend(cost(name, &samples));
        Ok::<(), CostsError>(())
    };
    let file_err = |name: &'static str| {
        move |source| CostsError::Op {
            name,
            op: "creating a scratch file",
            source,
        }
    };

    push(
        "null syscall (getpid)",
        time(
            reps,
            n(200_000),
            Box::new(|k| {
                for _ in 0..k {
                    unsafe { libc::syscall(libc::SYS_getpid) };
                }
                Ok(())
            }),
        ),
        "getpid",
    )?;
    push(
        "context switch (pipe ping-pong, one CPU)",
        ctx_switch(reps, n(20_000)),
        "pipe ping-pong",
    )?;

    let (small, _f) = scratch_file(&opts.tmp, "64k", 64 * 1024).map_err(file_err("open+close"))?;
    let cpath = std::ffi::CString::new(small.as_os_str().as_encoded_bytes()).expect("no NUL");
    push(
        "open+close",
        time(
            reps,
            n(50_000),
            Box::new(|k| {
                for _ in 0..k {
                    let fd = errno(unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY) })?;
                    unsafe { libc::close(fd) };
                }
                Ok(())
            }),
        ),
        "open",
    )?;
    push(
        "stat",
        time(
            reps,
            n(100_000),
            Box::new(|k| {
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                for _ in 0..k {
                    errno(unsafe { libc::stat(cpath.as_ptr(), &mut st) })?;
                }
                Ok(())
            }),
        ),
        "stat",
    )?;

    let (big, big_file) =
        scratch_file(&opts.tmp, "1m", 1 << 20).map_err(file_err("mmap+munmap 1 MB"))?;
    for (name, size, base) in [
        ("mmap+touch+munmap 4 KB file", 4096usize, 50_000),
        ("mmap+touch+munmap 1 MB file", 1 << 20, 2_000),
    ] {
        let fd = big_file.as_raw_fd();
        push(
            name,
            time(
                reps,
                n(base),
                Box::new(move |k| {
                    for _ in 0..k {
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
                        // Touch every page: a server that maps a file then faults it in.
                        let mut sum = 0u8;
                        for off in (0..size).step_by(4096) {
                            sum = sum.wrapping_add(unsafe {
                                std::ptr::read_volatile((p as *const u8).add(off))
                            });
                        }
                        std::hint::black_box(sum);
                        unsafe { libc::munmap(p, size) };
                    }
                    Ok(())
                }),
            ),
            "mmap",
        )?;
    }

    // 64 KB from the page cache to a loopback TCP socket whose peer drains it.
    let small_file = File::open(&small).map_err(file_err("read+write 64 KB"))?;
    let sock = |name: &'static str| {
        move |source| CostsError::Op {
            name,
            op: "loopback socket",
            source,
        }
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(sock("sendfile"))?;
    let addr = listener.local_addr().map_err(sock("sendfile"))?;
    let tx = TcpStream::connect(addr).map_err(sock("sendfile"))?;
    let (mut rx, _) = listener.accept().map_err(sock("sendfile"))?;
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while matches!(rx.read(&mut buf), Ok(n) if n > 0) {}
    });
    const CHUNK: usize = 64 * 1024;
    let (ffd, sfd) = (small_file.as_raw_fd(), tx.as_raw_fd());
    let mut buf = vec![0u8; CHUNK];
    push(
        "read+write 64 KB (file to TCP)",
        time(
            reps,
            n(5_000),
            Box::new(|k| {
                for _ in 0..k {
                    let r = errno(unsafe { libc::pread(ffd, buf.as_mut_ptr().cast(), CHUNK, 0) })?;
                    let mut off = 0;
                    while off < r as usize {
                        let w = errno(unsafe {
                            libc::write(sfd, buf[off..].as_ptr().cast(), r as usize - off)
                        })?;
                        off += w as usize;
                    }
                }
                Ok(())
            }),
        ),
        "read+write",
    )?;
    push(
        "sendfile 64 KB (file to TCP)",
        time(
            reps,
            n(5_000),
            Box::new(|k| {
                for _ in 0..k {
                    let mut off: libc::off_t = 0;
                    while (off as usize) < CHUNK {
                        errno(unsafe { libc::sendfile(sfd, ffd, &mut off, CHUNK - off as usize) })?;
                    }
                }
                Ok(())
            }),
        ),
        "sendfile",
    )?;
    drop(tx);
    let _ = drain.join();

    push(
        "loopback connect+accept+close",
        time(
            reps,
            n(2_000),
            Box::new(|k| {
                for _ in 0..k {
                    let c = TcpStream::connect(addr)?;
                    let (s, _) = listener.accept()?;
                    // The server side closes first, so TIME_WAIT does not pin client ports.
                    drop(s);
                    drop(c);
                }
                Ok(())
            }),
        ),
        "connect",
    )?;

    let ep = errno(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map_err(|source| {
        CostsError::Op {
            name: "epoll_ctl add+del",
            op: "epoll_create1",
            source,
        }
    })?;
    let target = small_file.as_raw_fd();
    let efd = errno(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }).unwrap_or(target);
    let r = time(
        reps,
        n(100_000),
        Box::new(|k| {
            for _ in 0..k {
                let mut ev = libc::epoll_event {
                    events: libc::EPOLLIN as u32,
                    u64: 0,
                };
                errno(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, efd, &mut ev) })?;
                errno(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, efd, &mut ev) })?;
            }
            Ok(())
        }),
    );
    unsafe {
        libc::close(ep);
        libc::close(efd);
    }
    push("epoll_ctl add+del", r, "epoll_ctl")?;
    let _ = std::fs::remove_file(&small);
    let _ = std::fs::remove_file(&big);
    Ok(out)
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
            targets: vec![std::process::id()],
            forced,
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
