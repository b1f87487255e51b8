//! The per-connection protocol state, shared by every model: buffered bytes in, replies out.

use std::collections::VecDeque;
use std::time::Duration;

use crate::http::{self, Version};
use crate::io::FileStore;
use crate::reply::{self, Persistence, Reply};

/// Everything a connection needs from the server, shared by all connections.
pub struct Server {
    pub files: FileStore,
    /// Close after this many requests on one connection.
    pub keepalive: Option<u32>,
    /// How long a connection may sit idle, or take to send one request head.
    pub idle_timeout: Duration,
}

/// Size of each connection's receive buffer; a full request head always fits
/// (`http::MAX_HEAD` is smaller), so a full buffer without a request is a parse error.
pub const RECV_BUF: usize = 32 * 1024;

#[derive(Debug, Default)]
pub struct Session {
    served: u32,
    /// A reply that closes the connection is queued: ignore further input.
    closing: bool,
}

impl Session {
    /// Answers every complete request at the start of `buf`, in order; returns the bytes used.
    pub fn handle(&mut self, srv: &Server, buf: &[u8], out: &mut VecDeque<Reply>) -> usize {
        let mut used = 0;
        while !self.closing && used < buf.len() {
            match http::parse(&buf[used..]) {
                Ok(None) => break,
                Ok(Some(req)) => {
                    used += req.len;
                    self.served = self.served.saturating_add(1);
                    let limit_hit = srv.keepalive.is_some_and(|n| self.served >= n);
                    let persistence = match (req.keep_alive && !limit_hit, req.version) {
                        (false, _) => Persistence::Close,
                        (true, Version::Http11) => Persistence::KeepAlive,
                        (true, Version::Http10) => Persistence::KeepAlive10,
                    };
                    self.closing = persistence == Persistence::Close;
                    let mut reply = srv.files.reply(&req, persistence);
                    // Nothing pipelined behind a closing request: its reply can leave with the
                    // FIN. (Bytes behind it would make close reset the connection, and corked
                    // data would be lost with them, so such a reply goes out uncorked.)
                    reply.fin_with_data = self.closing && used == buf.len();
                    out.push_back(reply);
                }
                Err(e) => {
                    out.push_back(reply::error(e.status(), Persistence::Close));
                    self.closing = true;
                    used = buf.len();
                }
            }
        }
        used
    }

    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The reply to a client that took too long to send a request; the connection closes after it.
    pub fn timeout(&mut self) -> Reply {
        self.closing = true;
        reply::error(408, Persistence::Close)
    }
}
