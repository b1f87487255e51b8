//! kpath: where a network server's time goes inside the kernel.
//!
//! The layers, bottom up (no module imports one above it; `cargo xtask lint` checks):
//! - [`kernel`]: what the running kernel offers and how to read it (features, BTF, kallsyms,
//!   tracefs, syscall names);
//! - [`probes`]: the engine that loads the embedded eBPF object, plans and attaches each
//!   family's methods with fallback, and reads maps; it names no family;
//! - [`families`]: one file per probe family (`syscalls`, `kpaths`, `sched`, `locks`, `oncpu`)
//!   holding its attach methods, its `collect()` and the report section every renderer draws;
//! - [`findings`]: the rules engine over a run's facts (record, report, HTML, bench, scenarios);
//! - [`run`]: the `run.json` schema; [`stacks`]: symbolized, folded stacks; [`render`]:
//!   tables, JSON, flame graphs, HTML; [`export`]: pprof profiles; [`agent`], [`bench`], [`scenario`], [`vm`]: the libraries behind
//!   those subcommands; [`unwind`]: DWARF unwind tables for the BPF stack walker and its
//!   Rust twin;
//! - [`cmd`]: one file per subcommand (its arguments and `run`), dispatched by `main.rs`.

pub mod agent;
pub mod bench;
pub mod cmd;
pub mod export;
pub mod families;
pub mod findings;
pub mod fmt;
pub mod hist;
pub mod kernel;
pub mod probes;
pub mod process;
pub mod render;
pub mod run;
pub mod scenario;
pub mod stacks;
pub mod unwind;
pub mod vm;
