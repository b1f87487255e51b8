//! Stack symbolization: kernel frames from /proc/kallsyms, user frames with blazesym from the
//! mapped file and file offset (so PIE or not, and exited processes, all work the same).
//!
//! Addresses are deduplicated and symbolized in one batch per file: a recording's stacks share
//! most of their frames, and blazesym's per-file setup (opening, parsing DWARF) is the costly part.
use std::collections::HashMap;

use blazesym::symbolize::{source::Elf, source::Source, Input, Symbolized, Symbolizer};

use super::maps::MapsSnapshots;
use crate::kallsyms::Kallsyms;

/// A stack as read from the kernel, addresses innermost first.
#[derive(Debug, Clone, Default)]
pub struct RawStack {
    pub tgid: u32,
    /// Thread name, the root frame.
    pub comm: String,
    pub kernel: Vec<u64>,
    pub user: Vec<u64>,
    /// Samples (on-CPU) or nanoseconds (off-CPU).
    pub weight: u64,
}

/// A symbolized stack: frames root first (comm, user outermost .. innermost, kernel).
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    pub frames: Vec<String>,
    pub weight: u64,
}

/// Where a user address lives.
#[derive(Clone, Copy)]
enum UserLoc {
    /// Index into the file list, and the file offset.
    File(usize, u64),
    /// A mapping that cannot be read (special, anonymous, or stale and not held): index into the
    /// module names.
    Module(usize),
    Unmapped,
}

/// Symbolizes stacks against kallsyms and the maps snapshots.
pub struct StackSymbolizer<'a> {
    ksyms: &'a Kallsyms,
    maps: &'a MapsSnapshots,
    inner: Symbolizer,
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

    /// Symbolizes every stack; the result is in input order.
    pub fn symbolize(&self, stacks: &[RawStack]) -> Vec<Folded> {
        // Pass 1: locate every user address and collect the offsets per file.
        let mut files: Vec<String> = Vec::new();
        let mut file_idx: HashMap<String, usize> = HashMap::new();
        let mut modules: Vec<String> = Vec::new();
        let mut module_idx: HashMap<String, usize> = HashMap::new();
        let mut offsets: Vec<Vec<u64>> = Vec::new();
        let locs: Vec<Vec<UserLoc>> = stacks
            .iter()
            .map(|s| {
                s.user
                    .iter()
                    .enumerate()
                    .map(|(i, &ip)| {
                        let addr = caller_adjusted(i, ip);
                        let Some(m) = self.maps.find(s.tgid, addr) else {
                            return UserLoc::Unmapped;
                        };
                        match m.open_path() {
                            Some(p) => {
                                let idx = *file_idx.entry(p.clone()).or_insert_with(|| {
                                    files.push(p);
                                    offsets.push(Vec::new());
                                    files.len() - 1
                                });
                                let off = addr - m.start + m.offset;
                                offsets[idx].push(off);
                                UserLoc::File(idx, off)
                            }
                            None => {
                                let name = if m.path.starts_with('[') {
                                    m.path.clone()
                                } else {
                                    format!("[unknown] ({})", m.module())
                                };
                                UserLoc::Module(*module_idx.entry(name.clone()).or_insert_with(
                                    || {
                                        modules.push(name);
                                        modules.len() - 1
                                    },
                                ))
                            }
                        }
                    })
                    .collect()
            })
            .collect();

        // Pass 2: one blazesym batch per file.
        let resolved: Vec<HashMap<u64, Vec<String>>> = files
            .iter()
            .zip(offsets.iter_mut())
            .map(|(path, offs)| {
                offs.sort_unstable();
                offs.dedup();
                self.symbolize_file(path, offs)
            })
            .collect();
        let unknown_in: Vec<String> = files
            .iter()
            .map(|p| format!("[unknown] ({})", module_of(p)))
            .collect();

        // Pass 3: assemble, root first.
        let mut kcache: HashMap<u64, String> = HashMap::new();
        stacks
            .iter()
            .zip(locs)
            .map(|(s, locs)| {
                let mut frames = Vec::with_capacity(1 + s.user.len() + s.kernel.len());
                frames.push(sanitize(if s.comm.is_empty() {
                    "[unknown]"
                } else {
                    &s.comm
                }));
                for loc in locs.iter().rev() {
                    match *loc {
                        UserLoc::File(f, off) => match resolved[f].get(&off) {
                            Some(names) => frames.extend(names.iter().cloned()),
                            None => frames.push(unknown_in[f].clone()),
                        },
                        UserLoc::Module(m) => frames.push(modules[m].clone()),
                        UserLoc::Unmapped => frames.push("[unknown]".to_string()),
                    }
                }
                for (i, &ip) in s.kernel.iter().enumerate().rev() {
                    let addr = caller_adjusted(i, ip);
                    frames.push(
                        kcache
                            .entry(addr)
                            .or_insert_with(|| kernel_frame(self.ksyms, addr))
                            .clone(),
                    );
                }
                Folded {
                    frames,
                    weight: s.weight,
                }
            })
            .collect()
    }

    /// File offset -> frames (outer function first, then inlined callees marked `_[i]`).
    fn symbolize_file(&self, path: &str, offs: &[u64]) -> HashMap<u64, Vec<String>> {
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
                    v.push(sanitize(&sym.name));
                    v.extend(sym.inlined.iter().map(|f| sanitize(&f.name) + "_[i]"));
                    Some((off, v))
                }
                Symbolized::Unknown(_) => None,
            })
            .collect()
    }
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

fn kernel_frame(ksyms: &Kallsyms, addr: u64) -> String {
    match ksyms.resolve(addr) {
        Some(s) => sanitize(s.name) + "_[k]",
        None => "[unknown]_[k]".to_string(),
    }
}

fn module_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Frame names must not contain the folded format's separators.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
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
            weight: 3,
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
            weight: 1,
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
