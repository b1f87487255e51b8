//! What every model is started with, and what it hands back.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net;
use crate::session::Server;

/// Longest a server thread goes without checking for shutdown and timeouts.
pub const TICK: Duration = Duration::from_millis(100);

/// What every model gets: the shared server state and a flag polled at least every [`TICK`]
/// to notice shutdown.
pub struct Launch {
    pub srv: Arc<Server>,
    pub addr: SocketAddr,
    /// Event loops or worker threads, already defaulted by `serve::start`.
    pub threads: usize,
    pub stop: Arc<AtomicBool>,
}

/// The address a model bound and the threads `ServerHandle` joins on shutdown.
pub type Spawned = io::Result<(SocketAddr, Vec<JoinHandle<()>>)>;

/// Binds one SO_REUSEPORT listener per event loop and runs `run` on a thread for each.
/// `prepare` runs on the calling thread, so a setup failure (no io_uring, say) fails `start`.
pub fn spawn_loops<T: Send + 'static>(
    l: Launch,
    name: &str,
    prepare: impl Fn(TcpListener) -> io::Result<T>,
    run: fn(T, &Server, &AtomicBool),
) -> Spawned {
    let listeners = net::listen_many(l.addr, l.threads.max(1))?;
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
