//! Fixtures and a minimal HTTP client for the server tests.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use servers::{Io, Model, ServerConfig, ServerHandle};

pub const SIZES: [(&str, usize); 4] = [
    ("empty.txt", 0),
    ("small.html", 1400),
    ("64k.bin", 64 * 1024),
    ("1m.bin", 1024 * 1024),
];

/// A served tree in a fresh temp dir, with a secret beside it (outside the root) and
/// a symlink in the root pointing at the secret. Removed on drop.
pub struct Tree {
    pub base: PathBuf,
    pub root: PathBuf,
}

impl Tree {
    pub fn new() -> Tree {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().join(format!(
            "kpath-servers-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        for (name, size) in SIZES {
            std::fs::write(root.join(name), content(name, size)).unwrap();
        }
        std::fs::write(root.join("sub/index.html"), b"<p>sub</p>").unwrap();
        std::fs::write(base.join("secret.txt"), b"TOP SECRET").unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink("sub/index.html", root.join("inside.html")).unwrap();
        Tree { base, root }
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Deterministic, position-dependent content so that a misplaced byte is caught.
pub fn content(name: &str, size: usize) -> Vec<u8> {
    let seed = name.len() as u32;
    (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

pub fn start(root: &Path, io: Io, model: Model, keepalive: Option<u32>) -> ServerHandle {
    servers::start(ServerConfig {
        root: root.to_path_buf(),
        addr: "127.0.0.1:0".parse().unwrap(),
        io,
        model,
        keepalive,
        threads: 2,
        idle_timeout: Duration::from_secs(2),
    })
    .expect("server starts")
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())?;
        self.response(false)
    }

    /// Reads one response; `head_only` for replies to HEAD, which carry no body.
    pub fn response(&mut self, head_only: bool) -> io::Result<Response> {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let len: usize = match (head_only, resp.header("content-length")) {
            (true, _) | (false, None) => 0,
            (false, Some(v)) => v.parse().map_err(io::Error::other)?,
        };
        while self.buf.len() < head_end + len {
            self.fill()?;
        }
        resp.body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok(resp)
    }

    /// Whether the server has closed the connection (EOF or reset) with nothing more to read.
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.read(&mut b), Ok(0) | Err(_)) && self.buf.is_empty()
    }

    /// One read, retried on EINTR. A socket read with SO_RCVTIMEO is not restarted: it fails
    /// with EINTR, even with no signal handler, when the process is stopped and continued
    /// (signal(7)) or frozen and thawed, which a busy shared machine did to about one run in
    /// ten of the matrix tests.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.stream.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                res => return res,
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Segments with payload this client's socket has received (TCP_INFO `tcpi_data_segs_in`).
pub fn data_segs_in(c: &Client) -> u64 {
    use std::os::fd::AsRawFd;
    servers::load::tcp_segments(c.stream.as_raw_fd())
        .expect("TCP_INFO")
        .data_received
}
