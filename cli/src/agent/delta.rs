//! A window's numbers from cumulative ones. The per-CPU arrays the probes fill (syscall and
//! sched statistics, kpaths timings, the per-process totals, the lost counters) are never
//! cleared while the agent runs: each window is the difference of two snapshots, so an event
//! is in exactly one window and no clear races an update. The stack-key maps are drained per
//! window instead (see [`super::drain`]), so their parts of the run are already per window.
use std::collections::BTreeMap;

use crate::{
    hist,
    run::{KpathRow, ProcessRow, Run, SchedRow, SyscallRow},
};

/// The cumulative parts of the last window's run.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    syscalls: BTreeMap<u32, SyscallRow>,
    kpaths: BTreeMap<String, KpathRow>,
    sched: Option<SchedRow>,
    oncpu_samples: u64,
    processes: BTreeMap<u32, ProcessRow>,
    lost: BTreeMap<String, u64>,
}

impl Snapshot {
    /// The cumulative parts of `run` (as collected, before [`Snapshot::window`]).
    pub fn of(run: &Run) -> Snapshot {
        Snapshot {
            syscalls: run.syscalls.iter().map(|r| (r.nr, r.clone())).collect(),
            kpaths: run
                .kpaths
                .iter()
                .map(|r| (r.function.clone(), r.clone()))
                .collect(),
            sched: run.sched.clone(),
            oncpu_samples: run.oncpu.as_ref().map_or(0, |o| o.samples),
            processes: run.processes.iter().map(|p| (p.pid, p.clone())).collect(),
            lost: run.lost.clone(),
        }
    }

    /// Forgets a process whose entry left the per-process map.
    pub fn forget_process(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Turns a cumulative `run` into the window since this snapshot: counts, times and
    /// histograms are differences, percentiles re-estimated from the window's histogram (the
    /// maxima stay the recording's, as the probes keep no per-window maximum).
    pub fn window(&self, run: &mut Run) {
        for r in &mut run.syscalls {
            if let Some(p) = self.syscalls.get(&r.nr) {
                r.count = r.count.saturating_sub(p.count);
                r.errors = r.errors.saturating_sub(p.errors);
                r.total_ns = r.total_ns.saturating_sub(p.total_ns);
                sub_hist(&mut r.hist_log2_ns, &p.hist_log2_ns);
                r.p50_ns = hist::percentile(&r.hist_log2_ns, 0.50, r.max_ns);
                r.p99_ns = hist::percentile(&r.hist_log2_ns, 0.99, r.max_ns);
            }
        }
        run.syscalls.retain(|r| r.count > 0);
        for r in &mut run.kpaths {
            if let Some(p) = self.kpaths.get(&r.function) {
                sub_opt(&mut r.calls, p.calls);
                sub_opt(&mut r.total_ns, p.total_ns);
                sub_opt(&mut r.syscall_count, p.syscall_count);
                sub_opt(&mut r.syscall_total_ns, p.syscall_total_ns);
                if r.calls.is_some() {
                    sub_hist(&mut r.hist_log2_ns, &p.hist_log2_ns);
                }
            }
        }
        if let (Some(s), Some(p)) = (run.sched.as_mut(), self.sched.as_ref()) {
            s.voluntary_switches = s.voluntary_switches.saturating_sub(p.voluntary_switches);
            s.involuntary_switches = s
                .involuntary_switches
                .saturating_sub(p.involuntary_switches);
            s.offcpu_ns = s.offcpu_ns.saturating_sub(p.offcpu_ns);
            s.wakeups = s.wakeups.saturating_sub(p.wakeups);
            s.runq_delay_count = s.runq_delay_count.saturating_sub(p.runq_delay_count);
            s.runq_delay_total_ns = s.runq_delay_total_ns.saturating_sub(p.runq_delay_total_ns);
            sub_hist(&mut s.runq_delay_hist_log2_ns, &p.runq_delay_hist_log2_ns);
            s.runq_delay_p50_ns =
                hist::percentile(&s.runq_delay_hist_log2_ns, 0.50, s.runq_delay_max_ns);
            s.runq_delay_p99_ns =
                hist::percentile(&s.runq_delay_hist_log2_ns, 0.99, s.runq_delay_max_ns);
        }
        if let Some(o) = run.oncpu.as_mut() {
            o.samples = o.samples.saturating_sub(self.oncpu_samples);
        }
        for r in &mut run.processes {
            if let Some(p) = self.processes.get(&r.pid) {
                r.syscalls = r.syscalls.saturating_sub(p.syscalls);
                r.syscall_errors = r.syscall_errors.saturating_sub(p.syscall_errors);
                r.syscall_ns = r.syscall_ns.saturating_sub(p.syscall_ns);
                r.switches = r.switches.saturating_sub(p.switches);
                r.offcpu_ns = r.offcpu_ns.saturating_sub(p.offcpu_ns);
            }
        }
        run.processes
            .retain(|r| r.syscalls + r.switches + r.offcpu_ns + r.oncpu_samples > 0);
        for (f, n) in &mut run.lost {
            *n = n.saturating_sub(self.lost.get(f).copied().unwrap_or(0));
        }
    }
}

fn sub_opt(v: &mut Option<u64>, prev: Option<u64>) {
    if let (Some(v), Some(p)) = (v.as_mut(), prev) {
        *v = v.saturating_sub(p);
    }
}

fn sub_hist(h: &mut [u64], prev: &[u64]) {
    for (a, b) in h.iter_mut().zip(prev) {
        *a = a.saturating_sub(*b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(nr: u32, count: u64, bucket: usize) -> SyscallRow {
        let mut hist_log2_ns = vec![0; probe_common::HIST_BUCKETS];
        hist_log2_ns[bucket] = count;
        SyscallRow {
            name: format!("nr{nr}"),
            nr,
            count,
            total_ns: count * 100,
            max_ns: 1 << 20,
            hist_log2_ns,
            ..Default::default()
        }
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots() {
        let first = Run {
            syscalls: vec![row(1, 10, 5), row(2, 3, 5)],
            processes: vec![ProcessRow {
                pid: 7,
                syscalls: 13,
                ..Default::default()
            }],
            lost: [("syscalls".to_string(), 2)].into(),
            ..Default::default()
        };
        let snap = Snapshot::of(&first);
        let mut second = Run {
            syscalls: vec![row(1, 25, 5), row(2, 3, 5), row(3, 4, 10)],
            processes: vec![
                ProcessRow {
                    pid: 7,
                    syscalls: 20,
                    ..Default::default()
                },
                ProcessRow {
                    pid: 8,
                    syscalls: 9,
                    ..Default::default()
                },
            ],
            lost: [("syscalls".to_string(), 5)].into(),
            ..Default::default()
        };
        snap.window(&mut second);
        let counts: Vec<(u32, u64)> = second.syscalls.iter().map(|r| (r.nr, r.count)).collect();
        assert_eq!(
            counts,
            [(1, 15), (3, 4)],
            "an idle syscall leaves the window"
        );
        assert_eq!(second.syscalls[0].hist_log2_ns[5], 15);
        assert_eq!(second.syscalls[0].total_ns, 1500);
        assert!(second.syscalls[0].p50_ns >= 32 && second.syscalls[0].p50_ns < 64);
        let procs: Vec<(u32, u64)> = second
            .processes
            .iter()
            .map(|p| (p.pid, p.syscalls))
            .collect();
        assert_eq!(procs, [(7, 7), (8, 9)]);
        assert_eq!(second.lost["syscalls"], 3);
    }
}
