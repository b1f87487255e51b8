//! pprof profiles of a recording (gzipped `profile.proto`, what `go tool pprof`, Grafana
//! Pyroscope and Parca read): `oncpu.pb.gz`, `offcpu.pb.gz` and `locks.pb.gz`, made from the
//! same symbolized stacks as the folded files, with mappings (file, build-id), locations
//! (addresses), functions with source lines, inlined frames as extra lines, and labels (pid,
//! thread name, syscall; tid and lock for contention).
use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
};

use prost::Message as _;

use super::proto;
use crate::{
    run::Run,
    stacks::{
        folded,
        stack::{Frame, FrameKind, Line, Stack, SymStacks},
        LockStacks, Profiles,
    },
};

/// Which profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PprofKind {
    Oncpu,
    Offcpu,
    Locks,
}

impl PprofKind {
    pub const ALL: [PprofKind; 3] = [PprofKind::Oncpu, PprofKind::Offcpu, PprofKind::Locks];

    pub fn name(self) -> &'static str {
        match self {
            PprofKind::Oncpu => "oncpu",
            PprofKind::Offcpu => "offcpu",
            PprofKind::Locks => "locks",
        }
    }

    /// The file in a run directory.
    pub fn file_name(self) -> &'static str {
        match self {
            PprofKind::Oncpu => "oncpu.pb.gz",
            PprofKind::Offcpu => "offcpu.pb.gz",
            PprofKind::Locks => "locks.pb.gz",
        }
    }

    /// The folded file of the same stacks, where the run has one.
    pub fn folded_name(self) -> Option<&'static str> {
        match self {
            PprofKind::Oncpu => Some("oncpu.folded"),
            PprofKind::Offcpu => Some("offcpu.folded"),
            PprofKind::Locks => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PprofError {
    #[error("writing {path} failed")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} failed")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a pprof profile")]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },
    #[error("bad folded input")]
    Folded(#[from] folded::FoldedError),
}

/// Writes a pprof profile for every profile `p` holds into `dir`; returns what it wrote.
pub fn write_run(
    dir: &Path,
    p: &Profiles,
    run: &Run,
) -> Result<Vec<(PprofKind, String)>, PprofError> {
    let mut written = Vec::new();
    for kind in PprofKind::ALL {
        let profile = match kind {
            PprofKind::Oncpu => p.oncpu_stacks.as_ref().map(|s| oncpu(s, run)),
            PprofKind::Offcpu => p.offcpu_stacks.as_ref().map(|s| offcpu(s, run)),
            PprofKind::Locks => p.locks.as_ref().map(|l| locks(l, run)),
        };
        let Some(profile) = profile else { continue };
        write_file(&dir.join(kind.file_name()), &profile)?;
        written.push((kind, kind.file_name().to_string()));
    }
    Ok(written)
}

/// The on-CPU profile: `samples/count` and `cpu/nanoseconds` (samples times the period of -F).
pub fn oncpu(stacks: &SymStacks, run: &Run) -> proto::Profile {
    let hz = run.oncpu.as_ref().map_or(99, |o| o.frequency_hz).max(1);
    let period = 1_000_000_000 / hz as i64;
    let mut b = Builder::new(
        &[("samples", "count"), ("cpu", "nanoseconds")],
        ("cpu", "nanoseconds"),
        period,
        run,
    );
    b.comment(&format!("on-CPU: {hz} Hz cpu-clock samples"));
    for s in &stacks.stacks {
        let n = s.weight as i64;
        let labels = b.thread_labels(s);
        b.add(s, &stacks.mappings, &[n, n * period], labels);
    }
    b.finish()
}

/// The off-CPU profile: `offcpu/nanoseconds` blocked, by the stack that blocked.
pub fn offcpu(stacks: &SymStacks, run: &Run) -> proto::Profile {
    let mut b = Builder::new(
        &[("offcpu", "nanoseconds")],
        ("offcpu", "nanoseconds"),
        1,
        run,
    );
    b.comment("off-CPU: time from sched_switch out to the next switch in");
    if let Some(min) = run
        .offcpu
        .as_ref()
        .map(|o| o.min_block_ns)
        .filter(|&m| m > 0)
    {
        b.comment(&format!("blocks shorter than {min} ns not charged"));
    }
    for s in &stacks.stacks {
        let labels = b.thread_labels(s);
        b.add(s, &stacks.mappings, &[s.weight as i64], labels);
    }
    b.finish()
}

/// The lock-contention profile: `contentions/count` and `wait/nanoseconds` by the waiter's
/// stack, labelled with its thread and the lock class and type.
pub fn locks(l: &LockStacks, run: &Run) -> proto::Profile {
    let mut b = Builder::new(
        &[("contentions", "count"), ("wait", "nanoseconds")],
        ("contentions", "count"),
        1,
        run,
    );
    b.comment("lock contention: waits from contention begin to end");
    for (s, w) in l.stacks.stacks.iter().zip(&l.waits) {
        let mut labels = b.thread_labels(s);
        labels.push(b.num_label("tid", w.tid as i64));
        labels.push(b.str_label("lock", &w.lock));
        labels.push(b.str_label("lock_type", &w.lock_type));
        b.add(
            s,
            &l.stacks.mappings,
            &[w.contentions as i64, s.weight as i64],
            labels,
        );
    }
    b.finish()
}

/// A profile from a folded file (a run recorded before kpath wrote pprof): function names
/// only, no addresses or mappings; the root frame becomes the `thread_name` label.
pub fn from_folded(text: &str, kind: PprofKind, run: &Run) -> Result<proto::Profile, PprofError> {
    let stacks = SymStacks {
        stacks: folded::parse(text)?
            .into_iter()
            .map(|(line, n)| stack_of_folded(line, n))
            .collect(),
        mappings: Vec::new(),
    };
    Ok(match kind {
        PprofKind::Oncpu => oncpu(&stacks, run),
        // Lock waits have no folded file; `Locks` reads it as off-CPU-style nanoseconds.
        PprofKind::Offcpu | PprofKind::Locks => offcpu(&stacks, run),
    })
}

/// One folded line back into frames: `_[k]` marks kernel frames, `_[i]` a callee inlined into
/// the frame before it.
fn stack_of_folded(line: &str, weight: u64) -> Stack {
    let mut names = line.split(';');
    let comm = names.next().unwrap_or_default().to_string();
    let mut frames: Vec<Frame> = Vec::new();
    for name in names {
        if let Some(k) = name.strip_suffix("_[k]") {
            frames.push(Frame::synthetic(FrameKind::Kernel, k));
        } else if let Some(i) = name.strip_suffix("_[i]").filter(|_| !frames.is_empty()) {
            let prev = frames.last_mut().expect("checked non-empty");
            prev.lines.push(Line::named(i));
        } else {
            frames.push(Frame::synthetic(FrameKind::User, name));
        }
    }
    Stack {
        tgid: 0,
        comm,
        frames,
        weight,
    }
}

/// Gzipped encoding of a profile.
pub fn encode(p: &proto::Profile) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&p.encode_to_vec())
        .expect("writing to a Vec cannot fail");
    gz.finish().expect("writing to a Vec cannot fail")
}

/// Writes a gzipped profile to `path`.
pub fn write_file(path: &Path, p: &proto::Profile) -> Result<(), PprofError> {
    std::fs::write(path, encode(p)).map_err(|source| PprofError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a profile, gzipped (as kpath and Go write them) or not.
pub fn read_file(path: &Path) -> Result<proto::Profile, PprofError> {
    let read_err = |source| PprofError::Read {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(read_err)?;
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(read_err)?;
        out
    } else {
        raw
    };
    proto::Profile::decode(&data[..]).map_err(|source| PprofError::Decode {
        path: path.to_path_buf(),
        source,
    })
}

/// Prefixes of a syscall's kernel entry point (`__x64_sys_close`, and the wrappers that stay
/// on the stack where the architecture's stub is inlined into the syscall table dispatch).
const SYSCALL_ENTRY_PREFIXES: [&str; 5] = [
    "__x64_sys_",
    "__ia32_sys_",
    "__arm64_sys_",
    "__se_sys_",
    "__do_sys_",
];

/// The syscall a stack is in: the outermost kernel frame that is a syscall's entry point.
pub fn syscall_of(s: &Stack) -> Option<&str> {
    s.frames
        .iter()
        .filter(|f| f.kind == FrameKind::Kernel)
        .find_map(|f| {
            let name: &str = &f.lines.first()?.function;
            SYSCALL_ENTRY_PREFIXES
                .iter()
                .find_map(|p| name.strip_prefix(p))
                .filter(|n| !n.is_empty())
        })
}

/// A location's identity: its mapping, address and lines (function id, line).
type LocKey = (u64, u64, Vec<(u64, i64)>);
/// A label's fields: key, str, num, num_unit.
type LabelKey = (i64, i64, i64, i64);

/// Builds one profile, numbering strings, mappings, functions and locations once each and
/// merging samples with the same locations and labels.
struct Builder {
    p: proto::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    locations: HashMap<LocKey, u64>,
    /// (mapping, address) -> location for real addresses: one address symbolizes alike in
    /// every stack, so its lines need not be looked up again.
    by_addr: HashMap<(u64, u64), u64>,
    /// `MappingInfo` (by its identity) -> pprof mapping id.
    mappings: HashMap<crate::stacks::stack::MappingInfo, u64>,
    /// The kernel's pseudo mapping and the address range its frames span.
    kernel: Option<(u64, u64, u64)>,
    samples: HashMap<(Vec<u64>, Vec<LabelKey>), usize>,
}

impl Builder {
    fn new(types: &[(&str, &str)], period_type: (&str, &str), period: i64, run: &Run) -> Self {
        let mut b = Builder {
            p: proto::Profile {
                string_table: vec![String::new()],
                time_nanos: (run.started_unix_ms as i64).saturating_mul(1_000_000),
                duration_nanos: run.duration_ns as i64,
                period,
                ..Default::default()
            },
            strings: HashMap::from([(String::new(), 0)]),
            functions: HashMap::new(),
            locations: HashMap::new(),
            by_addr: HashMap::new(),
            mappings: HashMap::new(),
            kernel: None,
            samples: HashMap::new(),
        };
        b.p.sample_type = types.iter().map(|&(t, u)| b.value_type(t, u)).collect();
        b.p.period_type = Some(b.value_type(period_type.0, period_type.1));
        b.comment(&format!(
            "kpath {}, kernel {}",
            run.kpath_version, run.kernel.release
        ));
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.p.string_table.len() as i64;
        self.p.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn value_type(&mut self, t: &str, unit: &str) -> proto::ValueType {
        proto::ValueType {
            r#type: self.string(t),
            unit: self.string(unit),
        }
    }

    fn comment(&mut self, text: &str) {
        let i = self.string(text);
        self.p.comment.push(i);
    }

    fn str_label(&mut self, key: &str, value: &str) -> proto::Label {
        proto::Label {
            key: self.string(key),
            str: self.string(value),
            ..Default::default()
        }
    }

    fn num_label(&mut self, key: &str, n: i64) -> proto::Label {
        proto::Label {
            key: self.string(key),
            num: n,
            ..Default::default()
        }
    }

    /// `pid` (when known), `thread_name`, and `syscall` when the stack is in one.
    fn thread_labels(&mut self, s: &Stack) -> Vec<proto::Label> {
        let mut v = Vec::with_capacity(3);
        if s.tgid != 0 {
            v.push(self.num_label("pid", s.tgid as i64));
        }
        if !s.comm.is_empty() {
            v.push(self.str_label("thread_name", &s.comm));
        }
        if let Some(sc) = syscall_of(s) {
            v.push(self.str_label("syscall", sc));
        }
        v
    }

    fn mapping_id(&mut self, m: &crate::stacks::stack::MappingInfo) -> u64 {
        if let Some(&id) = self.mappings.get(m) {
            return id;
        }
        let id = self.p.mapping.len() as u64 + 1;
        let filename = self.string(&m.path);
        let build_id = self.string(m.build_id.as_deref().unwrap_or(""));
        self.p.mapping.push(proto::Mapping {
            id,
            memory_start: m.start,
            memory_limit: m.end,
            file_offset: m.offset,
            filename,
            build_id,
            // Symbolized already: pprof must not look the addresses up again.
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        });
        self.mappings.insert(m.clone(), id);
        id
    }

    /// The kernel's mapping, widened to cover `addr`.
    fn kernel_mapping(&mut self, addr: u64) -> u64 {
        let (id, lo, hi) = match self.kernel {
            Some(k) => k,
            None => {
                let id = self.p.mapping.len() as u64 + 1;
                let filename = self.string("[kernel.kallsyms]");
                self.p.mapping.push(proto::Mapping {
                    id,
                    filename,
                    has_functions: true,
                    ..Default::default()
                });
                (id, u64::MAX, 0)
            }
        };
        let (lo, hi) = if addr == 0 {
            (lo, hi)
        } else {
            (lo.min(addr), hi.max(addr + 1))
        };
        self.kernel = Some((id, lo, hi));
        id
    }

    fn function(&mut self, l: &Line) -> u64 {
        let name = self.string(&l.function);
        let file = self.string(l.file.as_deref().unwrap_or(""));
        if let Some(&id) = self.functions.get(&(name, file)) {
            return id;
        }
        let id = self.p.function.len() as u64 + 1;
        self.p.function.push(proto::Function {
            id,
            name,
            system_name: name,
            filename: file,
            start_line: 0,
        });
        self.functions.insert((name, file), id);
        id
    }

    fn location(&mut self, f: &Frame, mappings: &[crate::stacks::stack::MappingInfo]) -> u64 {
        let mapping = match (f.kind, f.mapping.and_then(|i| mappings.get(i))) {
            (FrameKind::Kernel, _) => self.kernel_mapping(f.addr),
            (FrameKind::User, Some(m)) => self.mapping_id(m),
            (FrameKind::User, None) => 0,
        };
        if f.addr != 0 {
            if let Some(&id) = self.by_addr.get(&(mapping, f.addr)) {
                return id;
            }
        }
        // pprof lists a location's lines innermost (the inlined callee) first.
        let lines: Vec<(u64, i64)> = f
            .lines
            .iter()
            .rev()
            .map(|l| (self.function(l), l.line as i64))
            .collect();
        let key = (mapping, f.addr, lines);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        if f.addr != 0 {
            self.by_addr
                .insert((mapping, f.addr), self.p.location.len() as u64 + 1);
        }
        let id = self.p.location.len() as u64 + 1;
        self.p.location.push(proto::Location {
            id,
            mapping_id: mapping,
            address: f.addr,
            line: key
                .2
                .iter()
                .map(|&(function_id, line)| proto::Line { function_id, line })
                .collect(),
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    fn add(
        &mut self,
        s: &Stack,
        mappings: &[crate::stacks::stack::MappingInfo],
        values: &[i64],
        labels: Vec<proto::Label>,
    ) {
        if values.iter().all(|&v| v == 0) {
            return;
        }
        // Numbered root first, so the first mapping is the one the first stack starts in
        // (the program, which pprof shows as the profile's `File:`); listed leaf first.
        let mut locs: Vec<u64> = s
            .frames
            .iter()
            .map(|f| self.location(f, mappings))
            .collect();
        locs.reverse();
        let label_key: Vec<LabelKey> = labels
            .iter()
            .map(|l| (l.key, l.str, l.num, l.num_unit))
            .collect();
        let found = self
            .samples
            .get(&(locs.clone(), label_key.clone()))
            .copied();
        match found {
            Some(i) => {
                for (a, b) in self.p.sample[i].value.iter_mut().zip(values) {
                    *a += b;
                }
            }
            None => {
                self.samples
                    .insert((locs.clone(), label_key), self.p.sample.len());
                self.p.sample.push(proto::Sample {
                    location_id: locs,
                    value: values.to_vec(),
                    label: labels,
                });
            }
        }
    }

    fn finish(mut self) -> proto::Profile {
        if let Some((id, lo, hi)) = self.kernel {
            let m = &mut self.p.mapping[id as usize - 1];
            if lo < hi {
                m.memory_start = lo;
                m.memory_limit = hi;
            }
        }
        self.p
    }
}

#[cfg(test)]
mod tests;
