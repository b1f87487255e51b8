//! `kpath scenario sendfile-fanout`: one file sent to every connection vs the same requests
//! spread over many files, with sendfile.
use servers::serve::{Io, Model};

use super::compare::{change, ns_per_req, per_req, Comparison};
use crate::bench::json::{Bench, BenchRun, Strategy};
use crate::bench::table::{fmt_ns_per, fmt_per};

/// Distinct files of the many-files run.
pub const FILES: u32 = 1000;

/// Lock wait below this share of busy kernel time is reported as negligible.
const NEGLIGIBLE_LOCK_SHARE: f64 = 0.01;

/// Callers (name prefixes) whose lock waits belong to the file itself: the path walk, dentry
/// and inode references, the page cache and splicing from it.
const FILE_CALLERS: &[&str] = &[
    "lockref",
    "dput",
    "dget",
    "d_",
    "__d_",
    "lookup",
    "__lookup",
    "path_",
    "link_path_walk",
    "walk_component",
    "step_into",
    "terminate_walk",
    "try_to_unlazy",
    "legitimize",
    "do_dentry_open",
    "do_open",
    "iput",
    "igrab",
    "filemap",
    "__filemap",
    "folio",
    "__folio",
    "splice",
];

fn is_file_caller(caller: &str) -> bool {
    FILE_CALLERS.iter().any(|p| caller.starts_with(p))
}

/// Lock wait per request in the file's own path.
fn file_lock_wait(r: &BenchRun) -> f64 {
    r.lock_wait_ns_per_request_by_caller
        .iter()
        .filter(|(c, _)| is_file_caller(c))
        .map(|(_, w)| w)
        .sum()
}

/// The callers that waited longest, `name 1.2µs`.
fn top_waits(r: &BenchRun, k: usize) -> String {
    let mut v: Vec<(&String, &f64)> = r.lock_wait_ns_per_request_by_caller.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    v.iter()
        .take(k)
        .map(|(c, w)| format!("{c} {}", fmt_ns_per(**w)))
        .collect::<Vec<_>>()
        .join(", ")
}

pub const FANOUT: Comparison = Comparison {
    name: "sendfile-fanout",
    runs: "keep-alive load against sendfile on the epoll loop: every request for the same \
           1400 B file, then the same requests spread over 1000 distinct files of that size \
           (each connection goes round them)",
    look_at: "openat2 calls and time per request and the do_sys_openat2 row (timed where the \
              kernel allows fentry or kprobes, its on-CPU share where sampled), sendfile time \
              per request, lock wait/req, busy/req and req/s",
    why: "opening one path from every CPU walks the same dentries and takes references on the \
          same dentry (its lockref: a cmpxchg on one cache line, falling back to the dentry's \
          spinlock when CPUs collide) and inode, and sendfile takes references on the same \
          page-cache folio: those cache lines move between the CPUs that serve requests. \
          Spread over many files, every open and sendfile touches its own dentry, inode and \
          folio, so nothing is shared, but the working set grows from one file's metadata and \
          page to a thousand files' (a few MB of dentries, inodes and pages), paid in cache \
          misses instead. Which side wins depends on how many CPUs contend: with few, there \
          is little to bounce between. lockref's fast path is a cmpxchg loop, not a lock, so \
          its bouncing shows in openat2's time rather than as lock waits; only its spinlock \
          fallback is one.",
    strategies: &[
        Strategy::new(Io::Sendfile, Model::Epoll, 0),
        Strategy {
            files: Some(FILES),
            ..Strategy::new(Io::Sendfile, Model::Epoll, 0)
        },
    ],
    measured: fanout_findings,
    // do_sys_openat2's share is read from samples on kernels without fentry or kprobes: at
    // bench's 99 Hz a few seconds give it only a few dozen.
    frequency: Some(999),
};

fn opens(r: &BenchRun) -> f64 {
    per_req(r, "openat2") + per_req(r, "openat")
}

fn open_ns(r: &BenchRun) -> f64 {
    ns_per_req(r, "openat2") + ns_per_req(r, "openat")
}

fn lock_wait(r: &BenchRun) -> String {
    r.lock_wait_ns_per_request
        .map_or_else(|| "-".into(), fmt_ns_per)
}

/// What the do_sys_openat2 row says, by how it was measured.
fn do_sys_openat2(r: &BenchRun) -> String {
    let Some(k) = r.kpaths.iter().find(|k| k.function == "do_sys_openat2") else {
        return format!("{}: do_sys_openat2 not recorded", r.name);
    };
    match (k.calls, k.total_ns) {
        (Some(calls), Some(ns)) if r.requests > 0 => format!(
            "{}: do_sys_openat2 {} calls/req, {} per request ({})",
            r.name,
            fmt_per(calls as f64 / r.requests as f64),
            fmt_ns_per(ns as f64 / r.requests as f64),
            k.method
        ),
        _ => format!(
            "{}: do_sys_openat2 on the stack in {:.1}% of on-CPU samples ({} samples; \
             sampled, this kernel cannot time it)",
            r.name,
            k.oncpu_share * 100.0,
            k.samples
        ),
    }
}

pub fn fanout_findings(b: &Bench) -> Vec<String> {
    let mut out: Vec<String> = b.runs.iter().map(run_line).collect();
    out.extend(b.runs.iter().map(do_sys_openat2));
    let one = b.runs.iter().find(|r| r.strategy.files.is_none());
    let many = b.runs.iter().find(|r| r.strategy.files.is_some());
    let (Some(one), Some(many)) = (one, many) else {
        return out;
    };
    out.push(one_vs_many(one, many));
    out.extend(lock_findings(b, one, many));
    out
}

fn run_line(r: &BenchRun) -> String {
    format!(
        "{}: {:.0} req/s, {} openat2/req taking {}/req, sendfile {}/req, lock wait {}/req, {} \
         busy in syscalls/req",
        r.name,
        r.requests_per_sec,
        fmt_per(opens(r)),
        fmt_ns_per(open_ns(r)),
        fmt_ns_per(ns_per_req(r, "sendfile")),
        lock_wait(r),
        fmt_ns_per(r.busy_kernel_ns_per_request),
    )
}

/// Open, sendfile and busy time and req/s of the many-files run against the one-file run.
fn one_vs_many(one: &BenchRun, many: &BenchRun) -> String {
    let n = many.strategy.files.unwrap_or(0);
    let sendfile = |r: &BenchRun| ns_per_req(r, "sendfile");
    let busy = |r: &BenchRun| r.busy_kernel_ns_per_request;
    format!(
        "{n} files instead of one: openat2 {} vs {} per request ({}), sendfile {} vs {} ({}), \
         busy {} vs {} ({}), req/s {:.0} vs {:.0} ({})",
        fmt_ns_per(open_ns(many)),
        fmt_ns_per(open_ns(one)),
        change(open_ns(one), open_ns(many)),
        fmt_ns_per(sendfile(many)),
        fmt_ns_per(sendfile(one)),
        change(sendfile(one), sendfile(many)),
        fmt_ns_per(busy(many)),
        fmt_ns_per(busy(one)),
        change(busy(one), busy(many)),
        many.requests_per_sec,
        one.requests_per_sec,
        change(one.requests_per_sec, many.requests_per_sec),
    )
}

/// Lock wait of both runs, the longest waiters, and which side waits more in the file's own
/// path (or that neither waits enough to matter); nothing without the locks family.
fn lock_findings(b: &Bench, one: &BenchRun, many: &BenchRun) -> Vec<String> {
    let (Some(lo), Some(lm)) = (one.lock_wait_ns_per_request, many.lock_wait_ns_per_request) else {
        return Vec::new();
    };
    let n = many.strategy.files.unwrap_or(0);
    let share = |w: f64, r: &BenchRun| w / r.busy_kernel_ns_per_request.max(1.0);
    let (fo, fm) = (file_lock_wait(one), file_lock_wait(many));
    let waits = format!(
        "lock wait per request: one file {} ({:.1}% of busy), {n} files {} ({:.1}%); longest \
         waits with one file: {}",
        fmt_ns_per(lo),
        share(lo, one) * 100.0,
        fmt_ns_per(lm),
        share(lm, many) * 100.0,
        if one.lock_wait_ns_per_request_by_caller.is_empty() {
            "none".to_string()
        } else {
            top_waits(one, 3)
        },
    );
    let cpus = if b.cpus > 0 {
        format!("{} CPUs", b.cpus)
    } else {
        "this machine's CPUs".into()
    };
    let verdict = if share(fo, one).max(share(fm, many)) < NEGLIGIBLE_LOCK_SHARE {
        format!(
            "under {:.0}% of busy kernel time in both: on {cpus} the one file's locks are not \
             contended to speak of",
            NEGLIGIBLE_LOCK_SHARE * 100.0
        )
    } else if fo > fm {
        "the one shared file waits more".to_string()
    } else {
        "the many files wait more".to_string()
    };
    let file_path = format!(
        "lock wait in the file's own path (path walk, dentry, inode, page-cache callers): one \
         file {}, {n} files {} per request: {verdict}",
        fmt_ns_per(fo),
        fmt_ns_per(fm),
    );
    vec![waits, file_path]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::KpathRow;

    fn run(files: Option<u32>, rps: f64, open_ns: f64, lock_ns: f64, busy: f64) -> BenchRun {
        let strategy = Strategy {
            files,
            ..Strategy::new(Io::Sendfile, Model::Epoll, 0)
        };
        BenchRun {
            name: strategy.name(),
            strategy,
            requests: 1000,
            requests_per_sec: rps,
            busy_kernel_ns_per_request: busy,
            lock_wait_ns_per_request: Some(lock_ns),
            lock_wait_ns_per_request_by_caller: [
                ("exit_to_user_mode_loop".to_string(), lock_ns * 0.9),
                ("dput".to_string(), lock_ns * 0.1),
            ]
            .into(),
            syscall_counts_per_request: [("openat2".to_string(), 1.0)].into(),
            syscall_ns_per_request: [
                ("openat2".to_string(), open_ns),
                ("sendfile".to_string(), 3000.0),
            ]
            .into(),
            kpaths: vec![KpathRow {
                function: "do_sys_openat2".into(),
                method: "sampled".into(),
                oncpu_share: 0.047,
                samples: 90,
                ..KpathRow::default()
            }],
            ..BenchRun::default()
        }
    }

    #[test]
    fn findings_compare_opens_and_judge_contention() {
        let mut b = Bench {
            cpus: 2,
            runs: vec![
                run(None, 100_000.0, 2000.0, 20.0, 10_000.0),
                run(Some(1000), 90_000.0, 2500.0, 30.0, 11_000.0),
            ],
            ..Bench::default()
        };
        let f = fanout_findings(&b);
        assert!(
            f[0].starts_with(
                "sendfile-epoll-kainf: 100000 req/s, 1.00 openat2/req taking 2.00µs/req"
            ),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l
                == "sendfile-epoll-kainf-1000files: do_sys_openat2 on the stack in 4.7% of \
                    on-CPU samples (90 samples; sampled, this kernel cannot time it)"),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l.starts_with(
                "1000 files instead of one: openat2 2.50µs vs 2.00µs per request (+25.0%)"
            ) && l.ends_with("req/s 90000 vs 100000 (-10.0%)")),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l
                == "lock wait per request: one file 20ns (0.2% of busy), 1000 files 30ns (0.3%); \
                    longest waits with one file: exit_to_user_mode_loop 18ns, dput 2ns"),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l.starts_with(
                "lock wait in the file's own path (path walk, dentry, inode, page-cache \
                 callers): one file 2ns, 1000 files 3ns per request: under 1% of busy kernel \
                 time in both: on 2 CPUs"
            )),
            "{f:#?}"
        );

        // Timed kernels give calls and time; heavy waits get a direction, not "negligible".
        b.runs[0].kpaths[0].calls = Some(1000);
        b.runs[0].kpaths[0].total_ns = Some(1_500_000);
        b.runs[0]
            .lock_wait_ns_per_request_by_caller
            .insert("lockref_get_not_dead".into(), 900.0);
        let f = fanout_findings(&b);
        assert!(
            f.iter().any(|l| l
                == "sendfile-epoll-kainf: do_sys_openat2 1.00 calls/req, 1.50µs per request \
                    (sampled)"),
            "{f:#?}"
        );
        assert!(
            f.iter()
                .any(|l| l.ends_with("1000 files 3ns per request: the one shared file waits more")),
            "{f:#?}"
        );
    }
}
