//! A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux): enough to find struct member
//! offsets, a function prototype's parameter count and whether a kernel function exists. aya
//! 0.14 keeps its BTF type accessors crate-private, so the sched raw tracepoints get their
//! `task_struct` offsets from here. The btf-rs crate (2.0) could give the same offsets, but it
//! is LGPL-2.1-or-later, and linking it statically would put its terms on kpath's MIT/Apache
//! binary; this reader is ~300 lines, tested on synthetic BTF and against bpftool's offsets.
//!
//! Format: Documentation/bpf/btf.rst. A header, then a type section of variable-length records
//! (ids from 1; 0 is void), then a string section.
const MAGIC: u16 = 0xeb9f;

// Kinds (`info` bits 24-28) and the trailing data each carries after the 12-byte common part.
const KIND_INT: u32 = 1; // u32
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3; // btf_array: 12
const KIND_STRUCT: u32 = 4; // vlen * btf_member (12)
const KIND_UNION: u32 = 5; // vlen * btf_member (12)
const KIND_ENUM: u32 = 6; // vlen * btf_enum (8)
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13; // vlen * btf_param (8)
const KIND_VAR: u32 = 14; // btf_var: 4
const KIND_DATASEC: u32 = 15; // vlen * btf_var_secinfo (12)
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17; // btf_decl_tag: 4
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19; // vlen * btf_enum64 (12)

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BtfError {
    #[error("not BTF: bad magic {magic:#x}")]
    Magic { magic: u16 },
    #[error("BTF truncated: {what} ends at byte {end}, past {len}")]
    Truncated {
        what: &'static str,
        end: usize,
        len: usize,
    },
    #[error("unknown BTF kind {kind} at type id {id}")]
    UnknownKind { kind: u32, id: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Type {
    kind: u32,
    vlen: u16,
    kind_flag: bool,
    /// `size` for INT/ENUM/STRUCT/UNION/DATASEC/FLOAT, the referenced type id for the others.
    size_or_type: u32,
    /// Byte offset of the trailing data in the type section.
    extra: usize,
}

/// A member of a struct or union.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits from the start of the struct.
    bit_offset: u32,
    /// Bitfield width, 0 when not a bitfield.
    bitfield_size: u32,
}

/// The bytes BTF is read from: the kernel's mapping of /sys/kernel/btf/vmlinux where it allows
/// mmap (Linux 6.16+: no copy), else a copy.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// Parsed BTF: the raw bytes, where the sections are, and where each type record starts.
/// Records are decoded when asked for: building ~130k decoded records up front cost 12 ms of
/// kpath's start-up.
pub struct Btf {
    data: Bytes,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Offset in the type section of record `id - 1`.
    index: Vec<u32>,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Bytes of trailing data after a record's 12-byte common part.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        _ => return None,
    })
}

impl Btf {
    pub fn from_sys_fs() -> std::io::Result<Btf> {
        let path = "/sys/kernel/btf/vmlinux";
        let file = std::fs::File::open(path)?;
        // Populated in one go: faulting its ~1350 pages in one by one cost more (in a PVM
        // guest) than reading the file.
        // SAFETY: the kernel's BTF is read-only and never changes while the system runs; the
        // mapping is private and read-only, so nothing can alter the bytes under us.
        let data = match unsafe { memmap2::MmapOptions::new().populate().map(&file) } {
            Ok(m) => Bytes::Mapped(m),
            Err(_) => Bytes::Owned(std::fs::read(path)?),
        };
        Btf::parse_bytes(data).map_err(std::io::Error::other)
    }

    /// Parses little-endian BTF (the only byte order kpath's x86_64 kernels produce).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        Btf::parse_bytes(Bytes::Owned(data.to_vec()))
    }

    fn parse_bytes(data: Bytes) -> Result<Btf, BtfError> {
        let len = data.len();
        let trunc = |what, end| BtfError::Truncated { what, end, len };
        let hdr = |off| u32_at(&data, off).ok_or(trunc("header", off + 4));
        if data.len() < 4 {
            return Err(trunc("header", 4));
        }
        let magic = u16::from_le_bytes([data[0], data[1]]);
        if magic != MAGIC {
            return Err(BtfError::Magic { magic });
        }
        let hdr_len = hdr(4)? as usize;
        let (type_off, type_len) = (hdr(8)? as usize, hdr(12)? as usize);
        let (str_off, str_len) = (hdr(16)? as usize, hdr(20)? as usize);
        let section = |what, off: usize, n: usize| {
            let start = hdr_len + off;
            (start + n <= len)
                .then_some(start..start + n)
                .ok_or(trunc(what, start + n))
        };
        let types = section("type section", type_off, type_len)?;
        let strings = section("string section", str_off, str_len)?;

        let t = &data[types.clone()];
        let mut index = Vec::with_capacity(t.len() / 16);
        let mut off = 0;
        while off < t.len() {
            let id = index.len() as u32 + 1;
            let Some(info) = u32_at(t, off + 4).filter(|_| off + 12 <= t.len()) else {
                return Err(trunc("type record", hdr_len + type_off + off + 12));
            };
            let kind = (info >> 24) & 0x1f;
            let extra = extra_len(kind, (info & 0xffff) as usize)
                .ok_or(BtfError::UnknownKind { kind, id })?;
            index.push(off as u32);
            off += 12 + extra;
            if off > t.len() {
                return Err(trunc("type record", hdr_len + type_off + off));
            }
        }
        Ok(Btf {
            data,
            types,
            strings,
            index,
        })
    }

    fn type_bytes(&self) -> &[u8] {
        &self.data[self.types.clone()]
    }

    fn string_bytes(&self) -> &[u8] {
        &self.data[self.strings.clone()]
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.string_bytes().get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<Type> {
        let off = *self.index.get((id as usize).checked_sub(1)?)? as usize;
        let t = self.type_bytes();
        let info = u32_at(t, off + 4)?;
        Some(Type {
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as u16,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(t, off + 8)?,
            extra: off + 12,
        })
    }

    /// The first type of `kind` named `name`. A scan: kpath asks a handful of names once per
    /// run, and indexing ~150k names up front cost more than the scans (start-up budget).
    fn find(&self, kind: u32, name: &str) -> Option<u32> {
        let want = name.as_bytes();
        let (t, strings) = (self.type_bytes(), self.string_bytes());
        self.index
            .iter()
            .position(|&off| {
                let off = off as usize;
                let info = u32_at(t, off + 4).unwrap_or(0);
                let name_off = u32_at(t, off).unwrap_or(0) as usize;
                (info >> 24) & 0x1f == kind
                    && name_off != 0
                    && strings
                        .get(name_off..)
                        .is_some_and(|s| s.starts_with(want) && s.get(want.len()) == Some(&0))
            })
            .map(|i| i as u32 + 1)
    }

    /// Whether the kernel has a function named `name` (BPF helpers are named after theirs).
    pub fn has_func(&self, name: &str) -> bool {
        self.find(KIND_FUNC, name).is_some()
    }

    /// The BTF id of function `name`, what a tracing program attaches to.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.find(KIND_FUNC, name)
    }

    /// The BTF id of typedef `name` (`btf_trace_<event>`: what a BTF tracepoint attaches to).
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.find(KIND_TYPEDEF, name)
    }

    fn members(&self, t: &Type) -> Vec<Member> {
        (0..t.vlen as usize)
            .filter_map(|i| {
                let at = t.extra + 12 * i;
                let raw = u32_at(self.type_bytes(), at + 8)?;
                // With kind_flag, the top 8 bits are the bitfield size.
                let (bit_offset, bitfield_size) = if t.kind_flag {
                    (raw & 0xff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                Some(Member {
                    name_off: u32_at(self.type_bytes(), at)?,
                    type_id: u32_at(self.type_bytes(), at + 4)?,
                    bit_offset,
                    bitfield_size,
                })
            })
            .collect()
    }

    /// Skips typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<(u32, Type)> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some((id, t)),
            }
        }
        None
    }

    /// Byte offset and size of member `member` of `struct name`, looking inside anonymous
    /// struct and union members too. `None` if absent or a bitfield.
    pub fn member(&self, name: &str, member: &str) -> Option<MemberInfo> {
        let id = self.find(KIND_STRUCT, name)?;
        self.member_in(id, member, 0)
    }

    fn member_in(&self, id: u32, member: &str, base_bits: u32) -> Option<MemberInfo> {
        let t = self.ty(id)?;
        let mut anonymous = Vec::new();
        for m in self.members(&t) {
            let bits = base_bits + m.bit_offset;
            if m.name_off == 0 {
                anonymous.push((m.type_id, bits));
            } else if self.str_at(m.name_off) == member {
                if m.bitfield_size != 0 || !bits.is_multiple_of(8) {
                    return None;
                }
                let size = self.size_of(m.type_id)?;
                return Some(MemberInfo {
                    offset: bits / 8,
                    size,
                });
            }
        }
        anonymous.into_iter().find_map(|(tid, bits)| {
            let (rid, rt) = self.resolve(tid)?;
            matches!(rt.kind, KIND_STRUCT | KIND_UNION)
                .then(|| self.member_in(rid, member, bits))
                .flatten()
        })
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let (_, t) = self.resolve(id)?;
        match t.kind {
            KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION | KIND_FLOAT => {
                Some(t.size_or_type)
            }
            KIND_PTR => Some(8),
            _ => None,
        }
    }

    /// Parameter count of the function prototype a typedef points to (through one pointer),
    /// e.g. `typedef void (*btf_trace_sched_switch)(void *, bool, ...)`.
    pub fn typedef_fn_params(&self, name: &str) -> Option<usize> {
        let td = self.ty(self.find(KIND_TYPEDEF, name)?)?;
        let (_, t) = self.resolve(td.size_or_type)?;
        let t = if t.kind == KIND_PTR {
            self.resolve(t.size_or_type)?.1
        } else {
            t
        };
        (t.kind == KIND_FUNC_PROTO).then_some(t.vlen as usize)
    }

    /// Number of type records (for tests).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberInfo {
    pub offset: u32,
    pub size: u32,
}

/// What the sched raw tracepoints need from `task_struct` and `sched_switch`'s prototype.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SchedBtf {
    /// Offset of `task_struct.pid`.
    pub task_pid: u32,
    /// Offset of `task_struct.__state` (5.14+) or `.state`.
    pub task_state: u32,
    /// Offset of `task_struct.exit_state`.
    pub task_exit_state: u32,
    /// Whether the sched_switch tracepoint passes prev_state as a fourth argument (5.18+).
    pub switch_prev_state_arg: bool,
}

impl SchedBtf {
    pub fn from_btf(btf: &Btf) -> Option<SchedBtf> {
        let pid = btf.member("task_struct", "pid")?;
        let state = btf
            .member("task_struct", "__state")
            .or_else(|| btf.member("task_struct", "state"))?;
        let exit_state = btf.member("task_struct", "exit_state")?;
        // The kernel reads these as 4-byte ints (`state` was a long before 5.14: its low half
        // holds every state bit on little-endian x86_64).
        if pid.size != 4 || exit_state.size != 4 || !matches!(state.size, 4 | 8) {
            return None;
        }
        // void *__data, then TP_PROTO: (preempt, prev, next[, prev_state]).
        let switch_prev_state_arg = match btf.typedef_fn_params("btf_trace_sched_switch")? {
            4 => false,
            5 => true,
            _ => return None,
        };
        Some(SchedBtf {
            task_pid: pid.offset,
            task_state: state.offset,
            task_exit_state: exit_state.offset,
            switch_prev_state_arg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF bytes from type records (already encoded) and a string table.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn rec(
            &mut self,
            name: &str,
            kind: u32,
            kflag: bool,
            vlen: u32,
            x: u32,
            extra: &[u32],
        ) -> u32 {
            let n = self.s(name);
            let info = (u32::from(kflag) << 31) | (kind << 24) | vlen;
            for w in [n, info, x].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            self.rec(name, KIND_INT, false, 0, size, &[size * 8])
        }
        /// Members: (name, type, bit offset or kind_flag-encoded word).
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kflag: bool,
            m: &[(&str, u32, u32)],
        ) -> u32 {
            let mut extra = Vec::new();
            for &(mn, ty, off) in m {
                extra.extend([self.s(mn), ty, off]);
            }
            self.rec(name, kind, kflag, m.len() as u32, size, &extra)
        }
        fn bytes(&self) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC.to_le_bytes());
            b.extend_from_slice(&[1, 0]);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            b.extend_from_slice(&self.types);
            b.extend_from_slice(&self.strings);
            b
        }
    }

    /// A kernel-like layout: every kind, a bitfield struct, members in an anonymous union, and
    /// the tracepoint typedef with `params` parameters.
    fn kernel_like(state_name: &str, state_size: u32, params: u32) -> Vec<u8> {
        let mut b = Builder::new();
        let int = b.int("int", 4);
        let uint = b.int("unsigned int", 4);
        let long = b.int("long", 8);
        let pid_t = b.rec("pid_t", KIND_TYPEDEF, false, 0, int, &[]);
        let state_ty = if state_size == 8 {
            b.rec("", KIND_VOLATILE, false, 0, long, &[])
        } else {
            uint
        };
        // Kinds the walk must step over.
        let arr = b.rec("", KIND_ARRAY, false, 0, 0, &[int, int, 4]);
        b.rec("e", KIND_ENUM, false, 2, 4, &[0, 0, 0, 1]);
        b.rec("e64", KIND_ENUM64, false, 1, 8, &[0, 1, 0]);
        b.rec("fw", KIND_FWD, false, 0, 0, &[]);
        b.rec("", KIND_CONST, false, 0, int, &[]);
        b.rec("", KIND_RESTRICT, false, 0, int, &[]);
        b.rec("v", KIND_VAR, false, 0, int, &[1]);
        b.rec(".data", KIND_DATASEC, false, 1, 4, &[0, 0, 4]);
        b.rec("double", KIND_FLOAT, false, 0, 8, &[]);
        b.rec("tag", KIND_DECL_TAG, false, 0, int, &[u32::MAX]);
        b.rec("user", KIND_TYPE_TAG, false, 0, int, &[]);
        // A decoy of another kind with the same name.
        b.rec("task_struct", KIND_UNION, false, 0, 0, &[]);
        // Bitfields: 3 bits at bit 3 of a kind_flag struct.
        let bits = b.composite(KIND_STRUCT, "flags", 4, true, &[("a", uint, (3 << 24) | 3)]);
        let anon_inner = b.composite(KIND_STRUCT, "", 8, false, &[("exit_state", int, 32)]);
        let anon = b.composite(
            KIND_UNION,
            "",
            8,
            false,
            &[("", anon_inner, 0), ("x", long, 0)],
        );
        let task = b.next_id;
        b.composite(
            KIND_STRUCT,
            "task_struct",
            4096,
            true,
            &[
                ("thread_info", arr, 0),
                (state_name, state_ty, 24 * 8),
                ("flags", bits, 32 * 8),
                ("in_iowait", uint, (1 << 24) | (36 * 8)),
                ("", anon, 1200 * 8),
                ("pid", pid_t, 1360 * 8),
            ],
        );
        let ptr = b.rec("", KIND_PTR, false, 0, task, &[]);
        let mut params_w = Vec::new();
        for _ in 0..params {
            params_w.extend([0, ptr]);
        }
        let proto = b.rec("", KIND_FUNC_PROTO, false, params, 0, &params_w);
        let pproto = b.rec("", KIND_PTR, false, 0, proto, &[]);
        b.rec(
            "btf_trace_sched_switch",
            KIND_TYPEDEF,
            false,
            0,
            pproto,
            &[],
        );
        b.rec("f", KIND_FUNC, false, 0, proto, &[]);
        b.bytes()
    }

    #[test]
    fn finds_task_struct_offsets_through_typedefs_and_anonymous_unions() {
        let btf = Btf::parse(&kernel_like("__state", 4, 5)).unwrap();
        assert_eq!(
            SchedBtf::from_btf(&btf),
            Some(SchedBtf {
                task_pid: 1360,
                task_state: 24,
                task_exit_state: 1204,
                switch_prev_state_arg: true,
            })
        );
    }

    #[test]
    fn old_kernels_have_a_long_state_and_no_prev_state_argument() {
        let btf = Btf::parse(&kernel_like("state", 8, 4)).unwrap();
        let s = SchedBtf::from_btf(&btf).unwrap();
        assert_eq!((s.task_state, s.switch_prev_state_arg), (24, false));
        assert_eq!(btf.member("task_struct", "state").unwrap().size, 8);
    }

    #[test]
    fn bitfields_are_not_offered_as_byte_offsets() {
        let btf = Btf::parse(&kernel_like("__state", 4, 5)).unwrap();
        assert_eq!(btf.member("task_struct", "in_iowait"), None);
        assert_eq!(btf.member("flags", "a"), None);
        assert_eq!(
            btf.member("task_struct", "flags"),
            Some(MemberInfo {
                offset: 32,
                size: 4
            })
        );
    }

    #[test]
    fn unexpected_prototypes_and_missing_fields_give_no_offsets() {
        let btf = Btf::parse(&kernel_like("__state", 4, 3)).unwrap();
        assert_eq!(SchedBtf::from_btf(&btf), None);
        let btf = Btf::parse(&kernel_like("task_state", 4, 5)).unwrap();
        assert_eq!(SchedBtf::from_btf(&btf), None);
        assert_eq!(btf.typedef_fn_params("btf_trace_sched_switch"), Some(5));
        assert_eq!(btf.typedef_fn_params("nope"), None);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = kernel_like("__state", 4, 5);
        assert!(Btf::parse(&[0x9f]).is_err());
        assert!(matches!(
            Btf::parse(&[0, 0, 1, 0]),
            Err(BtfError::Magic { .. })
        ));
        for cut in [10, 30, good.len() / 2, good.len() - 1] {
            assert!(Btf::parse(&good[..cut]).is_err(), "cut at {cut}");
        }
        // An unknown kind stops the walk.
        let mut bad = good.clone();
        bad[24 + 7] = 31 & 0x1f; // the first record's kind byte
        assert_eq!(
            Btf::parse(&bad).err(),
            Some(BtfError::UnknownKind { kind: 31, id: 1 })
        );
    }

    /// The running kernel's BTF, where it exists: every record parses and the offsets are found.
    #[test]
    fn this_kernels_btf_gives_sched_offsets() {
        let Ok(btf) = Btf::from_sys_fs() else {
            return;
        };
        assert!(btf.len() > 10_000);
        let s = SchedBtf::from_btf(&btf).expect("task_struct offsets");
        assert!(s.task_pid > 0 && s.task_state < s.task_pid);
    }
}
