//! `kpath scenario cork`: header and body of a small reply under TCP_CORK, without it, and as one
//! writev, counted in TCP segments as well as syscalls.
use servers::serve::{Io, Model};

use super::compare::{by, change, fastest, ns_per_req, per_req, Comparison};
use crate::bench::json::{Bench, BenchRun, Strategy};
use crate::bench::table::{fmt_ns_per, fmt_per};

pub const CORK: Comparison = Comparison {
    name: "cork",
    runs: "keep-alive load against the epoll loop sending a 1400 B file three ways: header write \
           + sendfile under TCP_CORK (sendfile), the same without the cork (sendfile-nocork), \
           and one writev of header and cached body (cached)",
    look_at: "reply segments/req (segments carrying the server's data, counted at the load \
              generator's sockets: 1 when header and body leave together, 2 when the header \
              goes alone); TCP segs/req (every segment both ways: on loopback the client's \
              sockets see both directions); setsockopt/req (the cork's price); then req/s and \
              busy/req",
    why: "the server sets TCP_NODELAY, so each write is transmitted as soon as it is made: \
          without the cork the header leaves as a segment of its own and sendfile's body \
          follows in a second, each with its own headers, trip through the loopback device and \
          receive processing and wakeup on the client. (Without TCP_NODELAY, Nagle's algorithm \
          would hold the small body back until the header is acknowledged, and the client's \
          delayed ACK can stall that for up to 40 ms: the classic reason servers cork.) \
          TCP_CORK holds partial segments back until it is removed, so header and body leave \
          as one segment, for two setsockopt syscalls per reply (cork, and uncork, which \
          pushes what is queued). A writev of the header and a cached body gives the kernel \
          both in one call: one segment, no setsockopt, and no open, sendfile or close either.",
    strategies: &[
        Strategy::new(Io::Sendfile, Model::Epoll, 0),
        Strategy::new(Io::SendfileNocork, Model::Epoll, 0),
        Strategy::new(Io::Cached, Model::Epoll, 0),
    ],
    measured: cork_findings,
    frequency: None,
};

fn segs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), fmt_per)
}

/// Traced time per request in the calls that hand the reply to TCP.
fn send_ns(r: &BenchRun) -> f64 {
    ["writev", "sendfile", "setsockopt"]
        .iter()
        .map(|s| ns_per_req(r, s))
        .sum()
}

fn line(r: &BenchRun) -> String {
    format!(
        "{}: {} reply segments/req, {} TCP segments/req both ways, {} setsockopt/req, \
         {:.0} req/s, {} busy in syscalls/req",
        r.name,
        segs(r.reply_segments_per_request),
        segs(r.tcp_segments_per_request),
        fmt_per(per_req(r, "setsockopt")),
        r.requests_per_sec,
        fmt_ns_per(r.busy_kernel_ns_per_request),
    )
}

pub fn cork_findings(b: &Bench) -> Vec<String> {
    let mut out: Vec<String> = b.runs.iter().map(line).collect();
    let corked = by(b, Io::Sendfile, Model::Epoll);
    let plain = by(b, Io::SendfileNocork, Model::Epoll);
    let cached = by(b, Io::Cached, Model::Epoll);
    if let (Some(c), Some(n)) = (corked, plain) {
        if let (Some(cs), Some(ns)) = (c.reply_segments_per_request, n.reply_segments_per_request) {
            let what = if ns >= cs + 0.5 {
                "the header left as a segment of its own"
            } else {
                "the kernel still coalesced header and body most of the time"
            };
            let mut l = format!(
                "without the cork a reply took {ns:.2} segments with data, under it {cs:.2}: \
                 {what}; every segment both ways: {} vs {} per request",
                segs(n.tcp_segments_per_request),
                segs(c.tcp_segments_per_request),
            );
            if let (Some(tn), Some(tc)) = (n.tcp_segments_per_request, c.tcp_segments_per_request) {
                let (more, data) = (tn - tc, ns - cs);
                if more > 0.0 {
                    l += &format!(
                        ", of the {more:.2} more {data:.2} carry data and {:.2} none (ACKs)",
                        more - data
                    );
                }
            }
            out.push(l);
        }
        out.push(format!(
            "the cork costs {} setsockopt calls per request, the uncorked variant {}; time in \
             the send path (writev + sendfile + setsockopt, with the transmission and loopback \
             delivery each call triggers: uncorking is what sends a corked reply) {} corked vs \
             {} uncorked per request",
            fmt_per(per_req(c, "setsockopt")),
            fmt_per(per_req(n, "setsockopt")),
            fmt_ns_per(send_ns(c)),
            fmt_ns_per(send_ns(n)),
        ));
        let busy = n.busy_kernel_ns_per_request - c.busy_kernel_ns_per_request;
        let verdict = if busy > 0.0 { "more" } else { "less" };
        out.push(format!(
            "without the cork the server spent {} {verdict} busy kernel time per request ({} vs \
             {} corked, the cork's setsockopt calls included); req/s {:.0} uncorked vs {:.0} \
             corked ({})",
            fmt_ns_per(busy.abs()),
            fmt_ns_per(n.busy_kernel_ns_per_request),
            fmt_ns_per(c.busy_kernel_ns_per_request),
            n.requests_per_sec,
            c.requests_per_sec,
            change(c.requests_per_sec, n.requests_per_sec),
        ));
    }
    if let (Some(c), Some(k)) = (corked, cached) {
        out.push(format!(
            "one writev from memory: {} reply segments/req with {} syscalls/req vs {} with {} \
             for corked sendfile; req/s {:.0} vs {:.0} ({})",
            segs(k.reply_segments_per_request),
            fmt_per(k.syscalls_per_request),
            segs(c.reply_segments_per_request),
            fmt_per(c.syscalls_per_request),
            k.requests_per_sec,
            c.requests_per_sec,
            change(c.requests_per_sec, k.requests_per_sec),
        ));
    }
    if let Some(f) = fastest(b) {
        out.push(format!("fastest: {}", f.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(io: Io, rps: f64, reply: f64, tcp: f64, setsockopt: f64, busy: f64) -> BenchRun {
        let strategy = Strategy::new(io, Model::Epoll, 0);
        BenchRun {
            name: strategy.name(),
            strategy,
            requests_per_sec: rps,
            reply_segments_per_request: Some(reply),
            tcp_segments_per_request: Some(tcp),
            syscalls_per_request: 4.0 + setsockopt,
            busy_kernel_ns_per_request: busy,
            syscall_counts_per_request: [("setsockopt".to_string(), setsockopt)].into(),
            syscall_ns_per_request: [
                ("setsockopt".to_string(), setsockopt * 400.0),
                ("writev".to_string(), 300.0),
                (
                    "sendfile".to_string(),
                    if io == Io::Cached { 0.0 } else { 400.0 },
                ),
            ]
            .into(),
            ..BenchRun::default()
        }
    }

    #[test]
    fn findings_compare_segments_syscalls_and_time() {
        let b = Bench {
            runs: vec![
                run(Io::Sendfile, 90_000.0, 1.0, 2.0, 2.0, 9_000.0),
                run(Io::SendfileNocork, 80_000.0, 2.0, 3.1, 0.0, 10_000.0),
                run(Io::Cached, 150_000.0, 1.0, 2.0, 0.0, 4_000.0),
            ],
            ..Bench::default()
        };
        let f = cork_findings(&b);
        assert!(
            f[1].starts_with("sendfile-nocork-epoll-kainf: 2.00 reply segments/req, 3.10 TCP"),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l
                == "without the cork a reply took 2.00 segments with data, under it 1.00: the \
                    header left as a segment of its own; every segment both ways: 3.10 vs 2.00 \
                    per request, of the 1.10 more 1.00 carry data and 0.10 none (ACKs)"),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l.starts_with(
                "the cork costs 2.00 setsockopt calls per request, the uncorked variant 0.00; \
                 time in the send path"
            ) && l.ends_with("1.50µs corked vs 700ns uncorked per request")),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l.starts_with(
                "without the cork the server spent 1.00µs more busy kernel time per request \
                 (10.0µs vs 9.00µs corked"
            ) && l.ends_with("(-11.1%)")),
            "{f:#?}"
        );
        assert!(
            f.iter().any(|l| l
                .starts_with("one writev from memory: 1.00 reply segments/req with 4.00")
                && l.ends_with("(+66.7%)")),
            "{f:#?}"
        );
        assert_eq!(f.last().unwrap(), "fastest: cached-epoll-kainf");
    }

    #[test]
    fn coalesced_replies_and_missing_counts_are_said_so() {
        let mut b = Bench {
            runs: vec![
                run(Io::Sendfile, 90_000.0, 1.0, 2.0, 2.0, 9_000.0),
                run(Io::SendfileNocork, 95_000.0, 1.1, 2.1, 0.0, 8_000.0),
            ],
            ..Bench::default()
        };
        let f = cork_findings(&b);
        assert!(f.iter().any(|l| l.contains("still coalesced")), "{f:#?}");
        assert!(f.iter().any(|l| l.contains("1.00µs less busy")), "{f:#?}");
        b.runs[1].reply_segments_per_request = None;
        b.runs[1].tcp_segments_per_request = None;
        let f = cork_findings(&b);
        assert!(f[1].contains("- reply segments/req, - TCP"), "{f:#?}");
        assert!(
            !f.iter().any(|l| l.starts_with("without the cork a reply")),
            "{f:#?}"
        );
    }
}
