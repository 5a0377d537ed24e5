//! Inet sockets other than one long stream, checked after restore.
//!
//! `inetsk --mode udp|opts|states|raw --port P`
//!
//! - `udp`: datagrams queued (IPv4 from a bound sender, IPv6), a connected
//!   socket, a corked one; after restore every datagram is read with its
//!   sender, and the sockets still send and receive.
//! - `opts`: TCP listeners and unconnected sockets with socket, IP and TCP
//!   options (reuseaddr/reuseport, keepalive and its timers, linger,
//!   nodelay, buffer sizes, freebind, TOS, TTL, bound device, a BPF
//!   filter, v6only), checked one by one; the listener still accepts.
//! - `states`: TCP connections with both ends in this process, in
//!   ESTABLISHED, FIN_WAIT2/CLOSE_WAIT, FIN_WAIT1 (FIN behind unsent
//!   data) and LAST_ACK, with data queued; after restore each end is in
//!   its state again and the data and end-of-file arrive as they should.
//! - `raw`: a raw ICMP socket with an ICMP filter, a raw IPv6 ICMP socket
//!   with its filter, a raw UDP socket with IP_HDRINCL; still receiving.

use crust_testprogs::{ensure, finish, ready, start, wait_for_term, Args};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

fn setopt(fd: RawFd, level: i32, opt: i32, v: i32) -> Result<(), String> {
    setopt_bytes(fd, level, opt, &v.to_ne_bytes())
}

fn setopt_bytes(fd: RawFd, level: i32, opt: i32, v: &[u8]) -> Result<(), String> {
    // SAFETY: v is readable for its length during the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            v.as_ptr() as *const libc::c_void,
            v.len() as libc::socklen_t,
        )
    };
    ensure!(
        r == 0,
        "setsockopt({level}, {opt}): {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn getopt_bytes(fd: RawFd, level: i32, opt: i32, buf: &mut [u8]) -> Result<usize, String> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len are valid out-pointers of the given size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            buf.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(
        r == 0,
        "getsockopt({level}, {opt}): {}",
        std::io::Error::last_os_error()
    );
    Ok(len as usize)
}

fn getopt(fd: RawFd, level: i32, opt: i32) -> Result<i32, String> {
    let mut b = [0u8; 4];
    getopt_bytes(fd, level, opt, &mut b)?;
    Ok(i32::from_ne_bytes(b))
}

fn expect_opt(fd: RawFd, level: i32, opt: i32, want: i32, what: &str) -> Result<(), String> {
    let got = getopt(fd, level, opt)?;
    ensure!(got == want, "{what} is {got}, expected {want}");
    Ok(())
}

fn tcp_state(fd: RawFd) -> Result<u8, String> {
    let mut b = [0u8; 256];
    getopt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)?;
    Ok(b[0])
}

fn raw_socket(domain: i32, ty: i32, proto: i32) -> Result<RawFd, String> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    ensure!(
        fd >= 0,
        "socket({domain}, {ty}, {proto}): {}",
        std::io::Error::last_os_error()
    );
    Ok(fd)
}

// ---------------------------------------------------------------- udp

struct Udp {
    u1: UdpSocket,
    s1: UdpSocket,
    u2: UdpSocket,
    s2: UdpSocket,
    u3: UdpSocket,
    u4: UdpSocket,
    /// Corked (UDP_CORK) with data pending for s1.
    u5: UdpSocket,
    /// A datagram begun with MSG_MORE (no UDP_CORK), for s2.
    u6: UdpSocket,
    /// UDP-Lite, IPv4 and IPv6, each with a datagram from its sender.
    lite: Vec<(UdpSocket, UdpSocket)>,
    /// Connected and shut down for writing.
    shut: UdpSocket,
}

/// A UDP-Lite socket bound at `a` (std's UdpSocket over it).
fn udplite(a: &SocketAddr) -> Result<UdpSocket, String> {
    let dom = if a.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let fd = raw_socket(dom, libc::SOCK_DGRAM, 136)?;
    sock_bind(fd, a)?;
    // SAFETY: fd is a bound datagram socket we own.
    Ok(unsafe { UdpSocket::from_raw_fd(fd) })
}

fn send_more(s: &UdpSocket, data: &[u8], flags: i32) -> Result<(), String> {
    // SAFETY: data is readable for its length.
    let r = unsafe {
        libc::send(
            s.as_raw_fd(),
            data.as_ptr() as *const libc::c_void,
            data.len(),
            flags,
        )
    };
    ensure!(
        r == data.len() as isize,
        "send: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

const DGRAMS: [&[u8]; 3] = [b"one", b"second datagram", b"3"];

fn udp_setup(port: u16) -> Result<Udp, String> {
    let b = |a: String| UdpSocket::bind(&a).map_err(|e| format!("bind {a}: {e}"));
    let u1 = b(format!("127.0.0.1:{port}"))?;
    let s1 = b(format!("127.0.0.1:{}", port + 1))?;
    let u2 = b(format!("[::1]:{}", port + 2))?;
    let s2 = b(format!("[::1]:{}", port + 3))?;
    let u3 = b(format!("127.0.0.1:{}", port + 4))?;
    let u4 = b("127.0.0.1:0".into())?;
    for d in DGRAMS {
        s1.send_to(d, u1.local_addr().unwrap())
            .map_err(|e| e.to_string())?;
    }
    s2.send_to(b"over ipv6", u2.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    u3.connect(s1.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    u4.connect(u1.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    setopt(u4.as_raw_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 1)?;
    let u5 = b("127.0.0.1:0".into())?;
    u5.connect(s1.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    setopt(u5.as_raw_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 1)?;
    send_more(&u5, b"pending-1 ", 0)?;
    send_more(&u5, b"pending-2", 0)?;
    let u6 = b("[::1]:0".into())?;
    u6.connect(s2.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    send_more(&u6, b"more-", libc::MSG_MORE)?;
    let mut lite = Vec::new();
    for (r, snd) in [
        (
            format!("127.0.0.1:{}", port + 5),
            format!("127.0.0.1:{}", port + 6),
        ),
        (format!("[::1]:{}", port + 5), format!("[::1]:{}", port + 6)),
    ] {
        let r = udplite(&r.parse().unwrap())?;
        let snd = udplite(&snd.parse().unwrap())?;
        snd.send_to(b"lite", r.local_addr().unwrap())
            .map_err(|e| format!("UDP-Lite send: {e}"))?;
        lite.push((r, snd));
    }
    let shut = b("127.0.0.1:0".into())?;
    shut.connect(s1.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    // SAFETY: plain shutdown(2) on a socket we own.
    let r = unsafe { libc::shutdown(shut.as_raw_fd(), libc::SHUT_WR) };
    ensure!(r == 0, "shutdown: {}", std::io::Error::last_os_error());
    // Let them land.
    std::thread::sleep(Duration::from_millis(50));
    Ok(Udp {
        u1,
        s1,
        u2,
        s2,
        u3,
        u4,
        u5,
        u6,
        lite,
        shut,
    })
}

fn udp_check(u: &Udp) -> Result<(), String> {
    let mut buf = [0u8; 2048];
    for s in [&u.u1, &u.u2, &u.s1] {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
    }
    for (i, d) in DGRAMS.iter().enumerate() {
        let (n, from) =
            u.u1.recv_from(&mut buf)
                .map_err(|e| format!("datagram {i} queued on u1: {e}"))?;
        ensure!(
            &buf[..n] == *d,
            "datagram {i} is {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        ensure!(
            from == u.s1.local_addr().unwrap(),
            "datagram {i} comes from {from}"
        );
    }
    ensure!(u.u1.recv_from(&mut buf).is_err(), "a datagram more on u1");
    let (n, from) =
        u.u2.recv_from(&mut buf)
            .map_err(|e| format!("the IPv6 datagram: {e}"))?;
    ensure!(&buf[..n] == b"over ipv6", "the IPv6 datagram is wrong");
    ensure!(
        from == u.s2.local_addr().unwrap(),
        "the IPv6 datagram comes from {from}"
    );
    // Connected: still connected to s1, sends from its own address.
    let peer = u.u3.peer_addr().map_err(|e| format!("u3 peer: {e}"))?;
    ensure!(
        peer == u.s1.local_addr().unwrap(),
        "u3 is connected to {peer}"
    );
    u.u3.send(b"from u3").map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(20));
    let (n, from) =
        u.s1.recv_from(&mut buf)
            .map_err(|e| format!("u3's datagram: {e}"))?;
    ensure!(
        &buf[..n] == b"from u3" && from == u.u3.local_addr().unwrap(),
        "u3's datagram is wrong"
    );
    expect_opt(
        u.u4.as_raw_fd(),
        libc::IPPROTO_UDP,
        libc::UDP_CORK,
        1,
        "UDP_CORK",
    )?;
    // The pending datagrams went nowhere yet, and go now.
    u.s2.set_nonblocking(true).map_err(|e| e.to_string())?;
    ensure!(u.s1.recv_from(&mut buf).is_err(), "s1 got something early");
    ensure!(u.s2.recv_from(&mut buf).is_err(), "s2 got something early");
    setopt(u.u5.as_raw_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 0)?;
    send_more(&u.u6, b"done", 0)?;
    std::thread::sleep(Duration::from_millis(30));
    let (n, from) =
        u.s1.recv_from(&mut buf)
            .map_err(|e| format!("the corked datagram: {e}"))?;
    ensure!(
        &buf[..n] == b"pending-1 pending-2" && from == u.u5.local_addr().unwrap(),
        "the corked datagram is {:?} from {from}",
        String::from_utf8_lossy(&buf[..n])
    );
    let (n, from) =
        u.s2.recv_from(&mut buf)
            .map_err(|e| format!("the MSG_MORE datagram: {e}"))?;
    ensure!(
        &buf[..n] == b"more-done" && from == u.u6.local_addr().unwrap(),
        "the MSG_MORE datagram is {:?} from {from}",
        String::from_utf8_lossy(&buf[..n])
    );
    for (r, snd) in &u.lite {
        r.set_nonblocking(true).map_err(|e| e.to_string())?;
        let (n, from) = r
            .recv_from(&mut buf)
            .map_err(|e| format!("the UDP-Lite datagram: {e}"))?;
        ensure!(
            &buf[..n] == b"lite" && from == snd.local_addr().unwrap(),
            "the UDP-Lite datagram is wrong ({from})"
        );
    }
    match u.shut.send(b"x") {
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
        r => return Err(format!("send on a socket shut for writing: {r:?}")),
    }
    // Still working: s1 -> u1.
    u.s1.send_to(b"new", u.u1.local_addr().unwrap())
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(20));
    let (n, _) =
        u.u1.recv_from(&mut buf)
            .map_err(|e| format!("a new datagram: {e}"))?;
    ensure!(&buf[..n] == b"new", "the new datagram is wrong");
    Ok(())
}

// ---------------------------------------------------------------- opts

struct Opts {
    l4: TcpListener,
    l6: TcpListener,
    bound: RawFd,
    bound_addr: SocketAddr,
    fresh: RawFd,
}

/// A BPF program accepting every packet: `ret #0xffff`.
fn accept_all() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&0x06u16.to_ne_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&0xffffu32.to_ne_bytes());
    p
}

fn opts_setup(port: u16) -> Result<Opts, String> {
    let fd = raw_socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let so = libc::SOL_SOCKET;
    setopt(fd, so, libc::SO_REUSEADDR, 1)?;
    setopt(fd, so, libc::SO_REUSEPORT, 1)?;
    setopt(fd, so, libc::SO_KEEPALIVE, 1)?;
    setopt(fd, so, libc::SO_SNDBUF, 65536)?;
    setopt(fd, so, libc::SO_RCVBUF, 32768)?;
    let mut l = [0u8; 8];
    l[0..4].copy_from_slice(&1i32.to_ne_bytes());
    l[4..8].copy_from_slice(&7i32.to_ne_bytes());
    setopt_bytes(fd, so, libc::SO_LINGER, &l)?;
    setopt_bytes(fd, so, libc::SO_BINDTODEVICE, b"lo")?;
    let prog = accept_all();
    let fprog = libc::sock_fprog {
        len: 1,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at one valid instruction that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            so,
            libc::SO_ATTACH_FILTER,
            &fprog as *const libc::sock_fprog as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    ensure!(
        r == 0,
        "SO_ATTACH_FILTER: {}",
        std::io::Error::last_os_error()
    );
    let tcp = libc::IPPROTO_TCP;
    setopt(fd, tcp, libc::TCP_NODELAY, 1)?;
    setopt(fd, tcp, libc::TCP_KEEPIDLE, 111)?;
    setopt(fd, tcp, libc::TCP_KEEPINTVL, 22)?;
    setopt(fd, tcp, libc::TCP_KEEPCNT, 3)?;
    let ip = libc::IPPROTO_IP;
    setopt(fd, ip, libc::IP_FREEBIND, 1)?;
    setopt(fd, ip, libc::IP_TOS, 0x10)?;
    setopt(fd, ip, libc::IP_TTL, 33)?;
    // After IP_TOS, which sets the priority too.
    setopt(fd, so, libc::SO_PRIORITY, 5)?;
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    bind_listen(fd, &a, 7)?;
    // SAFETY: fd is a listening socket we own.
    let l4 = unsafe { TcpListener::from_raw_fd(fd) };
    let fd6 = raw_socket(libc::AF_INET6, libc::SOCK_STREAM, 0)?;
    setopt(fd6, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    setopt(fd6, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 17)?;
    bind_listen(fd6, &format!("[::]:{}", port + 1).parse().unwrap(), 3)?;
    // SAFETY: fd6 is a listening socket we own.
    let l6 = unsafe { TcpListener::from_raw_fd(fd6) };
    let bound = raw_socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
    let bound_addr: SocketAddr = format!("127.0.0.1:{}", port + 2).parse().unwrap();
    sock_bind(bound, &bound_addr)?;
    let fresh = raw_socket(libc::AF_INET6, libc::SOCK_STREAM, 0)?;
    Ok(Opts {
        l4,
        l6,
        bound,
        bound_addr,
        fresh,
    })
}

fn sock_bind(fd: RawFd, a: &SocketAddr) -> Result<(), String> {
    let (ss, len) = sockaddr(a);
    // SAFETY: ss holds a sockaddr of `len` bytes.
    let r = unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) };
    ensure!(r == 0, "bind {a}: {}", std::io::Error::last_os_error());
    Ok(())
}

fn bind_listen(fd: RawFd, a: &SocketAddr, backlog: i32) -> Result<(), String> {
    sock_bind(fd, a)?;
    // SAFETY: plain listen(2).
    ensure!(unsafe { libc::listen(fd, backlog) } == 0, "listen {a}");
    Ok(())
}

fn sockaddr(a: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v) => {
            // SAFETY: sockaddr_storage is big and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as u16;
            sin.sin_port = v.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(v.ip().octets());
            (ss, std::mem::size_of::<libc::sockaddr_in>() as u32)
        }
        SocketAddr::V6(v) => {
            // SAFETY: sockaddr_storage is big and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as u16;
            sin6.sin6_port = v.port().to_be();
            sin6.sin6_addr.s6_addr = v.ip().octets();
            (ss, std::mem::size_of::<libc::sockaddr_in6>() as u32)
        }
    }
}

fn local_of(fd: RawFd) -> Result<SocketAddr, String> {
    // SAFETY: fd stays owned by the caller; ManuallyDrop keeps it open.
    let s = std::mem::ManuallyDrop::new(unsafe { UdpSocket::from_raw_fd(fd) });
    s.local_addr().map_err(|e| e.to_string())
}

fn opts_check(o: &Opts) -> Result<(), String> {
    let fd = o.l4.as_raw_fd();
    let so = libc::SOL_SOCKET;
    let e = |opt, want, what| expect_opt(fd, so, opt, want, what);
    e(libc::SO_ACCEPTCONN, 1, "SO_ACCEPTCONN")?;
    e(libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
    e(libc::SO_REUSEPORT, 1, "SO_REUSEPORT")?;
    e(libc::SO_KEEPALIVE, 1, "SO_KEEPALIVE")?;
    e(libc::SO_SNDBUF, 131072, "SO_SNDBUF")?;
    e(libc::SO_RCVBUF, 65536, "SO_RCVBUF")?;
    e(libc::SO_PRIORITY, 5, "SO_PRIORITY")?;
    let mut l = [0u8; 8];
    getopt_bytes(fd, so, libc::SO_LINGER, &mut l)?;
    ensure!(
        i32::from_ne_bytes(l[0..4].try_into().unwrap()) == 1
            && i32::from_ne_bytes(l[4..8].try_into().unwrap()) == 7,
        "SO_LINGER is {l:?}"
    );
    let mut dev = [0u8; 16];
    let n = getopt_bytes(fd, so, libc::SO_BINDTODEVICE, &mut dev)?;
    ensure!(
        dev[..n].starts_with(b"lo"),
        "SO_BINDTODEVICE is {:?}",
        String::from_utf8_lossy(&dev[..n])
    );
    let mut count: libc::socklen_t = 0;
    // SAFETY: a null buffer of length 0 asks for the filter's length.
    let r = unsafe {
        libc::getsockopt(
            fd,
            so,
            libc::SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut count,
        )
    };
    ensure!(
        r == 0 && count == 1,
        "the BPF filter has {count} instructions"
    );
    let tcp = libc::IPPROTO_TCP;
    expect_opt(fd, tcp, libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
    expect_opt(fd, tcp, libc::TCP_KEEPIDLE, 111, "TCP_KEEPIDLE")?;
    expect_opt(fd, tcp, libc::TCP_KEEPINTVL, 22, "TCP_KEEPINTVL")?;
    expect_opt(fd, tcp, libc::TCP_KEEPCNT, 3, "TCP_KEEPCNT")?;
    let ip = libc::IPPROTO_IP;
    expect_opt(fd, ip, libc::IP_FREEBIND, 1, "IP_FREEBIND")?;
    expect_opt(fd, ip, libc::IP_TOS, 0x10, "IP_TOS")?;
    expect_opt(fd, ip, libc::IP_TTL, 33, "IP_TTL")?;
    let fd6 = o.l6.as_raw_fd();
    expect_opt(fd6, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1, "IPV6_V6ONLY")?;
    expect_opt(
        fd6,
        libc::IPPROTO_IPV6,
        libc::IPV6_UNICAST_HOPS,
        17,
        "IPV6_UNICAST_HOPS",
    )?;
    expect_opt(fd6, so, libc::SO_ACCEPTCONN, 1, "SO_ACCEPTCONN (v6)")?;
    // The bound, unconnected socket is bound still; the fresh one is not.
    let a = local_of(o.bound)?;
    ensure!(a == o.bound_addr, "the bound socket is on {a}");
    ensure!(
        tcp_state(o.bound)? == 7,
        "the bound socket is in state {}",
        tcp_state(o.bound)?
    );
    let f = local_of(o.fresh)?;
    ensure!(f.port() == 0, "the fresh socket is bound to {f}");
    // Both listeners still accept.
    for l in [&o.l4, &o.l6] {
        let mut a = l.local_addr().map_err(|e| e.to_string())?;
        if a.ip().is_unspecified() {
            a.set_ip("::1".parse().unwrap());
        }
        let c = TcpStream::connect(a).map_err(|e| format!("connect {a}: {e}"))?;
        let (mut s, _) = l.accept().map_err(|e| format!("accept on {a}: {e}"))?;
        (&c).write_all(b"hi").map_err(|e| e.to_string())?;
        let mut b = [0u8; 2];
        s.read_exact(&mut b).map_err(|e| e.to_string())?;
        ensure!(&b == b"hi", "the accepted connection on {a} is broken");
    }
    Ok(())
}

// ---------------------------------------------------------------- states

/// A connected pair over loopback: (client, server side).
fn pair(l: &TcpListener) -> Result<(TcpStream, TcpStream), String> {
    let a = l.local_addr().map_err(|e| e.to_string())?;
    let c = TcpStream::connect(a).map_err(|e| format!("connect {a}: {e}"))?;
    let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
    Ok((c, s))
}

/// Write up to `n` bytes of `byte` without blocking; returns how many went.
fn fill(s: &TcpStream, n: usize, byte: u8) -> Result<usize, String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    let buf = vec![byte; 65536];
    let mut done = 0;
    while done < n {
        match (&*s).write(&buf[..(n - done).min(buf.len())]) {
            Ok(w) => done += w,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    Ok(done)
}

/// Read to end-of-file (10 s at most): the bytes, all equal to `byte`.
fn drain(s: &TcpStream, byte: u8) -> Result<usize, String> {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    let mut buf = [0u8; 65536];
    loop {
        match (&*s).read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => {
                ensure!(
                    buf[..k].iter().all(|b| *b == byte),
                    "a wrong byte in the stream of {byte:#x}"
                );
                n += k;
            }
            Err(e) => return Err(format!("read: {e} after {n} bytes")),
        }
    }
}

struct States {
    _l: TcpListener,
    /// (name, socket, state at dump, byte it receives, bytes sent to it)
    ends: Vec<(&'static str, TcpStream, u8)>,
    sent: Vec<usize>,
}

fn states_setup(port: u16) -> Result<States, String> {
    let l = TcpListener::bind(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut ends = Vec::new();
    let mut sent = Vec::new();
    // ESTABLISHED both ways, data queued each way.
    let (a, b) = pair(&l)?;
    sent.push(fill(&a, 100_000, 0xa1)?);
    sent.push(fill(&b, 50_000, 0xb1)?);
    a.shutdown(std::net::Shutdown::Write).ok();
    // a: FIN_WAIT1 if its data is not all acked... keep it simple: a is
    // established until its FIN goes; check after settling.
    ends.push(("est-a", a, 0));
    ends.push(("est-b", b, 0));
    // FIN_WAIT2 / CLOSE_WAIT: c shuts its side, d has read nothing.
    let (c, d) = pair(&l)?;
    sent.push(fill(&c, 3000, 0xc2)?);
    sent.push(fill(&d, 2000, 0xd2)?);
    c.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    ends.push(("fw2-c", c, 0));
    ends.push(("cw-d", d, 0));
    // LAST_ACK needs the peer to not ack the FIN: not reachable on plain
    // loopback. CLOSE_WAIT with unsent data then shut: LAST_ACK (FIN
    // queued behind data the peer's window does not take).
    let (e, f) = pair(&l)?;
    setopt(e.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16384)?;
    sent.push(fill(&e, 1000, 0xe3)?);
    e.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(50));
    sent.push(fill(&f, 300_000, 0xf3)?);
    f.shutdown(std::net::Shutdown::Write)
        .map_err(|e| e.to_string())?;
    ends.push(("fw2-e", e, 0));
    ends.push(("la-f", f, 0));
    // Both sides shut with data the other's window does not take: both
    // FIN_WAIT1, FINs queued behind data (a simultaneous close to come,
    // through CLOSING).
    let (g, h) = pair(&l)?;
    for x in [&g, &h] {
        setopt(x.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 16384)?;
    }
    sent.push(fill(&g, 300_000, 0x97)?);
    sent.push(fill(&h, 300_000, 0x98)?);
    for x in [&g, &h] {
        x.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
    }
    ends.push(("fw1-g", g, 0));
    ends.push(("fw1-h", h, 0));
    std::thread::sleep(Duration::from_millis(100));
    for (_, s, st) in ends.iter_mut() {
        *st = tcp_state(s.as_raw_fd())?;
    }
    Ok(States { _l: l, ends, sent })
}

fn states_check(s: &States) -> Result<(), String> {
    let names: Vec<String> = s
        .ends
        .iter()
        .map(|(n, sk, st)| format!("{n}={st}/{}", tcp_state(sk.as_raw_fd()).unwrap_or(0)))
        .collect();
    for (name, sk, st) in &s.ends {
        let now = tcp_state(sk.as_raw_fd())?;
        ensure!(
            now == *st,
            "{name} is in state {now}, it was {st} at dump ({})",
            names.join(" ")
        );
    }
    // Full speed from now on.
    for (_, sk, _) in &s.ends {
        setopt(sk.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20)?;
    }
    // Pairs: (0,1) (2,3) (4,5) (6,7); each end receives what the other
    // sent.
    let bytes = [0xa1u8, 0xb1, 0xc2, 0xd2, 0xe3, 0xf3, 0x97, 0x98];
    for p in 0..4 {
        let (x, y) = (2 * p, 2 * p + 1);
        let (nx, sx, _) = &s.ends[x];
        let (ny, sy, _) = &s.ends[y];
        // y shuts its side if it has not yet, so x sees EOF.
        let _ = sy.shutdown(std::net::Shutdown::Write);
        let gx = drain(sx, bytes[y])?;
        ensure!(
            gx == s.sent[y],
            "{nx} received {gx} bytes, {ny} had sent {}",
            s.sent[y]
        );
        let gy = drain(sy, bytes[x])?;
        ensure!(
            gy == s.sent[x],
            "{ny} received {gy} bytes, {nx} had sent {}",
            s.sent[x]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- raw

struct Raw {
    icmp: RawFd,
    icmp6: RawFd,
    udp: RawFd,
}

const ICMP_FILTER: i32 = 1;

fn raw_setup() -> Result<Raw, String> {
    let icmp = raw_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)?;
    // Let only echo replies (type 0) through: the filter's bits block.
    setopt(icmp, libc::SOL_RAW, ICMP_FILTER, !1i32)?;
    let icmp6 = raw_socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
    let mut f = [0xffu8; 32];
    f[16] &= !1; // pass type 128 (echo request)... bit 128 is word 4 bit 0
    setopt_bytes(icmp6, libc::IPPROTO_ICMPV6, 1, &f)?;
    let udp = raw_socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP)?;
    setopt(udp, libc::IPPROTO_IP, libc::IP_HDRINCL, 1)?;
    Ok(Raw { icmp, icmp6, udp })
}

fn raw_check(r: &Raw) -> Result<(), String> {
    let mut f = [0u8; 4];
    getopt_bytes(r.icmp, libc::SOL_RAW, ICMP_FILTER, &mut f)?;
    ensure!(i32::from_ne_bytes(f) == !1i32, "ICMP_FILTER is {f:?}");
    let mut f6 = [0u8; 32];
    getopt_bytes(r.icmp6, libc::IPPROTO_ICMPV6, 1, &mut f6)?;
    ensure!(f6[16] == 0xfe && f6[0] == 0xff, "ICMPV6_FILTER is {f6:?}");
    expect_opt(r.udp, libc::IPPROTO_IP, libc::IP_HDRINCL, 1, "IP_HDRINCL")?;
    // The ICMP socket still receives: ping 127.0.0.1 through it.
    let mut echo = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'c', b'r', b'u', b's'];
    let sum = {
        let mut s: u32 = 0;
        for c in echo.chunks(2) {
            s += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    };
    echo[2..4].copy_from_slice(&sum.to_be_bytes());
    let (ss, len) = sockaddr(&"127.0.0.1:0".parse().unwrap());
    // SAFETY: echo is readable, ss holds a sockaddr_in of `len` bytes.
    let r1 = unsafe {
        libc::sendto(
            r.icmp,
            echo.as_ptr() as *const libc::c_void,
            echo.len(),
            0,
            &ss as *const _ as *const libc::sockaddr,
            len,
        )
    };
    ensure!(r1 >= 0, "sendto: {}", std::io::Error::last_os_error());
    let t = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe {
            libc::recv(
                r.icmp,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 20 && buf[20] == 0 && buf[24..26] == [0x12, 0x34] {
            return Ok(());
        }
        ensure!(
            t.elapsed() < Duration::from_secs(3),
            "no echo reply on the raw ICMP socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------- listen

/// After SIGTERM: accept what is queued (waiting up to 2 s for the first
/// ones), read "hello" from each when `data`, and expect `want` of them.
fn listen_check(l: &TcpListener, want: u64, data: bool) -> Result<(), String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut got = Vec::new();
    while t.elapsed() < Duration::from_secs(2) && (got.len() as u64) < want.max(1) {
        match l.accept() {
            Ok((s, from)) => got.push((s, from)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    // Nothing more queued.
    std::thread::sleep(Duration::from_millis(100));
    while let Ok(c) = l.accept() {
        got.push(c);
    }
    ensure!(
        got.len() as u64 == want,
        "accepted {} connection(s), expected {want}",
        got.len()
    );
    if data {
        for (s, from) in &got {
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            let mut b = [0u8; 5];
            (&*s)
                .read_exact(&mut b)
                .map_err(|e| format!("reading from {from}: {e}"))?;
            ensure!(&b == b"hello", "{from} sent {b:?}");
            (&*s)
                .write_all(b"world")
                .map_err(|e| format!("writing to {from}: {e}"))?;
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let port = args.num("port", 0) as u16;
    ensure!(port != 0, "--port is needed");
    match args.opt("mode") {
        Some("udp") => {
            let u = udp_setup(port)?;
            ready(args);
            wait_for_term(20, || {});
            udp_check(&u)
        }
        Some("opts") => {
            let o = opts_setup(port)?;
            ready(args);
            wait_for_term(20, || {});
            opts_check(&o)
        }
        Some("states") => {
            let s = states_setup(port)?;
            ready(args);
            wait_for_term(20, || {});
            states_check(&s)
        }
        Some("raw") => {
            let r = raw_setup()?;
            ready(args);
            wait_for_term(20, || {});
            raw_check(&r)
        }
        Some("listen-epoll") => {
            // An epoll loop on the listener, accept4 with flags and an
            // address buffer: what the accept queue hand-over must honour.
            let l = TcpListener::bind(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            // SAFETY: plain epoll calls on fds we own; ev is valid.
            let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            ensure!(
                ep >= 0,
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            );
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 7,
            };
            // SAFETY: as above.
            let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, l.as_raw_fd(), &mut ev) };
            ensure!(r == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
            ready(args);
            wait_for_term(20, || {});
            let want = args.num("expect", 0);
            let mut got = 0;
            let t = Instant::now();
            while got < want {
                ensure!(
                    t.elapsed() < Duration::from_secs(5),
                    "accepted {got} of {want}"
                );
                let mut out = [libc::epoll_event { events: 0, u64: 0 }; 4];
                // SAFETY: out has room for 4 events.
                let n = unsafe { libc::epoll_wait(ep, out.as_mut_ptr(), 4, 200) };
                if n <= 0 {
                    continue;
                }
                // SAFETY: sockaddr_storage is plain old data.
                let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                // SAFETY: ss/len are valid out-pointers.
                let c = unsafe {
                    libc::accept4(
                        l.as_raw_fd(),
                        &mut ss as *mut _ as *mut libc::sockaddr,
                        &mut len,
                        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    )
                };
                if c < 0 {
                    continue;
                }
                got += 1;
                // SAFETY: fcntl queries on our new fd.
                let (fl, fdfl) =
                    unsafe { (libc::fcntl(c, libc::F_GETFL), libc::fcntl(c, libc::F_GETFD)) };
                ensure!(
                    fl & libc::O_NONBLOCK != 0,
                    "accept4's SOCK_NONBLOCK is not on the socket"
                );
                ensure!(
                    fdfl & libc::FD_CLOEXEC != 0,
                    "accept4's SOCK_CLOEXEC is not on the fd"
                );
                // SAFETY: c is a connected socket we own.
                let s = unsafe { TcpStream::from_raw_fd(c) };
                let peer = s.peer_addr().map_err(|e| e.to_string())?;
                ensure!(
                    len as usize == std::mem::size_of::<libc::sockaddr_in>(),
                    "accept4 wrote an address of {len} bytes"
                );
                // SAFETY: the kernel (or crust) wrote a sockaddr_in there.
                let sin = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
                ensure!(
                    u16::from_be(sin.sin_port) == peer.port(),
                    "accept4 said port {}, the socket's peer is {peer}",
                    u16::from_be(sin.sin_port)
                );
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(5)))
                    .map_err(|e| e.to_string())?;
                let mut b = [0u8; 5];
                (&s).read_exact(&mut b)
                    .map_err(|e| format!("read from {peer}: {e}"))?;
                ensure!(&b == b"hello", "{peer} sent {b:?}");
                (&s).write_all(b"world").map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Some("listen-fork") => {
            // After restore a forked child does the accepting (a server
            // that forks its workers late).
            let l = TcpListener::bind(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
            ready(args);
            wait_for_term(20, || {});
            // SAFETY: single-threaded: the child may run any code.
            let child = unsafe { libc::fork() };
            ensure!(child >= 0, "fork: {}", std::io::Error::last_os_error());
            if child == 0 {
                let r = listen_check(&l, args.num("expect", 0), true);
                if let Err(e) = &r {
                    eprintln!("{e}");
                }
                std::process::exit(r.is_err() as i32);
            }
            let mut st = 0;
            // SAFETY: our child; st is a valid out-pointer.
            unsafe { libc::waitpid(child, &mut st, 0) };
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "the child that accepts failed (status {st:#x})"
            );
            Ok(())
        }
        Some("listen") => {
            let l = TcpListener::bind(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
            ready(args);
            wait_for_term(20, || {});
            listen_check(&l, args.num("expect", 0), args.num("data", 0) == 1)
        }
        Some("ping") => {
            // ICMP ping sockets (SOCK_DGRAM), bound with an ident.
            let mut socks = Vec::new();
            for (dom, proto, a) in [
                (
                    libc::AF_INET,
                    libc::IPPROTO_ICMP,
                    format!("127.0.0.1:{port}"),
                ),
                (
                    libc::AF_INET6,
                    libc::IPPROTO_ICMPV6,
                    format!("[::1]:{}", port + 1),
                ),
            ] {
                let fd = raw_socket(dom, libc::SOCK_DGRAM, proto)?;
                let a: SocketAddr = a.parse().unwrap();
                sock_bind(fd, &a)?;
                socks.push((fd, a));
            }
            ready(args);
            wait_for_term(20, || {});
            for (fd, a) in &socks {
                let got = local_of(*fd)?;
                ensure!(got == *a, "a ping socket is bound to {got}, not {a}");
                // Echo request (the kernel puts the ident); expect a reply.
                let ty = if a.is_ipv4() { 8u8 } else { 128 };
                let msg = [ty, 0, 0, 0, 0, 0, 0, 7, b'h', b'i'];
                let mut to = *a;
                to.set_port(0);
                let (ss, len) = sockaddr(&to);
                // SAFETY: msg is readable; ss holds a sockaddr of `len` bytes.
                let r = unsafe {
                    libc::sendto(
                        *fd,
                        msg.as_ptr() as *const libc::c_void,
                        msg.len(),
                        0,
                        &ss as *const _ as *const libc::sockaddr,
                        len,
                    )
                };
                ensure!(
                    r >= 0,
                    "ping sendto {a}: {}",
                    std::io::Error::last_os_error()
                );
                let mut buf = [0u8; 64];
                let t = Instant::now();
                loop {
                    // SAFETY: buf is writable for its length.
                    let n = unsafe {
                        libc::recv(
                            *fd,
                            buf.as_mut_ptr() as *mut libc::c_void,
                            buf.len(),
                            libc::MSG_DONTWAIT,
                        )
                    };
                    if n >= 10 && buf[0] == if a.is_ipv4() { 0 } else { 129 } {
                        ensure!(&buf[8..10] == b"hi", "a wrong echo reply");
                        break;
                    }
                    ensure!(
                        t.elapsed() < Duration::from_secs(3),
                        "no echo reply on the ping socket {a}"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Ok(())
        }
        Some("synsent") => {
            // Connecting to a port whose SYNs are dropped: SYN_SENT.
            let fd = raw_socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0)?;
            let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let (ss, len) = sockaddr(&to);
            // SAFETY: ss holds a sockaddr_in of `len` bytes.
            let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
            let e = std::io::Error::last_os_error();
            ensure!(
                r == -1 && e.raw_os_error() == Some(libc::EINPROGRESS),
                "connect: {e}"
            );
            std::thread::sleep(Duration::from_millis(100));
            ensure!(
                tcp_state(fd)? == 2,
                "not in SYN_SENT but {}",
                tcp_state(fd)?
            );
            ready(args);
            wait_for_term(20, || {});
            // SAFETY: fd is a connected socket we own from here on.
            let s = unsafe { TcpStream::from_raw_fd(fd) };
            let t = Instant::now();
            while tcp_state(fd)? == 2 {
                ensure!(
                    t.elapsed() < Duration::from_secs(15),
                    "still connecting after 15 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let err = getopt(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
            ensure!(
                err == 0,
                "the connection failed: {} (state {})",
                std::io::Error::from_raw_os_error(err),
                tcp_state(fd)?
            );
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            (&s).write_all(b"ping").map_err(|e| e.to_string())?;
            let mut b = [0u8; 4];
            (&s).read_exact(&mut b).map_err(|e| format!("read: {e}"))?;
            ensure!(&b == b"pong", "got {b:?}");
            Ok(())
        }
        m => Err(format!("unknown --mode {m:?}")),
    }
}

fn main() {
    let args = start();
    let v = run(&args);
    if v.is_err() && !args.ready.exists() {
        eprintln!("{v:?}");
    }
    finish(&args, v)
}
