//! io_uring loops, one per thread with its own SO_REUSEPORT listener.
//!
//! Every accept, receive, send and close is a submission; all the submissions a loop iteration
//! produces go to the kernel in one `io_uring_enter`, which also waits for the next completions.
//! That batching is the mainline form of syscall batching this model exists to measure.
//! Linux has no sendfile opcode, so `--io sendfile` and `sendfile-nocork` bodies go out through
//! `write_reply` (the head with writev, TCP_CORK as that io does it, the body with sendfile(2))
//! from the loop on the non-blocking socket, parking on a POLLOUT submission when it is full.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::launch::{spawn_loops, Launch, Spawned, TICK};
use crate::conn::Connection;
use crate::reply::Body;
use crate::send::write_reply;
use crate::session::Server;

// Submission user_data. The loop's own operations take the top values; a connection's is
// `conn_token(slot index, op)`, the op in the low two bits.
const ACCEPT: u64 = u64::MAX;
const TIMER: u64 = u64::MAX - 1;
const CANCEL: u64 = u64::MAX - 2;
const RECV: u64 = 0;
const SEND: u64 = 1;
/// Waiting for room to continue a sendfile body.
const POLL: u64 = 2;
const CLOSE: u64 = 3;

fn conn_token(idx: usize, op: u64) -> u64 {
    (idx as u64) << 2 | op
}
/// How long shutdown waits for the kernel to finish in-flight operations on our buffers.
const DRAIN: Duration = Duration::from_secs(2);

pub fn spawn(l: Launch) -> Spawned {
    let prepare = |listener| Ok((IoUring::new(1024)?, listener));
    spawn_loops(l, "uring", prepare, |(ring, listener), srv, stop| {
        if let Err(e) = Loop::new(ring, listener, srv).run(stop) {
            log::error!("uring loop: {e}");
        }
    })
}

struct Slot {
    fd: RawFd,
    conn: Connection,
    /// The iovecs of the send in flight; boxed with the slot so the kernel's pointer stays valid.
    iov: [libc::iovec; 2],
    /// The message header of a MSG_MORE send in flight (see `send_next`), likewise boxed.
    msg: libc::msghdr,
    closing: bool,
}

struct Loop<'a> {
    // Declared first so the ring is torn down before the buffers it may point into.
    ring: IoUring,
    srv: &'a Server,
    listener: TcpListener,
    slots: Vec<Option<Box<Slot>>>,
    free: Vec<usize>,
    timespec: Box<types::Timespec>,
    in_flight: usize,
    /// Shutting down: stop re-arming the accept and the timer.
    stopping: bool,
}

impl<'a> Loop<'a> {
    fn new(ring: IoUring, listener: TcpListener, srv: &'a Server) -> Self {
        Loop {
            ring,
            srv,
            listener,
            slots: Vec::new(),
            free: Vec::new(),
            timespec: Box::new(types::Timespec::new().nsec(TICK.as_nanos() as u32)),
            in_flight: 0,
            stopping: false,
        }
    }

    fn run(&mut self, stop: &AtomicBool) -> io::Result<()> {
        self.arm_accept();
        self.arm_timer();
        let mut done = Vec::with_capacity(256);
        while !stop.load(Ordering::Relaxed) {
            self.turn(&mut done)?;
        }
        self.drain(&mut done)
    }

    fn turn(&mut self, done: &mut Vec<(u64, i32, u32)>) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        done.clear();
        done.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        let now = Instant::now();
        for &(token, res, flags) in done.iter() {
            if !(token == ACCEPT && cqueue::more(flags)) {
                self.in_flight -= 1;
            }
            match token {
                ACCEPT => self.on_accept(res, flags, now),
                TIMER => {
                    if !self.stopping {
                        self.arm_timer();
                    }
                    self.sweep(now);
                }
                CANCEL => {}
                // The inverse of conn_token.
                _ => self.on_conn((token >> 2) as usize, token & 3, res, now),
            }
        }
        Ok(())
    }

    /// Shuts every socket so pending receives complete, then waits for all operations to end.
    fn drain(&mut self, done: &mut Vec<(u64, i32, u32)>) -> io::Result<()> {
        self.stopping = true;
        self.push(opcode::AsyncCancel::new(ACCEPT).build().user_data(CANCEL));
        // A closing slot's fd may already be closed (and its number reused elsewhere in the
        // process): leave it to its Close.
        for slot in self.slots.iter().flatten().filter(|s| !s.closing) {
            // SAFETY: shutdown(2) takes only integers. No Close was submitted for this slot, so
            // slot.fd is still this loop's open connection socket, not a reused number.
            unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
        }
        let deadline = Instant::now() + DRAIN;
        while self.in_flight > 0 && Instant::now() < deadline {
            self.turn(done)?;
        }
        // Slots left here had nothing in flight (a failed submission) or outlived DRAIN.
        for slot in self.slots.iter().flatten().filter(|s| !s.closing) {
            // SAFETY: close(2) takes only an integer. The slot never had a Close submitted, so
            // this loop still owns slot.fd and this is its one close (Slot holds a RawFd, which
            // closes nothing on drop).
            unsafe { libc::close(slot.fd) };
        }
        Ok(())
    }

    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: push requires the entry's pointers to stay valid until its completion.
            // They point into a boxed Slot (receive buffer spare capacity, iovecs, msghdr, and
            // the reply bytes the iovecs name, owned by the slot's queued Reply) or into
            // self.timespec. A slot has one operation in flight at a time and its Box is freed
            // only when its Close completes, and neither the buffer nor the front reply is
            // touched while an operation is pending; the timespec lives as long as the ring,
            // which is declared first and so dropped first. `drain` shuts every socket down so
            // pending receives complete before the loop is dropped.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                self.in_flight += 1;
                return;
            }
            // Queue full: hand the batch to the kernel and retry.
            if self.ring.submit().is_err() {
                return;
            }
        }
    }

    fn arm_accept(&mut self) {
        let fd = types::Fd(self.listener.as_raw_fd());
        let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
        self.push(
            opcode::AcceptMulti::new(fd)
                .flags(flags)
                .build()
                .user_data(ACCEPT),
        );
    }

    fn arm_timer(&mut self) {
        let ts: *const types::Timespec = &*self.timespec;
        self.push(opcode::Timeout::new(ts).build().user_data(TIMER));
    }

    fn on_accept(&mut self, res: i32, flags: u32, now: Instant) {
        if !cqueue::more(flags) && !self.stopping {
            self.arm_accept();
        }
        if res < 0 {
            return;
        }
        if self.stopping {
            // SAFETY: res >= 0 is the fd this accept just created; no slot was made for it, so
            // this close is its only one.
            unsafe { libc::close(res) };
            return;
        }
        let slot = Box::new(Slot {
            fd: res,
            conn: Connection::new(now),
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; 2],
            // SAFETY: msghdr is a C struct of pointers and integers, for which all-zero is valid:
            // null name, iov and control pointers with zero lengths, flags 0.
            msg: unsafe { std::mem::zeroed() },
            closing: false,
        });
        let idx = match self.free.pop() {
            Some(idx) => {
                self.slots[idx] = Some(slot);
                idx
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.arm_recv(idx);
    }

    fn on_conn(&mut self, idx: usize, op: u64, res: i32, now: Instant) {
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        match op {
            CLOSE => {
                self.slots[idx] = None;
                self.free.push(idx);
            }
            RECV if res > 0 => {
                // SAFETY: this completion is the slot's one Recv, built by arm_recv from
                // conn.spare(): buf's spare capacity and its length. buf was not touched while it
                // was pending, and the kernel wrote res > 0 bytes (at most that length) at the
                // start of it, so len + res bytes are initialised and within capacity.
                unsafe { slot.conn.buf.set_len(slot.conn.buf.len() + res as usize) };
                slot.conn.received(res as usize, self.srv, now);
                self.send_next(idx, now);
            }
            SEND if res >= 0 => {
                slot.conn.last_active = now;
                if let Some(reply) = slot.conn.out.front_mut() {
                    reply.sent += res as u64;
                }
                self.send_next(idx, now);
            }
            POLL if res >= 0 => self.send_next(idx, now),
            _ => self.close(idx),
        }
    }

    /// Continues the front reply, starts the next, or goes back to receiving.
    fn send_next(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        while let Some(reply) = slot.conn.out.front_mut() {
            if reply.is_done() {
                let close = reply.close;
                slot.conn.out.pop_front();
                if close {
                    return self.close(idx);
                }
                continue;
            }
            if matches!(reply.body, Body::File { .. }) {
                match write_reply(slot.fd, reply) {
                    Ok(()) => {
                        slot.conn.last_active = now;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let fd = types::Fd(slot.fd);
                        let sqe = opcode::PollAdd::new(fd, libc::POLLOUT as u32).build();
                        return self.push(sqe.user_data(conn_token(idx, POLL)));
                    }
                    Err(_) => return self.close(idx),
                }
            }
            let head_len = reply.head.len() as u64;
            let body = reply.body.as_slice().unwrap_or(&[]);
            let (first, second): (&[u8], &[u8]) = if reply.sent < head_len {
                (&reply.head[reply.sent as usize..], body)
            } else {
                (&body[(reply.sent - head_len) as usize..], &[])
            };
            for (iov, part) in slot.iov.iter_mut().zip([first, second]) {
                *iov = libc::iovec {
                    iov_base: part.as_ptr() as *mut libc::c_void,
                    iov_len: part.len(),
                };
            }
            let count = if second.is_empty() { 1 } else { 2 };
            let fd = types::Fd(slot.fd);
            let sqe = if reply.fin_with_data {
                // As write_reply does: MSG_MORE holds the tail back so the close that follows
                // sends it with the FIN in one segment.
                slot.msg.msg_iov = slot.iov.as_mut_ptr();
                slot.msg.msg_iovlen = count as _;
                opcode::SendMsg::new(fd, &slot.msg)
                    .flags(libc::MSG_MORE as u32)
                    .build()
            } else {
                opcode::Writev::new(fd, slot.iov.as_ptr(), count).build()
            };
            return self.push(sqe.user_data(conn_token(idx, SEND)));
        }
        if slot.conn.session.is_closing() {
            self.close(idx);
        } else {
            self.arm_recv(idx);
        }
    }

    fn arm_recv(&mut self, idx: usize) {
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        let (ptr, len) = slot.conn.spare();
        let sqe = opcode::Recv::new(types::Fd(slot.fd), ptr, len as u32).build();
        self.push(sqe.user_data(conn_token(idx, RECV)));
    }

    fn close(&mut self, idx: usize) {
        let Some(slot) = self.slots[idx].as_mut() else {
            return;
        };
        if slot.closing {
            return;
        }
        slot.closing = true;
        let sqe = opcode::Close::new(types::Fd(slot.fd)).build();
        self.push(sqe.user_data(conn_token(idx, CLOSE)));
    }

    /// Expired connections are shut down; their pending operation then completes and closes them.
    fn sweep(&mut self, now: Instant) {
        for slot in self.slots.iter_mut().flatten() {
            let idle = slot.conn.out.is_empty();
            if !slot.closing && slot.conn.check_timeout(self.srv, now) {
                // Only a 408 queued just now is written here: no send of it can be in flight.
                if let (true, Some(reply)) = (idle, slot.conn.out.front_mut()) {
                    let _ = write_reply(slot.fd, reply);
                }
                // SAFETY: shutdown(2) takes only integers; the slot is not closing, so no Close
                // was submitted and slot.fd is still this loop's open connection socket.
                unsafe { libc::shutdown(slot.fd, libc::SHUT_RDWR) };
            }
        }
    }
}
