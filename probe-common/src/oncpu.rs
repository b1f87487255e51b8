//! `oncpu`: stack samples from a perf cpu-clock event on every CPU.

/// Hash map [`crate::StackKey`] -> sample count.
pub const MAP_COUNTS: &str = "ONCPU_COUNTS";
pub const COUNTS_CAPACITY: u32 = 16384;
/// Per-CPU array with one u64: samples of traced tasks (including those whose key was lost).
pub const MAP_SAMPLES: &str = "ONCPU_SAMPLES";
