//! What the running kernel offers and how to read it: feature detection, BTF, kallsyms,
//! tracefs, syscall names. Kernel differences live here, each with the version it comes from.

pub mod btf;
pub mod epoll;
pub mod features;
pub mod kallsyms;
pub mod syscall_names;
pub mod tracefs;
pub mod tracing_prog;
