//! Kernel symbols from `/proc/kallsyms`: stack frames and lock addresses to names.
//!
//! The table is loaded once per run and queried for every frame, so it keeps one sorted vector
//! and answers by binary search; names share a single string arena to keep loading cheap.

use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where the running kernel publishes its symbols.
pub const KALLSYMS_PATH: &str = "/proc/kallsyms";

/// Farthest a text address may lie past its symbol and still be attributed to it: no kernel
/// function is this large, so anything beyond is a gap between images, not a frame in it.
const MAX_TEXT_OFFSET: u64 = 1 << 20;

/// Farthest a lock may lie inside a data symbol (locks embedded in a static struct).
const MAX_DATA_OFFSET: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line} of kallsyms is malformed: {text:?}")]
    Malformed { line: usize, text: String },
    #[error("kallsyms has no symbols")]
    Empty,
    /// Addresses are hidden from this reader (`kernel.kptr_restrict`, or no CAP_SYSLOG).
    #[error(
        "all {symbols} kallsyms addresses are zero: run as root or set kernel.kptr_restrict=0"
    )]
    AddressesHidden { symbols: usize },
}

/// A resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sym<'a> {
    pub name: &'a str,
    /// Symbol start address.
    pub addr: u64,
    /// `addr_queried - addr`.
    pub offset: u64,
    /// Kernel module, `None` for the core kernel image.
    pub module: Option<&'a str>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    /// Range of the name in `Kallsyms::names`.
    name_start: u32,
    name_len: u32,
    /// Index into `Kallsyms::modules`, `u32::MAX` for none.
    module: u32,
    kind: u8,
}

const NO_MODULE: u32 = u32::MAX;

/// Parsed `/proc/kallsyms`, sorted by address.
#[derive(Debug, Default)]
pub struct Kallsyms {
    entries: Vec<Entry>,
    names: String,
    modules: Vec<String>,
    /// Indices into `entries` of text (function) symbols.
    text: Vec<u32>,
    /// Indices into `entries` of data symbols (`d D b B r R`).
    data: Vec<u32>,
}

fn is_text(kind: u8) -> bool {
    matches!(kind, b't' | b'T' | b'w' | b'W')
}

fn is_data(kind: u8) -> bool {
    matches!(kind, b'd' | b'D' | b'b' | b'B' | b'r' | b'R')
}

impl Kallsyms {
    /// Reads and parses [`KALLSYMS_PATH`].
    pub fn load() -> Result<Self, KallsymsError> {
        Self::load_from(Path::new(KALLSYMS_PATH))
    }

    pub fn load_from(path: &Path) -> Result<Self, KallsymsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KallsymsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses kallsyms text: `ADDR TYPE NAME[\t[MODULE]]` per line.
    pub fn parse(text: &str) -> Result<Self, KallsymsError> {
        let mut k = Kallsyms {
            names: String::with_capacity(text.len() / 2),
            entries: Vec::with_capacity(text.len() / 40),
            ..Default::default()
        };
        let mut any_nonzero = false;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let malformed = || KallsymsError::Malformed {
                line: i + 1,
                text: line.to_string(),
            };
            let mut fields = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let addr = u64::from_str_radix(addr, 16).map_err(|_| malformed())?;
            let &[kind] = kind.as_bytes() else {
                return Err(malformed());
            };
            any_nonzero |= addr != 0;
            let module = match fields.next() {
                Some(m) => {
                    let m = m.trim_start_matches('[').trim_end_matches(']');
                    // Module symbols arrive grouped, so checking the last one suffices.
                    match k.modules.last() {
                        Some(last) if last == m => (k.modules.len() - 1) as u32,
                        _ => match k.modules.iter().position(|x| x == m) {
                            Some(p) => p as u32,
                            None => {
                                k.modules.push(m.to_string());
                                (k.modules.len() - 1) as u32
                            }
                        },
                    }
                }
                None => NO_MODULE,
            };
            let name_start = k.names.len() as u32;
            k.names.push_str(name);
            k.entries.push(Entry {
                addr,
                name_start,
                name_len: name.len() as u32,
                module,
                kind,
            });
        }
        if k.entries.is_empty() {
            return Err(KallsymsError::Empty);
        }
        if !any_nonzero {
            return Err(KallsymsError::AddressesHidden {
                symbols: k.entries.len(),
            });
        }
        // Stable: among aliases at one address, file order decides.
        k.entries.sort_by_key(|e| e.addr);
        for (i, e) in k.entries.iter().enumerate() {
            if is_text(e.kind) {
                k.text.push(i as u32);
            } else if is_data(e.kind) {
                k.data.push(i as u32);
            }
        }
        Ok(k)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn name_of(&self, e: &Entry) -> &str {
        let r: Range<usize> = e.name_start as usize..(e.name_start + e.name_len) as usize;
        &self.names[r]
    }

    fn sym(&self, e: &Entry, addr: u64) -> Sym<'_> {
        Sym {
            name: self.name_of(e),
            addr: e.addr,
            offset: addr - e.addr,
            module: (e.module != NO_MODULE).then(|| self.modules[e.module as usize].as_str()),
        }
    }

    /// The function containing `addr`: the text symbol with the largest address `<= addr`.
    pub fn resolve(&self, addr: u64) -> Option<Sym<'_>> {
        let n = self
            .text
            .partition_point(|&i| self.entries[i as usize].addr <= addr);
        let e = &self.entries[self.text[n.checked_sub(1)?] as usize];
        (addr - e.addr < MAX_TEXT_OFFSET).then(|| self.sym(e, addr))
    }

    /// A stack frame as `tcp_close+0x1a`, or the address in hex when unknown.
    pub fn format_frame(&self, addr: u64) -> String {
        match self.resolve(addr) {
            Some(s) => format!("{}+{:#x}", s.name, s.offset),
            None => format!("{addr:#x}"),
        }
    }

    /// Lowest address of the symbol called exactly `name` (any type).
    pub fn lookup(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| self.name_of(e) == name)
            .map(|e| e.addr)
    }

    /// Names of the text (function) symbols, core image and modules, in address order.
    pub fn function_names(&self) -> impl Iterator<Item = &str> {
        self.text
            .iter()
            .map(|&i| self.name_of(&self.entries[i as usize]))
    }

    pub fn has_symbol(&self, name: &str) -> bool {
        self.lookup(name).is_some()
    }

    /// The static variable holding a lock at `addr`, so that e.g. `epmutex` is named: a data
    /// symbol at `addr`, or one that starts at most 4 KiB below it with no other data symbol
    /// in between. Heap locks have no symbol and give `None`. Needs CONFIG_KALLSYMS_ALL.
    pub fn data_symbol(&self, addr: u64) -> Option<Sym<'_>> {
        let n = self
            .data
            .partition_point(|&i| self.entries[i as usize].addr <= addr);
        let e = &self.entries[self.data[n.checked_sub(1)?] as usize];
        if e.addr == addr {
            return Some(self.sym(e, addr));
        }
        let before_next = self
            .data
            .get(n)
            .is_none_or(|&i| addr < self.entries[i as usize].addr);
        (before_next && addr - e.addr < MAX_DATA_OFFSET).then(|| self.sym(e, addr))
    }
}

/// Name prefixes of locking, scheduling and tracing code. A contention stack starts inside
/// these; the lock's user is the first frame past them. Prefixes, so `_raw_spin_lock_irqsave`
/// and `mutex_lock_nested` are covered by their base names.
pub const LOCKING_FRAME_PREFIXES: &[&str] = &[
    "__mutex_lock",
    "mutex_lock",
    "__mutex_lock_slowpath",
    "mutex_lock_killable",
    "mutex_lock_interruptible",
    "down_read",
    "down_write",
    "rwsem_down_",
    "__down",
    "_raw_spin_lock",
    "_raw_read_lock",
    "_raw_write_lock",
    "queued_spin_lock_slowpath",
    "native_queued_spin_lock_slowpath",
    "__pv_queued_spin_lock_slowpath",
    "queued_read_lock_slowpath",
    "queued_write_lock_slowpath",
    "osq_lock",
    "rt_mutex",
    "percpu_down",
    "__percpu_down",
    // Wrappers that only take a lock: the run-queue lock (kernel/sched/core.c) and the socket
    // lock (net/core/sock.c); their callers are the lock's users.
    "raw_spin_rq_lock",
    "_raw_spin_rq_lock",
    "double_rq_lock",
    "__task_rq_lock",
    "task_rq_lock",
    "lock_sock_nested",
    "__lock_sock",
    "lock_sock_fast",
    "schedule",
    "__schedule",
    "schedule_preempt_disabled",
    "preempt_schedule",
    "bpf_",
    "trace_",
    "perf_trace_",
    "__traceiter_",
    "__bpf_trace_",
    // The frame stacks::bpf_frames folds BPF programs into.
    "[kpath bpf]",
    "[bpf]",
];

/// Whether a frame (`name` or `name+0xoff`) is locking/scheduling/tracing code.
pub fn is_locking_frame(frame: &str) -> bool {
    let name = frame.split_once('+').map_or(frame, |(n, _)| n);
    LOCKING_FRAME_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The first frame (innermost first) outside the locking code: who took the lock.
pub fn lock_caller<S: AsRef<str>>(frames: &[S]) -> Option<&str> {
    frames
        .iter()
        .map(AsRef::as_ref)
        .find(|f| !is_locking_frame(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Out of order on purpose (modules load above the core image but may be listed first).
    const SAMPLE: &str = "\
ffffffffc0a01000 t nft_do_chain\t[nf_tables]
ffffffffc0a01400 T nft_trace_init\t[nf_tables]
ffffffff81000000 T _stext
ffffffff81000000 T _text
ffffffff81001000 T do_syscall_64
ffffffff817325e0 T eventpoll_release_file
ffffffff81732700 t ep_remove
ffffffff82013cf0 T tcp_close
ffffffff82014000 W arch_weak_fn
ffffffff82600000 D epmutex
ffffffff82600020 d ep_nested_calls
ffffffff82601000 b big_static
ffffffff82601000 T shares_addr_with_data
ffffffffc0b00000 t ext4_fn\t[ext4]
";

    fn sample() -> Kallsyms {
        Kallsyms::parse(SAMPLE).unwrap()
    }

    #[test]
    fn resolves_largest_text_symbol_at_or_below() {
        let k = sample();
        assert_eq!(k.len(), 14);
        let s = k.resolve(0xffffffff82013cf0 + 0x1a).unwrap();
        assert_eq!(
            s,
            Sym {
                name: "tcp_close",
                addr: 0xffffffff82013cf0,
                offset: 0x1a,
                module: None
            }
        );
        assert_eq!(k.format_frame(0xffffffff82013d0a), "tcp_close+0x1a");
        assert_eq!(
            k.format_frame(0xffffffff817325e0),
            "eventpoll_release_file+0x0"
        );
        // Weak functions are frames; data symbols never are, even at the same address.
        assert_eq!(k.resolve(0xffffffff82014001).unwrap().name, "arch_weak_fn");
        assert_eq!(
            k.resolve(0xffffffff82601004).unwrap().name,
            "shares_addr_with_data"
        );
    }

    #[test]
    fn resolves_module_symbols() {
        let k = sample();
        let s = k.resolve(0xffffffffc0a01010).unwrap();
        assert_eq!((s.name, s.module), ("nft_do_chain", Some("nf_tables")));
        let s = k.resolve(0xffffffffc0b00004).unwrap();
        assert_eq!((s.name, s.module), ("ext4_fn", Some("ext4")));
    }

    #[test]
    fn unknown_addresses_are_hex() {
        let k = sample();
        // Below the first symbol.
        assert_eq!(k.resolve(0xffff888000001000), None);
        assert_eq!(k.format_frame(0xffff888000001000), "0xffff888000001000");
        // Far past the last function of the core image: a gap, not a giant function.
        assert_eq!(k.resolve(0xffffffffa0000000), None);
        assert_eq!(k.format_frame(0x10), "0x10");
    }

    #[test]
    fn aliases_resolve_to_the_last_listed() {
        let k = sample();
        assert_eq!(k.resolve(0xffffffff81000008).unwrap().name, "_text");
    }

    #[test]
    fn lookup_and_has_symbol() {
        let k = sample();
        assert_eq!(k.lookup("tcp_close"), Some(0xffffffff82013cf0));
        assert_eq!(k.lookup("epmutex"), Some(0xffffffff82600000));
        assert_eq!(k.lookup("tcp_clos"), None);
        assert!(k.has_symbol("eventpoll_release_file"));
        assert!(!k.has_symbol("eventpoll_release"));
    }

    #[test]
    fn data_symbol_names_static_locks() {
        let k = sample();
        // Exact address.
        assert_eq!(k.data_symbol(0xffffffff82600000).unwrap().name, "epmutex");
        // Inside it, before the next data symbol.
        let s = k.data_symbol(0xffffffff82600008).unwrap();
        assert_eq!((s.name, s.offset), ("epmutex", 8));
        assert_eq!(
            k.data_symbol(0xffffffff82600020).unwrap().name,
            "ep_nested_calls"
        );
        // Past the last data symbol but within 4 KiB.
        assert_eq!(
            k.data_symbol(0xffffffff82601ff0).unwrap().name,
            "big_static"
        );
        // More than 4 KiB past it.
        assert_eq!(k.data_symbol(0xffffffff82602000), None);
        // Heap addresses lie below the image.
        assert_eq!(k.data_symbol(0xffff888012345678), None);
        // Text symbols are not lock names.
        assert_eq!(k.data_symbol(0xffffffff82013cf0), None);
    }

    #[test]
    fn hidden_addresses_are_an_error() {
        let text = "0000000000000000 T _stext\n0000000000000000 T tcp_close\n";
        assert!(matches!(
            Kallsyms::parse(text),
            Err(KallsymsError::AddressesHidden { symbols: 2 })
        ));
    }

    #[test]
    fn malformed_and_empty() {
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::Empty)));
        assert!(matches!(
            Kallsyms::parse("ffffffff81000000 T _stext\nzzzz T bad\n"),
            Err(KallsymsError::Malformed { line: 2, .. })
        ));
        assert!(matches!(
            Kallsyms::parse("ffffffff81000000 T\n"),
            Err(KallsymsError::Malformed { line: 1, .. })
        ));
        let err = Kallsyms::load_from(Path::new("/nonexistent/kallsyms")).unwrap_err();
        assert_eq!(err.to_string(), "cannot read /nonexistent/kallsyms");
    }

    #[test]
    fn lock_caller_skips_locking_code() {
        let frames = [
            "__traceiter_contention_begin+0x40",
            "__mutex_lock.constprop.0+0x2a1",
            "__mutex_lock_slowpath+0x13",
            "mutex_lock+0x2e",
            "eventpoll_release_file+0x3c",
            "__fput+0x1f0",
        ];
        assert_eq!(lock_caller(&frames), Some("eventpoll_release_file+0x3c"));
        let spin = vec![
            "native_queued_spin_lock_slowpath+0x6e".to_string(),
            "_raw_spin_lock_irqsave+0x3d".to_string(),
            "try_to_wake_up+0x5c".to_string(),
        ];
        assert_eq!(lock_caller(&spin), Some("try_to_wake_up+0x5c"));
        let rq = [
            "_raw_spin_lock+0x30",
            "raw_spin_rq_lock_nested+0x1c",
            "sched_balance_rq+0x9",
        ];
        assert_eq!(lock_caller(&rq), Some("sched_balance_rq+0x9"));
        let folded = ["[kpath bpf]", "__mutex_lock+0x2a1", "do_epoll_ctl+0x2da"];
        assert_eq!(lock_caller(&folded), Some("do_epoll_ctl+0x2da"));
        assert_eq!(lock_caller(&["schedule+0x1", "bpf_trace_run2+0x9"]), None);
        assert_eq!(lock_caller::<&str>(&[]), None);
        // A name merely containing a prefix is not locking code.
        assert!(!is_locking_frame("do_mutex_lock_thing+0x1"));
        assert!(is_locking_frame("down_write"));
    }

    #[test]
    fn loads_real_kallsyms_when_readable() {
        // Unprivileged or restricted hosts legitimately fail; the parse path is covered above.
        let Ok(k) = Kallsyms::load() else { return };
        assert!(k.len() > 1000);
        let Some(addr) = k.lookup("do_syscall_64") else {
            return;
        };
        assert_eq!(k.resolve(addr + 1).unwrap().name, "do_syscall_64");
    }
}
