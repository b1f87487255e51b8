//! `kpath serve`: the reference static-file server, and its library API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

pub use crate::io::Io;
use crate::io::{FileStore, RootError};
pub use crate::model::Model;
use crate::model::{self, Launch};
use crate::session::Server;

/// Library options for [`start`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub io: Io,
    pub model: Model,
    /// Close a connection after this many requests (1 closes after every reply).
    pub keepalive: Option<u32>,
    /// Event loops (epoll, uring, tokio) or workers (threadpool); 0 picks a default per model.
    pub threads: usize,
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            root: PathBuf::from("."),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            io: Io::default(),
            model: Model::default(),
            keepalive: None,
            threads: 0,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, clap::Args, Clone)]
#[command(after_help = "Examples:
  kpath serve --root ./www                                  cached files, epoll loops, keep-alive
  kpath serve --root ./www --io mmap --keepalive 1          close after every reply
  kpath serve --root ./www --io sendfile --model threadpool --threads 16 --addr 127.0.0.1:9000
  kpath serve --root ./www --keepalive 0                    0 is unlimited (the default), as in bench")]
pub struct ServeArgs {
    /// Directory to serve; nothing outside it is ever served.
    #[arg(long)]
    pub root: PathBuf,
    /// Listen address; loopback unless you mean otherwise.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    #[arg(long, value_enum, default_value_t = Io::Cached)]
    pub io: Io,
    #[arg(long, value_enum, default_value_t = Model::Epoll)]
    pub model: Model,
    /// Close after N requests per connection: 1 closes after every reply, 0 is unlimited (the
    /// default), as in `kpath bench --keepalive`.
    #[arg(long, default_value_t = 0)]
    pub keepalive: u32,
    /// Event loops or worker threads; default: one per core (threadpool: 64 workers).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seconds a connection may idle, or take to send one request, before it is closed.
    #[arg(long, default_value_t = 30)]
    pub idle_timeout: u64,
}

impl ServeArgs {
    pub fn into_config(self) -> ServerConfig {
        ServerConfig {
            root: self.root,
            addr: self.addr,
            io: self.io,
            model: self.model,
            keepalive: crate::args::keepalive_limit(self.keepalive),
            threads: self.threads,
            idle_timeout: Duration::from_secs(self.idle_timeout.max(1)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Root(#[from] RootError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running server; dropping it shuts it down too.
pub struct ServerHandle {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and joins all server threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                log::error!("a server thread panicked");
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

pub fn start(cfg: ServerConfig) -> Result<ServerHandle, StartError> {
    let files = FileStore::open(&cfg.root, cfg.io)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = match (cfg.threads, cfg.model) {
        (0, Model::Threadpool) => 64,
        (0, _) => cores,
        (n, _) => n,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let launch = Launch {
        srv: Arc::new(Server {
            files,
            keepalive: cfg.keepalive,
            idle_timeout: cfg.idle_timeout,
        }),
        addr: cfg.addr,
        threads,
        stop: Arc::clone(&stop),
    };
    let (local_addr, threads) =
        model::spawn(cfg.model, launch).map_err(|source| StartError::Listen {
            addr: cfg.addr,
            source,
        })?;
    Ok(ServerHandle {
        local_addr,
        stop,
        threads,
    })
}

/// Serves until SIGINT or SIGTERM, then shuts down cleanly.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.into_config();
    let (io, model) = (cfg.io, cfg.model);
    // Block the signals before any server thread exists so all of them inherit the mask
    // and only the sigwait below sees the signal.
    let set = termination_signals();
    // SAFETY: &set points at a sigset_t initialised by sigemptyset/sigaddset, read only; a null
    // old-mask pointer is allowed and means the previous mask is not written anywhere.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    anyhow::ensure!(rc == 0, "cannot block SIGINT/SIGTERM");
    let handle = start(cfg).context("starting the server")?;
    eprintln!(
        "kpath serve: listening on http://{} (io={io}, model={model})",
        handle.local_addr()
    );
    let mut sig = 0;
    // SAFETY: &set is the same initialised sigset_t, read only, and &mut sig a live c_int
    // that sigwait writes the signal number into.
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!("kpath serve: signal {sig}, shutting down");
    handle.shutdown();
    Ok(())
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array, valid when zeroed; sigemptyset then initialises it
    // as POSIX requires before sigaddset, and both only write through &mut set, a live local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}
