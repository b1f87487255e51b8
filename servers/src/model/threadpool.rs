//! One acceptor thread handing connections to a fixed pool of blocking workers.
//!
//! A worker owns a connection until it closes, so at most `threads` connections are served
//! at once and the rest wait in the queue, as in classic pre-forked servers.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::blocking::{self, accept_until_stopped};
use super::launch::{Launch, Spawned, TICK};
use crate::net;

pub fn spawn(l: Launch) -> Spawned {
    let listener = net::listen(l.addr, false, true)?;
    let addr = listener.local_addr()?;
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let rx = Arc::new(Mutex::new(rx));
    let mut threads = Vec::with_capacity(l.threads + 1);
    for i in 0..l.threads.max(1) {
        let (rx, srv, stop) = (Arc::clone(&rx), Arc::clone(&l.srv), Arc::clone(&l.stop));
        threads.push(
            std::thread::Builder::new()
                .name(format!("kpath-worker-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || loop {
                    let next = rx.lock().map(|rx| rx.recv_timeout(TICK));
                    match next {
                        Ok(Ok(stream)) => blocking::serve(stream, &srv, &stop),
                        Ok(Err(mpsc::RecvTimeoutError::Timeout)) => {
                            if stop.load(Ordering::Relaxed) {
                                return;
                            }
                        }
                        _ => return,
                    }
                })?,
        );
    }
    let stop = Arc::clone(&l.stop);
    threads.push(
        std::thread::Builder::new()
            .name("kpath-accept".into())
            .spawn(move || {
                accept_until_stopped(&listener, &stop, |stream| {
                    let _ = tx.send(stream);
                })
            })?,
    );
    Ok((addr, threads))
}
