//! The tokio multi-threaded runtime: a task per connection.
//!
//! Reads and writes go through the same buffer and reply code as the other models, run inside
//! tokio's readiness wrappers (`async_io`), so the difference measured is the runtime itself.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};

use super::launch::{Launch, Spawned, TICK};
use crate::conn::{Connection, Next};
use crate::net;
use crate::send::write_reply;
use crate::session::Server;

pub fn spawn(l: Launch) -> Spawned {
    let std_listener = net::listen(l.addr, false, true)?;
    let addr = std_listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(l.threads.max(1))
        .thread_name("kpath-tokio")
        .enable_all()
        .build()?;
    let main = std::thread::Builder::new()
        .name("kpath-tokio-main".into())
        .spawn(move || {
            rt.block_on(async {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(listener) => listener,
                    Err(e) => return log::error!("tokio listener: {e}"),
                };
                let mut tick = tokio::time::interval(TICK);
                while !l.stop.load(Ordering::Relaxed) {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(serve(stream, Arc::clone(&l.srv)));
                            }
                        }
                        _ = tick.tick() => {}
                    }
                }
            });
            // Dropping the runtime cancels every connection task and closes its socket.
            rt.shutdown_timeout(TICK);
        })?;
    Ok((addr, vec![main]))
}

async fn serve(stream: TcpStream, srv: Arc<Server>) {
    let fd = stream.as_raw_fd();
    let mut conn = Connection::new(Instant::now());
    loop {
        let read = tokio::time::timeout(
            TICK,
            stream.async_io(Interest::READABLE, || conn.read_from(fd)),
        );
        match read.await {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(n)) => conn.received(n, &srv, Instant::now()),
            Err(_elapsed) => {
                if conn.check_timeout(&srv, Instant::now()) {
                    let _ = write_reply_once(&stream, &mut conn);
                    return;
                }
                continue;
            }
        }
        let written = tokio::time::timeout(srv.idle_timeout, flush(&stream, &mut conn));
        match written.await {
            Ok(Ok(Next::Read)) => {}
            _ => return,
        }
    }
}

/// Writes every queued reply, waiting for writability as needed.
async fn flush(stream: &TcpStream, conn: &mut Connection) -> io::Result<Next> {
    let fd = stream.as_raw_fd();
    while let Some(reply) = conn.out.front_mut() {
        stream
            .async_io(Interest::WRITABLE, || write_reply(fd, reply))
            .await?;
        let close = reply.close;
        conn.out.pop_front();
        if close {
            return Ok(Next::Close);
        }
    }
    Ok(if conn.session.is_closing() {
        Next::Close
    } else {
        Next::Read
    })
}

/// Best-effort write of a final reply (a 408) without waiting.
fn write_reply_once(stream: &TcpStream, conn: &mut Connection) -> io::Result<()> {
    match conn.out.front_mut() {
        Some(reply) => write_reply(stream.as_raw_fd(), reply),
        None => Ok(()),
    }
}
