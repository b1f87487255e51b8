//! Accepting connections for, and serving each from, a thread that blocks on it (the thread and
//! threadpool models).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::launch::TICK;
use crate::conn::{Connection, Next};
use crate::session::Server;

/// Serves `stream` until the client leaves, a reply closes it, it times out, or the server stops.
/// Reads time out every [`TICK`] so the thread notices shutdown and slow clients.
pub fn serve(stream: TcpStream, srv: &Server, stop: &AtomicBool) {
    if stream.set_read_timeout(Some(TICK)).is_err()
        || stream.set_write_timeout(Some(srv.idle_timeout)).is_err()
    {
        return;
    }
    let fd = stream.as_raw_fd();
    let mut conn = Connection::new(Instant::now());
    while !stop.load(Ordering::Relaxed) {
        match conn.read_from(fd) {
            Ok(0) => return,
            Ok(n) => {
                let now = Instant::now();
                conn.received(n, srv, now);
                // A blocked write past SO_SNDTIMEO comes back as WouldBlock: the client stopped reading.
                if conn.flush(fd, now) != Next::Read {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                let now = Instant::now();
                if conn.check_timeout(srv, now) {
                    conn.flush(fd, now);
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Accepts on a non-blocking listener until `stop`, waking at least every [`TICK`], and hands
/// each connection, made blocking, to `on_conn`.
pub fn accept_until_stopped(
    listener: &TcpListener,
    stop: &AtomicBool,
    mut on_conn: impl FnMut(TcpStream),
) {
    let mut pfd = libc::pollfd {
        fd: listener.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(false).is_ok() {
                    on_conn(stream);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // SAFETY: nfds is 1 and &mut pfd points at one live pollfd on this frame, the only
                // memory poll reads and writes; its fd is the listener, borrowed for the loop.
                unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as i32) };
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => std::thread::sleep(TICK),
        }
    }
}
