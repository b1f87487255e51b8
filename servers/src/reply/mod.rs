//! Replies: the response heads, the bodies the io strategies fill, and the reply object every
//! model sends. Below everything that builds or sends a reply; it knows no socket.

mod body;

pub use body::{Body, Chunk, Mapping};

use std::io::Write;

/// Whether the connection persists after this reply (RFC 9112 9.3): what the reply's head says
/// about it, and whether the server closes it afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// HTTP/1.1 persistent: no header needed.
    KeepAlive,
    /// HTTP/1.0 persistent: needs an explicit `Connection: keep-alive`.
    KeepAlive10,
    Close,
}

impl Persistence {
    pub const ALL: [Persistence; 3] = [
        Persistence::KeepAlive,
        Persistence::KeepAlive10,
        Persistence::Close,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    fn header(self) -> &'static str {
        match self {
            Persistence::KeepAlive => "",
            Persistence::KeepAlive10 => "Connection: keep-alive\r\n",
            Persistence::Close => "Connection: close\r\n",
        }
    }
}

/// A reply in flight: `sent` counts bytes of head then body already written.
#[derive(Debug)]
pub struct Reply {
    pub head: Chunk,
    pub body: Body,
    pub sent: u64,
    /// Close the connection once this reply is out.
    pub close: bool,
    /// TCP_CORK is set on the socket for this reply (`--io sendfile` bodies).
    pub corked: bool,
    /// A closing reply with nothing received after its request: its tail is held back in the
    /// socket and the close that follows sends it with the FIN in one segment (`send` and the
    /// uring model do this with MSG_MORE).
    pub fin_with_data: bool,
}

impl Reply {
    pub fn new(head: Chunk, body: Body, persistence: Persistence) -> Self {
        Reply {
            head,
            body,
            sent: 0,
            close: persistence == Persistence::Close,
            corked: false,
            fin_with_data: false,
        }
    }

    pub fn total_len(&self) -> u64 {
        self.head.len() as u64 + self.body.len()
    }

    pub fn is_done(&self) -> bool {
        self.sent >= self.total_len()
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Internal Server Error",
    }
}

pub fn file_head(content_type: &str, len: u64, persistence: Persistence) -> Vec<u8> {
    head(200, content_type, len, persistence, "")
}

fn head(
    status: u16,
    content_type: &str,
    len: u64,
    persistence: Persistence,
    extra: &str,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(128);
    // Writing into a Vec cannot fail.
    let _ = write!(
        h,
        "HTTP/1.1 {status} {}\r\nServer: kpath\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n{}{extra}\r\n",
        reason(status),
        persistence.header(),
    );
    h
}

/// A short plain-text error reply; the caller decides whether the connection survives it.
pub fn error(status: u16, persistence: Persistence) -> Reply {
    let body = format!("{status} {}\n", reason(status)).into_bytes();
    let extra = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let h = head(
        status,
        "text/plain; charset=utf-8",
        body.len() as u64,
        persistence,
        extra,
    );
    Reply::new(h.into(), Body::Bytes(body.into()), persistence)
}
