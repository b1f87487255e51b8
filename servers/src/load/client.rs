//! One load-generating thread: an edge-triggered epoll loop over its share of the connections.
//!
//! A connection is registered once, for input only, and the next request is written as soon as
//! the previous response completes, so steady state costs a read, a write and a share of one
//! epoll_wait per request (wrk re-arms EPOLLOUT around every write, two extra epoll_ctl calls).
//! EPOLLOUT joins the registration only while a write is waiting for room.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::report::{ConnectReason, Errors, Stats};
use super::response::parse_head;
use super::segments::{tcp_segments, TcpSegments};

/// Longest the loop sleeps without checking the deadline and the per-request timeouts.
const TICK: Duration = Duration::from_millis(50);
const BUF: usize = 64 * 1024;

pub struct Plan {
    /// Where to connect (every request names the same host and port).
    pub addr: SocketAddr,
    /// One request per URL; a connection sends them in turn.
    pub requests: Arc<[Box<[u8]>]>,
    pub close: bool,
    pub timeout: Duration,
    pub deadline: Instant,
    /// Open loop: when each connection sends its first request, and the gap between its requests.
    pub schedule: Option<(Vec<Instant>, Duration)>,
    /// This thread's connections, numbered across all threads: connection `id` starts at
    /// request `id % requests.len()`, so the URLs are spread over connections from the start.
    pub ids: Vec<usize>,
    /// Completed requests so far, for the progress bar.
    pub progress: Arc<AtomicU64>,
}

/// The call in which a connection failed.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Op {
    Read,
    Write,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum State {
    /// Open loop: nothing in flight until the next intended send time.
    Waiting,
    Writing,
    Reading,
}

struct Conn {
    stream: Option<TcpStream>,
    state: State,
    /// The request in flight (an index into `Plan::requests`), and the one after it.
    req: usize,
    next_req: usize,
    written: usize,
    buf: Vec<u8>,
    /// Bytes of the current response so far, and its full length once the head is parsed.
    received: usize,
    expect: Option<usize>,
    status: u16,
    server_closes: bool,
    /// Latency origin: the intended send time (open loop) or the actual one (closed loop).
    origin: Instant,
    /// Whether this socket has ever received a byte (an error before that is a connect error).
    answered: bool,
    /// EPOLLOUT is in the registration: a write is waiting for room (or for the connect).
    out_armed: bool,
}

pub fn run(plan: &Plan) -> io::Result<Stats> {
    // SAFETY: epoll_create1 takes only a flags integer and touches no memory of ours.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ep >= 0 is the epoll fd just created, held by nothing else, so the OwnedFd is
    // its only owner and closes it exactly once.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let mut w = Worker {
        plan,
        ep,
        conns: Vec::with_capacity(plan.ids.len()),
        stats: Stats {
            requests: 0,
            bytes: 0,
            errors: Errors::default(),
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .map_err(io::Error::other)?,
            tcp: TcpSegments::default(),
        },
    };
    let now = Instant::now();
    for (i, &id) in plan.ids.iter().enumerate() {
        let origin = plan.schedule.as_ref().map_or(now, |(first, _)| first[i]);
        w.conns.push(Conn {
            stream: None,
            state: State::Waiting,
            req: 0,
            next_req: id % plan.requests.len(),
            written: 0,
            buf: Vec::with_capacity(BUF),
            received: 0,
            expect: None,
            status: 0,
            server_closes: false,
            origin,
            answered: false,
            out_armed: false,
        });
    }
    w.run();
    for c in &mut w.conns {
        close(c, &mut w.stats.tcp);
    }
    Ok(w.stats)
}

/// Closes the connection's socket, first adding its segment counts to `tcp`.
fn close(c: &mut Conn, tcp: &mut TcpSegments) {
    if let Some(stream) = c.stream.take() {
        if let Ok(seen) = tcp_segments(stream.as_raw_fd()) {
            *tcp += seen;
        }
    }
}

/// Set once epoll_pwait2 answered ENOSYS (kernels before 5.11): use epoll_wait from then on.
static NO_PWAIT2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Waits up to `wait` for events. epoll_pwait2 takes a nanosecond timeout, which the open loop
/// needs for precise send times; older kernels get epoll_wait with the timeout rounded up to a
/// millisecond (never 0, which would spin).
fn epoll_wait_for(ep: libc::c_int, events: &mut [libc::epoll_event], wait: Duration) -> i32 {
    if !NO_PWAIT2.load(Ordering::Relaxed) {
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the kernel writes at most events.len() entries (the maxevents passed, at most
        // 256) into the live, exclusively borrowed `events`; it only reads `ts`, a live
        // timespec; a null sigmask means no mask is read or changed.
        let n = unsafe {
            libc::epoll_pwait2(
                ep,
                events.as_mut_ptr(),
                events.len() as i32,
                &ts,
                std::ptr::null(),
            )
        };
        if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
            return n;
        }
        NO_PWAIT2.store(true, Ordering::Relaxed);
    }
    let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
    // SAFETY: as for epoll_pwait2: at most events.len() entries are written into `events`.
    unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, ms) }
}

struct Worker<'a> {
    plan: &'a Plan,
    ep: OwnedFd,
    conns: Vec<Conn>,
    stats: Stats,
}

impl Worker<'_> {
    fn run(&mut self) {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut last_sweep = Instant::now();
        let mut now = last_sweep;
        self.start_due(now);
        while now < self.plan.deadline {
            let wait = self
                .next_wake(now)
                .min(self.plan.deadline.saturating_duration_since(now));
            let n = epoll_wait_for(self.ep.as_raw_fd(), &mut events, wait);
            now = Instant::now();
            for ev in &events[..n.max(0) as usize] {
                self.on_event(ev.u64 as usize, now);
            }
            self.start_due(now);
            if now.duration_since(last_sweep) >= TICK {
                last_sweep = now;
                self.sweep(now);
                self.plan
                    .progress
                    .store(self.stats.requests, Ordering::Relaxed);
            }
        }
        self.plan
            .progress
            .store(self.stats.requests, Ordering::Relaxed);
    }

    /// How long until the next open-loop send is due, or a tick.
    fn next_wake(&self, now: Instant) -> Duration {
        self.conns
            .iter()
            .filter(|c| c.state == State::Waiting)
            .map(|c| c.origin.saturating_duration_since(now))
            .fold(TICK, Duration::min)
    }

    fn start_due(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.state == State::Waiting && c.origin <= now {
                self.begin(i, now);
            }
        }
    }

    /// Starts the connection's next request (connecting first if needed).
    fn begin(&mut self, i: usize, now: Instant) {
        if self.plan.schedule.is_none() {
            self.conns[i].origin = now;
        }
        if self.conns[i].stream.is_none() {
            if let Err(e) = self.connect(i) {
                self.stats.errors.connect += 1;
                let reason = ConnectReason::from_errno(e.raw_os_error());
                *self
                    .stats
                    .errors
                    .connect_by_reason
                    .entry(reason)
                    .or_default() += 1;
                // Retry later rather than spin on a refusing server.
                self.conns[i].origin = now + TICK;
                self.conns[i].state = State::Waiting;
                return;
            }
        }
        let c = &mut self.conns[i];
        c.state = State::Writing;
        c.req = c.next_req;
        c.next_req = (c.req + 1) % self.plan.requests.len();
        c.written = 0;
        self.write(i);
    }

    fn connect(&mut self, i: usize) -> io::Result<()> {
        let addr = self.plan.addr;
        let domain = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: socket(2) takes only integers and touches no memory of ours.
        let fd = unsafe {
            libc::socket(
                domain,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd >= 0 is the socket just created, held by nothing else; the TcpStream is its
        // only owner (the Conn keeps it), so it is closed once, on drop.
        let stream = unsafe { TcpStream::from_raw_fd(fd) };
        crate::sys::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        let (sa, len) = crate::sys::sockaddr(addr);
        // SAFETY: sys::sockaddr wrote a sockaddr_in or sockaddr_in6 at the start of the live
        // local `sa` and `len` is exactly that type's size, so the kernel reads only
        // initialised bytes inside it.
        let rc = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        // Input only: a socket is nearly always writable, so with EPOLLOUT in the set every
        // readiness edge would be reported, including the stale one left by data a read has
        // already taken (then a read finds nothing). Without it the kernel drops those at
        // epoll_wait. EPOLLOUT is armed only while a write waits (see `write`).
        self.ctl(libc::EPOLL_CTL_ADD, fd, i, false)?;
        let c = &mut self.conns[i];
        c.stream = Some(stream);
        c.answered = false;
        c.out_armed = false;
        Ok(())
    }

    fn ctl(&self, op: i32, fd: i32, i: usize, out: bool) -> io::Result<()> {
        let mut events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET;
        if out {
            events |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` is a live epoll_event on this frame that the kernel only reads; fds that
        // are not open make the call fail with EBADF.
        if unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Adds or drops EPOLLOUT; a failure drops the connection (the request is retried).
    fn arm_out(&mut self, i: usize, fd: i32, on: bool) {
        if self.conns[i].out_armed == on {
            return;
        }
        if let Err(e) = self.ctl(libc::EPOLL_CTL_MOD, fd, i, on) {
            return self.fail(i, Op::Write, e.raw_os_error());
        }
        self.conns[i].out_armed = on;
    }

    fn on_event(&mut self, i: usize, now: Instant) {
        match self.conns.get(i).map(|c| c.state) {
            Some(State::Writing) => {
                self.write(i);
                if self.conns[i].state == State::Reading {
                    self.read(i, now);
                }
            }
            Some(State::Reading) => self.read(i, now),
            _ => {}
        }
    }

    fn write(&mut self, i: usize) {
        let c = &mut self.conns[i];
        let Some(fd) = c.stream.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let request = &self.plan.requests[c.req];
        let req = &request[c.written..];
        // SAFETY: the kernel reads req.len() bytes from req.as_ptr(): exactly the live subslice
        // `req` of this plan's request, which nothing mutates during the call.
        let n = unsafe { libc::write(fd, req.as_ptr().cast(), req.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // Not connected yet (EAGAIN/ENOTCONN) or no room: wait for EPOLLOUT.
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOTCONN | libc::EINTR) => self.arm_out(i, fd, true),
                errno => self.fail(i, Op::Write, errno),
            }
            return;
        }
        c.written += n as usize;
        if c.written < request.len() {
            return self.arm_out(i, fd, true);
        }
        c.state = State::Reading;
        c.received = 0;
        c.expect = None;
        c.buf.clear();
        self.arm_out(i, fd, false);
    }

    fn read(&mut self, i: usize, now: Instant) {
        loop {
            let c = &mut self.conns[i];
            let Some(fd) = c.stream.as_ref().map(AsRawFd::as_raw_fd) else {
                return;
            };
            if c.buf.len() == c.buf.capacity() {
                c.buf.clear(); // Body bytes past the parsed head: only their count matters.
            }
            let spare = c.buf.spare_capacity_mut();
            let want = spare.len();
            // SAFETY: `spare` is buf's spare capacity: `want` writable bytes from its pointer,
            // and read(2) writes at most `want` bytes there. MaybeUninit bytes need no init.
            let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), want) };
            if n <= 0 {
                let err = io::Error::last_os_error();
                if n < 0 && matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                    return;
                }
                // EOF or error before the response was complete.
                let errno = if n < 0 { err.raw_os_error() } else { None };
                return self.fail(i, Op::Read, errno);
            }
            let n = n as usize;
            // SAFETY: read returned 0 < n <= want, having written n bytes at the start of the
            // spare capacity, so len + n is within capacity and every byte below it initialised.
            unsafe { c.buf.set_len(c.buf.len() + n) };
            c.received += n;
            c.answered = true;
            if c.expect.is_none() {
                match parse_head(&c.buf, false) {
                    Ok(Some(h)) => {
                        c.expect = Some(h.head_len + h.content_length);
                        c.status = h.status;
                        c.server_closes = h.close;
                        c.buf.clear();
                    }
                    Ok(None) => {}
                    Err(_) => return self.fail(i, Op::Read, Some(libc::EPROTO)),
                }
            }
            match c.expect {
                Some(total) if c.received == total => return self.complete(i, now),
                Some(total) if c.received > total => {
                    return self.fail(i, Op::Read, Some(libc::EPROTO))
                }
                _ => {}
            }
            if n < want {
                return; // Drained; edge-triggering reports anything newer.
            }
        }
    }

    fn complete(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let c = &mut self.conns[i];
        let latency = now.saturating_duration_since(c.origin);
        self.stats
            .latency_ns
            .saturating_record(latency.as_nanos().min(u128::from(u64::MAX)) as u64);
        self.stats.requests += 1;
        self.stats.bytes += c.received as u64;
        if !(200..400).contains(&c.status) {
            self.stats.errors.status += 1;
            *self.stats.errors.by_status.entry(c.status).or_default() += 1;
        }
        if plan.close || c.server_closes {
            close(c, &mut self.stats.tcp);
        }
        c.state = State::Waiting;
        if let Some((_, gap)) = &plan.schedule {
            c.origin += *gap;
        }
        if c.origin <= now || plan.schedule.is_none() {
            self.begin(i, now);
        }
    }

    /// Drops the connection after an error (`errno`: `None` for end of file); the request is
    /// retried on a new one. A socket that never answered failed to connect, whatever the call
    /// that noticed (a non-blocking connect reports a refusal at the first write or read).
    fn fail(&mut self, i: usize, op: Op, errno: Option<i32>) {
        let c = &mut self.conns[i];
        let e = &mut self.stats.errors;
        match (c.answered, op) {
            (false, _) => {
                e.connect += 1;
                *e.connect_by_reason
                    .entry(ConnectReason::from_errno(errno))
                    .or_default() += 1;
            }
            (true, Op::Read) => e.read += 1,
            (true, Op::Write) => e.write += 1,
        }
        close(c, &mut self.stats.tcp);
        c.state = State::Waiting;
        if let Some((_, gap)) = &self.plan.schedule {
            // The failed request counts as sent; the schedule moves on.
            c.origin += *gap;
        } else {
            c.origin = Instant::now() + Duration::from_millis(1);
        }
    }

    fn sweep(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if c.state != State::Waiting && now.duration_since(c.origin) > self.plan.timeout {
                self.stats.errors.timeout += 1;
                close(c, &mut self.stats.tcp);
                c.state = State::Waiting;
                if let Some((_, gap)) = &self.plan.schedule {
                    c.origin += *gap;
                } else {
                    c.origin = now;
                }
            }
        }
    }
}
