//! A thread per connection: the simplest model, and the baseline the others improve on.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::blocking::{self, accept_until_stopped};
use super::launch::{Launch, Spawned};
use crate::net;

pub fn spawn(l: Launch) -> Spawned {
    let listener = net::listen(l.addr, false, true)?;
    let addr = listener.local_addr()?;
    let acceptor = std::thread::Builder::new()
        .name("kpath-accept".into())
        .spawn(move || {
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            accept_until_stopped(&listener, &l.stop, |stream| {
                conns.retain(|t| !t.is_finished());
                let (srv, stop) = (Arc::clone(&l.srv), Arc::clone(&l.stop));
                let spawned = std::thread::Builder::new()
                    .name("kpath-conn".into())
                    .stack_size(256 * 1024)
                    .spawn(move || blocking::serve(stream, &srv, &stop));
                // Out of threads: the stream is dropped, which closes it.
                if let Ok(t) = spawned {
                    conns.push(t);
                }
            });
            debug_assert!(l.stop.load(Ordering::Relaxed));
            for t in conns {
                let _ = t.join();
            }
        })?;
    Ok((addr, vec![acceptor]))
}
