//! One non-blocking epoll loop per thread, each with its own SO_REUSEPORT listener.
//!
//! Connections are registered edge-triggered for input and output once, right after accept, so
//! a request costs one epoll_wait share, a read and a write, with no epoll_ctl in steady state;
//! a connection closed while registered leaves the epoll set through eventpoll_release_file.
//! A freshly accepted connection is served at once, which saves a wakeup when its request has
//! already arrived.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::launch::{spawn_loops, Launch, Spawned, TICK};
use crate::conn::{Connection, Next};
use crate::session::Server;
use crate::sys::cvt;

const LISTENER: u64 = u64::MAX;
const CONN_EVENTS: u32 = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

pub fn spawn(l: Launch) -> Spawned {
    spawn_loops(l, "epoll", Ok, |listener, srv, stop| {
        let mut ev = match EventLoop::new(listener, srv) {
            Ok(ev) => ev,
            Err(e) => return log::error!("epoll loop: {e}"),
        };
        while !stop.load(Ordering::Relaxed) {
            if let Err(e) = ev.turn() {
                return log::error!("epoll loop: {e}");
            }
        }
    })
}

struct Slot {
    stream: TcpStream,
    conn: Connection,
    /// The client shut its side down; close once the replies are out.
    eof: bool,
}

struct EventLoop<'a> {
    srv: &'a Server,
    ep: OwnedFd,
    listener: TcpListener,
    /// Indexed by fd: fds are unique per process and this loop only sees its own.
    slots: Vec<Option<Slot>>,
    events: Vec<libc::epoll_event>,
    last_sweep: Instant,
}

impl<'a> EventLoop<'a> {
    fn new(listener: TcpListener, srv: &'a Server) -> io::Result<Self> {
        // SAFETY: epoll_create1 takes only a flags integer and touches no memory of ours.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let ep = cvt(ep as isize)? as RawFd;
        // SAFETY: cvt returned early on -1, so `ep` is the epoll fd just created: open, and held
        // by nothing else, so the OwnedFd is its only owner and closes it exactly once.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        ctl(
            &ep,
            libc::EPOLL_CTL_ADD,
            listener.as_raw_fd(),
            libc::EPOLLIN as u32,
            LISTENER,
        )?;
        Ok(EventLoop {
            srv,
            ep,
            listener,
            slots: Vec::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; 256],
            last_sweep: Instant::now(),
        })
    }

    fn turn(&mut self) -> io::Result<()> {
        // SAFETY: maxevents is self.events.len(), the number of initialised epoll_events in
        // that live Vec (256, so the cast cannot truncate), and the kernel writes at most
        // maxevents entries from its start; no other reference to the Vec exists during the call.
        let n = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                TICK.as_millis() as i32,
            )
        };
        let n = match cvt(n as isize) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        for i in 0..n {
            let token = self.events[i].u64;
            if token == LISTENER {
                self.accept_all(now);
            } else {
                self.serve_ready(token as usize, now);
            }
        }
        if now.duration_since(self.last_sweep) >= TICK {
            self.last_sweep = now;
            self.sweep(now);
        }
        Ok(())
    }

    fn accept_all(&mut self, now: Instant) {
        loop {
            // SAFETY: null addr and addrlen are allowed and make accept4 write no peer address,
            // so the call touches no memory of ours; the listener fd is borrowed from
            // self.listener, which outlives the call.
            let fd = unsafe {
                libc::accept4(
                    self.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                return; // EAGAIN, or EMFILE: retried on the next readiness.
            }
            // SAFETY: fd >= 0 is the socket accept4 just created; nothing else holds it, so the
            // TcpStream (kept in the slot indexed by this fd) is its only owner and its drop
            // the one close.
            let stream = unsafe { TcpStream::from_raw_fd(fd) };
            let idx = fd as usize;
            if self.slots.len() <= idx {
                self.slots.resize_with(idx + 1, || None);
            }
            self.slots[idx] = Some(Slot {
                stream,
                conn: Connection::new(now),
                eof: false,
            });
            // Registered before it is served, as event-loop servers (nginx among them) do: a
            // connection closed after one reply then leaves the epoll set on close, the
            // eventpoll_release_file path whose cost kpath is built to show.
            if ctl(&self.ep, libc::EPOLL_CTL_ADD, fd, CONN_EVENTS, idx as u64).is_err() {
                self.slots[idx] = None;
                continue;
            }
            // TCP_DEFER_ACCEPT usually has the request here already: serve it without waiting
            // for the edge-triggered readiness (which also arrives, and finds nothing new).
            self.serve_ready(idx, now);
        }
    }

    /// Serves the connection in slot `idx` as far as it goes without blocking: reads all that
    /// has arrived, queues the replies it completes, writes what the socket takes, and closes
    /// the connection once it is done (or the client has left and nothing is left to write).
    fn serve_ready(&mut self, idx: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        let fd = slot.stream.as_raw_fd();
        if !slot.conn.session.is_closing() {
            loop {
                let want = slot.conn.spare().1;
                match slot.conn.read_from(fd) {
                    Ok(0) => {
                        slot.eof = true;
                        break;
                    }
                    Ok(n) => {
                        slot.conn.received(n, self.srv, now);
                        // A short read drained the socket; edge-triggering reports anything newer.
                        if n < want || slot.conn.session.is_closing() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        slot.eof = true;
                        slot.conn.out.clear();
                        break;
                    }
                }
            }
        }
        let keep = match slot.conn.flush(fd, now) {
            Next::Write => true,
            Next::Read => !slot.eof,
            Next::Close => false,
        };
        if !keep {
            self.slots[idx] = None; // Dropping the stream closes it and leaves the epoll set.
        }
    }

    fn sweep(&mut self, now: Instant) {
        for slot in self.slots.iter_mut() {
            let Some(s) = slot else { continue };
            if s.conn.check_timeout(self.srv, now) {
                s.conn.flush(s.stream.as_raw_fd(), now);
                *slot = None;
            }
        }
    }
}

fn ctl(ep: &OwnedFd, op: i32, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a live epoll_event on this frame that the kernel only reads (it copies the
    // event in before returning); fds that are not open make the call fail with EBADF.
    let rc = unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd, &mut ev) };
    cvt(rc as isize).map(drop)
}
