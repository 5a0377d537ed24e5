//! One TCP connection carrying a checked stream both ways, across a dump
//! and restore of one of its ends.
//!
//! `tcpstream --role dumped|peer (--connect ADDR | --listen ADDR) [--bytes N]`
//!
//! Each side sends N bytes of a pattern that depends on the byte's position
//! and direction, and checks every byte it receives against the pattern:
//! a byte lost, repeated or out of order fails. Before READY each side
//! shrinks its receive buffer and writes all it can without reading, so at
//! dump time data sits unread in the receive queues and unsent in the send
//! queues of both ends. After SIGTERM each side finishes the exchange,
//! shuts its sending side, reads to end-of-file and reports PASS; a reset
//! (ECONNRESET, EPIPE) or a timeout fails.
//!
//! `--listen` keeps the listening socket open all along (it is dumped
//! too); the side that listens accepts one connection before READY.
//! `--sockopts 1` also sets TCP and socket options on the connection and
//! checks them at the end.
//!
//! `--bufs N` sets SO_SNDBUF and SO_RCVBUF to N on the connection (the
//! kernel doubles them, within net.core.[rw]mem_max) instead of the small
//! receive buffer, and fills the queues until they take nothing more: with
//! megabytes queued both ways and the peer's window closed (zdtm's
//! socket-tcpbuf). `--prefill N` writes at most N bytes before READY
//! (default: half the stream), `--trickle N` writes N more bytes every
//! 100 ms until SIGTERM (default 0): a sender still sending, into a window
//! left open, when the other side is dumped; `--drain N` reads (and checks)
//! at most N bytes every 100 ms until SIGTERM (default 0): a receiver whose
//! window opens while the other side is dumped.

use crust_testprogs::{ensure, finish, ready, start, term_requested, Args};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The byte at position `i` of the stream sent by the dumped side (`up`)
/// or by the peer.
fn pattern(i: u64, up: bool) -> u8 {
    let x = i.wrapping_mul(2654435761) ^ (i >> 13);
    (x as u8) ^ if up { 0x5a } else { 0xc3 }
}

/// What this side has written plus what waits unread in its receive queue:
/// it stops changing when the queues of both ends are full.
fn queued_bytes(fd: i32, sent: u64) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: n is a valid out-pointer for FIONREAD's int.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    sent + if r == 0 { n.max(0) as u64 } else { 0 }
}

fn setopt(fd: i32, level: i32, opt: i32, v: i32) -> Result<(), String> {
    // SAFETY: v is a readable c_int for the call.
    let r = unsafe { libc::setsockopt(fd, level, opt, &v as *const i32 as *const libc::c_void, 4) };
    ensure!(
        r == 0,
        "setsockopt({level}, {opt}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn getopt(fd: i32, level: i32, opt: i32) -> Result<i32, String> {
    let mut v = 0i32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: v and len are valid out-pointers for a c_int option.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut v as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(
        r == 0,
        "getsockopt({level}, {opt}): {}",
        std::io::Error::last_os_error()
    );
    Ok(v)
}

/// Options set with --sockopts, checked at the end: (level, option, value).
const OPTS: &[(i32, i32, i32)] = &[
    (libc::IPPROTO_TCP, libc::TCP_NODELAY, 1),
    (libc::IPPROTO_TCP, libc::TCP_CORK, 1),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 321),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 17),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 5),
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
    (libc::SOL_SOCKET, libc::SO_PRIORITY, 3),
];

struct Side {
    sock: TcpStream,
    up: bool,
    total: u64,
    sent: u64,
    got: u64,
}

impl Side {
    /// Write what the socket takes now (non-blocking).
    fn push(&mut self) -> Result<bool, String> {
        let mut moved = false;
        let mut buf = [0u8; 16384];
        while self.sent < self.total {
            let n = (self.total - self.sent).min(buf.len() as u64) as usize;
            for (k, b) in buf[..n].iter_mut().enumerate() {
                *b = pattern(self.sent + k as u64, self.up);
            }
            match self.sock.write(&buf[..n]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(w) => {
                    self.sent += w as u64;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("write at byte {}: {e}", self.sent)),
            }
        }
        Ok(moved)
    }

    /// Read and check what has arrived (non-blocking), at most `max`
    /// bytes. Ok(true) at EOF.
    fn pull(&mut self, max: u64) -> Result<(bool, bool), String> {
        let mut moved = false;
        let mut buf = [0u8; 16384];
        let end = self.got.saturating_add(max);
        while self.got < end {
            let n = (end - self.got).min(buf.len() as u64) as usize;
            match self.sock.read(&mut buf[..n]) {
                Ok(0) => return Ok((moved, true)),
                Ok(n) => {
                    for (k, b) in buf[..n].iter().enumerate() {
                        let i = self.got + k as u64;
                        ensure!(
                            i < self.total,
                            "received more than the {} bytes sent",
                            self.total
                        );
                        let want = pattern(i, !self.up);
                        ensure!(
                            *b == want,
                            "byte {i} is {b:#04x}, expected {want:#04x} (lost, repeated or reordered data)"
                        );
                    }
                    self.got += n as u64;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok((moved, false)),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read at byte {}: {e}", self.got)),
            }
        }
        Ok((moved, false))
    }
}

fn run(args: &Args) -> Result<(), String> {
    let dumped = match args.opt("role") {
        Some("dumped") => true,
        Some("peer") => false,
        r => return Err(format!("--role dumped|peer, not {r:?}")),
    };
    let total = args.num("bytes", 4 << 20);
    let sockopts = args.num("sockopts", 0) == 1;
    let (sock, listener) = if let Some(a) = args.opt("listen") {
        let addr: SocketAddr = a.parse().map_err(|e| format!("--listen {a}: {e}"))?;
        let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
        (s, Some(l))
    } else if let Some(a) = args.opt("connect") {
        let addr: SocketAddr = a.parse().map_err(|e| format!("--connect {a}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let s = loop {
            match TcpStream::connect(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("connect {addr}: {e}")),
            }
        };
        (s, None)
    } else {
        return Err("--listen or --connect".into());
    };
    let fd = sock.as_raw_fd();
    let bufs = args.num("bufs", 0).min(i32::MAX as u64) as i32;
    if bufs > 0 {
        setopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, bufs)?;
        setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, bufs)?;
    } else {
        setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 65536)?;
    }
    if sockopts {
        for &(l, o, v) in OPTS {
            setopt(fd, l, o, v)?;
        }
    }
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut side = Side {
        sock,
        up: dumped,
        total,
        sent: 0,
        got: 0,
    };
    // Fill the queues: write what goes, read nothing. Let the other side
    // do the same for a moment, then write again.
    // With --bufs, until neither side has moved a byte for a while (the
    // queues are full), within 5 s.
    let pre = args.num("prefill", total / 2).min(total);
    let trickle = args.num("trickle", 0);
    let drain = args.num("drain", 0);
    let t = Instant::now();
    let mut last = Instant::now();
    let mut queued = 0;
    loop {
        let keep = side.total;
        side.total = pre;
        side.push()?;
        side.total = keep;
        let now = queued_bytes(fd, side.sent);
        if now != queued {
            queued = now;
            last = Instant::now();
        }
        let filled = bufs == 0 || last.elapsed() > Duration::from_millis(300);
        if (t.elapsed() > Duration::from_millis(300) && filled)
            || t.elapsed() > Duration::from_secs(5)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ready(args);
    let mut quota = pre;
    let mut tick = Instant::now();
    while !term_requested() {
        if (trickle > 0 || drain > 0) && tick.elapsed() >= Duration::from_millis(100) {
            tick = Instant::now();
            quota = (quota.max(side.sent) + trickle).min(total);
            let keep = side.total;
            side.total = quota;
            side.push()?;
            side.total = keep;
            if drain > 0 {
                side.pull(drain)?;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Finish the exchange, at full speed now.
    if bufs == 0 {
        setopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20)?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut eof = false;
    let mut shut = false;
    while side.got < total || side.sent < total || !eof {
        ensure!(
            Instant::now() < deadline,
            "timed out: sent {}/{total}, received {}/{total}",
            side.sent,
            side.got
        );
        let w = side.push()?;
        if side.sent == total && !shut {
            side.sock
                .shutdown(std::net::Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            shut = true;
        }
        let (r, e) = side.pull(u64::MAX)?;
        if e {
            ensure!(
                side.got == total,
                "end of stream after {} of {total} bytes",
                side.got
            );
            eof = true;
        }
        if !w && !r {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN | if side.sent < total { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            // SAFETY: p is one valid pollfd.
            unsafe { libc::poll(&mut p, 1, 50) };
        }
    }
    if sockopts {
        for &(l, o, v) in OPTS {
            let got = getopt(fd, l, o)?;
            ensure!(got == v, "option ({l}, {o}) is {got}, expected {v}");
        }
    }
    if let Some(l) = listener {
        // The listening socket still listens.
        let a = l.local_addr().map_err(|e| e.to_string())?;
        let acc = getopt(l.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ACCEPTCONN)?;
        ensure!(acc == 1, "the listening socket on {a} no longer listens");
    }
    Ok(())
}

fn main() {
    let args = start();
    let verdict = run(&args);
    if verdict.is_err() && !std::path::Path::new(&args.ready).exists() {
        // Failed before READY: say why on stderr too.
        eprintln!("{:?}", verdict);
    }
    finish(&args, verdict)
}
