//! The unwind oracle: real stacks of frameless programs, stopped inside a syscall with ptrace,
//! unwound twice — by kpath's tables and walk twin (`kpath::unwind`) and by framehop (an
//! independent unwinder reading the same binaries' `.eh_frame`) — must give the same
//! return addresses and reach the thread's root. Runs without root: the test traces its own
//! children.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, Module, Unwinder};
use kpath::unwind::maps::{self, MapsEntry};
use kpath::unwind::{walk, CacheOptions, Registry, Regs};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};
use probe_common::unwind::{cfa, rbp, Error, Row};

/// The C fixture, built once with the flags of the frameless builds kpath meets.
fn fixture() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_fixture("frames", &[]))
}

/// The fixture with its own code's CFI in `.debug_frame` only (no `.eh_frame` FDEs for it;
/// the C runtime's objects keep theirs).
fn fixture_debug_frame() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let flags = [
            "-g",
            "-fno-asynchronous-unwind-tables",
            "-fno-unwind-tables",
        ];
        build_fixture("frames-debug-frame", &flags)
    })
}

fn build_fixture(name: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/unwind/frames.c");
    let out = common::tmpdir("unwind-fixture").join(name);
    let res = Command::new("cc")
        .args(["-O2", "-fomit-frame-pointer", "-pthread"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        res.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

/// A child with one thread stopped by ptrace; killed on drop.
struct Stopped {
    child: Child,
    pid: u32,
    tid: u32,
    regs: libc::user_regs_struct,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        // A traced thread that is not the leader must be reaped by its tracer before the
        // process's exit can be waited for.
        if self.tid != self.pid {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer; tid is our tracee.
            unsafe { libc::waitpid(self.tid as libc::pid_t, &mut status, libc::__WALL) };
        }
        let _ = self.child.wait();
    }
}

/// Starts `cmd`, waits for the thread it names on a `READY <tid>` line (or, without one,
/// `pick(pid)` for a thread to stop), waits until that thread sleeps in a syscall, and stops
/// it there.
fn stop(mut cmd: Command, pick: Option<&dyn Fn(u32) -> Option<u32>>) -> Stopped {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let tid = match pick {
        None => {
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(out).read_line(&mut line);
                let _ = tx.send(line);
            });
            let line = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("READY line");
            line.trim()
                .strip_prefix("READY ")
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("bad line {line:?}"))
        }
        Some(pick) => loop {
            if let Some(t) = pick(pid) {
                break t;
            }
            assert!(Instant::now() < deadline, "no thread to stop in {pid}");
            std::thread::sleep(Duration::from_millis(20));
        },
    };
    // Sleeping (S) means it is inside its blocking syscall, not on the way to it.
    while std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('S')))
        != Some(true)
    {
        assert!(Instant::now() < deadline, "thread {tid} never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    let tid_t = tid as libc::pid_t;
    // SAFETY: plain ptrace requests on a thread of our own child; no pointers are passed.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, tid_t, 0, 0),
            0,
            "PTRACE_SEIZE: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::ptrace(libc::PTRACE_INTERRUPT, tid_t, 0, 0),
            0,
            "PTRACE_INTERRUPT"
        );
    }
    let mut status = 0;
    // SAFETY: status is a valid out-pointer for the call's duration.
    let r = unsafe { libc::waitpid(tid_t, &mut status, libc::__WALL) };
    assert_eq!(r, tid_t, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFSTOPPED(status), "not stopped: {status:#x}");
    // SAFETY: all-zero bytes are a valid user_regs_struct (plain integers).
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: GETREGS writes one user_regs_struct to the pointer, which points at one.
    let r = unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid_t, 0, &mut regs as *mut _) };
    assert_eq!(r, 0, "PTRACE_GETREGS: {}", std::io::Error::last_os_error());
    Stopped {
        child,
        pid,
        tid,
        regs,
    }
}

/// The stopped thread's stack from rsp up to the end of its mapping (at most 1 MiB).
struct Snapshot {
    base: u64,
    bytes: Vec<u8>,
}

impl Snapshot {
    fn take(s: &Stopped, entries: &[MapsEntry]) -> Snapshot {
        let rsp = s.regs.rsp;
        let m = entries
            .iter()
            .find(|e| e.start <= rsp && rsp < e.end)
            .expect("rsp in a mapping");
        let len = (m.end - rsp).min(1 << 20) as usize;
        let mut bytes = vec![0u8; len];
        let local = libc::iovec {
            iov_base: bytes.as_mut_ptr().cast(),
            iov_len: len,
        };
        let remote = libc::iovec {
            iov_base: rsp as *mut _,
            iov_len: len,
        };
        // SAFETY: one local iovec over `bytes` (len bytes, writable), one remote range of the
        // child; the kernel checks the remote side.
        let n = unsafe { libc::process_vm_readv(s.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        assert_eq!(
            n,
            len as isize,
            "process_vm_readv: {}",
            std::io::Error::last_os_error()
        );
        Snapshot { base: rsp, bytes }
    }

    fn read(&self, addr: u64) -> Option<u64> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        Some(u64::from_le_bytes(
            self.bytes.get(off..off + 8)?.try_into().ok()?,
        ))
    }
}

/// One executable module of the process as the test reads it itself (not through kpath).
struct Image {
    path: String,
    start: u64,
    end: u64,
    /// Runtime address of link address 0.
    base: u64,
    data: Vec<u8>,
}

fn images(pid: u32, entries: &[MapsEntry]) -> Vec<Image> {
    let mut out = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.exec && (e.is_file() || e.is_vdso()))
    {
        let data = if e.is_vdso() {
            let f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
            let mut b = vec![0; (e.end - e.start) as usize];
            f.read_exact_at(&mut b, e.start).unwrap();
            b
        } else {
            std::fs::read(&e.path).unwrap()
        };
        // The lowest mapping of the file holds its first PT_LOAD, at its page-rounded vaddr.
        let lowest = entries
            .iter()
            .filter(|o| o.path == e.path)
            .map(|o| o.start)
            .min()
            .unwrap();
        let file = object::File::parse(&*data).unwrap();
        let first = file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff;
        out.push(Image {
            path: e.path.clone(),
            start: e.start,
            end: e.end,
            base: lowest - first,
            data,
        });
    }
    out
}

/// framehop's frames and whether it found the end of the stack.
fn framehop_walk(
    images: &[Image],
    regs: &libc::user_regs_struct,
    snap: &Snapshot,
) -> (Vec<u64>, bool) {
    framehop_walk_with(images, regs, snap, None)
}

/// [`framehop_walk`], giving framehop only the `.debug_frame` of the image at `debug_frame_only`
/// (framehop reads `.debug_frame` only for a module without `.eh_frame`).
fn framehop_walk_with(
    images: &[Image],
    regs: &libc::user_regs_struct,
    snap: &Snapshot,
    debug_frame_only: Option<&Path>,
) -> (Vec<u64>, bool) {
    let mut unwinder = UnwinderX86_64::new();
    for im in images {
        let only_debug = debug_frame_only == Some(Path::new(&im.path));
        let file = object::File::parse(&*im.data).unwrap();
        let sect = |name: &str| {
            file.section_by_name(name).map(|s| {
                (
                    s.address()..s.address() + s.size(),
                    s.data().unwrap().to_vec(),
                )
            })
        };
        let eh = |name| if only_debug { None } else { sect(name) };
        let (eh_frame_svma, eh_frame) = eh(".eh_frame").unzip();
        let (eh_frame_hdr_svma, eh_frame_hdr) = eh(".eh_frame_hdr").unzip();
        let debug_frame = sect(".debug_frame").map(|d| d.1);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: sect(".text").map(|t| t.0),
            eh_frame_svma,
            eh_frame,
            eh_frame_hdr_svma,
            eh_frame_hdr,
            got_svma: sect(".got").map(|t| t.0),
            debug_frame,
            ..Default::default()
        };
        unwinder.add_module(Module::new(
            im.path.clone(),
            im.start..im.end,
            im.base,
            info,
        ));
    }
    let mut cache = CacheX86_64::<_>::new();
    let mut read = |a| snap.read(a).ok_or(());
    let mut it = unwinder.iter_frames(
        regs.rip,
        UnwindRegsX86_64::new(regs.rip, regs.rsp, regs.rbp),
        &mut cache,
        &mut read,
    );
    let mut frames = Vec::new();
    loop {
        match it.next() {
            Ok(Some(f)) => frames.push(f.address()),
            Ok(None) => return (frames, true),
            Err(_) => return (frames, false),
        }
    }
}

/// Function names by runtime address, from each image's .symtab, else .dynsym.
struct Symbols(Vec<(u64, u64, String)>);

impl Symbols {
    fn new(images: &[Image]) -> Symbols {
        let mut all = Vec::new();
        for im in images {
            let file = object::File::parse(&*im.data).unwrap();
            let mut syms: Vec<_> = file.symbols().collect();
            if syms.is_empty() {
                syms = file.dynamic_symbols().collect();
            }
            for s in syms
                .into_iter()
                .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
            {
                let start = im.base + s.address();
                all.push((start, start + s.size(), s.name().unwrap_or("").to_owned()));
            }
        }
        Symbols(all)
    }

    /// The names of the function holding `pc`, aliases joined by `|` (`gsignal|raise`).
    fn name(&self, pc: u64) -> String {
        let mut names: Vec<&str> = self
            .0
            .iter()
            .filter(|(s, e, _)| *s <= pc && pc < *e)
            .map(|(_, _, n)| n.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            "?".to_owned()
        } else {
            names.join("|")
        }
    }
}

/// Both unwinds of one stopped thread, and what they read.
struct Unwound {
    ours: kpath::unwind::Walk,
    theirs: Vec<u64>,
    theirs_complete: bool,
    names: Vec<String>,
    images: Vec<Image>,
    snap: Snapshot,
    syms: Symbols,
}

fn unwind(s: &Stopped) -> Unwound {
    let entries = maps::read(s.pid).unwrap();
    let snap = Snapshot::take(s, &entries);
    let mut registry = Registry::new(CacheOptions {
        dir: None,
        ..CacheOptions::default()
    });
    let tables = registry.add_process(s.pid).unwrap();
    let regs = Regs {
        rip: s.regs.rip,
        rsp: s.regs.rsp,
        rbp: s.regs.rbp,
    };
    let ours = walk(regs, |a| snap.read(a), &tables.maps, registry.rows());
    let images = images(s.pid, &entries);
    let (theirs, theirs_complete) = framehop_walk(&images, &s.regs, &snap);
    let syms = Symbols::new(&images);
    let names = ours
        .frames
        .iter()
        .enumerate()
        .map(|(i, &pc)| syms.name(if i == 0 { pc } else { pc - 1 }))
        .collect();
    Unwound {
        ours,
        theirs,
        theirs_complete,
        names,
        images,
        snap,
        syms,
    }
}

/// The two unwinds agree and both end at the root; returns the frames' names, innermost first.
fn check(u: &Unwound, what: &str) -> Vec<String> {
    let listing = u
        .ours
        .frames
        .iter()
        .zip(&u.names)
        .map(|(a, n)| format!("  {a:#x} {n}"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        u.ours.frames, u.theirs,
        "{what}: kpath and framehop differ; kpath's:\n{listing}"
    );
    assert_eq!(
        u.ours.outcome,
        Error::Complete,
        "{what}: kpath stopped early:\n{listing}"
    );
    assert!(
        u.theirs_complete,
        "{what}: framehop did not reach the end of the stack"
    );
    assert_eq!(u.ours.fp_steps, 0, "{what}: frame-pointer steps taken");
    eprintln!(
        "{what}: {} frames, identical, complete\n{listing}",
        u.ours.frames.len()
    );
    u.names.clone()
}

fn fixture_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(fixture());
    cmd.args(args);
    cmd
}

/// Whether a frame's names (aliases joined by `|`) include `f`.
fn is(names: &str, f: &str) -> bool {
    names.split('|').any(|n| n == f)
}

fn count(names: &[String], f: &str) -> usize {
    names.iter().filter(|n| is(n, f)).count()
}

fn pos(names: &[String], f: &str) -> usize {
    names
        .iter()
        .position(|n| is(n, f))
        .unwrap_or_else(|| panic!("{f} missing: {names:?}"))
}

fn root(names: &[String]) -> &str {
    names.last().map_or("", String::as_str)
}

#[test]
fn recursion_120_deep_is_complete() {
    let s = stop(fixture_cmd(&["recurse", "120"]), None);
    let names = check(&unwind(&s), "recurse 120");
    assert_eq!(count(&names, "recurse"), 121);
    assert_eq!(root(&names), "_start");
    assert!(pos(&names, "kpath_block_here") < pos(&names, "main"));
}

#[test]
fn recursion_in_code_described_by_debug_frame_only() {
    let data = std::fs::read(fixture_debug_frame()).unwrap();
    let file = object::File::parse(&*data).unwrap();
    assert!(file.section_by_name(".debug_frame").is_some());
    let mut cmd = Command::new(fixture_debug_frame());
    cmd.args(["recurse", "40"]);
    let s = stop(cmd, None);
    let mut u = unwind(&s);
    // framehop reads the fixture's .debug_frame only when given no .eh_frame for it; then the
    // C runtime's _start (CFI in .eh_frame) is the one frame it cannot step through, so it
    // reports the same frames and stops there without the end-of-stack verdict.
    let regs = s.regs;
    let (theirs, _) = framehop_walk_with(&u.images, &regs, &u.snap, Some(fixture_debug_frame()));
    u.theirs = theirs;
    u.theirs_complete = true;
    let names = check(&u, "recurse 40, .debug_frame");
    assert_eq!(count(&names, "recurse"), 41);
    assert!(pos(&names, "recurse") < pos(&names, "main"));
    assert_eq!(root(&names), "_start");
}

#[test]
fn recursion_150_deep_stops_at_the_frame_limit() {
    let s = stop(fixture_cmd(&["recurse", "150"]), None);
    let u = unwind(&s);
    // Both unwinders agree on the first MAX_FRAMES frames; kpath stops there and says so.
    let n = probe_common::unwind::MAX_FRAMES;
    assert_eq!(u.ours.frames.len(), n);
    assert_eq!(u.ours.outcome, Error::DepthLimit);
    assert_eq!(u.ours.frames[..], u.theirs[..n]);
    assert!(u.theirs_complete);
    // read, kpath_block_here, then recursion to the limit.
    assert_eq!(count(&u.names, "recurse"), n - 2, "{:?}", &u.names[..4]);
}

#[test]
fn through_the_plt_into_libc_and_back() {
    let s = stop(fixture_cmd(&["plt"]), None);
    let names = check(&unwind(&s), "qsort callback");
    // glibc's qsort is qsort_r with no context (one symbol covers both).
    assert!(pos(&names, "compare") < pos(&names, "qsort_r"));
    assert!(pos(&names, "qsort_r") < pos(&names, "main"));
    assert_eq!(root(&names), "_start");
}

/// framehop cannot step through the signal trampoline (its CFA is an expression that reads
/// memory), so its unwind is checked in two parts: up to the trampoline, then from the
/// interrupted registers, which the test reads from the handler's `ucontext_t` (its address
/// kept by the fixture, its layout from libc's definition, not from kpath's constants).
#[test]
fn signal_handler_on_the_stack() {
    let s = stop(fixture_cmd(&["signal"]), None);
    let u = unwind(&s);
    assert!(
        !u.theirs_complete,
        "framehop went through the trampoline on its own"
    );
    let sym = u.syms.0.iter().find(|(_, _, n)| n == "kpath_uc");
    let uc_var = sym.map(|(s, _, _)| *s).unwrap_or_else(|| {
        // A data symbol: Symbols keeps functions only, so look it up in the fixture itself.
        let data = std::fs::read(fixture()).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let addr = file
            .symbols()
            .find(|s| s.name() == Ok("kpath_uc"))
            .unwrap()
            .address();
        let im = u
            .images
            .iter()
            .find(|im| Path::new(&im.path) == fixture())
            .unwrap();
        im.base + addr
    });
    let mut word = [0u8; 8];
    std::fs::File::open(format!("/proc/{}/mem", s.pid))
        .unwrap()
        .read_exact_at(&mut word, uc_var)
        .unwrap();
    let uc = u64::from_le_bytes(word);
    let greg = |r: libc::c_int| {
        let off = std::mem::offset_of!(libc::ucontext_t, uc_mcontext.gregs) + 8 * r as usize;
        u.snap.read(uc + off as u64).expect("ucontext on the stack")
    };
    // SAFETY: all-zero bytes are a valid user_regs_struct (plain integers).
    let mut interrupted: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    interrupted.rip = greg(libc::REG_RIP);
    interrupted.rsp = greg(libc::REG_RSP);
    interrupted.rbp = greg(libc::REG_RBP);
    let (rest, complete) = framehop_walk(&u.images, &interrupted, &u.snap);
    assert!(
        complete,
        "framehop did not finish from the interrupted registers"
    );
    let expected: Vec<u64> = u.theirs.iter().chain(&rest).copied().collect();
    let names = check(
        &Unwound {
            theirs: expected,
            theirs_complete: true,
            ..u
        },
        "signal handler",
    );
    // The handler, then the trampoline, then the interrupted raise() and deep x 5 below it.
    assert!(pos(&names, "handler") < pos(&names, "raise"));
    assert!(pos(&names, "raise") < pos(&names, "deep"));
    assert_eq!(count(&names, "deep"), 5);
    assert_eq!(root(&names), "_start");
}

#[test]
fn alloca_frames_use_rbp() {
    let s = stop(fixture_cmd(&["alloca"]), None);
    let names = check(&unwind(&s), "alloca");
    assert_eq!(count(&names, "with_alloca"), 6);
    assert_eq!(root(&names), "_start");
}

#[test]
fn a_thread_64_frames_deep_reaches_clone3() {
    let s = stop(fixture_cmd(&["threads", "64"]), None);
    assert_ne!(s.tid, s.pid, "the stopped thread is not the main thread");
    let u = unwind(&s);
    let names = check(&u, "thread");
    assert_eq!(count(&names, "recurse"), 65);
    assert_eq!(count(&names, "thread_main"), 1);
    // The root is libc's clone3 (no symbol in Debian's stripped libc): the last frame is in
    // libc, and its row is the STOP row of an FDE with an undefined return address.
    let last = *u.ours.frames.last().unwrap();
    let entries = maps::read(s.pid).unwrap();
    let lib = entries
        .iter()
        .find(|e| e.start <= last && last < e.end)
        .unwrap();
    assert!(lib.path.contains("libc.so"), "root in {}", lib.path);
}

/// The reference server's binary (Rust, no frame pointers): a worker stopped in epoll_wait.
#[test]
fn reference_server_worker_in_epoll_wait() {
    let mut bins = vec![PathBuf::from(common::KPATH)];
    bins.extend(common::release_server());
    for bin in bins {
        let root = common::tmpdir("unwind-serve");
        std::fs::write(root.join("a.txt"), "hello").unwrap();
        let mut cmd = Command::new(&bin);
        cmd.args([
            "serve",
            "--model",
            "epoll",
            "--threads",
            "2",
            "--addr",
            "127.0.0.1:0",
            "--root",
        ])
        .arg(&root);
        let worker = |pid: u32| -> Option<u32> {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()?
                .flatten()
                .find_map(|t| {
                    let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                    let wchan = std::fs::read_to_string(t.path().join("syscall")).ok()?;
                    // x86_64 syscalls 232, 281, 441: epoll_wait, epoll_pwait, epoll_pwait2.
                    let in_wait = ["232 ", "281 ", "441 "]
                        .iter()
                        .any(|n| wchan.starts_with(n));
                    (comm.starts_with("kpath-epoll") && in_wait)
                        .then(|| t.file_name().to_str()?.parse().ok())?
                })
        };
        let s = stop(cmd, Some(&worker));
        let u = unwind(&s);
        let names = check(&u, &bin.display().to_string());
        // epoll_wait in libc, the event loop (inlined into std's closure shims at the opt-levels
        // the test binaries use), std's thread start, then libc's thread root (clone3).
        assert!(is(&names[0], "epoll_wait"), "{names:?}");
        assert!(
            names.iter().any(|n| n.contains("thread_start")),
            "{names:?}"
        );
        let entries = maps::read(s.pid).unwrap();
        let in_file = |pc: u64, f: &str| {
            entries
                .iter()
                .any(|e| e.start <= pc && pc < e.end && e.path.contains(f))
        };
        let last = *u.ours.frames.last().unwrap();
        assert!(in_file(last, "libc.so"), "root {last:#x} not in libc");
        let exe = std::fs::canonicalize(&bin).unwrap();
        let exe = exe.file_name().unwrap().to_str().unwrap();
        let own = u.ours.frames.iter().filter(|&&pc| in_file(pc, exe)).count();
        assert!(own >= 3, "{own} frames in kpath's binary: {names:?}");
    }
}

/// One FDE as readelf prints it: its range and rows of (loc, CFA, rbp, ra) rules.
type ReadelfFde = (u64, u64, Vec<(u64, String, String, String)>);

/// Parses `readelf --debug-dump=frames-interp`. An FDE whose instructions change nothing is
/// printed without rows: it has its CIE's initial rules.
fn readelf_rows(path: &Path) -> Vec<ReadelfFde> {
    let out = Command::new("readelf")
        .arg("--debug-dump=frames-interp")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fdes: Vec<ReadelfFde> = Vec::new();
    let mut fde_cies = Vec::new();
    let mut cies: HashMap<String, Vec<(u64, String, String, String)>> = HashMap::new();
    // Where the rows being read go: Ok(fde index) or Err(cie offset).
    let mut target: Option<Result<usize, String>> = None;
    let mut cols: Vec<String> = Vec::new();
    // CIE offsets are per section (.eh_frame, .debug_frame).
    let mut section = String::new();
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Contents of the ") {
            section = line.to_owned();
        } else if words.get(3) == Some(&"CIE") {
            let key = format!("{section}{}", words[0]);
            cies.insert(key.clone(), Vec::new());
            target = Some(Err(key));
            cols.clear();
        } else if let Some(range) = words.iter().find_map(|w| w.strip_prefix("pc=")) {
            let (a, b) = range.split_once("..").unwrap();
            let cie = words
                .iter()
                .find_map(|w| w.strip_prefix("cie="))
                .unwrap_or("");
            let cie = format!("{section}{cie}");
            fdes.push((hex(a).unwrap(), hex(b).unwrap(), Vec::new()));
            fde_cies.push(cie);
            target = Some(Ok(fdes.len() - 1));
            cols.clear();
        } else if words.first() == Some(&"LOC") {
            cols = words.iter().map(|w| w.to_string()).collect();
        } else if let (Some(t), Some(loc)) = (&target, hex(words.first().unwrap_or(&""))) {
            if words.len() == cols.len() && !cols.is_empty() {
                let col = |name: &str| {
                    cols.iter()
                        .position(|c| c == name)
                        .map_or("u".to_owned(), |i| words[i].to_owned())
                };
                let row = (loc, col("CFA"), col("rbp"), col("ra"));
                match t {
                    Ok(i) => fdes[*i].2.push(row),
                    Err(cie) => cies.get_mut(cie).unwrap().push(row),
                }
            }
        }
    }
    for (fde, cie) in fdes.iter_mut().zip(&fde_cies) {
        if fde.2.is_empty() {
            if let Some((_, c, b, r)) = cies.get(cie).and_then(|rows| rows.last()) {
                fde.2.push((fde.0, c.clone(), b.clone(), r.clone()));
            }
        }
    }
    fdes
}

/// kpath's rows agree with binutils' reading of the same CFI at every row readelf prints.
#[test]
fn rows_match_readelf() {
    for path in [
        fixture(),
        fixture_debug_frame(),
        Path::new("/lib/x86_64-linux-gnu/libc.so.6"),
        Path::new("/usr/sbin/nginx"),
    ] {
        if !path.exists() {
            continue;
        }
        let data = std::fs::read(path).unwrap();
        let built = kpath::unwind::cfi::build(path, &data).unwrap();
        let rows = built.rows;
        let at = |pc: u64| -> Row {
            let i = rows.partition_point(|r| u64::from(r.pc) <= pc);
            assert!(
                i > 0,
                "{}: no row at or before {pc:#x}; first row {:?}",
                path.display(),
                rows.first()
            );
            rows[i - 1]
        };
        let fdes = readelf_rows(path);
        assert!(
            fdes.len() > 10,
            "{}: readelf printed {} FDEs",
            path.display(),
            fdes.len()
        );
        let (mut checked, mut too_far, mut kinds) = (0, 0, HashMap::<u8, usize>::new());
        for (start, end, locs) in &fdes {
            if start == end {
                continue;
            }
            for (loc, cfa_rule, rbp_rule, ra) in locs {
                let r = at(*loc);
                let what = format!(
                    "{}: {loc:#x} CFA={cfa_rule} rbp={rbp_rule} ra={ra}: {r:?}",
                    path.display()
                );
                *kinds.entry(r.cfa).or_default() += 1;
                checked += 1;
                if ra == "u" {
                    assert_eq!(r.cfa, cfa::STOP, "{what}");
                } else if cfa_rule == "exp" {
                    assert!(matches!(r.cfa, cfa::PLT | cfa::SIGNAL), "{what}");
                } else if cfa_rule
                    .split_once('+')
                    .and_then(|(_, o)| o.parse::<i16>().ok())
                    .is_none()
                {
                    // An offset a row cannot hold (libc has frames of 32 KiB and more).
                    assert_eq!(r.cfa, cfa::FP_STEP, "{what}");
                    too_far += 1;
                } else if let Some(off) = cfa_rule.strip_prefix("rsp+") {
                    assert_eq!(
                        (r.cfa, i64::from(r.cfa_offset)),
                        (cfa::RSP, off.parse().unwrap()),
                        "{what}"
                    );
                } else if let Some(off) = cfa_rule.strip_prefix("rbp+") {
                    assert_eq!(
                        (r.cfa, i64::from(r.cfa_offset)),
                        (cfa::RBP, off.parse().unwrap()),
                        "{what}"
                    );
                } else {
                    assert_eq!(r.cfa, cfa::FP_STEP, "{what}");
                }
                if matches!(r.cfa, cfa::RSP | cfa::RBP) {
                    assert_eq!(ra, "c-8", "{what}");
                    match rbp_rule.strip_prefix('c') {
                        Some(off) => assert_eq!(
                            (r.rbp, i64::from(r.rbp_offset)),
                            (rbp::AT_CFA, off.parse().unwrap()),
                            "{what}"
                        ),
                        None if rbp_rule == "u" || rbp_rule == "s" => {
                            assert_eq!(r.rbp, rbp::UNCHANGED, "{what}")
                        }
                        None => assert_eq!(r.rbp, rbp::UNKNOWN, "{what}"),
                    }
                }
            }
            // Past the FDE, unless another starts there: a gap.
            if !fdes.iter().any(|f| f.0 == *end) {
                assert_eq!(at(*end).cfa, 0, "{}: no gap at {end:#x}", path.display());
            }
        }
        eprintln!(
            "{}: {} rows, {checked} readelf rows checked ({too_far} with offsets beyond i16), rows by kind {kinds:?}",
            path.display(),
            rows.len()
        );
    }
}
