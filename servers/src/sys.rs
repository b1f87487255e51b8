//! The few libc wrappers the server and the load generator share: error mapping, integer socket
//! options and socket addresses. Nothing here knows about HTTP.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Maps a syscall's -1 to the OS error; retries on EINTR are left to the caller's loop.
pub fn cvt(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

pub fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: optval points at `value`, a live i32 on this stack frame, and optlen is exactly
    // size_of::<i32>(), so the kernel reads no more than that object. An invalid `fd` makes the
    // call fail with EBADF/ENOTSOCK; it cannot touch memory.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    cvt(rc as isize).map(drop)
}

/// `addr` as the C socket address bind(2) and connect(2) take, with its length.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is a plain C struct of integers and byte arrays, for which the
    // all-zero bit pattern is valid (it is the unspecified family, AF_UNSPEC).
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is defined to be at least as large as, and aligned for,
            // every sockaddr type (128 bytes, 8-aligned, against sockaddr_in's 16 bytes), so the
            // write through the cast pointer stays inside `storage` and is aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as for sockaddr_in: sockaddr_in6 (28 bytes, 4-aligned) fits inside the
            // 128-byte, 8-aligned sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
