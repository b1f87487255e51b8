//! One connection's buffers and timers, driven by any model that reads and writes with syscalls.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::reply::Reply;
use crate::send::write_reply;
use crate::session::{Server, Session, RECV_BUF};
use crate::sys::cvt;

pub struct Connection {
    pub buf: Vec<u8>,
    pub session: Session,
    pub out: VecDeque<Reply>,
    /// Last time bytes moved either way.
    pub last_active: Instant,
    /// When the first byte of a still-incomplete request arrived.
    pub request_started: Option<Instant>,
}

/// What the model should do with the connection next.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for more input.
    Read,
    /// The socket buffer is full: wait until writable.
    Write,
    Close,
}

impl Connection {
    pub fn new(now: Instant) -> Self {
        Connection {
            buf: Vec::new(),
            session: Session::default(),
            out: VecDeque::new(),
            last_active: now,
            request_started: None,
        }
    }

    /// One read(2) into the buffer: `Ok(0)` is end of stream.
    pub fn read_from(&mut self, fd: RawFd) -> io::Result<usize> {
        let spare = self.spare();
        // SAFETY: spare() returned buf's spare capacity: spare.1 writable bytes from spare.0,
        // and read(2) writes at most spare.1 bytes there; buf is not touched until set_len.
        let n = cvt(unsafe { libc::read(fd, spare.0.cast(), spare.1) })?;
        // SAFETY: read returned n <= spare.1 after writing n bytes just past len, so len + n is
        // within capacity and every byte below it is initialised.
        unsafe { self.buf.set_len(self.buf.len() + n) };
        Ok(n)
    }

    /// Pointer and length of the buffer's free space (at least one byte when below RECV_BUF).
    pub fn spare(&mut self) -> (*mut u8, usize) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(4096);
        } else if self.buf.len() == self.buf.capacity() && self.buf.capacity() < RECV_BUF {
            self.buf.reserve_exact(RECV_BUF - self.buf.len());
        }
        let spare = self.buf.spare_capacity_mut();
        (spare.as_mut_ptr().cast(), spare.len())
    }

    /// Accounts for `n` new bytes in the buffer and queues the replies they complete.
    pub fn received(&mut self, n: usize, srv: &Server, now: Instant) {
        if n > 0 {
            self.last_active = now;
        }
        let used = self.session.handle(srv, &self.buf, &mut self.out);
        self.buf.drain(..used);
        if self.buf.len() >= RECV_BUF && !self.session.is_closing() {
            // Cannot happen within the parser's limits; refuse rather than stall.
            self.out.push_back(self.session.timeout());
        }
        self.request_started = match (self.buf.is_empty(), self.request_started) {
            (true, _) => None,
            (false, Some(t)) if used == 0 => Some(t),
            (false, _) => Some(now),
        };
    }

    /// Writes queued replies in order until done or the socket is full.
    pub fn flush(&mut self, fd: RawFd, now: Instant) -> Next {
        while let Some(reply) = self.out.front_mut() {
            let before = reply.sent;
            let res = write_reply(fd, reply);
            if reply.sent != before {
                self.last_active = now;
            }
            match res {
                Ok(()) => {
                    let close = reply.close;
                    self.out.pop_front();
                    if close {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Write,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        if self.session.is_closing() {
            Next::Close
        } else {
            Next::Read
        }
    }

    /// Whether the client has been idle, or slow to finish a request, for longer than allowed.
    /// A slow request gets a 408 queued (sent best-effort by the caller's next flush).
    pub fn check_timeout(&mut self, srv: &Server, now: Instant) -> bool {
        let idle = now.duration_since(self.last_active) > srv.idle_timeout;
        let slow = self
            .request_started
            .is_some_and(|t| now.duration_since(t) > srv.idle_timeout);
        if slow && self.out.is_empty() && !self.session.is_closing() {
            self.out.push_back(self.session.timeout());
        }
        idle || slow
    }
}
