//! The `--model` strategies. Each `spawn` binds, starts its threads and returns at once.

pub mod epoll;
pub mod thread;
pub mod threadpool;
pub mod tokio;
pub mod uring;

mod blocking;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a server thread goes without checking for shutdown and timeouts.
pub const TICK: Duration = Duration::from_millis(100);

pub type Spawned = io::Result<(SocketAddr, Vec<JoinHandle<()>>)>;

/// Accepts on a non-blocking listener until `stop`, waking at least every [`TICK`].
/// Used by the models whose connections are driven by blocking threads.
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
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, TICK.as_millis() as i32) };
            }
            // EMFILE and friends: back off instead of spinning.
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// Binds one SO_REUSEPORT listener per event loop and runs `run` on a thread for each.
/// `prepare` runs on the calling thread, so a setup failure (no io_uring, say) fails `start`.
pub fn spawn_loops<T: Send + 'static>(
    l: crate::serve::Launch,
    name: &str,
    prepare: impl Fn(TcpListener) -> io::Result<T>,
    run: fn(T, &crate::session::Server, &AtomicBool),
) -> Spawned {
    let listeners = crate::net::listen_many(l.addr, l.threads.max(1))?;
    let addr = listeners[0].local_addr()?;
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (srv, stop) = (Arc::clone(&l.srv), Arc::clone(&l.stop));
        let state = prepare(listener)?;
        threads.push(
            std::thread::Builder::new()
                .name(format!("kpath-{name}-{i}"))
                .spawn(move || run(state, &srv, &stop))?,
        );
    }
    Ok((addr, threads))
}
