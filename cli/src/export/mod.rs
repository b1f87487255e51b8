//! Exports of a recording in other tools' formats: [`pprof`] profiles (with their
//! [`proto`] messages).
pub mod pprof;
pub mod proto;
