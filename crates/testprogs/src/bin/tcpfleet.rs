//! A TCP service and its fleet of clients, each connection exchanging
//! sequenced, checksummed messages, so a lost, duplicated or reordered
//! byte in either direction is seen (issue 15's migration scenario).
//!
//! Server (the workload that moves):
//! `tcpfleet --mode server --ready F --result F --listen ADDR:PORT
//! [--mb N --rate MBPS --fraction PCT --probe FILE]`
//! listens (the listener stays open: clients may come at any time), holds
//! N MiB rewritten at MBPS MB/s with the probe of memwriter
//! (crust_testprogs::memgen), writes READY, then serves every connection
//! until SIGTERM. Each request is `[u32 conn][u32 len][u64 seq]` and `len`
//! payload bytes (the pattern of conn and seq); the server checks the
//! conn id stays the same on a connection, seq is the next one, the
//! payload is right, and answers `[u64 seq][u64 h]` where h is the FNV-1a
//! hash of every byte it has received on the connection. PASS at SIGTERM
//! if no request was wrong, no connection failed (a peer's close is fine)
//! and the memory is intact.
//!
//! Clients (not dumped): `tcpfleet --mode client --ready F --result F
//! --connect ADDR:PORT [--conns N] [--interval-ms I] [--msg-bytes B]
//! [--timeout-ms T] [--status FILE]`
//! opens N connections (default 100), does one round trip on each, writes
//! READY, then sends one request per connection every I ms (default 50),
//! one outstanding at a time, and checks each answer (its own hash of what
//! it sent). FILE (every 200 ms): `rt=<round trips> min=<fewest on one
//! connection> maxwait=<longest wait for an answer, ms> err=<first error or
//! ->`. PASS at SIGTERM if no connection failed and no answer was wrong
//! or later than T ms (default 120000).

use crust_testprogs::memgen::{MemGen, Probe, Rate};
use crust_testprogs::{ensure, finish, ready, start, term_requested, write_atomic, Args, XorShift};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const HDR: usize = 16;
const MAX_MSG: usize = 1 << 16;

fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

fn payload(conn: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut rng = XorShift(((u64::from(conn) << 40) ^ seq.wrapping_mul(0x9E37_79B9)) | 1);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn request(conn: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(HDR + len);
    m.extend_from_slice(&conn.to_le_bytes());
    m.extend_from_slice(&(len as u32).to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&payload(conn, seq, len));
    m
}

/// Writes all of `data` on a non-blocking socket (messages are small; a
/// full buffer is waited for a while).
fn write_all_nb(s: &mut TcpStream, mut data: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !data.is_empty() {
        match s.write(data) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                ensure!(Instant::now() < deadline, "write stuck for 60 s");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

fn poll_fds(pfds: &mut [libc::pollfd], ms: i32) -> Result<(), String> {
    // SAFETY: pfds is a live, writable array of pfds.len() pollfds for the
    // duration of the call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        ensure!(e.kind() == ErrorKind::Interrupted, "poll: {e}");
    }
    Ok(())
}

/// One connection as the server sees it.
struct Served {
    s: TcpStream,
    buf: Vec<u8>,
    conn: Option<u32>,
    next: u64,
    hash: u64,
}

impl Served {
    /// Handles the complete requests in the buffer.
    fn serve(&mut self) -> Result<(), String> {
        while self.buf.len() >= HDR {
            let conn = u32::from_le_bytes(self.buf[0..4].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(self.buf[4..8].try_into().unwrap_or_default()) as usize;
            let seq = u64::from_le_bytes(self.buf[8..16].try_into().unwrap_or_default());
            ensure!(len <= MAX_MSG, "request of {len} bytes (a garbled header)");
            if self.buf.len() < HDR + len {
                return Ok(());
            }
            ensure!(
                *self.conn.get_or_insert(conn) == conn,
                "connection {:?} sent a request of connection {conn}",
                self.conn
            );
            ensure!(
                seq == self.next,
                "connection {conn}: request {seq}, expected {} (lost or reordered bytes)",
                self.next
            );
            ensure!(
                self.buf[HDR..HDR + len] == payload(conn, seq, len)[..],
                "connection {conn}: request {seq} has a wrong payload"
            );
            self.hash = fnv(self.hash, &self.buf[..HDR + len]);
            self.next += 1;
            let mut ans = seq.to_le_bytes().to_vec();
            ans.extend_from_slice(&self.hash.to_le_bytes());
            write_all_nb(&mut self.s, &ans).map_err(|e| format!("connection {conn}: {e}"))?;
            self.buf.drain(..HDR + len);
        }
        Ok(())
    }
}

fn server(args: &Args) -> Result<(), String> {
    let addr = args.opt("listen").unwrap_or("127.0.0.1:0");
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let mut m = MemGen::new(args.num("mb", 0));
    let fraction = args
        .opt("fraction")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let probe = Probe::new(args.opt("probe").map(std::path::Path::new), fraction);
    let mut rate = Rate::new(args.num("rate", 0) * 1_000_000);
    ready(args);
    let mut conns: Vec<Served> = Vec::new();
    let (mut served, mut closed, mut requests) = (0usize, 0usize, 0u64);
    let mut buf = vec![0u8; 65536];
    while !term_requested() {
        probe.poll(&mut m);
        rate.tick(&mut m);
        let mut pfds: Vec<libc::pollfd> = std::iter::once(l.as_raw_fd())
            .chain(conns.iter().map(|c| c.s.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        poll_fds(&mut pfds, 5)?;
        if pfds.first().is_some_and(|p| p.revents != 0) {
            loop {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(true).map_err(|e| e.to_string())?;
                        s.set_nodelay(true).map_err(|e| e.to_string())?;
                        conns.push(Served {
                            s,
                            buf: Vec::new(),
                            conn: None,
                            next: 0,
                            hash: FNV0,
                        });
                        served += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("accept: {e}")),
                }
            }
        }
        let mut gone = Vec::new();
        for (i, p) in pfds.iter().enumerate().skip(1) {
            if p.revents == 0 {
                continue;
            }
            let c = &mut conns[i - 1];
            match c.s.read(&mut buf) {
                Ok(0) => gone.push(i - 1),
                Ok(k) => {
                    c.buf.extend_from_slice(&buf[..k]);
                    let before = c.next;
                    c.serve()?;
                    requests += c.next - before;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection {:?}: read: {e}", c.conn)),
            }
        }
        for i in gone.into_iter().rev() {
            conns.remove(i);
            closed += 1;
        }
    }
    eprintln!(
        "tcpfleet server: {served} connections ({closed} closed by the peer), {requests} requests; {} page rewrites over {} pages",
        m.written,
        m.pages()
    );
    m.verify()
}

/// One connection as a client holds it.
struct Client {
    s: TcpStream,
    id: u32,
    seq: u64,
    hash: u64,
    sent_at: Option<Instant>,
    next_at: Instant,
    got: Vec<u8>,
    trips: u64,
}

impl Client {
    fn send(&mut self, len: usize) -> Result<(), String> {
        let req = request(self.id, self.seq, len);
        self.hash = fnv(self.hash, &req);
        write_all_nb(&mut self.s, &req).map_err(|e| format!("connection {}: {e}", self.id))?;
        self.sent_at = Some(Instant::now());
        Ok(())
    }

    /// Reads what is there; returns the wait if the answer is complete.
    fn receive(&mut self) -> Result<Option<Duration>, String> {
        let mut b = [0u8; 64];
        match self.s.read(&mut b) {
            Ok(0) => return Err(format!("connection {}: closed by the server", self.id)),
            Ok(k) => self.got.extend_from_slice(&b[..k]),
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("connection {}: read: {e}", self.id)),
        }
        ensure!(
            self.got.len() <= HDR,
            "connection {}: {} bytes of answer, more than asked",
            self.id,
            self.got.len()
        );
        if self.got.len() < HDR {
            return Ok(None);
        }
        let seq = u64::from_le_bytes(self.got[0..8].try_into().unwrap_or_default());
        let h = u64::from_le_bytes(self.got[8..16].try_into().unwrap_or_default());
        ensure!(
            seq == self.seq && h == self.hash,
            "connection {}: answer ({seq}, {h:#x}) to request {} expected hash {:#x}",
            self.id,
            self.seq,
            self.hash
        );
        self.got.clear();
        self.seq += 1;
        self.trips += 1;
        Ok(self.sent_at.take().map(|t| t.elapsed()))
    }
}

fn client(args: &Args) -> Result<(), String> {
    let addr = args.opt("connect").ok_or("missing --connect")?;
    let n = args.num("conns", 100) as u32;
    let every = Duration::from_millis(args.num("interval-ms", 50));
    let len = (args.num("msg-bytes", 256) as usize).min(MAX_MSG);
    let timeout = Duration::from_millis(args.num("timeout-ms", 120_000));
    let status = args.opt("status").map(std::path::PathBuf::from);
    let mut cs = Vec::new();
    for id in 0..n {
        let s = TcpStream::connect(addr).map_err(|e| format!("connect #{id} to {addr}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let now = Instant::now();
        cs.push(Client {
            s,
            id,
            seq: 0,
            hash: FNV0,
            sent_at: None,
            // Spread the connections over the interval.
            next_at: now + every * id / n.max(1),
            got: Vec::new(),
            trips: 0,
        });
    }
    let mut maxwait = Duration::ZERO;
    let mut err: Option<String> = None;
    let mut is_ready = false;
    let mut last_status = Instant::now();
    while !term_requested() {
        let now = Instant::now();
        if err.is_none() {
            for c in &mut cs {
                if c.sent_at.is_none() && now >= c.next_at {
                    if let Err(e) = c.send(len) {
                        err = Some(e);
                        break;
                    }
                    c.next_at = now + every;
                }
                if let Some(t) = c.sent_at {
                    maxwait = maxwait.max(t.elapsed());
                    if t.elapsed() > timeout {
                        err.get_or_insert(format!(
                            "connection {}: no answer to request {} in {} ms",
                            c.id,
                            c.seq,
                            timeout.as_millis()
                        ));
                    }
                }
            }
        }
        let mut pfds: Vec<libc::pollfd> = cs
            .iter()
            .map(|c| libc::pollfd {
                fd: if err.is_some() { -1 } else { c.s.as_raw_fd() },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        poll_fds(&mut pfds, 5)?;
        for (c, p) in cs.iter_mut().zip(&pfds) {
            if p.revents == 0 {
                continue;
            }
            match c.receive() {
                Ok(Some(w)) => maxwait = maxwait.max(w),
                Ok(None) => {}
                Err(e) => {
                    err.get_or_insert(e);
                }
            }
        }
        let min = cs.iter().map(|c| c.trips).min().unwrap_or(0);
        if !is_ready && (min > 0 || n == 0) {
            ready(args);
            is_ready = true;
        }
        if let Some(f) = &status {
            if last_status.elapsed() >= Duration::from_millis(200) || term_requested() {
                let rt: u64 = cs.iter().map(|c| c.trips).sum();
                let text = format!(
                    "rt={rt} min={min} maxwait={} err={}\n",
                    maxwait.as_millis(),
                    err.as_deref().unwrap_or("-").replace(' ', "_")
                );
                let _ = write_atomic(f, &text);
                last_status = Instant::now();
            }
        }
        if !is_ready {
            if let Some(e) = &err {
                return Err(format!("before READY: {e}"));
            }
        }
    }
    // The answers still due are read before the sockets close: a socket
    // closed with an answer unread (or on its way) resets the connection,
    // which the server rightly counts as an error (seen in e2e
    // migbench-netns-pidns-cr, about 1 run in 10).
    let end = Instant::now() + Duration::from_secs(2);
    while err.is_none() && Instant::now() < end && cs.iter().any(|c| c.sent_at.is_some()) {
        let mut pfds: Vec<libc::pollfd> = cs
            .iter()
            .map(|c| libc::pollfd {
                fd: if c.sent_at.is_some() {
                    c.s.as_raw_fd()
                } else {
                    -1
                },
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        poll_fds(&mut pfds, 5)?;
        for (c, p) in cs.iter_mut().zip(&pfds) {
            if p.revents != 0 {
                if let Err(e) = c.receive() {
                    err.get_or_insert(e);
                }
            }
        }
    }
    let rt: u64 = cs.iter().map(|c| c.trips).sum();
    eprintln!(
        "tcpfleet client: {rt} round trips on {n} connections, longest wait {} ms",
        maxwait.as_millis()
    );
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn main() {
    let args = start();
    let verdict = match args.opt("mode") {
        Some("server") => server(&args),
        Some("client") => client(&args),
        _ => Err("--mode server|client is needed".into()),
    };
    finish(&args, verdict)
}
