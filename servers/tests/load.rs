//! The load generator against the in-process server: counts, errors by kind, open-loop pacing.

mod common;

use std::time::Duration;

use common::{start, Tree};
use servers::load::{run_load, LoadConfig, LoadError};
use servers::{Io, Model};

fn config(url: String) -> LoadConfig {
    LoadConfig {
        url,
        connections: 8,
        threads: 2,
        duration: Duration::from_millis(600),
        ..LoadConfig::default()
    }
}

#[test]
fn closed_loop_counts_requests_and_bytes() {
    let tree = Tree::new();
    let server = start(&tree.root, Io::Cached, Model::Epoll, None);
    let url = format!("http://{}/small.html", server.local_addr());
    for close in [false, true] {
        let report = run_load(LoadConfig {
            close,
            ..config(url.clone())
        })
        .unwrap();
        assert!(report.requests > 100, "close={close}: {report:?}");
        assert_eq!(report.errors, Default::default(), "close={close}");
        // Every response is the 1400-byte body plus a head of about 100 bytes.
        let per_request = report.bytes_per_sec / report.requests_per_sec;
        assert!((1450.0..1600.0).contains(&per_request), "{per_request}");
        let l = report.latency_ns;
        assert!(0 < l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max);
    }
}

#[test]
fn error_statuses_and_refused_connections_are_counted() {
    let tree = Tree::new();
    let server = start(&tree.root, Io::Read, Model::Epoll, Some(1));
    let report = run_load(config(format!("http://{}/nope", server.local_addr()))).unwrap();
    assert!(report.requests > 0);
    assert_eq!(report.errors.status, report.requests);
    let addr = server.local_addr();
    server.shutdown();
    let report = run_load(config(format!("http://{addr}/"))).unwrap();
    assert_eq!(report.requests, 0);
    assert!(report.errors.connect > 0);
}

#[test]
fn open_loop_keeps_to_the_rate() {
    let tree = Tree::new();
    let server = start(&tree.root, Io::Cached, Model::Epoll, None);
    let report = run_load(LoadConfig {
        rate: Some(2000),
        duration: Duration::from_secs(1),
        ..config(format!("http://{}/small.html", server.local_addr()))
    })
    .unwrap();
    assert!(
        (1800..=2050).contains(&report.requests),
        "{} requests at 2000/s for 1s",
        report.requests
    );
}

#[test]
fn only_loopback_targets() {
    for url in [
        "http://192.0.2.1/",
        "http://8.8.8.8:80/x",
        "ftp://127.0.0.1/",
    ] {
        assert!(
            matches!(run_load(config(url.into())), Err(LoadError::Target(_))),
            "{url}"
        );
    }
}
