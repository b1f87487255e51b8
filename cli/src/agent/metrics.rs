//! The agent's Prometheus metrics: cumulative since the agent started, never reset per window
//! (Prometheus computes rates), written as OpenMetrics text by the `prometheus-client` crate
//! through one custom collector over [`State`].
//!
//! Label values that come from the traced system (task names, lock callers) are capped: the
//! first `max` values admitted, largest first, keep their own series; later ones share the
//! value `other`, and `kpath_folded_label_values{label}` says how many were folded. A value
//! keeps its series (or its folding) for the agent's life, so every counter stays monotonic.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

/// The label value series beyond the cap share.
pub const OTHER: &str = "other";

/// Caps the distinct values of one label.
#[derive(Debug, Clone, Default)]
pub struct Capper {
    max: usize,
    admitted: BTreeSet<String>,
    folded: BTreeSet<String>,
}

impl Capper {
    pub fn new(max: usize) -> Capper {
        Capper {
            max,
            ..Default::default()
        }
    }

    /// Admits new values while there is room, largest `weight` first.
    pub fn admit<'a>(&mut self, candidates: impl IntoIterator<Item = (&'a str, u64)>) {
        let mut fresh: Vec<(&str, u64)> = candidates
            .into_iter()
            .filter(|(v, _)| !self.admitted.contains(*v) && !self.folded.contains(*v))
            .collect();
        fresh.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (v, _) in fresh {
            if self.admitted.len() < self.max {
                self.admitted.insert(v.to_string());
            } else {
                self.folded.insert(v.to_string());
            }
        }
    }

    /// The label value to use for `v` (admitting it when there is room).
    pub fn label(&mut self, v: &str) -> String {
        if self.admitted.contains(v) {
            return v.to_string();
        }
        if !self.folded.contains(v) && self.admitted.len() < self.max {
            self.admitted.insert(v.to_string());
            return v.to_string();
        }
        self.folded.insert(v.to_string());
        OTHER.to_string()
    }

    /// How many distinct values were folded into [`OTHER`].
    pub fn folded(&self) -> usize {
        self.folded.len()
    }
}

/// A histogram from log2 nanosecond buckets: bucket `i` holds `[2^i, 2^(i+1))` ns, so its
/// upper bound is `2^(i+1)` ns; the last bucket (which also holds everything above) is `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Log2Hist {
    pub buckets: Vec<u64>,
    pub sum_ns: u64,
}

impl Log2Hist {
    /// `(upper bound in seconds, count in that bucket)` per bucket and the total: the
    /// encoder makes the counts cumulative itself.
    pub fn buckets(&self) -> (Vec<(f64, u64)>, u64) {
        let n = self.buckets.len();
        let out = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let le = if i + 1 == n {
                    f64::INFINITY
                } else {
                    (1u64 << (i + 1)) as f64 / 1e9
                };
                (le, c)
            })
            .collect();
        (out, self.buckets.iter().sum())
    }
}

/// Everything `/metrics` shows; the agent updates it, the HTTP thread encodes it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// `kpath_info` labels: kernel, version, `<family>_method`.
    pub info: Vec<(String, String)>,
    /// (syscall, comm) -> (calls, errors).
    pub syscalls: BTreeMap<(String, String), (u64, u64)>,
    pub syscall_duration: BTreeMap<String, Log2Hist>,
    /// Timed kernel functions: calls and total ns.
    pub kfunc_calls: BTreeMap<String, u64>,
    pub kfunc_ns: BTreeMap<String, u64>,
    /// Sampled kernel functions: share of on-CPU samples in the last window.
    pub kfunc_oncpu_ratio: BTreeMap<String, f64>,
    /// kind (voluntary, involuntary) -> switches of every traced task.
    pub switches_by_kind: BTreeMap<String, u64>,
    /// comm -> switches (the per-process breakdown, any kind).
    pub switches_by_comm: BTreeMap<String, u64>,
    pub offcpu_ns: BTreeMap<String, u64>,
    pub runq_delay: Option<Log2Hist>,
    /// (caller, type) -> wait ns and contentions.
    pub lock_wait_ns: BTreeMap<(String, String), u64>,
    pub lock_contentions: BTreeMap<(String, String), u64>,
    pub lost: BTreeMap<String, u64>,
    /// Present when `--bpf-stats`: family -> BPF run ns.
    pub bpf_run_ns: Option<BTreeMap<String, u64>>,
    pub agent_cpu_seconds: f64,
    pub windows_written: u64,
    pub window_write_failures: u64,
    /// label -> distinct values folded into `other`.
    pub folded: BTreeMap<String, u64>,
}

/// The shared state behind `/metrics`.
pub type Shared = Arc<Mutex<State>>;

#[derive(Debug)]
struct Exposition(Shared);

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().map_err(|_| std::fmt::Error)?.clone();
        encode_state(&s, &mut enc)
    }
}

/// The registry serving `state`.
pub fn registry(state: Shared) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(Exposition(state)));
    r
}

/// The OpenMetrics text of `registry`.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// The same metrics in the Prometheus text format 0.0.4, for clients that do not ask for
/// OpenMetrics (curl, promtool 2.42's `check metrics`, which knows no `info` type).
pub fn render_classic(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

type Labels<'a> = Vec<(&'a str, &'a str)>;

fn counter_family<K, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl Iterator<Item = (K, V)>,
    labels: impl Fn(&K) -> Labels<'_>,
) -> Result<(), std::fmt::Error> {
    let rows: Vec<(K, V)> = rows.collect();
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (k, v) in &rows {
        let l = labels(k);
        m.encode_family(&l)?
            .encode_counter::<NoLabelSet, V, f64>(v, None)?;
    }
    Ok(())
}

fn histogram(
    m: &mut prometheus_client::encoding::MetricEncoder,
    h: &Log2Hist,
) -> Result<(), std::fmt::Error> {
    let (buckets, count) = h.buckets();
    m.encode_histogram::<NoLabelSet>(h.sum_ns as f64 / 1e9, count, &buckets, None)
}

fn encode_state(s: &State, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let secs = Some(&Unit::Seconds);
    {
        let mut m = enc.encode_descriptor(
            "kpath",
            "kpath agent: kernel, version and the attach method of each probe family",
            None,
            MetricType::Info,
        )?;
        let l: Labels = s
            .info
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        m.encode_info(&l)?;
    }
    counter_family(
        enc,
        "kpath_syscalls",
        "Syscalls finished by traced tasks, by syscall and task name",
        None,
        s.syscalls.iter().map(|(k, v)| (k, v.0)),
        |(sc, comm)| vec![("syscall", sc.as_str()), ("comm", comm.as_str())],
    )?;
    counter_family(
        enc,
        "kpath_syscall_errors",
        "Syscalls that returned an error (-4095..-1), by syscall and task name",
        None,
        s.syscalls.iter().map(|(k, v)| (k, v.1)),
        |(sc, comm)| vec![("syscall", sc.as_str()), ("comm", comm.as_str())],
    )?;
    {
        let mut m = enc.encode_descriptor(
            "kpath_syscall_duration",
            "Syscall latency from the probes' log2 nanosecond buckets (upper bounds 2^k ns)",
            secs,
            MetricType::Histogram,
        )?;
        for (sc, h) in &s.syscall_duration {
            let l = vec![("syscall", sc.as_str())];
            histogram(&mut m.encode_family(&l)?, h)?;
        }
    }
    counter_family(
        enc,
        "kpath_kernel_function_calls",
        "Calls of a followed kernel function (timed methods: fentry, kprobe)",
        None,
        s.kfunc_calls.iter().map(|(k, v)| (k, *v)),
        |f| vec![("function", f.as_str())],
    )?;
    counter_family(
        enc,
        "kpath_kernel_function",
        "Time inside a followed kernel function (timed methods: fentry, kprobe)",
        secs,
        s.kfunc_ns.iter().map(|(k, v)| (k, *v as f64 / 1e9)),
        |f| vec![("function", f.as_str())],
    )?;
    {
        let mut m = enc.encode_descriptor(
            "kpath_kernel_function_oncpu_ratio",
            "Share of the last window's on-CPU samples under a followed kernel function (sampled method)",
            None,
            MetricType::Gauge,
        )?;
        for (f, v) in &s.kfunc_oncpu_ratio {
            let l = vec![("function", f.as_str())];
            m.encode_family(&l)?.encode_gauge(v)?;
        }
    }
    counter_family(
        enc,
        "kpath_context_switches",
        "Context switches of traced tasks by kind (voluntary: blocked; involuntary: preempted)",
        None,
        s.switches_by_kind.iter().map(|(k, v)| (k, *v)),
        |k| vec![("kind", k.as_str())],
    )?;
    counter_family(
        enc,
        "kpath_process_context_switches",
        "Context switches of traced processes (any kind), by process name",
        None,
        s.switches_by_comm.iter().map(|(k, v)| (k, *v)),
        |c| vec![("comm", c.as_str())],
    )?;
    counter_family(
        enc,
        "kpath_offcpu",
        "Time traced processes spent off-CPU, by process name",
        secs,
        s.offcpu_ns.iter().map(|(k, v)| (k, *v as f64 / 1e9)),
        |c| vec![("comm", c.as_str())],
    )?;
    if let Some(h) = &s.runq_delay {
        let mut m = enc.encode_descriptor(
            "kpath_runqueue_delay",
            "Time from wakeup to running of traced tasks (log2 buckets)",
            secs,
            MetricType::Histogram,
        )?;
        histogram(&mut m, h)?;
    }
    counter_family(
        enc,
        "kpath_lock_wait",
        "Time traced tasks waited on contended kernel locks, by caller and lock type",
        secs,
        s.lock_wait_ns.iter().map(|(k, v)| (k, *v as f64 / 1e9)),
        |(c, t)| vec![("caller", c.as_str()), ("type", t.as_str())],
    )?;
    counter_family(
        enc,
        "kpath_lock_contentions",
        "Contended kernel lock acquisitions of traced tasks, by caller and lock type",
        None,
        s.lock_contentions.iter().map(|(k, v)| (k, *v)),
        |(c, t)| vec![("caller", c.as_str()), ("type", t.as_str())],
    )?;
    counter_family(
        enc,
        "kpath_lost_events",
        "Events the probes or the per-window clearing could not count, by family",
        None,
        s.lost.iter().map(|(k, v)| (k, *v)),
        |f| vec![("family", f.as_str())],
    )?;
    if let Some(b) = &s.bpf_run_ns {
        counter_family(
            enc,
            "kpath_bpf_run",
            "Run time of kpath's BPF programs (kernel BPF statistics, --bpf-stats), by family",
            secs,
            b.iter().map(|(k, v)| (k, *v as f64 / 1e9)),
            |f| vec![("family", f.as_str())],
        )?;
    }
    counter_family(
        enc,
        "kpath_agent_cpu",
        "CPU time (user + system) of the agent process",
        secs,
        std::iter::once(((), s.agent_cpu_seconds)),
        |_| Vec::new(),
    )?;
    counter_family(
        enc,
        "kpath_windows_written",
        "Window directories written",
        None,
        std::iter::once(((), s.windows_written)),
        |_| Vec::new(),
    )?;
    counter_family(
        enc,
        "kpath_window_write_failures",
        "Windows that could not be written (see the agent's log)",
        None,
        std::iter::once(((), s.window_write_failures)),
        |_| Vec::new(),
    )?;
    {
        let mut m = enc.encode_descriptor(
            "kpath_folded_label_values",
            "Distinct label values folded into \"other\" by --max-label-values, by label",
            None,
            MetricType::Gauge,
        )?;
        for (l, v) in &s.folded {
            let labels = vec![("label", l.as_str())];
            m.encode_family(&labels)?.encode_gauge(v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_keeps_the_largest_and_folds_the_rest_for_good() {
        let mut c = Capper::new(2);
        c.admit([("small", 1), ("big", 100), ("mid", 50)]);
        assert_eq!(c.label("big"), "big");
        assert_eq!(c.label("mid"), "mid");
        assert_eq!(c.label("small"), OTHER);
        assert_eq!(c.label("new"), OTHER);
        c.admit([("small", 1000)]);
        assert_eq!(c.label("small"), OTHER, "a folded value stays folded");
        assert_eq!(c.folded(), 2);
    }

    #[test]
    fn log2_buckets_become_seconds_bounds_counted_once() {
        let mut buckets = vec![0; probe_common::HIST_BUCKETS];
        buckets[0] = 1;
        buckets[10] = 2;
        buckets[probe_common::HIST_BUCKETS - 1] = 1;
        let h = Log2Hist {
            buckets,
            sum_ns: 3000,
        };
        let (b, count) = h.buckets();
        assert_eq!(count, 4);
        assert_eq!(b[0], (2e-9, 1));
        assert_eq!(b[10], (2048e-9, 2));
        assert_eq!(*b.last().unwrap(), (f64::INFINITY, 1));
        let state: Shared = Arc::default();
        state
            .lock()
            .unwrap()
            .syscall_duration
            .insert("read".into(), h);
        let text = render(&registry(state)).unwrap();
        for want in [
            "kpath_syscall_duration_seconds_bucket{le=\"2e-9\",syscall=\"read\"} 1",
            "kpath_syscall_duration_seconds_bucket{le=\"+Inf\",syscall=\"read\"} 4",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
        let eleventh = text
            .lines()
            .filter(|l| l.starts_with("kpath_syscall_duration_seconds_bucket"))
            .nth(10)
            .unwrap();
        assert!(eleventh.ends_with(" 3"), "{eleventh}");
    }

    #[test]
    fn the_exposition_is_openmetrics() {
        let state: Shared = Arc::default();
        {
            let mut s = state.lock().unwrap();
            s.info = vec![("kernel".into(), "6.18".into())];
            s.syscalls
                .insert(("openat".into(), "kp_open".into()), (3000, 2));
            s.syscall_duration.insert(
                "openat".into(),
                Log2Hist {
                    buckets: vec![0, 5, 0],
                    sum_ns: 12,
                },
            );
            s.lost.insert("syscalls".into(), 0);
        }
        let text = render(&registry(state)).unwrap();
        for want in [
            "kpath_info{kernel=\"6.18\"} 1",
            "kpath_syscalls_total{syscall=\"openat\",comm=\"kp_open\"} 3000",
            "kpath_syscall_errors_total{syscall=\"openat\",comm=\"kp_open\"} 2",
            "# TYPE kpath_syscall_duration_seconds histogram",
            "kpath_syscall_duration_seconds_bucket{le=\"+Inf\",syscall=\"openat\"} 5",
            "kpath_syscall_duration_seconds_count{syscall=\"openat\"} 5",
            "kpath_lost_events_total{family=\"syscalls\"} 0",
            "kpath_agent_cpu_seconds_total 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want:?} missing in\n{text}");
        }
    }
}
