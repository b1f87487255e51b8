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
    // SAFETY: socket(2) takes only integers and touches no memory of ours.
    let fd = unsafe { libc::socket(domain, ty, 0) };
    let fd = cvt(fd as isize)? as i32;
    // SAFETY: cvt returned early on -1, so `fd` is the socket just created, held by nothing
    // else: the OwnedFd (then the TcpListener) is its only owner and closes it once.
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
    // SAFETY: sockaddr wrote a sockaddr_in or sockaddr_in6 at the start of the live local
    // `storage` and `len` is exactly that type's size, so the kernel reads only initialised
    // bytes inside it.
    let rc = unsafe { libc::bind(raw, (&storage as *const libc::sockaddr_storage).cast(), len) };
    cvt(rc as isize)?;
    // SAFETY: listen(2) takes only integers; `raw` is the socket `fd` owns.
    let rc = unsafe { libc::listen(raw, 4096) };
    cvt(rc as isize)?;
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
