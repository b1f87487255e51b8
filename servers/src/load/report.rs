//! What a load run measured: per-thread counts, their sum, and how it is printed.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::segments::TcpSegments;

/// Failed requests by kind. Every failed request counts once, under the first thing that
/// went wrong; a reply with an error status is a reply (in `requests`) and counts here too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    /// Connections that failed before their first reply byte.
    pub connect: u64,
    /// `connect` by reason (`refused`, `unreachable`, `reset`, `timed_out`, `closed`: the
    /// server closed without a byte, `other`), from the socket's errno.
    pub connect_by_reason: BTreeMap<ConnectReason, u64>,
    /// A read failed, or the connection ended mid-reply, on a connection that had answered.
    pub read: u64,
    /// A write failed on a connection that had answered.
    pub write: u64,
    /// No complete reply within `--timeout`.
    pub timeout: u64,
    /// Replies with a status outside 2xx/3xx.
    pub status: u64,
    /// `status` by status code (`{"404": 12}` in JSON).
    pub by_status: BTreeMap<u16, u64>,
}

/// Why a connection failed before it answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectReason {
    Refused,
    Unreachable,
    Reset,
    TimedOut,
    /// The server closed the connection before sending a byte.
    Closed,
    Other,
}

impl ConnectReason {
    /// The reason for an errno (`None`: end of file, the server closed).
    pub fn from_errno(errno: Option<i32>) -> ConnectReason {
        match errno {
            None => ConnectReason::Closed,
            Some(libc::ECONNREFUSED) => ConnectReason::Refused,
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL) => {
                ConnectReason::Unreachable
            }
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => ConnectReason::Reset,
            Some(libc::ETIMEDOUT) => ConnectReason::TimedOut,
            Some(_) => ConnectReason::Other,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            ConnectReason::Refused => "connection refused",
            ConnectReason::Unreachable => "unreachable",
            ConnectReason::Reset => "reset",
            ConnectReason::TimedOut => "timed out",
            ConnectReason::Closed => "closed by the server before replying",
            ConnectReason::Other => "other",
        }
    }
}

impl Errors {
    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.read += o.read;
        self.write += o.write;
        self.timeout += o.timeout;
        self.status += o.status;
        for (&k, &n) in &o.connect_by_reason {
            *self.connect_by_reason.entry(k).or_default() += n;
        }
        for (&k, &n) in &o.by_status {
            *self.by_status.entry(k).or_default() += n;
        }
    }

    /// `connection refused 12, reset 1`: the connect errors by reason, most frequent first.
    pub fn connect_reasons(&self) -> String {
        let mut v: Vec<_> = self.connect_by_reason.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = v
            .iter()
            .map(|(r, n)| format!("{} {n}", r.describe()))
            .collect();
        parts.join(", ")
    }

    /// `404: 12, 503: 1`: the error replies by status code.
    pub fn statuses(&self) -> String {
        let parts: Vec<String> = self
            .by_status
            .iter()
            .map(|(code, n)| format!("{code}: {n}"))
            .collect();
        parts.join(", ")
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// One point of the latency distribution: the latency at or below which `percentile` percent
/// of the requests completed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct LatencyPoint {
    pub percentile: f64,
    pub ns: u64,
}

/// The percentiles `latency_percentiles_ns` reports: dense towards the tail, where a
/// percentile plot on a log axis spends its width (0 is the minimum, 100 the maximum).
pub const PERCENTILES: [f64; 17] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.975, 99.99, 99.995,
    99.999, 100.0,
];

/// The distribution of `h` at [`PERCENTILES`]; empty for an empty histogram.
pub fn percentiles(h: &Histogram<u64>) -> Vec<LatencyPoint> {
    if h.is_empty() {
        return Vec::new();
    }
    PERCENTILES
        .iter()
        .map(|&p| LatencyPoint {
            percentile: p,
            ns: if p <= 0.0 {
                h.min()
            } else if p >= 100.0 {
                h.max()
            } else {
                h.value_at_quantile(p / 100.0)
            },
        })
        .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// How many URLs the connections rotated over.
    pub urls: usize,
    /// Responses received, whatever their status.
    pub requests: u64,
    /// Responses with a 2xx or 3xx status: what `requests_per_sec` counts.
    pub requests_ok: u64,
    pub duration_secs: f64,
    pub requests_per_sec: f64,
    pub bytes_per_sec: f64,
    pub errors: Errors,
    pub latency_ns: Latency,
    /// The whole latency distribution from the HdrHistogram, at [`PERCENTILES`].
    pub latency_percentiles_ns: Vec<LatencyPoint>,
    /// Segments of the load's connections, from each client socket's TCP_INFO.
    pub tcp_segments: TcpSegments,
}

/// One load thread's counts, summed into a [`LoadReport`] by [`summarize`].
pub struct Stats {
    pub requests: u64,
    pub bytes: u64,
    pub errors: Errors,
    pub latency_ns: Histogram<u64>,
    pub tcp: TcpSegments,
}

pub fn summarize(stats: Vec<Stats>, elapsed: f64, urls: usize) -> LoadReport {
    let mut total = Stats {
        requests: 0,
        bytes: 0,
        errors: Errors::default(),
        latency_ns: Histogram::new(3).expect("3 significant figures is valid"),
        tcp: TcpSegments::default(),
    };
    for s in stats {
        total.tcp += s.tcp;
        total.requests += s.requests;
        total.bytes += s.bytes;
        total.errors.add(&s.errors);
        // Auto-resizing histogram: adding cannot fail for in-range values.
        let _ = total.latency_ns.add(&s.latency_ns);
    }
    let h = &total.latency_ns;
    LoadReport {
        urls,
        requests: total.requests,
        requests_ok: total.requests.saturating_sub(total.errors.status),
        duration_secs: elapsed,
        requests_per_sec: total.requests.saturating_sub(total.errors.status) as f64 / elapsed,
        bytes_per_sec: total.bytes as f64 / elapsed,
        errors: total.errors,
        latency_ns: Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        },
        latency_percentiles_ns: percentiles(h),
        tcp_segments: total.tcp,
    }
}

impl LoadReport {
    /// Why the load failed outright: no request succeeded (`None` when one did).
    pub fn failure(&self) -> Option<String> {
        if self.requests_ok > 0 {
            return None;
        }
        let e = &self.errors;
        Some(if self.requests > 0 {
            format!(
                "no request succeeded: all {} replies had an error status ({})",
                self.requests,
                e.statuses()
            )
        } else if e.connect > 0 {
            format!(
                "unable to connect: {} ({} failed connections)",
                e.connect_reasons(),
                e.connect
            )
        } else if e.read + e.write + e.timeout > 0 {
            format!(
                "no reply: {} read errors, {} write errors, {} timeouts",
                e.read, e.write, e.timeout
            )
        } else {
            "no request completed".to_string()
        })
    }

    /// The text form of `kpath load`'s report (`--json` prints the struct instead).
    pub fn print(&self, url: &str, connections: usize, threads: usize) {
        let ms = |ns: u64| ns as f64 / 1e6;
        let l = &self.latency_ns;
        println!(
            "{url}: {connections} connections on {threads} threads, {:.1}s",
            self.duration_secs
        );
        println!("  requests/s  {:>12.0}", self.requests_per_sec);
        println!("  MB/s        {:>12.2}", self.bytes_per_sec / 1e6);
        println!(
            "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
        let e = &self.errors;
        let detail = |n: u64, what: String| {
            if n > 0 && !what.is_empty() {
                format!(" ({what})")
            } else {
                String::new()
            }
        };
        println!(
            "  requests    {:>12}  ok {}",
            self.requests, self.requests_ok
        );
        println!(
            "  errors      connect {}{}  read {}  write {}  timeout {}  status {}{}",
            e.connect,
            detail(e.connect, e.connect_reasons()),
            e.read,
            e.write,
            e.timeout,
            e.status,
            detail(e.status, e.statuses())
        );
        let s = &self.tcp_segments;
        if self.requests > 0 {
            let per = |n: u64| n as f64 / self.requests as f64;
            println!(
                "  TCP segments/request  sent {:.2} ({:.2} with data)  received {:.2} ({:.2} with data)",
                per(s.sent),
                per(s.data_sent),
                per(s.received),
                per(s.data_received)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_add_by_kind_and_reason() {
        let mut a = Errors {
            connect: 2,
            connect_by_reason: [(ConnectReason::Refused, 2)].into(),
            status: 1,
            by_status: [(404, 1)].into(),
            ..Default::default()
        };
        let mut b = a.clone();
        b.by_status.insert(503, 4);
        b.status = 5;
        b.connect_by_reason.insert(ConnectReason::Reset, 7);
        b.connect = 9;
        a.add(&b);
        assert_eq!((a.connect, a.status), (11, 6));
        assert_eq!(a.connect_reasons(), "reset 7, connection refused 4");
        assert_eq!(a.statuses(), "404: 2, 503: 4");
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["by_status"]["404"], 2);
        assert_eq!(json["connect_by_reason"]["refused"], 4);
    }

    #[test]
    fn percentiles_rise_from_min_to_max() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        assert!(percentiles(&h).is_empty());
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let p = percentiles(&h);
        assert_eq!(p.len(), PERCENTILES.len());
        assert_eq!(p[0].ns, h.min());
        assert_eq!(p.last().unwrap().ns, h.max());
        let p50 = p.iter().find(|x| x.percentile == 50.0).unwrap().ns;
        assert!((4_990_000..=5_010_000).contains(&p50), "{p50}");
        assert!(p.windows(2).all(|w| w[0].ns <= w[1].ns), "{p:?}");
        let json = serde_json::to_value(p[2]).unwrap();
        assert_eq!(json["percentile"], 50.0);
    }

    #[test]
    fn errnos_name_their_reason() {
        assert_eq!(
            ConnectReason::from_errno(Some(libc::ECONNREFUSED)),
            ConnectReason::Refused
        );
        assert_eq!(ConnectReason::from_errno(None), ConnectReason::Closed);
        assert_eq!(
            ConnectReason::from_errno(Some(libc::EHOSTUNREACH)),
            ConnectReason::Unreachable
        );
        assert_eq!(
            ConnectReason::from_errno(Some(libc::EINVAL)),
            ConnectReason::Other
        );
    }
}
