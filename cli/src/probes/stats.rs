//! What kpath's own BPF programs cost, measured with the kernel's run-time statistics.
//!
//! While a BPF_ENABLE_STATS fd is open, the kernel times every run of every BPF program on the
//! machine (two sched_clock reads each). That is not free: on the 6.18 PVM guest this project is
//! built on it added about 165 ns to each syscall of every process while the syscall programs
//! were attached, more than kpath's syscall programs themselves (`cargo xtask bench-probes`). So
//! the statistics are opt-in (`kpath record --bpf-stats`; `kpath bench` turns them on to report
//! probe time per request), and on for the whole recording once asked for: switching them on
//! and off in windows patches every BPF call site in the kernel (a static key) each time, and
//! doing that every few hundred ms hung a Debian 5.10 guest with kprobes attached (soft lockups
//! on both CPUs, reproduced under qemu TCG).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::{error_chain, plan::MethodId, Probes};
use crate::run::{FamilyOverhead, Overhead};

/// Run count and run time of one program.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub runs: u64,
    pub ns: u64,
}

/// The statistics of one recording.
pub struct ProgStats {
    /// The open statistics fd (statistics on).
    fd: Option<OwnedFd>,
    since: Instant,
    /// Counters of each program (in `Probes::programs` order) when the statistics went on.
    at_start: Vec<Counters>,
    /// Runs since the start at the last progress sample, and when it was taken.
    last: (Instant, u64),
    rate: Option<f64>,
    /// Why the statistics could not be turned on when asked for.
    pub error: Option<String>,
}

impl ProgStats {
    /// Turns the statistics on now when `enable`.
    pub fn start<M: MethodId>(probes: &Probes<M>, enable: bool) -> Self {
        let now = Instant::now();
        let mut s = ProgStats {
            fd: None,
            since: now,
            at_start: Vec::new(),
            last: (now, 0),
            rate: None,
            error: None,
        };
        if enable {
            match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
                Ok(fd) => {
                    s.fd = Some(fd);
                    s.at_start = counters(probes);
                }
                Err(e) => s.error = Some(error_chain(&e)),
            }
        }
        s
    }

    /// Updates the events/s figure for the progress line (every 500 ms at most).
    pub fn poll<M: MethodId>(&mut self, probes: &Probes<M>) {
        if self.fd.is_none() || self.last.0.elapsed() < Duration::from_millis(500) {
            return;
        }
        let now = Instant::now();
        let runs = counters(probes)
            .iter()
            .zip(&self.at_start)
            .map(|(c, a)| c.runs.saturating_sub(a.runs))
            .sum::<u64>();
        let secs = now.duration_since(self.last.0).as_secs_f64().max(1e-9);
        self.rate = Some(runs.saturating_sub(self.last.1) as f64 / secs);
        self.last = (now, runs);
    }

    /// Whether the statistics are on.
    pub fn enabled(&self) -> bool {
        self.fd.is_some()
    }

    /// BPF events per second lately, when the statistics are on.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Turns the statistics off and gives the overhead figures.
    pub fn finish<M: MethodId>(self, probes: &Probes<M>) -> Overhead {
        self.so_far(probes)
    }

    /// The overhead figures since the start, the statistics staying on (the agent's metric).
    pub fn so_far<M: MethodId>(&self, probes: &Probes<M>) -> Overhead {
        if self.fd.is_none() {
            return overhead(&[], Duration::ZERO);
        }
        let per_program: Vec<(&str, Counters)> = probes
            .programs
            .iter()
            .map(|(fam, _)| *fam)
            .zip(
                self.at_start
                    .iter()
                    .zip(&counters(probes))
                    .map(|(a, b)| delta(a, b)),
            )
            .collect();
        overhead(&per_program, self.since.elapsed())
    }
}

/// Current counters of every loaded program (zeros for one whose info cannot be read).
fn counters<M: MethodId>(probes: &Probes<M>) -> Vec<Counters> {
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

/// Per family: events, events/s and ns/event over the `measured` time the statistics were on.
pub fn overhead(per_program: &[(&str, Counters)], measured: Duration) -> Overhead {
    let mut sums: BTreeMap<String, Counters> = BTreeMap::new();
    for (fam, c) in per_program {
        let s = sums.entry(fam.to_string()).or_default();
        s.runs += c.runs;
        s.ns += c.ns;
    }
    let secs = measured.as_secs_f64();
    let families = sums
        .into_iter()
        .map(|(fam, c)| {
            let o = FamilyOverhead {
                events: c.runs,
                events_per_sec: if secs > 0.0 {
                    c.runs as f64 / secs
                } else {
                    0.0
                },
                bpf_run_ns: c.ns,
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
        bpf_stats_enabled: !measured.is_zero(),
        stats_sampled_ns: measured.as_nanos() as u64,
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
    fn programs_add_up_per_family() {
        let per = [
            ("syscalls", c(1000, 100_000)),
            ("syscalls", c(1000, 60_000)),
            ("sched", c(10, 5_000)),
        ];
        let o = overhead(&per, Duration::from_millis(400));
        let s = &o.families["syscalls"];
        assert_eq!(s.events, 2000);
        assert_eq!(s.events_per_sec, 5_000.0);
        assert_eq!(s.ns_per_event, 80.0);
        assert_eq!(s.bpf_run_ns, 160_000);
        assert_eq!(o.families["sched"].ns_per_event, 500.0);
        assert_eq!(o.stats_sampled_ns, 400_000_000);
        assert!(o.bpf_stats_enabled);
    }

    #[test]
    fn statistics_off_measure_nothing() {
        let o = overhead(&[], Duration::ZERO);
        assert!(o.families.is_empty());
        assert!(!o.bpf_stats_enabled);
    }

    #[test]
    fn deltas_never_go_negative() {
        assert_eq!(delta(&c(5, 50), &c(7, 40)), c(2, 0));
    }
}
