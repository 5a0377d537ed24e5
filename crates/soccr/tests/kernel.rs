//! Kernel tests of TCP repair on loopback connections (need root, or at
//! least CAP_NET_ADMIN and CAP_NET_RAW; skipped with a message otherwise, or
//! failed when CRUST_REQUIRE_PRIVILEGED=1, as in CI).
//!
//! Each test makes a connection, fills its queues, dumps both ends, frees
//! them silently, rebuilds both (restore on both before finish on either)
//! and checks that every byte arrives once and in order, EOFs where a FIN
//! was sent, and no reset. The half-closed states that loopback cannot
//! hold by itself are made under a network lock (nftables rules dropping
//! the connection's packets, letting SOCCR_MARK through), as CRIU does.

use crust_soccr::{tcp_state, Builder, Repair, TcpState};
use crust_sys::net;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../examples/migrate.rs"]
#[allow(dead_code)]
mod migrate;

/// The tests run one at a time: a test's fork of `nft` holds copies of
/// every fd of the process until it execs, which keeps another test's
/// dumped socket alive a moment longer than its close.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn available() -> bool {
    match crust_soccr::repair_available() {
        Ok(()) => true,
        Err(e) => {
            let why = format!("TCP repair is not available: {e}");
            crust_sys::testing::skip(&crust_sys::testing::current_test(), &why)
        }
    }
}

/// Byte `i` of the stream tagged `seed`: a pattern that shows lost,
/// doubled or reordered bytes.
fn pat(seed: u8, i: usize) -> u8 {
    ((i * 7 + seed as usize * 13) % 251) as u8
}

fn pattern(seed: u8, from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| pat(seed, i)).collect()
}

/// (listen address, address the client connects to) for IPv4, IPv6 and
/// IPv4-mapped IPv6 (a dual-stack listener, both ends AF_INET6 sockets with
/// `::ffff:127.0.0.1` addresses).
const FAMILIES: [(&str, &str); 3] = [
    ("127.0.0.1:0", "127.0.0.1"),
    ("[::1]:0", "::1"),
    ("[::]:0", "::ffff:127.0.0.1"),
];

/// One loopback connection: (client, server), both blocking.
struct Pair {
    client: OwnedFd,
    server: OwnedFd,
}

/// Connect a client to a server on `listen` (an address with port 0;
/// `connect_to` is what the client connects to, with the listener's port),
/// with small receive buffers on both ends so that data stays unsent.
fn pair(listen: &str, connect_ip: &str, rcvbuf: i32) -> Pair {
    let la: SocketAddr = listen.parse().unwrap();
    let l = net::socket(net::family_of(&la), libc::SOCK_STREAM, 0).unwrap();
    if rcvbuf > 0 {
        net::setsockopt_int(l.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf).unwrap();
    }
    net::bind(l.as_fd(), &la).unwrap();
    net::listen(l.as_fd(), 1).unwrap();
    let port = net::getsockname(l.as_fd()).unwrap().port();
    let to = SocketAddr::new(connect_ip.parse().unwrap(), port);
    let c = net::socket(net::family_of(&to), libc::SOCK_STREAM, 0).unwrap();
    if rcvbuf > 0 {
        net::setsockopt_int(c.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, rcvbuf).unwrap();
    }
    net::connect(c.as_fd(), &to).unwrap();
    let (s, _) = net::accept4(l.as_fd(), 0).unwrap();
    Pair {
        client: c,
        server: s,
    }
}

/// Write the stream `seed` from byte `from` without blocking until the
/// send buffer is full or `max` bytes went; returns how many.
fn fill(fd: BorrowedFd<'_>, seed: u8, from: usize, max: usize) -> usize {
    let mut n = 0;
    while n < max {
        let chunk = pattern(seed, from + n, (max - n).min(4096));
        match net::send(fd, &chunk, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(k) => n += k,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                // Let loopback deliver, then try once more.
                std::thread::sleep(Duration::from_millis(20));
                match net::send(fd, &chunk, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
                    Ok(k) => n += k,
                    Err(_) => break,
                }
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    n
}

fn tcp_state_of(fd: BorrowedFd<'_>) -> u8 {
    let mut b = [0u8; 8];
    net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b).unwrap();
    b[0]
}

fn wait_for_state(fd: BorrowedFd<'_>, want: u8) {
    let t = Instant::now();
    while tcp_state_of(fd) != want {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "socket stays in {} instead of {}",
            crust_soccr::state_name(tcp_state_of(fd)),
            crust_soccr::state_name(want)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The buffer sizes of a socket (as getsockopt reports them: doubled).
fn bufs(fd: BorrowedFd<'_>) -> (i32, i32) {
    (
        net::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap(),
        net::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap(),
    )
}

/// Dump both ends (both in repair mode before reading either), free them
/// silently, rebuild both (restore both, then finish both). Checks the
/// states are as expected.
fn migrate_pair(p: Pair, want: (u8, u8)) -> (Pair, TcpState, TcpState) {
    let (cb, sb) = (bufs(p.client.as_fd()), bufs(p.server.as_fd()));
    let rc = Repair::start(p.client).unwrap();
    let rs = Repair::start(p.server).unwrap();
    let cst = rc.state().unwrap();
    let sst = rs.state().unwrap();
    assert_eq!(
        (cst.state, sst.state),
        want,
        "states {} / {}",
        crust_soccr::state_name(cst.state),
        crust_soccr::state_name(sst.state)
    );
    assert_eq!(cst.local, sst.remote);
    assert_eq!(cst.remote, sst.local);
    drop(rc);
    drop(rs);
    let mut bc = Builder::new(&cst.local, None).unwrap();
    let mut bs = Builder::new(&sst.local, None).unwrap();
    for (b, (r, s)) in [(&bc, cb), (&bs, sb)] {
        net::setsockopt_int(b.fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, r / 2).unwrap();
        net::setsockopt_int(b.fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, s / 2).unwrap();
    }
    bc.restore(&cst).unwrap();
    bs.restore(&sst).unwrap();
    let client = bc.finish(&cst).unwrap();
    let server = bs.finish(&sst).unwrap();
    (Pair { client, server }, cst, sst)
}

/// Read from `fd` until EOF (if `eof`) or `want` bytes, checking they are
/// the stream `seed` from byte `from`. Fails on a reset.
fn expect_stream(fd: OwnedFd, seed: u8, from: usize, want: usize, eof: bool) -> OwnedFd {
    let mut s = TcpStream::from(fd);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    loop {
        if !eof && got == want {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                assert!(
                    got + n <= want,
                    "more bytes than sent: {} > {want}",
                    got + n
                );
                assert_eq!(
                    &buf[..n],
                    &pattern(seed, from + got, n)[..],
                    "bytes {}..{} of stream {seed}",
                    from + got,
                    from + got + n
                );
                got += n;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                panic!("connection reset after {got} of {want} bytes")
            }
            Err(e) => panic!("read after {got} of {want} bytes of stream {seed}: {e}"),
        }
    }
    assert_eq!(got, want, "bytes of stream {seed}");
    OwnedFd::from(s)
}

/// Both directions at once (a thread reads the server side).
fn expect_both(p: Pair, c2s: (usize, bool), s2c: (usize, bool), seeds: (u8, u8)) -> Pair {
    let server = p.server;
    let t = std::thread::spawn(move || expect_stream(server, seeds.0, 0, c2s.0, c2s.1));
    let client = expect_stream(p.client, seeds.1, 0, s2c.0, s2c.1);
    let server = t.join().unwrap();
    Pair { client, server }
}

fn check_no_error(fd: BorrowedFd<'_>) {
    let e = net::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR).unwrap();
    assert_eq!(
        e,
        0,
        "socket error {}",
        std::io::Error::from_raw_os_error(e)
    );
}

fn established(listen: &str, connect_ip: &str) {
    let _serial = serial();
    if !available() {
        return;
    }
    let p = pair(listen, connect_ip, 4096);
    // Client to server: more than the server's small buffer takes, so the
    // server has unread bytes and the client unsent ones.
    let c2s = fill(p.client.as_fd(), 1, 0, 200_000);
    // Server to client: a little, left unread.
    let s2c = fill(p.server.as_fd(), 2, 0, 3000);
    std::thread::sleep(Duration::from_millis(50));
    let (p, cst, sst) = migrate_pair(p, (tcp_state::ESTABLISHED, tcp_state::ESTABLISHED));
    assert!(cst.unsq_len > 0, "client has unsent data: {cst:?}");
    assert!(!sst.inq.is_empty() && !cst.inq.is_empty());
    assert_eq!(
        cst.local.is_ipv4(),
        listen.starts_with(|c: char| c.is_ascii_digit())
    );
    let p = expect_both(p, (c2s, false), (s2c, false), (1, 2));
    // The stream goes on both ways after the move.
    let mut c = TcpStream::from(p.client);
    let mut s = TcpStream::from(p.server);
    c.write_all(&pattern(1, c2s, 5000)).unwrap();
    s.write_all(&pattern(2, s2c, 7000)).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let server = expect_stream(OwnedFd::from(s), 1, c2s, 5000, true);
    let client = expect_stream(OwnedFd::from(c), 2, s2c, 7000, true);
    check_no_error(client.as_fd());
    check_no_error(server.as_fd());
}

#[test]
fn established_ipv4() {
    established("127.0.0.1:0", "127.0.0.1");
}

#[test]
fn established_ipv6() {
    established("[::1]:0", "::1");
}

#[test]
fn established_ipv4_mapped() {
    established("[::]:0", "::ffff:127.0.0.1");
}

/// Megabytes in both queues: the receive queue goes back in pieces, the
/// unsent tail waits for the reader.
#[test]
fn large_queues() {
    let _serial = serial();
    if !available() {
        return;
    }
    let p = pair("127.0.0.1:0", "127.0.0.1", 0);
    for fd in [p.client.as_fd(), p.server.as_fd()] {
        net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 2 << 20).unwrap();
        net::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, 4 << 20).unwrap();
    }
    let c2s = fill(p.client.as_fd(), 14, 0, 64 << 20);
    let s2c = fill(p.server.as_fd(), 15, 0, 3 << 20);
    std::thread::sleep(Duration::from_millis(50));
    let (p, cst, sst) = migrate_pair(p, (tcp_state::ESTABLISHED, tcp_state::ESTABLISHED));
    eprintln!(
        "client: inq {} outq {} unsent {}; server: inq {} outq {} unsent {}",
        cst.inq.len(),
        cst.outq.len(),
        cst.unsq_len,
        sst.inq.len(),
        sst.outq.len(),
        sst.unsq_len
    );
    assert!(sst.inq.len() > 1 << 20, "server has megabytes unread");
    assert!(cst.unsq_len > 0);
    let p = expect_both(p, (c2s, false), (s2c, false), (14, 15));
    check_no_error(p.client.as_fd());
    check_no_error(p.server.as_fd());
}

/// Bytes sent but not acknowledged (the server got them, its ACKs were
/// dropped): put back as sent, retransmitted after the unlock, and read
/// once.
#[test]
fn sent_unacked() {
    let _serial = serial();
    if !available() {
        return;
    }
    for (listen, ip) in FAMILIES {
        let p = pair(listen, ip, 0);
        let Some(lock) = Lock::new(&p) else { return };
        for fd in [p.client.as_fd(), p.server.as_fd()] {
            // No Nagle: every write goes out without waiting for ACKs.
            net::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1).unwrap();
        }
        lock.set(false, true);
        let c2s = fill(p.client.as_fd(), 16, 0, 30_000);
        let s2c = fill(p.server.as_fd(), 17, 0, 20_000);
        std::thread::sleep(Duration::from_millis(50));
        lock.set(true, true);
        let (p, cst, sst) = migrate_pair(p, (tcp_state::ESTABLISHED, tcp_state::ESTABLISHED));
        eprintln!(
            "{listen}: client sent-unacked {} unsent {}",
            cst.sent_len(),
            cst.unsq_len
        );
        assert_eq!(cst.outq.len(), c2s, "none acknowledged");
        assert!(cst.sent_len() > 0, "some sent: {}", cst.unsq_len);
        assert_eq!(sst.inq.len(), cst.sent_len(), "what was sent was received");
        assert!(cst.nodelay && sst.nodelay);
        assert_eq!(sst.outq.len(), s2c, "the server's bytes never left");
        drop(lock);
        let p = expect_both(p, (c2s, false), (s2c, false), (16, 17));
        check_no_error(p.client.as_fd());
        check_no_error(p.server.as_fd());
    }
}

/// FIN_WAIT1 with the FIN still queued behind unsent data (no lock
/// needed): the client wrote more than the server takes, then shut down.
#[test]
fn fin_wait1_unsent() {
    let _serial = serial();
    if !available() {
        return;
    }
    for (listen, ip) in FAMILIES {
        let p = pair(listen, ip, 4096);
        let c2s = fill(p.client.as_fd(), 3, 0, 200_000);
        net::shutdown(p.client.as_fd(), libc::SHUT_WR).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (p, cst, _) = migrate_pair(p, (tcp_state::FIN_WAIT1, tcp_state::ESTABLISHED));
        assert!(cst.unsq_len > 0);
        let p = expect_both(p, (c2s, true), (0, false), (3, 4));
        // The server answers and closes; the client sees it all.
        let mut s = TcpStream::from(p.server);
        s.write_all(&pattern(4, 0, 1000)).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let client = expect_stream(p.client, 4, 0, 1000, true);
        check_no_error(client.as_fd());
        check_no_error(s.as_fd());
    }
}

/// FIN_WAIT2 and CLOSE_WAIT: the client shut down, the server got the FIN
/// (no lock needed).
#[test]
fn fin_wait2_close_wait() {
    let _serial = serial();
    if !available() {
        return;
    }
    for (listen, ip) in FAMILIES {
        let p = pair(listen, ip, 0);
        let c2s = fill(p.client.as_fd(), 5, 0, 2000);
        let s2c = fill(p.server.as_fd(), 6, 0, 1500);
        net::shutdown(p.client.as_fd(), libc::SHUT_WR).unwrap();
        wait_for_state(p.server.as_fd(), tcp_state::CLOSE_WAIT);
        wait_for_state(p.client.as_fd(), tcp_state::FIN_WAIT2);
        let (p, _, sst) = migrate_pair(p, (tcp_state::FIN_WAIT2, tcp_state::CLOSE_WAIT));
        assert_eq!(sst.inq.len(), c2s);
        // The server reads the data then EOF; the client the unread bytes.
        let p = expect_both(p, (c2s, true), (s2c, false), (5, 6));
        // The server can still write, then close.
        let mut s = TcpStream::from(p.server);
        s.write_all(&pattern(6, s2c, 3000)).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let client = expect_stream(p.client, 6, s2c, 3000, true);
        check_no_error(client.as_fd());
        check_no_error(s.as_fd());
    }
}

/// A network lock for tests: nftables rules in a table of our own dropping
/// the packets of one loopback connection in the chosen directions, letting
/// packets marked SOCCR_MARK through. Removed on drop.
struct Lock {
    table: String,
    client: u16,
    server: u16,
}

impl Lock {
    fn new(p: &Pair) -> Option<Lock> {
        Lock::ports(
            net::getsockname(p.client.as_fd()).unwrap().port(),
            net::getsockname(p.server.as_fd()).unwrap().port(),
        )
    }

    fn ports(client: u16, server: u16) -> Option<Lock> {
        let ok = Command::new("nft")
            .args(["list", "tables"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            crust_sys::testing::skip(
                &crust_sys::testing::current_test(),
                "nft (nftables) is not usable here",
            );
            return None;
        }
        Some(Lock {
            table: format!("crust_soccr_test_{}_{client}", std::process::id()),
            client,
            server,
        })
    }

    /// Drop client-to-server and/or server-to-client packets.
    fn set(&self, c2s: bool, s2c: bool) {
        let mut rules = format!("meta mark {:#x} accept\n", crust_soccr::SOCCR_MARK);
        if c2s {
            rules += &format!("tcp sport {} tcp dport {} drop\n", self.client, self.server);
        }
        if s2c {
            rules += &format!("tcp sport {} tcp dport {} drop\n", self.server, self.client);
        }
        let t = &self.table;
        let script = format!(
            "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  {rules} }}\n}}\n"
        );
        nft(&script);
    }
}

fn nft(script: &str) {
    let mut c = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "nft -f failed on:\n{script}");
}

impl Drop for Lock {
    fn drop(&mut self) {
        let t = &self.table;
        nft(&format!("table inet {t}\ndelete table inet {t}\n"));
    }
}

/// FIN_WAIT2 and LAST_ACK: the client shut down (FIN acked), then the
/// server shut down under a lock so that its FIN is not acknowledged.
#[test]
fn fin_wait2_last_ack() {
    let _serial = serial();
    if !available() {
        return;
    }
    for (listen, ip) in FAMILIES {
        let p = pair(listen, ip, 0);
        let Some(lock) = Lock::new(&p) else { return };
        let s2c = fill(p.server.as_fd(), 7, 0, 2500);
        net::shutdown(p.client.as_fd(), libc::SHUT_WR).unwrap();
        wait_for_state(p.server.as_fd(), tcp_state::CLOSE_WAIT);
        wait_for_state(p.client.as_fd(), tcp_state::FIN_WAIT2);
        lock.set(true, true);
        net::shutdown(p.server.as_fd(), libc::SHUT_WR).unwrap();
        wait_for_state(p.server.as_fd(), tcp_state::LAST_ACK);
        let (p, _, _) = migrate_pair(p, (tcp_state::FIN_WAIT2, tcp_state::LAST_ACK));
        drop(lock);
        let p = expect_both(p, (0, true), (s2c, true), (8, 7));
        check_no_error(p.client.as_fd());
        check_no_error(p.server.as_fd());
    }
}

/// FIN_WAIT1 on both ends (both FINs sent, neither received), then
/// FIN_WAIT1 and CLOSING (the client's FIN reached the server, whose ACK
/// did not come back), each made under a lock.
#[test]
fn fin_wait1_and_closing() {
    let _serial = serial();
    if !available() {
        return;
    }
    for ((listen, ip), closing) in FAMILIES.iter().flat_map(|f| [(*f, false), (*f, true)]) {
        let p = pair(listen, ip, 0);
        let Some(lock) = Lock::new(&p) else { return };
        let c2s = fill(p.client.as_fd(), 9, 0, 1000);
        let s2c = fill(p.server.as_fd(), 10, 0, 1200);
        std::thread::sleep(Duration::from_millis(20));
        lock.set(true, true);
        net::shutdown(p.client.as_fd(), libc::SHUT_WR).unwrap();
        net::shutdown(p.server.as_fd(), libc::SHUT_WR).unwrap();
        let want = if closing {
            // Let the client's retransmitted FIN through to the server.
            lock.set(false, true);
            wait_for_state(p.server.as_fd(), tcp_state::CLOSING);
            lock.set(true, true);
            (tcp_state::FIN_WAIT1, tcp_state::CLOSING)
        } else {
            (tcp_state::FIN_WAIT1, tcp_state::FIN_WAIT1)
        };
        let (p, _, _) = migrate_pair(p, want);
        drop(lock);
        let p = expect_both(p, (c2s, true), (s2c, true), (9, 10));
        check_no_error(p.client.as_fd());
        check_no_error(p.server.as_fd());
    }
}

/// SYN_SENT: a connect whose SYN the lock drops is dumped (its peer given
/// by the caller, as getpeername does not tell it), rebuilt, and completes
/// after the unlock.
#[test]
fn syn_sent() {
    let _serial = serial();
    if !available() {
        return;
    }
    for (listen, ip) in FAMILIES {
        let la: SocketAddr = listen.parse().unwrap();
        let l = net::socket(net::family_of(&la), libc::SOCK_STREAM, 0).unwrap();
        net::bind(l.as_fd(), &la).unwrap();
        net::listen(l.as_fd(), 1).unwrap();
        let la = SocketAddr::new(
            ip.parse().unwrap(),
            net::getsockname(l.as_fd()).unwrap().port(),
        );
        let ca = SocketAddr::new(la.ip(), 0);
        let c = net::socket(
            net::family_of(&ca),
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
            0,
        )
        .unwrap();
        net::bind(c.as_fd(), &ca).unwrap();
        let cport = net::getsockname(c.as_fd()).unwrap().port();
        let Some(lock) = Lock::ports(cport, la.port()) else {
            return;
        };
        lock.set(true, true);
        let e = net::connect(c.as_fd(), &la).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS));
        assert_eq!(tcp_state_of(c.as_fd()), tcp_state::SYN_SENT);
        let r = Repair::start(c).unwrap();
        assert!(r.state().is_err(), "no peer name in SYN_SENT");
        let st = r.state_with_remote(Some(la)).unwrap();
        assert_eq!(st.state, tcp_state::SYN_SENT);
        assert_eq!(st.remote, la);
        drop(r);
        let mut b = Builder::new(&st.local, None).unwrap();
        b.restore(&st).unwrap();
        let c = b.finish(&st).unwrap();
        drop(lock);
        // The retransmitted SYN gets through now.
        wait_for_state(c.as_fd(), tcp_state::ESTABLISHED);
        let (s, peer) = net::accept4(l.as_fd(), 0).unwrap();
        assert_eq!(peer, st.local);
        let mut c = TcpStream::from(c);
        c.write_all(&pattern(13, 0, 10_000)).unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let s = expect_stream(s, 13, 0, 10_000, true);
        check_no_error(s.as_fd());
        check_no_error(c.as_fd());
    }
}

/// Resume after a dump (`crust dump -R`): the connection goes on.
#[test]
fn resume_keeps_connection() {
    let _serial = serial();
    if !available() {
        return;
    }
    let p = pair("127.0.0.1:0", "127.0.0.1", 4096);
    let c2s = fill(p.client.as_fd(), 11, 0, 100_000);
    let r = Repair::start(p.client).unwrap();
    let st = r.state().unwrap();
    assert!(st.outq.len() + st.inq.len() > 0);
    let client = r.resume().unwrap();
    let p = Pair {
        client,
        server: p.server,
    };
    let p = expect_both(p, (c2s, false), (0, false), (11, 12));
    check_no_error(p.client.as_fd());
}

/// Errors: a state that cannot be rebuilt, finish without restore, a
/// listening socket.
#[test]
fn refusals() {
    let _serial = serial();
    if !available() {
        return;
    }
    let l = net::socket(libc::AF_INET, libc::SOCK_STREAM, 0).unwrap();
    net::bind(l.as_fd(), &"127.0.0.1:0".parse().unwrap()).unwrap();
    net::listen(l.as_fd(), 1).unwrap();
    let e = Repair::start(l).unwrap_err();
    assert!(
        matches!(e, crust_soccr::Error::UnsupportedState { state: 10, .. }),
        "{e}"
    );
    let u = net::socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
    assert!(matches!(
        Repair::start(u),
        Err(crust_soccr::Error::RepairUnavailable { .. })
    ));
    let p = pair("127.0.0.1:0", "127.0.0.1", 0);
    let r = Repair::start(p.client).unwrap();
    let st = r.state().unwrap();
    let b = Builder::new(&st.local, None).unwrap();
    assert!(matches!(
        b.finish(&st),
        Err(crust_soccr::Error::NotRestored { .. })
    ));
    // The dumped socket still holds the connection: a rebuild must fail
    // rather than make a second socket for it.
    let mut b = Builder::new(&st.local, None).unwrap();
    assert!(b.restore(&st).is_err());
    drop(r);
}

/// The example's whole run (examples/migrate.rs).
#[test]
fn example_migrate() {
    let _serial = serial();
    if !available() {
        return;
    }
    migrate::run().unwrap();
}
