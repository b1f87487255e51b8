//! Symbolized stacks kept structured (addresses, mappings, functions, source lines, inlined
//! frames), made once per recording: folded text for the flame graphs and pprof profiles are
//! both drawn from them.
use std::{collections::BTreeMap, sync::Arc};

use super::folded::{self, Folded};

/// Whether a frame ran in user space or in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    User,
    Kernel,
}

/// A function at a source line. `line` 0 and `file` `None` when unknown. Names are shared
/// (`Arc<str>`): one address's lines are copied into every stack it appears in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Line {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: u32,
}

impl Line {
    pub fn named(function: impl Into<Arc<str>>) -> Self {
        Line {
            function: function.into(),
            file: None,
            line: 0,
        }
    }
}

/// One frame of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub kind: FrameKind,
    /// The address looked up (a return address moved back into its call); 0 for a frame that
    /// stands for no address (`[kpath bpf]`, `[stack lost]`).
    pub addr: u64,
    /// Index into [`SymStacks::mappings`] for user frames in a known mapping.
    pub mapping: Option<usize>,
    /// The function the address is in, then the functions inlined into it down to the one
    /// holding the address, each at its line. An address nothing resolves holds one pseudo
    /// function naming why (`[unknown] (libfoo.so)`, `[vdso]`).
    pub lines: Vec<Line>,
}

impl Frame {
    /// A frame for no address, named `name`.
    pub fn synthetic(kind: FrameKind, name: impl Into<Arc<str>>) -> Self {
        Frame {
            kind,
            addr: 0,
            mapping: None,
            lines: vec![Line::named(name)],
        }
    }

    /// The frame's names in folded form, outermost first: kernel frames end in `_[k]`,
    /// inlined callees in `_[i]`.
    pub fn folded_names(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.lines.len()).map(move |i| {
            let mut name = String::new();
            self.push_folded_name(i, &mut name);
            name
        })
    }

    /// Appends the folded form of line `i`'s name to `out`.
    fn push_folded_name(&self, i: usize, out: &mut String) {
        push_sanitized(&self.lines[i].function, out);
        match (self.kind, i) {
            (FrameKind::Kernel, _) => out.push_str("_[k]"),
            (FrameKind::User, 0) => {}
            (FrameKind::User, _) => out.push_str("_[i]"),
        }
    }
}

/// An executable mapping user frames fell in, as `/proc/PID/maps` showed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    /// The mapped path (`[vdso]` for special mappings, empty for anonymous ones).
    pub path: String,
    /// The ELF build-id in hex, when the file could be read and has one.
    pub build_id: Option<String>,
}

/// A symbolized, weighted stack of one thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub tgid: u32,
    /// Thread name (the folded root frame).
    pub comm: String,
    /// Root first: user frames outermost to innermost, then kernel frames.
    pub frames: Vec<Frame>,
    /// Samples (on-CPU), nanoseconds (off-CPU, lock wait).
    pub weight: u64,
}

impl Stack {
    /// The folded frames: thread name as the root, then every frame's names.
    pub fn folded(&self) -> Folded {
        let root = if self.comm.is_empty() {
            "[unknown]".to_string()
        } else {
            sanitize(&self.comm)
        };
        Folded {
            frames: std::iter::once(root)
                .chain(self.frames.iter().flat_map(Frame::folded_names))
                .collect(),
            weight: self.weight,
        }
    }

    /// The folded line without its count, `root;frame;...`, appended to `out` (one buffer per
    /// stack, not one string per frame).
    pub fn push_folded_line(&self, out: &mut String) {
        if self.comm.is_empty() {
            out.push_str("[unknown]");
        } else {
            push_sanitized(&self.comm, out);
        }
        for f in &self.frames {
            for i in 0..f.lines.len() {
                out.push(';');
                f.push_folded_name(i, out);
            }
        }
    }
}

/// The stacks of one profile and the mappings their user frames point into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SymStacks {
    pub stacks: Vec<Stack>,
    pub mappings: Vec<MappingInfo>,
}

impl SymStacks {
    /// Folded text (Brendan Gregg's format) of every stack: what `folded::fold` makes of
    /// [`Stack::folded`], built without the per-frame strings.
    pub fn folded_text(&self) -> String {
        self.folded_text_where(|_| true)
    }

    /// [`SymStacks::folded_text`] of the stacks whose index `keep` accepts (the sched family
    /// folds the two parts of off-CPU periods apart from one symbolization).
    pub fn folded_text_where(&self, keep: impl Fn(usize) -> bool) -> String {
        let mut merged: BTreeMap<String, u64> = BTreeMap::new();
        let mut line = String::new();
        let kept = self.stacks.iter().enumerate().filter(|(i, _)| keep(*i));
        for (_, s) in kept.filter(|(_, s)| s.weight > 0) {
            line.clear();
            s.push_folded_line(&mut line);
            match merged.get_mut(&line) {
                Some(n) => *n += s.weight,
                None => {
                    merged.insert(line.clone(), s.weight);
                }
            }
        }
        folded::lines(merged)
    }

    /// Sum of the weights.
    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|s| s.weight).sum()
    }
}

/// Frame names must not contain the folded format's separators.
pub fn sanitize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    push_sanitized(name, &mut out);
    out
}

fn push_sanitized(name: &str, out: &mut String) {
    if !name.contains([';', '\n', '\r']) {
        out.push_str(name);
        return;
    }
    out.extend(name.chars().map(|c| match c {
        ';' => ':',
        '\n' | '\r' => ' ',
        c => c,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_names_mark_kernel_and_inlined_frames() {
        let user = Frame {
            kind: FrameKind::User,
            addr: 0x1000,
            mapping: Some(0),
            lines: vec![
                Line {
                    function: "main".into(),
                    file: Some("/src/a.c".into()),
                    line: 3,
                },
                Line::named("helper;x"),
            ],
        };
        let s = Stack {
            tgid: 1,
            comm: String::new(),
            frames: vec![user, Frame::synthetic(FrameKind::Kernel, "tcp_close")],
            weight: 7,
        };
        let f = s.folded();
        assert_eq!(
            f.frames,
            ["[unknown]", "main", "helper:x_[i]", "tcp_close_[k]"]
        );
        assert_eq!(f.weight, 7);
        let set = SymStacks {
            stacks: vec![s.clone(), s],
            mappings: vec![],
        };
        assert_eq!(
            set.folded_text(),
            "[unknown];main;helper:x_[i];tcp_close_[k] 14\n"
        );
        let each: Vec<Folded> = set.stacks.iter().map(Stack::folded).collect();
        assert_eq!(set.folded_text(), crate::stacks::folded::fold(&each));
        assert_eq!(set.total(), 14);
    }
}
