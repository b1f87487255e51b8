//! Listening sockets with the options every model shares.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::{cvt, setsockopt_int, sockaddr};

/// Binds a listener. `reuseport` lets several event loops each own a listener on one port,
/// with the kernel spreading connections among them.
pub fn listen(addr: SocketAddr, reuseport: bool, nonblocking: bool) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let mut ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    if nonblocking {
        ty |= libc::SOCK_NONBLOCK;
    }
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = cvt(unsafe { libc::socket(domain, ty, 0) } as isize)? as i32;
    // SAFETY: fresh fd owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if reuseport {
        setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
    }
    // Accepted sockets inherit these. TCP_NODELAY: replies go out whole, so Nagle only delays
    // the tail of large bodies. TCP_DEFER_ACCEPT: a connection is handed over once its request
    // has arrived (every HTTP client speaks first), which saves a wakeup per connection.
    setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    setsockopt_int(raw, libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, 1)?;
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a sockaddr of `len` bytes.
    cvt(
        unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) }
            as isize,
    )?;
    // SAFETY: listen on a bound socket.
    cvt(unsafe { libc::listen(raw, 4096) } as isize)?;
    Ok(TcpListener::from(fd))
}

/// Binds one listener per event loop on the same port; the first picks the port when it is 0.
pub fn listen_many(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let first = listen(addr, true, true)?;
    let bound = first.local_addr()?;
    let mut all = vec![first];
    for _ in 1..count {
        all.push(listen(bound, true, true)?);
    }
    Ok(all)
}
