//! Stack symbolization: kernel frames from /proc/kallsyms, user frames with blazesym from the
//! mapped file and file offset (so PIE or not, and exited processes, all work the same).
//!
//! Addresses are deduplicated and symbolized in one batch per file: a recording's stacks share
//! most of their frames, and blazesym's per-file setup (opening, parsing DWARF) is the costly part.
use std::{collections::HashMap, sync::Arc};

use blazesym::symbolize::{source::Elf, source::Source, CodeInfo, Input, Symbolized, Symbolizer};

pub use super::folded::Folded;
use super::maps::{Mapping, MapsSnapshots};
use super::stack::{Frame, FrameKind, Line, MappingInfo, Stack, SymStacks};
use crate::kernel::kallsyms::Kallsyms;

/// A stack as read from the kernel, addresses innermost first.
#[derive(Debug, Clone, Default)]
pub struct RawStack {
    pub tgid: u32,
    /// Thread name, the root frame.
    pub comm: String,
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
    /// The word at the user stack pointer at kernel entry (`StackKey::user_ret`), 0 if none.
    pub user_ret: u64,
    /// Samples (on-CPU) or nanoseconds (off-CPU).
    pub weight: u64,
    /// A kernel stack of a task that was not running ([`SCHED_FRAMES_NOT_UNWOUND`]'s case):
    /// every address is a return address, and the scheduler's own frames are missing.
    pub kernel_from_task: bool,
}

/// The innermost frame of an off-CPU kernel stack taken when its thread was switched back in
/// (`bpf_get_task_stack`, `--offcpu-min-us` on kernels with BTF tracepoints): the kernel's
/// walk of a task that is not running leaves out every function in the scheduler's text
/// section (`__schedule`, `schedule`, `do_nanosleep`, `schedule_hrtimeout_range`, the mutex
/// and rwsem slow paths, `io_schedule`, ...), so the stack's leaf says so.
pub const SCHED_FRAMES_NOT_UNWOUND: &str = "[scheduler frames not unwound]";

/// Where a user address lives.
#[derive(Clone, Copy)]
enum UserLoc {
    /// Index into the file list, the file offset, and the mapping's index.
    File(usize, u64, usize),
    /// A mapping that cannot be read (special, anonymous, or stale and not held): index into the
    /// module names, and the mapping's index.
    Module(usize, usize),
    Unmapped,
}

/// Symbolizes stacks against kallsyms and the maps snapshots.
pub struct StackSymbolizer<'a> {
    ksyms: &'a Kallsyms,
    maps: &'a MapsSnapshots,
    inner: Symbolizer,
}

/// The files (with the offsets to look up in each), unreadable modules and mappings user
/// addresses fell in, each numbered once.
#[derive(Default)]
struct Located {
    files: Vec<String>,
    file_idx: HashMap<String, usize>,
    offsets: Vec<Vec<u64>>,
    modules: Vec<String>,
    module_idx: HashMap<String, usize>,
    mappings: Vec<MappingInfo>,
    mapping_idx: HashMap<(u64, u64, u64, String), usize>,
    build_ids: HashMap<String, Option<String>>,
}

impl Located {
    /// Where `addr` is: a file offset to symbolize, a module that cannot be read, or nowhere.
    fn locate(&mut self, mapping: Option<&Mapping>, addr: u64) -> UserLoc {
        let Some(m) = mapping else {
            return UserLoc::Unmapped;
        };
        let open = m.open_path();
        let mi = self.mapping(m, open.as_deref());
        match open {
            Some(p) => {
                let idx = *self.file_idx.entry(p.clone()).or_insert_with(|| {
                    self.files.push(p);
                    self.offsets.push(Vec::new());
                    self.files.len() - 1
                });
                let off = addr - m.start + m.offset;
                self.offsets[idx].push(off);
                UserLoc::File(idx, off, mi)
            }
            None => {
                let name = if m.path.starts_with('[') {
                    m.path.clone()
                } else {
                    format!("[unknown] ({})", m.module())
                };
                let modules = &mut self.modules;
                let idx = *self.module_idx.entry(name.clone()).or_insert_with(|| {
                    modules.push(name);
                    modules.len() - 1
                });
                UserLoc::Module(idx, mi)
            }
        }
    }

    /// The index of `m` in the mapping list, with its file's build-id read once per file.
    fn mapping(&mut self, m: &Mapping, open: Option<&str>) -> usize {
        let key = (m.start, m.end, m.offset, m.path.clone());
        if let Some(&i) = self.mapping_idx.get(&key) {
            return i;
        }
        let build_id = open.and_then(|p| {
            self.build_ids
                .entry(p.to_string())
                .or_insert_with(|| read_build_id(p))
                .clone()
        });
        self.mappings.push(MappingInfo {
            start: m.start,
            end: m.end,
            offset: m.offset,
            path: m.path.clone(),
            build_id,
        });
        self.mapping_idx.insert(key, self.mappings.len() - 1);
        self.mappings.len() - 1
    }
}

/// The ELF build-id of a file, in hex.
fn read_build_id(path: &str) -> Option<String> {
    use object::Object as _;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the file is mapped read-only and only parsed; a mapped binary changing under a
    // read-only mapping is the loader's concern as much as ours (blazesym maps it the same way).
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

impl<'a> StackSymbolizer<'a> {
    pub fn new(ksyms: &'a Kallsyms, maps: &'a MapsSnapshots) -> Self {
        let inner = Symbolizer::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        StackSymbolizer { ksyms, maps, inner }
    }

    /// Symbolizes every stack into folded frames; the result is in input order.
    pub fn symbolize(&self, stacks: &[RawStack]) -> Vec<Folded> {
        self.symbolize_stacks(stacks)
            .stacks
            .iter()
            .map(Stack::folded)
            .collect()
    }

    /// Symbolizes every stack, structured; the stacks are in input order.
    pub fn symbolize_stacks(&self, stacks: &[RawStack]) -> SymStacks {
        // Pass 1: locate every user address and collect the offsets per file.
        let mut located = Located::default();
        let mut code = CodeReader::default();
        let locs: Vec<Vec<(u64, UserLoc)>> = stacks
            .iter()
            .map(|s| {
                self.user_addrs(s, &mut code)
                    .into_iter()
                    .map(|addr| (addr, located.locate(self.maps.find(s.tgid, addr), addr)))
                    .collect()
            })
            .collect();
        // Pass 2: one blazesym batch per file.
        let resolved: Vec<HashMap<u64, Vec<Line>>> = located
            .files
            .iter()
            .zip(located.offsets.iter_mut())
            .map(|(path, offs)| {
                offs.sort_unstable();
                offs.dedup();
                self.symbolize_file(path, offs)
            })
            .collect();
        let unknown_in: Vec<Arc<str>> = located
            .files
            .iter()
            .map(|p| Arc::from(format!("[unknown] ({})", module_of(p))))
            .collect();
        let modules: Vec<Arc<str>> = located
            .modules
            .iter()
            .map(|m| Arc::from(m.as_str()))
            .collect();
        let unmapped: Arc<str> = Arc::from("[unknown]");
        // Pass 3: assemble, root first.
        let mut kcache: HashMap<u64, Option<Arc<str>>> = HashMap::new();
        let out = stacks
            .iter()
            .zip(locs)
            .map(|(s, locs)| {
                let mut frames = Vec::with_capacity(s.user.len() + s.kernel.len() + 1);
                for &(addr, loc) in locs.iter().rev() {
                    let (mapping, lines) = match loc {
                        UserLoc::File(f, off, m) => match resolved[f].get(&off) {
                            Some(lines) => (Some(m), lines.clone()),
                            None => (Some(m), vec![Line::named(unknown_in[f].clone())]),
                        },
                        UserLoc::Module(i, m) => (Some(m), vec![Line::named(modules[i].clone())]),
                        UserLoc::Unmapped => (None, vec![Line::named(unmapped.clone())]),
                    };
                    frames.push(Frame {
                        kind: FrameKind::User,
                        addr,
                        mapping,
                        lines,
                    });
                }
                if s.user.is_empty() && s.kernel.is_empty() {
                    // Both stacks failed (stack map full or hash collision, counted as lost).
                    frames.push(Frame::synthetic(FrameKind::User, "[stack lost]"));
                }
                // Innermost first, as read.
                let first_return = usize::from(s.kernel_from_task);
                let mut kernel: Vec<(Frame, Option<Arc<str>>)> = s
                    .kernel
                    .iter()
                    .enumerate()
                    .map(|(i, &ip)| {
                        let addr = caller_adjusted(i + first_return, ip);
                        let name = kcache
                            .entry(addr)
                            .or_insert_with(|| {
                                self.ksyms.resolve(addr).map(|sym| Arc::from(sym.name))
                            })
                            .clone();
                        let frame = Frame {
                            kind: FrameKind::Kernel,
                            addr,
                            mapping: None,
                            lines: vec![Line::named(
                                name.clone().unwrap_or_else(|| Arc::from("[unknown]")),
                            )],
                        };
                        (frame, name)
                    })
                    .collect();
                // kpath's own programs are the tracer's time, not the target's.
                let names: Vec<&str> = kernel
                    .iter()
                    .map(|(_, n)| n.as_deref().unwrap_or("[unknown]"))
                    .collect();
                if let Some((n, label)) = super::bpf_frames::bpf_prefix(&names) {
                    kernel.splice(..n, [(Frame::synthetic(FrameKind::Kernel, label), None)]);
                }
                if s.kernel_from_task && !kernel.is_empty() {
                    let leaf = Frame::synthetic(FrameKind::Kernel, SCHED_FRAMES_NOT_UNWOUND);
                    kernel.insert(0, (leaf, None));
                }
                frames.extend(kernel.into_iter().rev().map(|(f, _)| f));
                Stack {
                    tgid: s.tgid,
                    comm: s.comm.clone(),
                    frames,
                    weight: s.weight,
                }
            })
            .collect();
        SymStacks {
            stacks: out,
            mappings: located.mappings,
        }
    }

    /// User addresses to look up, innermost first: return addresses moved into their call, the
    /// frameless caller from `user_ret` spliced in, and a frame-pointer walk that left the
    /// mapped code (a binary without frame pointers) cut at its first unmapped address.
    fn user_addrs(&self, s: &RawStack, code: &mut CodeReader) -> Vec<u64> {
        let mut ips: Vec<u64> = s.user.clone();
        if s.user_ret != 0 && !ips.is_empty() && ips.get(1) != Some(&s.user_ret) {
            let follows_call = self.maps.find(s.tgid, s.user_ret).is_some_and(|m| {
                m.open_path()
                    .is_some_and(|p| code.after_call(&p, s.user_ret - m.start + m.offset))
            });
            if follows_call {
                ips.insert(1, s.user_ret);
            }
        }
        let mut out = Vec::with_capacity(ips.len());
        for (i, &ip) in ips.iter().enumerate() {
            let addr = caller_adjusted(i, ip);
            let mapped = self.maps.find(s.tgid, addr).is_some();
            out.push(addr);
            if !mapped && i > 0 {
                break;
            }
        }
        out
    }

    /// File offset -> lines (the outer function first, then its inlined callees, each at the
    /// line in it that leads to the address).
    fn symbolize_file(&self, path: &str, offs: &[u64]) -> HashMap<u64, Vec<Line>> {
        let src = Source::Elf(Elf::new(path));
        let Ok(syms) = self.inner.symbolize(&src, Input::FileOffset(offs)) else {
            log::debug!("symbolizing {path} failed");
            return HashMap::new();
        };
        offs.iter()
            .zip(syms)
            .filter_map(|(&off, s)| match s {
                Symbolized::Sym(sym) => {
                    let mut v = Vec::with_capacity(1 + sym.inlined.len());
                    v.push(line_of(&sym.name, sym.code_info.as_deref()));
                    v.extend(
                        sym.inlined
                            .iter()
                            .map(|f| line_of(&f.name, f.code_info.as_ref())),
                    );
                    Some((off, v))
                }
                Symbolized::Unknown(_) => None,
            })
            .collect()
    }
}

/// A function at the source line blazesym found in it.
fn line_of(name: &str, ci: Option<&CodeInfo<'_>>) -> Line {
    Line {
        function: Arc::from(name),
        file: ci.map(|c| Arc::from(c.to_path().display().to_string())),
        line: ci.and_then(|c| c.line).unwrap_or(0),
    }
}

/// Reads code bytes of mapped files to tell return addresses from other stack words.
#[derive(Default)]
struct CodeReader {
    files: HashMap<String, Option<std::fs::File>>,
}

impl CodeReader {
    /// Whether the bytes before file offset `off` end with an x86-64 call instruction.
    fn after_call(&mut self, path: &str, off: u64) -> bool {
        use std::os::unix::fs::FileExt;
        let Some(Some(f)) = self
            .files
            .entry(path.to_string())
            .or_insert_with(|| std::fs::File::open(path).ok())
            .as_ref()
            .map(Some)
        else {
            return false;
        };
        let mut b = [0u8; 8];
        off >= 8 && f.read_exact_at(&mut b, off - 8).is_ok() && ends_with_call(&b)
    }
}

/// Whether `b` (the 8 bytes before a return address) ends with a call: `E8 rel32`, or `FF /2`
/// (indirect call) of 2 to 7 bytes, optionally after a REX prefix.
fn ends_with_call(b: &[u8; 8]) -> bool {
    if b[3] == 0xe8 {
        return true;
    }
    // Instruction length -> index of the FF opcode; ModRM follows with reg field 2.
    [2usize, 3, 4, 6, 7].iter().any(|&len| {
        let at = 8 - len;
        b[at] == 0xff && (b[at + 1] >> 3) & 7 == 2
    })
}

/// Return addresses point after the call: look up the call itself for every frame but the
/// innermost, or a call that ends a function resolves to the next one.
fn caller_adjusted(i: usize, ip: u64) -> u64 {
    if i == 0 {
        ip
    } else {
        ip.saturating_sub(1)
    }
}

fn module_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stacks::maps::MapsRecorder;

    #[inline(never)]
    #[no_mangle]
    pub extern "C" fn kpath_symbolize_test_marker() -> u64 {
        std::hint::black_box(42)
    }

    fn ksyms() -> Kallsyms {
        Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81001000 T do_syscall_64\nffffffff81002000 T tcp_sendmsg\nffffffff81003000 T _etext\n",
        )
        .unwrap()
    }

    #[test]
    fn a_task_kernel_stack_has_only_return_addresses_and_says_its_scheduler_frames_are_missing() {
        let ks = ksyms();
        let maps = MapsSnapshots::default();
        let sym = StackSymbolizer::new(&ks, &maps);
        let stack = |kernel_from_task| RawStack {
            tgid: 1,
            comm: "t".into(),
            // Innermost first; the first address is where tcp_sendmsg starts: as a return
            // address it belongs to the function before it (a call was its last instruction).
            kernel: vec![0xffffffff81002000, 0xffffffff81001010],
            kernel_from_task,
            weight: 1,
            ..Default::default()
        };
        let out = sym.symbolize(&[stack(true), stack(false)]);
        assert_eq!(
            out[0].frames,
            [
                "t",
                "do_syscall_64_[k]",
                "do_syscall_64_[k]",
                "[scheduler frames not unwound]_[k]"
            ]
        );
        assert_eq!(out[1].frames, ["t", "do_syscall_64_[k]", "tcp_sendmsg_[k]"]);
    }

    #[test]
    fn user_and_kernel_frames_root_first_with_markers() {
        let mut rec = MapsRecorder::default();
        let me = std::process::id();
        rec.poll([me]);
        let f = kpath_symbolize_test_marker as *const () as u64;
        let ks = ksyms();
        let sym = StackSymbolizer::new(&ks, &rec.snapshots);
        let stacks = [RawStack {
            tgid: me,
            comm: "a;b".into(),
            // Innermost first: tcp_sendmsg called from do_syscall_64 (return address + 0x10).
            kernel: vec![0xffffffff81002010, 0xffffffff81001010],
            user: vec![f + 1, 0x10],
            user_ret: 0,
            weight: 3,
            kernel_from_task: false,
        }];
        let out = sym.symbolize(&stacks);
        assert_eq!(out.len(), 1);
        let fr = &out[0].frames;
        assert_eq!(fr[0], "a:b");
        assert_eq!(fr[1], "[unknown]", "unmapped address: {fr:?}");
        assert_eq!(fr[2], "kpath_symbolize_test_marker", "{fr:?}");
        let n = fr.len();
        // With DWARF (test builds have it) the inlined black_box call shows as `_[i]` frames.
        assert!(fr[3..n - 2].iter().all(|f| f.ends_with("_[i]")), "{fr:?}");
        assert_eq!(&fr[n - 2..], ["do_syscall_64_[k]", "tcp_sendmsg_[k]"]);
        assert_eq!(out[0].weight, 3);
    }

    #[test]
    fn recognizes_call_instructions_before_return_addresses() {
        // call rel32
        assert!(ends_with_call(&[0, 0, 0, 0xe8, 1, 2, 3, 4]));
        // call *%rax; call *0x10(%rbx); call *%r8 (REX); call *0x100(%rip)
        assert!(ends_with_call(&[0, 0, 0, 0, 0, 0, 0xff, 0xd0]));
        assert!(ends_with_call(&[0, 0, 0, 0, 0, 0xff, 0x53, 0x10]));
        assert!(ends_with_call(&[0, 0, 0, 0, 0, 0x41, 0xff, 0xd0]));
        assert!(ends_with_call(&[0, 0, 0xff, 0x15, 0, 1, 0, 0]));
        // jmp *%rax (FF /4), plain data
        assert!(!ends_with_call(&[0, 0, 0, 0, 0, 0, 0xff, 0xe0]));
        assert!(!ends_with_call(&[1, 2, 3, 4, 5, 6, 7, 8]));
    }

    #[test]
    fn frameless_caller_is_spliced_in_and_a_broken_walk_cut() {
        let mut rec = MapsRecorder::default();
        let me = std::process::id();
        rec.poll([me]);
        // A real return address: right after a call in this test binary.
        let caller = call_site_return_address();
        let f = kpath_symbolize_test_marker as *const () as u64;
        let ks = ksyms();
        let sym = StackSymbolizer::new(&ks, &rec.snapshots);
        let stack = |user_ret| RawStack {
            tgid: me,
            comm: "t".into(),
            kernel: vec![],
            // The leaf, then garbage from a frame-pointer walk without frame pointers.
            user: vec![f, 0x10, 0x20],
            user_ret,
            weight: 1,
            kernel_from_task: false,
        };
        let out = sym.symbolize(&[stack(caller), stack(f + 3)]);
        let with = &out[0].frames;
        assert_eq!(with[1], "[unknown]", "{with:?}");
        assert!(
            with[2].contains("call_site_return_address"),
            "spliced caller: {with:?}"
        );
        // Inline frames (`_[i]`) may follow the functions in this DWARF build.
        let real = |fr: &[String]| -> Vec<String> {
            fr.iter()
                .filter(|f| !f.ends_with("_[i]"))
                .cloned()
                .collect()
        };
        let with = real(with);
        assert_eq!(with.len(), 4, "one [unknown] for the broken walk: {with:?}");
        assert_eq!(with[3], "kpath_symbolize_test_marker");
        // A word that does not follow a call is ignored.
        assert_eq!(
            real(&out[1].frames),
            ["t", "[unknown]", "kpath_symbolize_test_marker"]
        );
    }

    /// The return address of a call made from here.
    #[inline(never)]
    fn call_site_return_address() -> u64 {
        std::hint::black_box(return_address())
    }

    /// Its own return address: the word at the stack pointer on entry.
    #[unsafe(naked)]
    extern "C" fn return_address() -> u64 {
        core::arch::naked_asm!("mov rax, [rsp]", "ret")
    }

    #[test]
    fn unreadable_module_gives_unknown_with_its_name() {
        let mut maps = MapsSnapshots::default();
        maps.merge(
            9,
            crate::stacks::maps::parse_maps(
                "1000-2000 r-xp 00000000 fd:01 5 /nonexistent/libgone.so\n\
                 3000-4000 r-xp 00000000 fd:01 6 /gone/bin (deleted)\n\
                 5000-6000 r-xp 00000000 00:00 0 [vdso]\n",
            ),
        );
        let ks = ksyms();
        let sym = StackSymbolizer::new(&ks, &maps);
        let out = sym.symbolize(&[RawStack {
            tgid: 9,
            comm: "x".into(),
            kernel: vec![0x1],
            user: vec![0x1100, 0x3100, 0x5100],
            user_ret: 0,
            weight: 1,
            kernel_from_task: false,
        }]);
        assert_eq!(
            out[0].frames,
            [
                "x",
                "[vdso]",
                "[unknown] (bin)",
                "[unknown] (libgone.so)",
                "[unknown]_[k]"
            ]
        );
    }
}
