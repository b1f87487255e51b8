//! The reference HTTP server (`kpath serve`) and the load generator (`kpath load`).
//!
//! The server's strategies share all protocol code (parsing in [`http`], per-connection state in
//! `session`/`conn`, replies in `reply`) so that comparing two `--io` or `--model`
//! values measures only the mechanism each one names.

pub mod args;
mod conn;
pub mod http;
pub mod io;
pub mod load;
mod model;
mod net;
mod reply;
mod send;
pub mod serve;
mod session;
mod sys;

pub use io::Io;
pub use serve::{start, Model, ServerConfig, ServerHandle};
