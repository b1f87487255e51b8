//! Hostile input against every model: nothing outside the root, no 2xx for garbage, limits
//! enforced, slow clients timed out, and the server keeps serving afterwards.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Client, Response, Tree};
use servers::{Io, Model, ServerConfig};

const MODELS: [Model; 5] = [
    Model::Epoll,
    Model::Threadpool,
    Model::Thread,
    Model::Tokio,
    Model::Uring,
];

/// Sends raw bytes; the reply, or `None` when the server closed or reset instead.
fn attempt(addr: SocketAddr, bytes: &[u8]) -> Option<Response> {
    let mut c = Client::connect(addr);
    // A server that stops reading early may reset the connection mid-write: that is allowed.
    let _ = c.send(bytes);
    c.response(false).ok()
}

fn assert_refused(addr: SocketAddr, bytes: &[u8], what: &str) {
    if let Some(r) = attempt(addr, bytes) {
        assert!(!(200..300).contains(&r.status), "{what}: got {}", r.status);
        assert!(!r.body.windows(6).any(|w| w == b"SECRET"), "{what}: leaked");
    }
}

fn serving(addr: SocketAddr) {
    let r = Client::connect(addr).get("/small.html").unwrap();
    assert_eq!(r.status, 200, "server stopped serving");
}

fn server(tree: &Tree, model: Model, io: Io) -> servers::ServerHandle {
    servers::start(ServerConfig {
        root: tree.root.clone(),
        addr: "127.0.0.1:0".parse().unwrap(),
        io,
        model,
        threads: 2,
        idle_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .unwrap()
}

#[test]
fn nothing_outside_the_root() {
    let tree = Tree::new();
    for (model, io) in MODELS
        .iter()
        .zip([Io::Read, Io::Mmap, Io::Sendfile, Io::Cached, Io::Read])
    {
        let s = server(&tree, *model, io);
        let addr = s.local_addr();
        for path in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/..%2fsecret.txt",
            "/escape.txt",
            "/sub/%2e%2e/%2e%2e/secret.txt",
            "/secret.txt%00.html",
        ] {
            let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
            assert_refused(addr, req.as_bytes(), &format!("{model}/{io} {path}"));
        }
        // A symlink that stays inside the root is fine.
        assert_eq!(
            Client::connect(addr).get("/inside.html").unwrap().body,
            b"<p>sub</p>"
        );
        serving(addr);
        s.shutdown();
    }
}

#[test]
fn oversized_and_malformed_requests() {
    let tree = Tree::new();
    let long_line = format!(
        "GET /{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "b".repeat(200 * 1024)
    );
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
        .collect();
    let cases: [(&str, &[u8], Option<u16>); 7] = [
        ("100 KB request line", long_line.as_bytes(), Some(414)),
        ("200 KB header", big_header.as_bytes(), Some(431)),
        ("binary garbage", &garbage, None),
        (
            "HTTP/2.0",
            b"GET /small.html HTTP/2.0\r\nHost: t\r\n\r\n",
            Some(505),
        ),
        (
            "HTTP/1.1x",
            b"GET /small.html HTTP/1.1x\r\nHost: t\r\n\r\n",
            Some(400),
        ),
        (
            "POST",
            b"POST /small.html HTTP/1.1\r\nHost: t\r\n\r\n",
            Some(405),
        ),
        ("no Host", b"GET /small.html HTTP/1.1\r\n\r\n", Some(400)),
    ];
    for model in MODELS {
        let s = server(&tree, model, Io::Cached);
        let addr = s.local_addr();
        for (what, bytes, expect) in cases {
            assert_refused(addr, bytes, &format!("{model}: {what}"));
            if let (Some(want), true) = (expect, bytes.len() < 1024) {
                let got = attempt(addr, bytes).map(|r| r.status);
                assert_eq!(got, Some(want), "{model}: {what}");
            }
        }
        serving(addr);
        s.shutdown();
    }
}

#[test]
fn slow_and_idle_clients_are_cut_off() {
    let tree = Tree::new();
    for model in MODELS {
        let s = server(&tree, model, Io::Read);
        let addr = s.local_addr();
        // Slowloris: a request head that never finishes.
        let mut slow = Client::connect(addr);
        slow.send(b"GET /small.html HTTP/1.1\r\nHost: t\r\n")
            .unwrap();
        // Idle keep-alive connection after one request.
        let mut idle = Client::connect(addr);
        assert_eq!(idle.get("/small.html").unwrap().status, 200);
        let t0 = Instant::now();
        if let Ok(r) = slow.response(false) {
            assert_eq!(r.status, 408, "{model}");
        }
        assert!(
            idle.closed_by_server(),
            "{model}: idle connection kept open"
        );
        let waited = t0.elapsed();
        assert!(waited < Duration::from_secs(4), "{model}: took {waited:?}");
        serving(addr);
        s.shutdown();
    }
}

#[test]
fn many_dropped_connections_do_not_hurt() {
    let tree = Tree::new();
    for model in MODELS {
        let s = server(&tree, model, Io::Sendfile);
        let addr = s.local_addr();
        for _ in 0..50 {
            let mut t = TcpStream::connect(addr).unwrap();
            // Ask for a large body and leave without reading it.
            let _ = t.write_all(b"GET /1m.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        }
        serving(addr);
        s.shutdown();
    }
}
