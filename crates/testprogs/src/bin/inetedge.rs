//! Inet socket states at the edges (CRIU's zdtm covers each), checked
//! after restore.
//!
//! `inetedge --mode unbound|shared|closed|tcpclose|reset|peergone|spkt --port P`
//!
//! - `unbound`: UDP sockets never bound (IPv4 with a BPF filter and
//!   SO_BROADCAST, IPv6); a UDP-Lite socket connected to 0.0.0.0:0 and
//!   shut down both ways; an IPv6 UDP socket bound to an address this host
//!   does not have (with IP_FREEBIND, cleared since). After restore the
//!   filter, the flags, the binding and the shutdown are as they were.
//! - `shared`: two TCP listeners on one port, both bound with
//!   SO_REUSEPORT, the first one's cleared since; after restore both
//!   listen with SO_REUSEPORT 0 and 1, and a client gets through.
//! - `closed`: a TCP connection both ends of which shut down for writing
//!   (one end ends in CLOSE with a TIME_WAIT on its port, the other in
//!   CLOSE); after restore each reads end of file and a write fails with
//!   EPIPE.
//! - `reset`: a TCP connection reset by its peer (closed with SO_LINGER
//!   0) before this end read what it had received; after restore (with
//!   --tcp-established) the bytes are read and a write fails.
//! - `peergone`: a TCP connection to a peer outside the tree (at --port),
//!   which resets it while this end is dumped; after restore (with
//!   --tcp-established) this end is reset within 2 s.
//! - `spkt`: two SOCK_PACKET sockets (the obsolete packet interface), one
//!   bound to lo; after restore their names are "lo" and "" again.
//! - `tcpclose`: an established connection (both ends here), to dump and
//!   restore with --tcp-close: after restore both ends are closed, reads
//!   give end of file, poll says POLLHUP, a write fails with EPIPE.

use crust_testprogs::{ensure, finish, ready, start, wait_for_term, Args};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

fn err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn setopt(fd: RawFd, level: i32, opt: i32, v: i32) -> Result<(), String> {
    // SAFETY: v is a readable int for the call.
    let r = unsafe { libc::setsockopt(fd, level, opt, &v as *const i32 as *const libc::c_void, 4) };
    ensure!(r == 0, "setsockopt({level}, {opt}): {}", err());
    Ok(())
}

fn getopt(fd: RawFd, level: i32, opt: i32) -> Result<i32, String> {
    let mut v = 0i32;
    let mut len: libc::socklen_t = 4;
    // SAFETY: v and len are valid out-pointers of the given size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut v as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(r == 0, "getsockopt({level}, {opt}): {}", err());
    Ok(v)
}

fn expect(fd: RawFd, level: i32, opt: i32, want: i32, what: &str) -> Result<(), String> {
    let got = getopt(fd, level, opt)?;
    ensure!(got == want, "{what} is {got}, expected {want}");
    Ok(())
}

fn socket(domain: i32, ty: i32, proto: i32) -> Result<RawFd, String> {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    ensure!(fd >= 0, "socket({domain}, {ty}, {proto}): {}", err());
    Ok(fd)
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

fn bind(fd: RawFd, a: &str) -> Result<(), String> {
    let a: SocketAddr = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let (ss, len) = sockaddr(&a);
    // SAFETY: ss holds a sockaddr of `len` bytes.
    let r = unsafe { libc::bind(fd, &ss as *const _ as *const libc::sockaddr, len) };
    ensure!(r == 0, "bind {a}: {}", err());
    Ok(())
}

fn connect(fd: RawFd, a: &str) -> Result<(), String> {
    let a: SocketAddr = a.parse().map_err(|e| format!("{a}: {e}"))?;
    let (ss, len) = sockaddr(&a);
    // SAFETY: ss holds a sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, &ss as *const _ as *const libc::sockaddr, len) };
    ensure!(r == 0, "connect {a}: {}", err());
    Ok(())
}

/// getsockname as "addr:port".
fn name_of(fd: RawFd) -> Result<String, String> {
    // SAFETY: sockaddr_storage is plain old data.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: ss and len are valid out-pointers of the given size.
    let r = unsafe { libc::getsockname(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) };
    ensure!(r == 0, "getsockname: {}", err());
    Ok(match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let sin = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            format!("{ip}:{}", u16::from_be(sin.sin_port))
        }
        _ => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let sin6 = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            format!("[{ip}]:{}", u16::from_be(sin6.sin6_port))
        }
    })
}

/// recv with MSG_DONTWAIT: Ok(n) or the errno.
fn recv_now(fd: RawFd) -> Result<isize, i32> {
    let mut b = [0u8; 16];
    // SAFETY: b is writable for its length.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr() as *mut libc::c_void,
            b.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(err().raw_os_error().unwrap_or(0))
    } else {
        Ok(n)
    }
}

/// send of one byte with MSG_DONTWAIT | MSG_NOSIGNAL: Ok(n) or the errno.
fn send_now(fd: RawFd) -> Result<isize, i32> {
    // SAFETY: the byte is readable.
    let n = unsafe {
        libc::send(
            fd,
            b"x".as_ptr() as *const libc::c_void,
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(err().raw_os_error().unwrap_or(0))
    } else {
        Ok(n)
    }
}

fn tcp_state(fd: RawFd) -> Result<u8, String> {
    let mut b = [0u8; 256];
    let mut len = b.len() as libc::socklen_t;
    // SAFETY: b and len are valid out-pointers of the given size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            b.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(r == 0, "TCP_INFO: {}", err());
    Ok(b[0])
}

/// A closed TCP socket: end of file, then EPIPE on write.
fn expect_closed(fd: RawFd, what: &str) -> Result<(), String> {
    let st = tcp_state(fd)?;
    ensure!(st == 7, "{what}: TCP state {st}, not CLOSE (7)");
    ensure!(
        recv_now(fd) == Ok(0),
        "{what}: read gives {:?}, not end of file",
        recv_now(fd)
    );
    ensure!(
        send_now(fd) == Err(libc::EPIPE),
        "{what}: write gives {:?}, not EPIPE",
        send_now(fd)
    );
    Ok(())
}

const SO_GET_FILTER: i32 = libc::SO_ATTACH_FILTER;
/// The obsolete packet socket type (libc marks its constant deprecated).
const SOCK_PACKET: i32 = 10;

struct Unbound {
    filt: RawFd,
    v6: RawFd,
    lite: RawFd,
    free: RawFd,
    free_at: String,
}

fn unbound_setup(port: u16) -> Result<Unbound, String> {
    let filt = socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
    // Three instructions: accept everything.
    let prog = [
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0xffff,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0xffff,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0xffff,
        },
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `prog`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            filt,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &fprog as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    ensure!(r == 0, "SO_ATTACH_FILTER: {}", err());
    setopt(filt, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
    let v6 = socket(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
    let lite = socket(libc::AF_INET, libc::SOCK_DGRAM, 136)?;
    bind(lite, &format!("127.0.0.1:{port}"))?;
    connect(lite, "0.0.0.0:0")?;
    // SAFETY: plain shutdown(2) on a socket we own.
    let r = unsafe { libc::shutdown(lite, libc::SHUT_RDWR) };
    ensure!(r == 0, "shutdown: {}", err());
    let free = socket(libc::AF_INET6, libc::SOCK_DGRAM, libc::IPPROTO_UDP)?;
    setopt(free, libc::IPPROTO_IP, libc::IP_FREEBIND, 1)?;
    let free_at = format!("[2001:db8::ff00:42:8329]:{}", port + 1);
    bind(free, &free_at)?;
    setopt(free, libc::IPPROTO_IP, libc::IP_FREEBIND, 0)?;
    Ok(Unbound {
        filt,
        v6,
        lite,
        free,
        free_at,
    })
}

fn unbound_check(u: &Unbound) -> Result<(), String> {
    let mut len: libc::socklen_t = 0;
    // SAFETY: a NULL buffer with length 0 asks for the filter's length.
    let r = unsafe {
        libc::getsockopt(
            u.filt,
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    ensure!(
        r == 0 && len == 3,
        "the filter has {len} instructions (r {r}), expected 3"
    );
    expect(
        u.filt,
        libc::SOL_SOCKET,
        libc::SO_BROADCAST,
        1,
        "SO_BROADCAST",
    )?;
    ensure!(
        name_of(u.filt)? == "0.0.0.0:0",
        "the unbound UDP socket is bound at {}",
        name_of(u.filt)?
    );
    ensure!(
        name_of(u.v6)? == "[::]:0",
        "the unbound UDP6 socket is bound at {}",
        name_of(u.v6)?
    );
    // Shut down both ways: poll says POLLHUP and POLLRDHUP.
    let mut p = libc::pollfd {
        fd: u.lite,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: p is one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 0) };
    let want = libc::POLLHUP | libc::POLLRDHUP;
    ensure!(
        p.revents & want == want,
        "the shut down UDP-Lite socket polls {:#x}",
        p.revents
    );
    ensure!(
        name_of(u.free)? == u.free_at,
        "the freebind socket is at {}, not {}",
        name_of(u.free)?,
        u.free_at
    );
    expect(
        u.free,
        libc::IPPROTO_IP,
        libc::IP_FREEBIND,
        0,
        "IP_FREEBIND",
    )?;
    Ok(())
}

fn shared_setup(port: u16) -> Result<[RawFd; 2], String> {
    let mut l = [0; 2];
    for fd in l.iter_mut() {
        *fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
        setopt(*fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        bind(*fd, &format!("0.0.0.0:{port}"))?;
        // SAFETY: plain listen(2).
        ensure!(unsafe { libc::listen(*fd, 8) } == 0, "listen: {}", err());
    }
    setopt(l[0], libc::SOL_SOCKET, libc::SO_REUSEPORT, 0)?;
    Ok(l)
}

fn shared_check(l: [RawFd; 2], port: u16) -> Result<(), String> {
    for (fd, want) in l.iter().zip([0, 1]) {
        expect(
            *fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            want,
            "SO_REUSEPORT",
        )?;
        expect(
            *fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            1,
            "SO_ACCEPTCONN",
        )?;
    }
    let _c = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connect to the listeners: {e}"))?;
    Ok(())
}

/// A connected pair through a listener on `port`: (client, server end).
fn pair(port: u16) -> Result<(TcpStream, TcpStream), String> {
    let l = TcpListener::bind(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let (s, _) = l.accept().map_err(|e| e.to_string())?;
    Ok((c, s))
}

/// The device name a SOCK_PACKET socket is bound to ("" if none).
fn spkt_name(fd: RawFd) -> Result<String, String> {
    // SAFETY: sockaddr is plain old data.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: sa and len are valid out-pointers of the given size.
    let r = unsafe { libc::getsockname(fd, &mut sa, &mut len) };
    ensure!(r == 0, "getsockname: {}", err());
    ensure!(
        sa.sa_family as i32 == libc::AF_PACKET,
        "family {}",
        sa.sa_family
    );
    let name: Vec<u8> = sa
        .sa_data
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&name).into_owned())
}

fn spkt_setup() -> Result<[RawFd; 2], String> {
    let all = (libc::ETH_P_ALL as u16).to_be() as i32;
    let bound = socket(libc::AF_PACKET, SOCK_PACKET, all)?;
    // SAFETY: sockaddr is plain old data.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_PACKET as u16;
    sa.sa_data[0] = b'l' as libc::c_char;
    sa.sa_data[1] = b'o' as libc::c_char;
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: sa is a valid sockaddr of `len` bytes.
    let r = unsafe { libc::bind(bound, &sa, len) };
    ensure!(r == 0, "bind SOCK_PACKET to lo: {}", err());
    let unbound = socket(libc::AF_PACKET, SOCK_PACKET, all)?;
    Ok([bound, unbound])
}

fn run(args: &Args) -> Result<(), String> {
    let port = args.num("port", 0) as u16;
    ensure!(port != 0, "--port is needed");
    match args.opt("mode") {
        Some("unbound") => {
            let u = unbound_setup(port)?;
            ready(args);
            wait_for_term(20, || {});
            unbound_check(&u)
        }
        Some("shared") => {
            let l = shared_setup(port)?;
            ready(args);
            wait_for_term(20, || {});
            shared_check(l, port)
        }
        Some("closed") => {
            let (c, s) = pair(port)?;
            c.shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            s.shutdown(std::net::Shutdown::Write)
                .map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(100));
            ensure!(
                tcp_state(c.as_raw_fd())? == 7 && tcp_state(s.as_raw_fd())? == 7,
                "not both closed"
            );
            ready(args);
            wait_for_term(20, || {});
            expect_closed(c.as_raw_fd(), "the client")?;
            expect_closed(s.as_raw_fd(), "the server end")
        }
        Some("reset") => {
            let (c, s) = pair(port)?;
            use std::io::{Read, Write};
            (&c).write_all(b"abc").map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(50));
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: linger is a readable struct linger for the call.
            let r = unsafe {
                libc::setsockopt(
                    c.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as u32,
                )
            };
            ensure!(r == 0, "SO_LINGER: {}", err());
            drop(c);
            std::thread::sleep(Duration::from_millis(50));
            ensure!(tcp_state(s.as_raw_fd())? == 7, "not reset");
            ready(args);
            wait_for_term(20, || {});
            let mut b = [0u8; 8];
            let n = (&s).read(&mut b).map_err(|e| format!("read: {e}"))?;
            ensure!(&b[..n] == b"abc", "read {:?}", &b[..n]);
            ensure!(
                send_now(s.as_raw_fd()).is_err(),
                "a write to the reset connection succeeded"
            );
            Ok(())
        }
        Some("peergone") => {
            let c = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            ready(args);
            wait_for_term(20, || {});
            // The peer reset the connection while it was dumped (the lock
            // dropped that reset); the probe sent when repair mode ended
            // after the unlock draws a new one.
            let mut st = 0;
            for _ in 0..100 {
                st = tcp_state(c.as_raw_fd())?;
                if st == 7 {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(format!(
                "the connection is in state {st}, not reset, 2 s after restore"
            ))
        }
        Some("spkt") => {
            let [b, u] = spkt_setup()?;
            ready(args);
            wait_for_term(20, || {});
            ensure!(
                spkt_name(b)? == "lo",
                "the bound one is bound to {:?}",
                spkt_name(b)?
            );
            ensure!(
                spkt_name(u)?.is_empty(),
                "the unbound one is bound to {:?}",
                spkt_name(u)?
            );
            Ok(())
        }
        Some("tcpclose") => {
            let (c, s) = pair(port)?;
            ready(args);
            wait_for_term(20, || {});
            for (fd, what) in [
                (c.as_raw_fd(), "the client"),
                (s.as_raw_fd(), "the server end"),
            ] {
                expect_closed(fd, what)?;
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: p is one valid pollfd.
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                ensure!(
                    n == 1 && p.revents & libc::POLLHUP != 0,
                    "{what}: poll gives {:#x}",
                    p.revents
                );
            }
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
