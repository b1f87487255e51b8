//! The per-process breakdown: which process each number belongs to when more than one can be
//! traced (`-a`, several `-p`, `--comm`, `--cgroup`, a command that forks). Not a family: the
//! engine's `PROCS` map (syscalls and switches per process, filled by the syscalls and sched
//! programs) joined with the on-CPU samples per process.
use std::collections::BTreeMap;

use aya::maps::{MapData, PerCpuHashMap};
use probe_common::{
    oncpu,
    targets::{ProcStats, MAP_PROCS},
    Family,
};

use super::{
    section::{table, Align, Section, SectionOptions},
    Collector,
};
use crate::{
    fmt,
    probes::maps::CollectError,
    run::{ProcessRow, Run},
};

/// Reads `PROCS` and the on-CPU samples into `run.processes`, busiest first (syscall time,
/// then samples, then switches).
pub fn collect(c: &mut Collector, run: &mut Run) -> anyhow::Result<()> {
    let mut rows: BTreeMap<u32, ProcessRow> = BTreeMap::new();
    for (pid, s) in per_process(c)? {
        let row = rows.entry(pid).or_insert_with(|| ProcessRow::new(pid));
        // The main thread's name while the process lives; else the first counted thread's.
        row.comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim_end_matches('\n').to_string())
            .unwrap_or_else(|_| comm_str(&s.comm));
        row.syscalls = s.syscalls;
        row.syscall_errors = s.syscall_errors;
        row.syscall_ns = s.syscall_ns;
        row.switches = s.switches;
        row.offcpu_ns = s.offcpu_ns;
    }
    if c.probes.has(Family::Oncpu) {
        for (k, n) in c.counts(oncpu::MAP_COUNTS)? {
            let row = rows
                .entry(k.tgid)
                .or_insert_with(|| ProcessRow::new(k.tgid));
            row.oncpu_samples += n;
            if row.comm.is_empty() {
                row.comm = comm_str(&k.comm);
            }
        }
    }
    let mut rows: Vec<ProcessRow> = rows.into_values().filter(|r| r.pid != 0).collect();
    rows.sort_by_key(|r| {
        std::cmp::Reverse((r.syscall_ns, r.oncpu_samples, r.switches, u32::MAX - r.pid))
    });
    run.processes = rows;
    Ok(())
}

/// `PROCS` summed over CPUs; empty when the breakdown was off.
fn per_process(c: &Collector) -> Result<Vec<(u32, ProcStats)>, CollectError> {
    let name = MAP_PROCS;
    let map: PerCpuHashMap<&MapData, u32, ProcStats> = c
        .probes
        .ebpf
        .map(name)
        .and_then(|m| PerCpuHashMap::try_from(m).ok())
        .ok_or(CollectError::MissingMap { name })?;
    let mut out = Vec::new();
    for entry in map.iter() {
        let (pid, per_cpu) = entry.map_err(|source| CollectError::Read { name, source })?;
        let mut sum = ProcStats::default();
        for s in per_cpu.iter() {
            sum.syscalls += s.syscalls;
            sum.syscall_errors += s.syscall_errors;
            sum.syscall_ns += s.syscall_ns;
            sum.switches += s.switches;
            sum.offcpu_ns += s.offcpu_ns;
            if sum.comm[0] == 0 {
                sum.comm = s.comm;
            }
        }
        out.push((pid, sum));
    }
    Ok(out)
}

fn comm_str(c: &[u8; 16]) -> String {
    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// The breakdown's section, when the run saw more than one process.
pub fn section(run: &Run, opts: &SectionOptions) -> Option<Section> {
    if run.processes.len() < 2 {
        return None;
    }
    let mut s = Section::named("processes", "Top processes (by syscall time)");
    let columns = [
        ("pid", Align::Right),
        ("comm", Align::Left),
        ("syscalls", Align::Right),
        ("errors", Align::Right),
        ("syscall time", Align::Right),
        ("switches", Align::Right),
        ("off-CPU", Align::Right),
        ("on-CPU samples", Align::Right),
    ];
    let rows = run.processes.iter().take(opts.top).map(|p| {
        vec![
            p.pid.to_string(),
            p.comm.clone(),
            p.syscalls.to_string(),
            p.syscall_errors.to_string(),
            fmt::ns(p.syscall_ns),
            p.switches.to_string(),
            fmt::ns(p.offcpu_ns),
            p.oncpu_samples.to_string(),
        ]
    });
    let mut t = table("processes", &columns, rows);
    t.hidden = run.processes.len().saturating_sub(opts.top);
    t.hidden_what = "processes";
    s.table(t);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_lists_processes_busiest_first_and_only_when_several() {
        let mut run = Run::default();
        let mut a = ProcessRow::new(10);
        a.comm = "nginx".into();
        a.syscalls = 5;
        a.syscall_ns = 5000;
        run.processes = vec![a.clone()];
        assert!(section(&run, &SectionOptions::default()).is_none());
        let mut b = ProcessRow::new(11);
        b.comm = "nginx".into();
        b.syscall_ns = 9000;
        run.processes = vec![b, a];
        let s = section(
            &run,
            &SectionOptions {
                top: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let super::super::section::Block::Table(t) = &s.blocks[0] else {
            panic!("no table");
        };
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0][0], "11");
        assert_eq!(t.hidden, 1);
    }

    #[test]
    fn comm_stops_at_the_first_nul() {
        let mut c = [0u8; 16];
        c[..5].copy_from_slice(b"nginx");
        assert_eq!(comm_str(&c), "nginx");
        assert_eq!(comm_str(&[b'x'; 16]), "x".repeat(16));
    }
}
