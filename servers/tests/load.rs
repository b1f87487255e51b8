//! The load generator against the in-process server: counts, errors by kind, open-loop pacing,
//! several URLs in turn, TCP segment counts.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use common::{start, Tree};
use servers::load::{run_load, EndpointError, LoadArgs, LoadConfig, LoadError};
use servers::{Io, Model};

fn config(url: String) -> LoadConfig {
    configs(vec![url])
}

fn configs(urls: Vec<String>) -> LoadConfig {
    LoadConfig {
        urls,
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
        // One request segment out and one reply segment in per request (the cache's one
        // writev; a closing reply carries the FIN too), plus those in flight at the end.
        let s = report.tcp_segments;
        let n = report.requests;
        assert!(
            (n..=n + 8).contains(&s.data_sent),
            "close={close}: {s:?} for {n}"
        );
        assert!(
            (n..=n + 8).contains(&s.data_received),
            "close={close}: {s:?} for {n}"
        );
        assert!(
            s.sent >= s.data_sent && s.received >= s.data_received,
            "{s:?}"
        );
        let conns = if close { n..=n + 8 } else { 8..=8 };
        assert!(
            conns.contains(&s.connections),
            "close={close}: {s:?} for {n}"
        );
    }
}

#[test]
fn error_statuses_and_refused_connections_are_counted() {
    let tree = Tree::new();
    let server = start(&tree.root, Io::Read, Model::Epoll, Some(1));
    let report = run_load(config(format!("http://{}/nope", server.local_addr()))).unwrap();
    assert!(report.requests > 0);
    assert_eq!(report.errors.status, report.requests);
    assert_eq!(
        report.errors.by_status.get(&404),
        Some(&report.requests),
        "{:?}",
        report.errors
    );
    // A 404 is a reply, not a success: req/s counts successes only.
    assert_eq!(report.requests_ok, 0);
    assert_eq!(report.requests_per_sec, 0.0);
    assert!(report.failure().unwrap().contains("error status"));
    let addr = server.local_addr();
    server.shutdown();
    let report = run_load(config(format!("http://{addr}/"))).unwrap();
    assert_eq!(report.requests, 0);
    assert!(report.errors.connect > 0);
    assert_eq!(
        report
            .errors
            .connect_by_reason
            .get(&servers::load::ConnectReason::Refused),
        Some(&report.errors.connect),
        "{:?}",
        report.errors
    );
    let why = report.failure().unwrap();
    assert!(
        why.contains("unable to connect: connection refused"),
        "{why}"
    );
}

#[test]
fn a_zero_duration_is_refused() {
    let mut cfg = config("http://127.0.0.1:1/".into());
    cfg.duration = Duration::ZERO;
    assert!(matches!(
        run_load(cfg),
        Err(servers::load::LoadError::Duration)
    ));
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
            matches!(run_load(config(url.into())), Err(LoadError::Endpoint(_))),
            "{url}"
        );
    }
}

/// A tiny HTTP server that answers every request with 200 and counts requests per path.
fn counting_server() -> (SocketAddr, Arc<Mutex<HashMap<String, u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let counted = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let hits = Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut lines = BufReader::new(stream).lines();
                while let Some(Ok(line)) = lines.next() {
                    let Some(path) = line.strip_prefix("GET ").and_then(|l| l.split(' ').next())
                    else {
                        return;
                    };
                    *hits.lock().unwrap().entry(path.to_string()).or_insert(0) += 1;
                    // Skip the rest of the head.
                    while let Some(Ok(l)) = lines.next() {
                        if l.is_empty() {
                            break;
                        }
                    }
                    if out
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, hits)
}

#[test]
fn every_url_is_requested_in_turn() {
    let (addr, hits) = counting_server();
    let paths = ["/a.html", "/b.html", "/c/d.bin", "/e?x=1"];
    let urls = paths.iter().map(|p| format!("http://{addr}{p}")).collect();
    let report = run_load(LoadConfig {
        connections: 3,
        threads: 1,
        ..configs(urls)
    })
    .unwrap();
    assert_eq!(report.urls, 4);
    assert_eq!(report.errors, Default::default());
    let hits = hits.lock().unwrap().clone();
    let mut keys: Vec<&str> = hits.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, paths, "every path requested, nothing else");
    // Each connection goes round the list, so per path the counts differ by at most one per
    // connection; the server may have answered a request or so per connection past the end.
    let (min, max) = (hits.values().min().unwrap(), hits.values().max().unwrap());
    assert!(max - min <= 3, "{hits:?}");
    let total: u64 = hits.values().sum();
    assert!(
        (report.requests..=report.requests + 3).contains(&total),
        "{total} served, {} completed",
        report.requests
    );
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    load: LoadArgs,
}

fn paths_file(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("kpath-load-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

/// `--paths-from` against the reference server: three files of different sizes and a missing
/// one, each a quarter of the requests (the 404s say the missing one was asked for, the bytes
/// say the others were).
#[test]
fn paths_from_a_file_spreads_requests_over_them() {
    let tree = Tree::new();
    let server = start(&tree.root, Io::Sendfile, Model::Epoll, None);
    let file = paths_file(
        "spread",
        "# one path per line\n/small.html\n\n/64k.bin\n/missing.html\n/empty.txt\n",
    );
    let base = format!("http://{}", server.local_addr());
    let cli = Cli::parse_from(["load", &base, "--paths-from", file.to_str().unwrap()]);
    let report = run_load(LoadConfig {
        connections: 4,
        threads: 2,
        duration: Duration::from_millis(600),
        ..cli.load.into_config().unwrap()
    })
    .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(report.urls, 4);
    let n = report.requests as f64;
    assert!(n > 100.0, "{report:?}");
    let status = report.errors.status as f64;
    assert!((status - n / 4.0).abs() <= 4.0, "404s {status} of {n}");
    // Bodies 1400 + 65536 + 14 (the 404 text) + 0 over four requests, plus heads.
    // (Per reply, 404s included: requests_per_sec counts only the successes.)
    let per = report.bytes_per_sec * report.duration_secs / n;
    let bodies = (1400.0 + 65536.0 + 14.0) / 4.0;
    assert!(
        (bodies..bodies + 200.0).contains(&per),
        "{per} bytes per request"
    );
}

#[test]
fn bad_url_lists_are_refused_with_a_reason() {
    let (addr, _) = counting_server();
    let err = |cfg: LoadConfig| run_load(cfg).unwrap_err();
    assert!(matches!(err(configs(vec![])), LoadError::NoUrls));
    let e = err(configs(vec![
        format!("http://{addr}/a"),
        format!("http://localhost:{}/b", addr.port()),
    ]));
    assert!(matches!(e, LoadError::MixedHosts { .. }), "{e}");
    assert!(e.to_string().contains("localhost"), "{e}");
    let e = err(configs(vec![
        format!("http://{addr}/a"),
        format!("http://127.0.0.1:{}/b", addr.port() ^ 1),
    ]));
    assert!(matches!(e, LoadError::MixedHosts { .. }), "{e}");
    for bad in ["http:///x", "http://127.0.0.1:1/a b", "127.0.0.1:1/x"] {
        let e = err(configs(vec![format!("http://{addr}/ok"), bad.into()]));
        assert!(
            matches!(
                e,
                LoadError::Endpoint(EndpointError::Malformed { .. } | EndpointError::Scheme { .. })
            ),
            "{bad}: {e}"
        );
    }

    let parse = |args: &[&str]| {
        let mut argv = vec!["load"];
        argv.extend_from_slice(args);
        Cli::parse_from(argv).load.into_config()
    };
    let base = format!("http://{addr}");
    let empty = paths_file("empty", "# nothing\n\n");
    let e = parse(&[&base, "--paths-from", empty.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, LoadError::NoPaths { .. }), "{e}");
    let relative = paths_file("relative", "/a.html\nb.html\n");
    let e = parse(&[&base, "--paths-from", relative.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, LoadError::PathLine { line: 2, .. }), "{e}");
    let ok = paths_file("ok", "/a.html\n");
    let e = parse(&[
        &format!("{base}/a.html"),
        "--paths-from",
        ok.to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(matches!(e, LoadError::PathsFromBase { .. }), "{e}");
    let e = parse(&[&base, &base, "--paths-from", ok.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, LoadError::PathsFromUrls { count: 2 }), "{e}");
    let e = parse(&[&base, "--paths-from", "/nonexistent/paths.txt"]).unwrap_err();
    assert!(matches!(e, LoadError::PathsFile { .. }), "{e}");
    // A trailing slash on the server URL is fine.
    let cfg = parse(&[&format!("{base}/"), "--paths-from", ok.to_str().unwrap()]).unwrap();
    assert_eq!(cfg.urls, [format!("{base}/a.html")]);
    for f in [empty, relative, ok] {
        std::fs::remove_file(f).unwrap();
    }
    assert!(Cli::try_parse_from(["load"]).is_err(), "a URL is required");
}

/// The `--paths-from` server URL goes through the URL parser: a path, a query, another scheme
/// or no host are refused before any request is made, the parser's reason included.
#[test]
fn paths_from_server_url_is_parsed_not_pattern_matched() {
    let ok = paths_file("parsed", "/a.html\n");
    let parse = |base: &str| {
        Cli::parse_from(["load", base, "--paths-from", ok.to_str().unwrap()])
            .load
            .into_config()
    };
    for with_path in ["http://127.0.0.1:1/?x", "http://127.0.0.1:1//"] {
        let e = parse(with_path).unwrap_err();
        assert!(
            matches!(e, LoadError::PathsFromBase { .. }),
            "{with_path}: {e}"
        );
    }
    let e = parse("https://127.0.0.1:1").unwrap_err();
    assert!(
        matches!(e, LoadError::Endpoint(EndpointError::Scheme { .. })),
        "{e}"
    );
    let e = parse("http://").unwrap_err();
    assert!(
        matches!(e, LoadError::Endpoint(EndpointError::Malformed { .. })),
        "{e}"
    );
    // Not resolved here: run_load resolves, and refuses what is not loopback.
    let cfg = parse("http://server.invalid:1").unwrap();
    assert_eq!(cfg.urls, ["http://server.invalid:1/a.html"]);
    std::fs::remove_file(ok).unwrap();
}

/// `kpath load`'s entry point fails, saying why, when no request succeeded (as wrk does).
#[test]
fn a_load_with_no_success_fails_with_the_reason() {
    let tree = Tree::new();
    let server = start(&tree.root, Io::Read, Model::Epoll, Some(1));
    let addr = server.local_addr();
    let run = |url: String| {
        let cli = Cli::parse_from(["load", &url, "-d", "1", "-c", "2", "-t", "1"]);
        servers::load::run(cli.load).map_err(|e| format!("{e:#}"))
    };
    let e = run(format!("http://{addr}/nope")).unwrap_err();
    assert!(e.contains("no request succeeded"), "{e}");
    assert!(run(format!("http://{addr}/small.html")).is_ok());
    server.shutdown();
    let e = run(format!("http://{addr}/")).unwrap_err();
    assert!(e.contains("unable to connect"), "{e}");
    // -d 0 is refused by the parser, as in every subcommand with a duration.
    let e = Cli::try_parse_from(["load", &format!("http://{addr}/"), "-d", "0"])
        .err()
        .expect("-d 0 must not parse");
    assert!(e.to_string().contains("positive number of seconds"), "{e}");
}
