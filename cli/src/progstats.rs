//! What kpath's own BPF programs cost, measured with the kernel's run-time statistics, sampled.
//!
//! While a BPF_ENABLE_STATS fd is open, the kernel times every run of every BPF program on the
//! machine (two sched_clock reads each). That is not free: on the 6.18 PVM guest this project is
//! built on it added about 165 ns to each syscall of every process while the syscall programs
//! were attached, more than kpath's syscall programs themselves (`cargo xtask bench-probes`).
//! So the statistics are on in short windows only ([`WINDOW`] every [`PERIOD`], from the moment
//! the probes attach), and the per-program deltas inside the windows give events/s and ns/event,
//! scaled to the whole recording.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use crate::loader::{self, Probes};
use crate::run::{FamilyOverhead, Overhead};

/// How long each statistics window lasts.
pub const WINDOW: Duration = Duration::from_millis(200);
/// A window opens this often (so the statistics are on WINDOW/PERIOD of the time: 10%).
pub const PERIOD: Duration = Duration::from_secs(2);

/// Run count and run time of one program.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub runs: u64,
    pub ns: u64,
}

/// The sampled statistics of one recording.
pub struct ProgStats {
    /// The open statistics fd while a window is on.
    fd: Option<OwnedFd>,
    window_start: Instant,
    next_window: Instant,
    /// Counters of each program (in `Probes::programs` order) when the window opened.
    at_open: Vec<Counters>,
    /// Sum over closed windows of each program's counter deltas.
    sums: Vec<Counters>,
    sampled: Duration,
    /// Events per second over all programs in the last closed window (for the progress line).
    last_rate: Option<f64>,
    /// Why the statistics could not be enabled (then nothing is measured).
    pub error: Option<String>,
}

impl ProgStats {
    /// Opens the first window now (unless `disabled`).
    pub fn start(probes: &Probes, disabled: Option<&str>) -> Self {
        let now = Instant::now();
        let mut s = ProgStats {
            fd: None,
            window_start: now,
            next_window: now,
            at_open: Vec::new(),
            sums: vec![Counters::default(); probes.programs.len()],
            sampled: Duration::ZERO,
            last_rate: None,
            error: disabled.map(str::to_string),
        };
        s.poll(probes);
        s
    }

    /// Opens or closes a window when due; call it often (every few tens of ms).
    pub fn poll(&mut self, probes: &Probes) {
        if self.error.is_some() {
            return;
        }
        let now = Instant::now();
        if self.fd.is_some() {
            if now.duration_since(self.window_start) >= WINDOW {
                self.close(probes, now);
            }
        } else if now >= self.next_window {
            self.open(probes, now);
        }
    }

    fn open(&mut self, probes: &Probes, now: Instant) {
        match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => {
                self.fd = Some(fd);
                self.window_start = now;
                self.next_window = now + PERIOD;
                self.at_open = counters(probes);
            }
            Err(e) => self.error = Some(loader::error_chain(&e)),
        }
    }

    fn close(&mut self, probes: &Probes, now: Instant) {
        let at_close = counters(probes);
        self.fd = None;
        let window = now.duration_since(self.window_start);
        self.sampled += window;
        let mut runs = 0;
        for ((sum, a), b) in self.sums.iter_mut().zip(&self.at_open).zip(&at_close) {
            let d = delta(a, b);
            sum.runs += d.runs;
            sum.ns += d.ns;
            runs += d.runs;
        }
        self.last_rate = Some(runs as f64 / window.as_secs_f64().max(1e-9));
    }

    /// BPF events per second in the last window, if one closed yet.
    pub fn rate(&self) -> Option<f64> {
        self.last_rate
    }

    /// Closes an open window and turns the sums into overhead figures for a recording of
    /// `duration`.
    pub fn finish(mut self, probes: &Probes, duration: Duration) -> Overhead {
        if self.fd.is_some() {
            self.close(probes, Instant::now());
        }
        let per_program: Vec<(&str, Counters)> = probes
            .programs
            .iter()
            .map(|(fam, _)| *fam)
            .zip(self.sums.iter().copied())
            .collect();
        overhead(
            &per_program,
            self.sampled,
            duration,
            self.error.is_none() && !self.sampled.is_zero(),
        )
    }
}

/// Current counters of every loaded program (zeros for one whose info cannot be read).
fn counters(probes: &Probes) -> Vec<Counters> {
    probes
        .programs
        .iter()
        .map(|(_, name)| {
            probes
                .ebpf
                .program(name)
                .and_then(|p| p.info().ok())
                .map(|i| Counters {
                    runs: i.run_count(),
                    ns: i.run_time().as_nanos() as u64,
                })
                .unwrap_or_default()
        })
        .collect()
}

fn delta(a: &Counters, b: &Counters) -> Counters {
    Counters {
        runs: b.runs.saturating_sub(a.runs),
        ns: b.ns.saturating_sub(a.ns),
    }
}

/// Per family: events/s and ns/event from the sampled windows, events and run time scaled to
/// the whole `duration`.
pub fn overhead(
    per_program: &[(&str, Counters)],
    sampled: Duration,
    duration: Duration,
    measured: bool,
) -> Overhead {
    let mut sums: BTreeMap<String, Counters> = BTreeMap::new();
    for (fam, c) in per_program {
        let s = sums.entry(fam.to_string()).or_default();
        s.runs += c.runs;
        s.ns += c.ns;
    }
    let sampled_secs = sampled.as_secs_f64();
    let scale = if sampled_secs > 0.0 {
        duration.as_secs_f64() / sampled_secs
    } else {
        0.0
    };
    let families = sums
        .into_iter()
        .map(|(fam, c)| {
            let o = FamilyOverhead {
                events: (c.runs as f64 * scale).round() as u64,
                events_per_sec: if sampled_secs > 0.0 {
                    c.runs as f64 / sampled_secs
                } else {
                    0.0
                },
                bpf_run_ns: (c.ns as f64 * scale).round() as u64,
                ns_per_event: if c.runs > 0 {
                    c.ns as f64 / c.runs as f64
                } else {
                    0.0
                },
            };
            (fam, o)
        })
        .collect();
    Overhead {
        bpf_stats_enabled: measured,
        stats_sampled_ns: sampled.as_nanos() as u64,
        families,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(runs: u64, ns: u64) -> Counters {
        Counters { runs, ns }
    }

    #[test]
    fn windows_scale_to_the_whole_recording() {
        // Two programs of one family, one of another; 0.4 s sampled of a 4 s recording.
        let per = [
            ("syscalls", c(1000, 100_000)),
            ("syscalls", c(1000, 60_000)),
            ("sched", c(10, 5_000)),
        ];
        let o = overhead(
            &per,
            Duration::from_millis(400),
            Duration::from_secs(4),
            true,
        );
        let s = &o.families["syscalls"];
        assert_eq!(s.events, 20_000);
        assert_eq!(s.events_per_sec, 5_000.0);
        assert_eq!(s.ns_per_event, 80.0);
        assert_eq!(s.bpf_run_ns, 1_600_000);
        assert_eq!(o.families["sched"].ns_per_event, 500.0);
        assert_eq!(o.stats_sampled_ns, 400_000_000);
        assert!(o.bpf_stats_enabled);
    }

    #[test]
    fn nothing_sampled_measures_nothing() {
        let o = overhead(
            &[("locks", c(0, 0))],
            Duration::ZERO,
            Duration::from_secs(1),
            false,
        );
        assert_eq!(o.families["locks"], FamilyOverhead::default());
        assert!(!o.bpf_stats_enabled);
    }

    #[test]
    fn deltas_never_go_negative() {
        assert_eq!(delta(&c(5, 50), &c(7, 40)), c(2, 0));
    }

    #[test]
    fn duty_cycle_is_a_tenth() {
        assert_eq!(PERIOD.as_millis() / WINDOW.as_millis(), 10);
    }
}
