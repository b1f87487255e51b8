//! The `--model` strategies: how connections are accepted and driven.
//!
//! Each model's `spawn` binds, starts its threads and returns at once; [`spawn`] picks one.

mod blocking;
mod epoll;
mod launch;
mod thread;
mod threadpool;
mod tokio;
mod uring;

pub use launch::{Launch, Spawned};

/// How connections are accepted and driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Model {
    /// One non-blocking epoll loop per core, each with its own SO_REUSEPORT listener.
    #[default]
    Epoll,
    /// One acceptor handing connections to a pool of blocking worker threads.
    Threadpool,
    /// A thread per connection.
    Thread,
    /// The tokio multi-threaded runtime.
    Tokio,
    /// io_uring loops batching accepts, receives, sends and closes per iteration.
    Uring,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Model::Epoll => "epoll",
            Model::Threadpool => "threadpool",
            Model::Thread => "thread",
            Model::Tokio => "tokio",
            Model::Uring => "uring",
        })
    }
}

/// Starts `model`: binds its listeners and spawns its threads.
pub fn spawn(model: Model, launch: Launch) -> Spawned {
    match model {
        Model::Epoll => epoll::spawn(launch),
        Model::Threadpool => threadpool::spawn(launch),
        Model::Thread => thread::spawn(launch),
        Model::Tokio => self::tokio::spawn(launch),
        Model::Uring => uring::spawn(launch),
    }
}
