//! TCP segment counts of a socket, from TCP_INFO: how many packets an exchange really took.
//!
//! The load generator adds up its sockets' counts just before closing each, so on loopback they
//! cover every segment of a connection in both directions up to the client's close: its FIN,
//! the ACKs after it, and a server FIN that arrives after it are not seen. Unlike the
//! machine-wide `Tcp: OutSegs` of /proc/net/snmp, other traffic on the machine never counts.

use std::io;
use std::ops::AddAssign;
use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpSegments {
    /// Sockets counted.
    pub connections: u64,
    /// Segments the client sent (requests, ACKs, its SYN), `tcpi_segs_out`.
    pub sent: u64,
    /// Segments the client received (replies, ACKs, SYN-ACK), `tcpi_segs_in`.
    pub received: u64,
    /// Sent segments that carried data (requests), `tcpi_data_segs_out`.
    pub data_sent: u64,
    /// Received segments that carried data (replies), `tcpi_data_segs_in`.
    pub data_received: u64,
}

impl AddAssign for TcpSegments {
    fn add_assign(&mut self, o: TcpSegments) {
        self.connections += o.connections;
        self.sent += o.sent;
        self.received += o.received;
        self.data_sent += o.data_sent;
        self.data_received += o.data_received;
    }
}

/// The counts of one TCP socket so far (Linux 4.6+; older kernels report zeros).
pub fn tcp_segments(fd: RawFd) -> io::Result<TcpSegments> {
    // SAFETY: tcp_info is a C struct of integer fields only (u8, u32, u64), for which all-zero
    // is valid; zeros are also what an older kernel's shorter tcp_info leaves in the tail.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: optval points at `info`, a live, exclusively borrowed tcp_info, and optlen at
    // `len`, its size: the kernel writes at most that many bytes into it and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    crate::sys::cvt(rc as isize)?;
    Ok(TcpSegments {
        connections: 1,
        sent: info.tcpi_segs_out.into(),
        received: info.tcpi_segs_in.into(),
        data_sent: info.tcpi_data_segs_out.into(),
        data_received: info.tcpi_data_segs_in.into(),
    })
}
