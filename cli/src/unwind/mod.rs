//! User-space half of DWARF unwinding (`--call-graph dwarf`, issue 11): the tables the BPF
//! walker interprets, and a Rust twin of that walker.
//!
//! - [`cfi`]: one ELF file's `.eh_frame` / `.debug_frame` CFI turned into sorted, merged
//!   [`Row`](probe_common::unwind::Row)s at link-time addresses;
//! - [`maps`]: a process's executable mappings (`/proc/PID/maps`) and each one's load bias;
//! - [`cache`]: the [`Registry`] owning every binary's rows as one shard of a global array
//!   (built once per binary, cached on disk by build-id) and the per-process
//!   [`ProcMaps`](probe_common::unwind::ProcMaps) that point into it;
//! - [`walk`]: the walk the BPF side does, in Rust, so tests can check it against an
//!   independent unwinder on real stacks.

pub mod bpf;
pub mod cache;
pub mod cfi;
pub mod maps;
pub mod walk;

use std::path::PathBuf;

pub use cache::{BinaryInfo, CacheOptions, ProcessTables, Registry, Unmapped, UnmappedReason};
pub use walk::{walk, Regs, Walk};

/// What can go wrong building tables or reading a process.
#[derive(Debug, thiserror::Error)]
pub enum UnwindError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("process {pid} does not exist or is not readable: {source}")]
    NoProcess {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: line {line} of the maps file does not parse: {text:?}")]
    BadMapsLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
    #[error("{path}: not an ELF file kpath can read: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: object::Error,
    },
    #[error("{path}: call frame information does not parse: {source}")]
    Cfi {
        path: PathBuf,
        #[source]
        source: gimli::Error,
    },
    #[error("{path}: the file was replaced since the process mapped it")]
    Replaced { path: PathBuf },
    #[error("{path}: an image read from memory has no build-id to cache it by")]
    NoBuildId { path: PathBuf },
    #[error("{path}: code at link address {pc:#x} is above 4 GiB; rows hold 32-bit pcs")]
    AddressTooHigh { path: PathBuf, pc: u64 },
    #[error("the row array would pass {limit} rows adding {path}")]
    TooManyRows { path: PathBuf, limit: usize },
}
