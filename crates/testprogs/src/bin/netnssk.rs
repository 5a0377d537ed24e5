//! `netnssk`: sockets of a process in a network namespace of its own (it
//! unshares CLONE_NEWNET and brings `lo` up), checked after restore:
//!
//! - a TCP listener on 127.0.0.1:PORT and a connection to it with both
//!   ends here, bytes queued each way, and one more connection waiting in
//!   the listener's accept queue (needs `--tcp-established`);
//! - a bound UDP socket with a datagram queued from a second one;
//! - an abstract unix listener with a connection waiting in its backlog,
//!   and a unix stream pair with bytes queued;
//! - a bound NETLINK_ROUTE socket and a packet socket.
//!
//! After SIGTERM: the namespace is still not the initial one (only `lo`
//! in it), the queued bytes and datagram arrive, the connection carries
//! bytes both ways, the listeners accept, the netlink socket answers a
//! link dump that lists `lo` alone, and the packet socket is bound.
//!
//! `--child-ns 1`: a forked child moves to a network namespace of its own
//! (a tree in two network namespaces).
//!
//! `--waiting 0`: no connection waits in the accept queue (CRIU refuses
//! those without --skip-in-flight).
//!
//! `--port P` (default 47000): the TCP and UDP ports (the namespace is the
//! program's own, so they collide with nothing).

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Duration;

const ABSTRACT: &[u8] = b"crust-netnssk";

fn lo_up() {
    // SAFETY: a plain socket; the ifreq is zeroed, named and passed by
    // pointer to ioctls that fill or read it.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            die("socket for SIOCSIFFLAGS");
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            die("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) != 0 {
            die("SIOCSIFFLAGS lo");
        }
        libc::close(s);
    }
}

fn abstract_addr() -> std::os::unix::net::SocketAddr {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(ABSTRACT)
        .unwrap_or_else(|_| die("abstract name"))
}

fn raw_socket(domain: i32, ty: i32, proto: i32) -> OwnedFd {
    // SAFETY: socket takes integers; the fd returned is ours alone.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    if fd < 0 {
        die("socket");
    }
    // SAFETY: fd is a new open descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn netlink_socket() -> OwnedFd {
    let s = raw_socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE);
    // SAFETY: a zeroed sockaddr_nl (port 0: the kernel picks) of its size.
    let r = unsafe {
        let mut a: libc::sockaddr_nl = std::mem::zeroed();
        a.nl_family = libc::AF_NETLINK as u16;
        libc::bind(
            s.as_raw_fd(),
            &a as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if r != 0 {
        die("bind netlink");
    }
    s
}

/// The names of the links a RTM_GETLINK dump on `fd` lists.
fn links(fd: RawFd) -> Result<Vec<String>, String> {
    let mut req = Vec::new();
    req.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    req.extend_from_slice(&libc::RTM_GETLINK.to_ne_bytes()); // type
    req.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[0u8; 16]); // ifinfomsg, AF_UNSPEC
                                       // SAFETY: req is readable for its length.
    let w = unsafe { libc::send(fd, req.as_ptr().cast(), req.len(), 0) };
    ensure!(
        w == req.len() as isize,
        "netlink send: {}",
        std::io::Error::last_os_error()
    );
    let mut names = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        ensure!(n > 0, "netlink recv: {}", std::io::Error::last_os_error());
        let mut off = 0usize;
        let n = n as usize;
        while off + 16 <= n {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            ensure!(
                len >= 16 && off + len <= n,
                "bad netlink message length {len}"
            );
            if ty == libc::NLMSG_DONE as u16 {
                return Ok(names);
            }
            ensure!(ty != libc::NLMSG_ERROR as u16, "netlink answered an error");
            // ifinfomsg (16) then attributes.
            let mut a = off + 32;
            while a + 4 <= off + len {
                let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                let aty = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]);
                if alen < 4 || a + alen > off + len {
                    break;
                }
                if aty == libc::IFLA_IFNAME {
                    let v = &buf[a + 4..a + alen];
                    let v = v.split(|b| *b == 0).next().unwrap_or_default();
                    names.push(String::from_utf8_lossy(v).into_owned());
                }
                a += (alen + 3) & !3;
            }
            off += (len + 3) & !3;
        }
    }
}

fn read_exact(s: &mut impl Read, n: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b)
        .map_err(|e| format!("reading {what}: {e}"))?;
    Ok(b)
}

struct Socks {
    listener: TcpListener,
    waiting: Option<TcpStream>,
    client: TcpStream,
    server: TcpStream,
    udp: UdpSocket,
    udp_from: UdpSocket,
    ulisten: UnixListener,
    _uwaiting: UnixStream,
    upair: (UnixStream, UnixStream),
    netlink: OwnedFd,
    packet: OwnedFd,
    port: u16,
}

fn check(mut s: Socks) -> Result<(), String> {
    let names = links(s.netlink.as_raw_fd())?;
    ensure!(
        names == ["lo"],
        "links in the namespace: {names:?}, expected [\"lo\"]"
    );
    // Bytes queued before the dump, then both ways.
    ensure!(
        read_exact(&mut s.server, 5, "client bytes")? == b"hello",
        "client bytes differ"
    );
    ensure!(
        read_exact(&mut s.client, 5, "server bytes")? == b"world",
        "server bytes differ"
    );
    s.client
        .write_all(b"again")
        .map_err(|e| format!("client write: {e}"))?;
    ensure!(
        read_exact(&mut s.server, 5, "new client bytes")? == b"again",
        "new bytes differ"
    );
    s.server
        .write_all(b"back!")
        .map_err(|e| format!("server write: {e}"))?;
    ensure!(
        read_exact(&mut s.client, 5, "new server bytes")? == b"back!",
        "new bytes differ"
    );
    // The connection that waited in the accept queue, then a new one.
    if let Some(waiting) = &mut s.waiting {
        let (mut w, peer) = s
            .listener
            .accept()
            .map_err(|e| format!("accept of the waiting one: {e}"))?;
        let want = waiting.local_addr().map_err(|e| e.to_string())?;
        ensure!(peer == want, "accepted {peer}, expected the waiting {want}");
        waiting
            .write_all(b"queued")
            .map_err(|e| format!("waiting write: {e}"))?;
        let _ = w.set_read_timeout(Some(Duration::from_secs(5)));
        ensure!(
            read_exact(&mut w, 6, "waiting bytes")? == b"queued",
            "waiting bytes differ"
        );
    }
    let c2 = TcpStream::connect(("127.0.0.1", s.port)).map_err(|e| format!("connect: {e}"))?;
    let (mut a2, _) = s.listener.accept().map_err(|e| format!("accept: {e}"))?;
    drop(c2);
    let mut sink = Vec::new();
    let _ = a2.read_to_end(&mut sink);
    // The queued datagram, with its sender, then a new one.
    let mut b = [0u8; 64];
    let (n, from) = s
        .udp
        .recv_from(&mut b)
        .map_err(|e| format!("udp recv: {e}"))?;
    ensure!(&b[..n] == b"dgram1", "queued datagram is {:?}", &b[..n]);
    let want = s.udp_from.local_addr().map_err(|e| e.to_string())?;
    ensure!(from == want, "datagram from {from}, expected {want}");
    s.udp_from
        .send_to(b"dgram2", s.udp.local_addr().map_err(|e| e.to_string())?)
        .map_err(|e| format!("udp send: {e}"))?;
    let (n, _) = s
        .udp
        .recv_from(&mut b)
        .map_err(|e| format!("udp recv 2: {e}"))?;
    ensure!(&b[..n] == b"dgram2", "new datagram is {:?}", &b[..n]);
    // Unix: the waiting connection, then a new one by the abstract name.
    let (_w, _) = s
        .ulisten
        .accept()
        .map_err(|e| format!("unix accept: {e}"))?;
    let _n =
        UnixStream::connect_addr(&abstract_addr()).map_err(|e| format!("unix connect: {e}"))?;
    let (_w2, _) = s
        .ulisten
        .accept()
        .map_err(|e| format!("unix accept 2: {e}"))?;
    ensure!(
        read_exact(&mut s.upair.1, 4, "unix pair bytes")? == b"pair",
        "pair bytes differ"
    );
    s.upair.1.write_all(b"ok").map_err(|e| e.to_string())?;
    ensure!(
        read_exact(&mut s.upair.0, 2, "unix pair reply")? == b"ok",
        "reply differs"
    );
    // The packet socket is still a packet socket of this namespace.
    // SAFETY: a zeroed sockaddr_ll buffer and its length for getsockname.
    let fam = unsafe {
        let mut a: libc::sockaddr_ll = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        if libc::getsockname(
            s.packet.as_raw_fd(),
            &mut a as *mut _ as *mut libc::sockaddr,
            &mut len,
        ) != 0
        {
            return Err(format!(
                "packet getsockname: {}",
                std::io::Error::last_os_error()
            ));
        }
        a.sll_family
    };
    ensure!(fam == libc::AF_PACKET as u16, "packet socket family {fam}");
    Ok(())
}

/// Fork a child that moves to a network namespace of its own; returns
/// once it is there.
fn fork_into_netns() -> i32 {
    // SAFETY: the child only unshares and sleeps until killed.
    let c = unsafe { libc::fork() };
    if c == 0 {
        // SAFETY: prctl and unshare take integers.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                libc::_exit(3);
            }
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if c < 0 {
        die("fork");
    }
    let mine = std::fs::read_link("/proc/self/ns/net").ok();
    while std::fs::read_link(format!("/proc/{c}/ns/net")).ok() == mine {
        std::thread::sleep(Duration::from_millis(5));
    }
    c
}

fn main() {
    let args = start();
    let port = args.num("port", 47000) as u16;
    // SAFETY: unshare takes a flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        die("unshare(CLONE_NEWNET)");
    }
    lo_up();
    let child_ns = args.num("child-ns", 0) == 1;
    if child_ns {
        // Only the child's namespace matters: no socket that the dump
        // would refuse for other reasons first.
        let child = fork_into_netns();
        ready(&args);
        wait_for_term(10, || {});
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        finish(&args, Ok(()));
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|_| die("tcp bind"));
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|_| die("connect"));
    let (mut server, _) = listener.accept().unwrap_or_else(|_| die("accept"));
    let waiting = (args.num("waiting", 1) == 1)
        .then(|| TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|_| die("connect 2")));
    client.write_all(b"hello").unwrap_or_else(|_| die("write"));
    server.write_all(b"world").unwrap_or_else(|_| die("write"));
    let udp = UdpSocket::bind(("127.0.0.1", port)).unwrap_or_else(|_| die("udp bind"));
    let udp_from = UdpSocket::bind(("127.0.0.1", port + 1)).unwrap_or_else(|_| die("udp bind 2"));
    udp_from
        .send_to(b"dgram1", ("127.0.0.1", port))
        .unwrap_or_else(|_| die("udp send"));
    let ulisten = UnixListener::bind_addr(&abstract_addr()).unwrap_or_else(|_| die("unix bind"));
    let uwaiting =
        UnixStream::connect_addr(&abstract_addr()).unwrap_or_else(|_| die("unix connect"));
    let mut upair = UnixStream::pair().unwrap_or_else(|_| die("socketpair"));
    upair
        .0
        .write_all(b"pair")
        .unwrap_or_else(|_| die("pair write"));
    let netlink = netlink_socket();
    let packet = raw_socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0);
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = server.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = udp.set_read_timeout(Some(Duration::from_secs(5)));
    let socks = Socks {
        listener,
        waiting,
        client,
        server,
        udp,
        udp_from,
        ulisten,
        _uwaiting: uwaiting,
        upair,
        netlink,
        packet,
        port,
    };
    ready(&args);
    wait_for_term(10, || {});
    finish(&args, check(socks));
}
