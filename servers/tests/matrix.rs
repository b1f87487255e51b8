//! Every io strategy under every model: byte-exact bodies, HEAD, 404, pipelining, HTTP/1.0
//! and keep-alive limits, over loopback.

mod common;

use common::{content, data_segs_in, start, Client, Tree, SIZES};
use servers::{Io, Model};

fn check_combination(io: Io, model: Model) {
    let tree = Tree::new();
    let server = start(&tree.root, io, model, None);
    let addr = server.local_addr();
    let mut c = Client::connect(addr);
    for (name, size) in SIZES {
        let r = c.get(&format!("/{name}")).unwrap();
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
        assert!(r.body == content(name, size), "{name}: body differs");
    }
    assert_eq!(
        c.get("/small.html").unwrap().header("content-type"),
        Some("text/html; charset=utf-8")
    );

    c.send(b"HEAD /64k.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = c.response(true).unwrap();
    assert_eq!((r.status, r.header("content-length")), (200, Some("65536")));

    let r = c.get("/missing.html").unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(c.get("/").unwrap().status, 404, "no index.html at the top");
    assert_eq!(c.get("/sub/").unwrap().body, b"<p>sub</p>");

    // Pipelined: three requests in one write, answered in order on the same connection.
    c.send(b"GET /small.html HTTP/1.1\r\nHost: t\r\n\r\nHEAD /1m.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /empty.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(c.response(false).unwrap().body.len(), 1400);
    assert_eq!(
        c.response(true).unwrap().header("content-length"),
        Some("1048576")
    );
    assert_eq!(
        c.response(false).unwrap().header("content-length"),
        Some("0")
    );

    // HTTP/1.0 closes by default.
    let mut c10 = Client::connect(addr);
    c10.send(b"GET /small.html HTTP/1.0\r\n\r\n").unwrap();
    let r = c10.response(false).unwrap();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c10.closed_by_server());

    // A lone request asking to close: its reply leaves with the FIN (corked for sendfile, every
    // size, so large replies that fill the socket buffer resume under the cork), whole, then EOF.
    for (name, size) in SIZES {
        let mut c = Client::connect(addr);
        c.send(format!("GET /{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
            .unwrap();
        let r = c.response(false).unwrap();
        assert_eq!((r.status, r.header("connection")), (200, Some("close")));
        assert!(r.body == content(name, size), "{name}: body differs");
        assert!(c.closed_by_server(), "{name}: not closed");
    }
    server.shutdown();

    // keepalive 1: every reply closes its connection.
    let server = start(&tree.root, io, model, Some(1));
    let mut c = Client::connect(server.local_addr());
    c.send(b"GET /64k.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /small.html HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let r = c.response(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.body == content("64k.bin", 65536));
    assert!(
        c.closed_by_server(),
        "keepalive 1 must close after one reply"
    );
    server.shutdown();
}

macro_rules! combos {
    ($($name:ident: $io:ident $model:ident,)*) => {$(
        #[test]
        fn $name() {
            check_combination(Io::$io, Model::$model);
        }
    )*};
}

combos! {
    read_epoll: Read Epoll,
    read_threadpool: Read Threadpool,
    read_thread: Read Thread,
    read_tokio: Read Tokio,
    read_uring: Read Uring,
    mmap_epoll: Mmap Epoll,
    mmap_threadpool: Mmap Threadpool,
    mmap_thread: Mmap Thread,
    mmap_tokio: Mmap Tokio,
    mmap_uring: Mmap Uring,
    sendfile_epoll: Sendfile Epoll,
    sendfile_threadpool: Sendfile Threadpool,
    sendfile_thread: Sendfile Thread,
    sendfile_tokio: Sendfile Tokio,
    sendfile_uring: Sendfile Uring,
    sendfile_nocork_epoll: SendfileNocork Epoll,
    sendfile_nocork_threadpool: SendfileNocork Threadpool,
    sendfile_nocork_thread: SendfileNocork Thread,
    sendfile_nocork_tokio: SendfileNocork Tokio,
    sendfile_nocork_uring: SendfileNocork Uring,
    cached_epoll: Cached Epoll,
    cached_threadpool: Cached Threadpool,
    cached_thread: Cached Thread,
    cached_tokio: Cached Tokio,
    cached_uring: Cached Uring,
}

/// Segments carrying reply data that the client received for `n` keep-alive GETs of the 1400 B
/// file (its socket's TCP_INFO `tcpi_data_segs_in`).
fn reply_segments(io: Io, model: Model, n: u64) -> u64 {
    let tree = Tree::new();
    let server = start(&tree.root, io, model, None);
    let mut c = Client::connect(server.local_addr());
    // The first reply also waits out the handshake's quick-ACK mode; count from the second.
    assert_eq!(c.get("/small.html").unwrap().status, 200);
    let before = data_segs_in(&c);
    for _ in 0..n {
        let r = c.get("/small.html").unwrap();
        assert!(r.body == content("small.html", 1400));
    }
    data_segs_in(&c) - before
}

/// The cork comparison's premise, on every model: sendfile under TCP_CORK and the cache's one
/// writev send head and body as one segment; sendfile-nocork sends the head as its own.
#[test]
fn sendfile_nocork_sends_the_head_as_a_segment_of_its_own() {
    for model in [
        Model::Epoll,
        Model::Threadpool,
        Model::Thread,
        Model::Tokio,
        Model::Uring,
    ] {
        let n = 20;
        for (io, per_reply) in [(Io::Sendfile, 1), (Io::Cached, 1), (Io::SendfileNocork, 2)] {
            assert_eq!(
                reply_segments(io, model, n),
                per_reply * n,
                "{io} {model:?}: data segments for {n} replies"
            );
        }
    }
}
