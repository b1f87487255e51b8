//! One module per `kpath` subcommand: its clap arguments and its `run`.

pub mod bench;
pub mod costs;
pub mod diff;
pub mod doctor;
pub mod flame;
pub mod record;
pub mod report;
pub mod scenario;
pub mod vm;
pub mod workload;
