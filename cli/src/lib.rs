//! kpath: where a network server's time goes inside the kernel.
//!
//! The binary's subcommands live one per file (`doctor`, `record`, `report`, `workload`); the
//! loader owns load/attach/fallback; collectors turn kernel maps into a [`run::Run`]; everything
//! after the collectors is pure and tested without root.

pub mod bench;
pub mod btf;
pub mod collect;
pub mod costs;
pub mod diff;
pub mod doctor;
pub mod features;
pub mod flame;
pub mod hist;
pub mod kallsyms;
pub mod loader;
pub mod progstats;
pub mod record;
pub mod render;
pub mod report;
pub mod run;
pub mod scenario;
pub mod stacks;
pub mod syscall_names;
pub mod target;
pub mod vm;
pub mod workload;
