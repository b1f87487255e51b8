//! Writing a reply to a socket fd, shared by every model that writes with plain syscalls.
//!
//! Works on blocking and non-blocking sockets alike: it writes as much as the socket takes and
//! reports `WouldBlock` with `reply.sent` advanced, so the caller can resume later.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::reply::{Body, Reply};
use crate::sys::{cvt, setsockopt_int};

/// Writes the rest of `reply`; `Ok(())` once all of it is out.
///
/// A reply marked `fin_with_data` is written with MSG_MORE (sendfile bodies: left under their
/// TCP_CORK), so its tail waits in the socket and the close that follows appends the FIN to it
/// (tcp_send_fin): reply and FIN reach the client as one segment instead of two, one receive
/// and one wakeup fewer on each side, at no extra syscall. Uncorked sendfile bodies
/// (`--io sendfile-nocork`) ignore the mark: nothing of theirs is held back, the FIN included.
pub fn write_reply(fd: RawFd, reply: &mut Reply) -> io::Result<()> {
    if let Body::File { file, cork, .. } = &reply.body {
        let (file_fd, cork) = (file.as_raw_fd(), *cork);
        return write_with_sendfile(fd, file_fd, cork, reply);
    }
    while !reply.is_done() {
        let head_len = reply.head.len() as u64;
        let body = reply.body.as_slice().unwrap_or(&[]);
        let n = if reply.sent < head_len {
            let head = &reply.head[reply.sent as usize..];
            writev(fd, &[head, body], reply.fin_with_data)?
        } else {
            let rest = &body[(reply.sent - head_len) as usize..];
            writev(fd, &[rest], reply.fin_with_data)?
        };
        reply.sent += n as u64;
    }
    Ok(())
}

/// Head with write(2) and body with sendfile(2). With `cork` both go out under TCP_CORK, so they
/// leave as full segments (one, for a small file); without it each call transmits what it
/// wrote at once (the listener set TCP_NODELAY), so the head is a segment of its own.
fn write_with_sendfile(fd: RawFd, file_fd: RawFd, cork: bool, reply: &mut Reply) -> io::Result<()> {
    if cork && !reply.corked {
        set_cork(fd, true)?;
        reply.corked = true;
    }
    let head_len = reply.head.len() as u64;
    while !reply.is_done() {
        let n = if reply.sent < head_len {
            writev(fd, &[&reply.head[reply.sent as usize..]], false)?
        } else {
            let mut offset = (reply.sent - head_len) as libc::off_t;
            let left = reply.total_len() - reply.sent;
            let count = left.min(1 << 30) as usize;
            // SAFETY: the only memory sendfile touches is `offset`, a live off_t it reads and
            // updates; the file's bytes go from page cache to socket inside the kernel. The fds
            // are integers (one that is not open fails with EBADF).
            let n = unsafe { libc::sendfile(fd, file_fd, &mut offset, count) };
            if n == 0 {
                // The file shrank under us: the promised Content-Length cannot be met.
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            cvt(n)?
        };
        reply.sent += n as u64;
    }
    if reply.corked && !reply.fin_with_data {
        set_cork(fd, false)?;
        reply.corked = false;
    }
    Ok(())
}

pub fn set_cork(fd: RawFd, on: bool) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_CORK, i32::from(on))
}

/// writev(2), or sendmsg(2) with MSG_MORE when `more`: the data is held back (below a full
/// segment) for what follows, as under TCP_CORK but for this call only.
fn writev(fd: RawFd, bufs: &[&[u8]], more: bool) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; 2];
    let mut count = 0;
    for b in bufs.iter().filter(|b| !b.is_empty()).take(iov.len()) {
        iov[count] = libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        count += 1;
    }
    // Rust programs ignore SIGPIPE, so a peer that went away yields EPIPE rather than killing
    // the process.
    let n = if more {
        // SAFETY: msghdr is a C struct of pointers and integers, for which all-zero is valid:
        // null name, iov and control pointers with zero lengths, flags 0.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count as _;
        // SAFETY: msg's one non-null pointer is msg_iov, to the first `count` (<= 2) entries of
        // the live `iov`, each naming a slice of `bufs` by its own pointer and length; those
        // are borrowed for the call and only read. No name, no control data.
        unsafe { libc::sendmsg(fd, &msg, libc::MSG_MORE) }
    } else {
        // SAFETY: the first `count` (<= 2) entries of the live `iov` each name a slice of
        // `bufs` by its own pointer and length; those are borrowed for the call and only read.
        unsafe { libc::writev(fd, iov.as_ptr(), count as i32) }
    };
    cvt(n)
}
