//! The library behind `kpath agent`: continuous recording in windows. [`drain`] empties the
//! stack-key maps after each window (counting what arrives meanwhile), [`delta`] turns the
//! cumulative per-CPU statistics into a window, [`metrics`] keeps the Prometheus state and
//! encodes it, [`http`] serves it, [`windows`] writes and prunes the window directories.
pub mod delta;
pub mod drain;
pub mod http;
pub mod metrics;
pub mod windows;
