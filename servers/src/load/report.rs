//! What a load run measured: per-thread counts, their sum, and how it is printed.

use hdrhistogram::Histogram;
use serde::Serialize;

use super::segments::TcpSegments;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Errors {
    pub connect: u64,
    pub read: u64,
    pub timeout: u64,
    /// Responses with a status outside 2xx/3xx.
    pub status: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
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
        total.errors.connect += s.errors.connect;
        total.errors.read += s.errors.read;
        total.errors.timeout += s.errors.timeout;
        total.errors.status += s.errors.status;
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
                "no request succeeded: all {} replies had an error status",
                self.requests
            )
        } else if e.connect > 0 {
            format!(
                "unable to connect ({} connection errors: connection refused, or nothing listens there)",
                e.connect
            )
        } else if e.read + e.timeout > 0 {
            format!("no reply: {} read errors, {} timeouts", e.read, e.timeout)
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
        println!(
            "  errors      connect {}  read {}  timeout {}  status {}",
            e.connect, e.read, e.timeout, e.status
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
