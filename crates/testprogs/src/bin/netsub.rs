//! `netsub`: a tree in two network namespaces. The root unshares a network
//! namespace of its own (`--root-ns 0`: it stays in its parent's) and
//! brings `lo` up; then a forked child unshares another one, brings its
//! `lo` up, listens on TCP 0.0.0.0:PORT (`--port`, default 47100) and binds
//! the abstract unix datagram name `crust-netsub`. The test script adds a
//! veth pair between the two namespaces, with addresses.
//!
//! The root holds an fd on its child's network namespace.
//!
//! After SIGTERM the root checks that it and its child are still in two
//! namespaces, that its fd is on the child's, that the abstract name is not bound in its own (a connect is
//! refused), and with `--reach ADDR` that it connects to ADDR:PORT (the
//! child's listener, across the veth). Then it sends SIGTERM to the child,
//! which checks its listener accepts a connection from 127.0.0.1, that its
//! datagram socket still has the name and receives what is sent to it,
//! and exits 0 (1 with the reason on stderr); the root's verdict includes
//! the child's.

use crust_testprogs::{
    die, ensure, finish, install_term_handler, ready, sleep_ms, start, term_requested,
    wait_for_term,
};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const NAME: &[u8] = b"crust-netsub";

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

fn unshare_net() {
    // SAFETY: unshare takes a flag.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        die("unshare(CLONE_NEWNET)");
    }
    lo_up();
}

fn name() -> std::os::unix::net::SocketAddr {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(NAME)
        .unwrap_or_else(|_| die("abstract name"))
}

fn netns_of(pid: &str) -> Result<String, String> {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .map(|l| l.display().to_string())
        .map_err(|e| format!("/proc/{pid}/ns/net: {e}"))
}

/// The child's checks, in its own namespace.
fn child_check(listener: &TcpListener, dgram: &UnixDatagram, port: u16) -> Result<(), String> {
    let _c = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("child: connect to its listener on 127.0.0.1:{port}: {e}"))?;
    listener
        .set_nonblocking(false)
        .map_err(|e| format!("child: listener blocking: {e}"))?;
    listener
        .accept()
        .map_err(|e| format!("child: accept: {e}"))?;
    let bound = dgram
        .local_addr()
        .map_err(|e| format!("child: getsockname: {e}"))?;
    {
        use std::os::linux::net::SocketAddrExt;
        ensure!(
            bound.as_abstract_name() == Some(NAME),
            "child: its datagram socket is bound to {bound:?}"
        );
    }
    let s = UnixDatagram::unbound().map_err(|e| format!("child: socket: {e}"))?;
    s.send_to_addr(b"ping", &name())
        .map_err(|e| format!("child: send to its own abstract name: {e}"))?;
    let mut buf = [0u8; 8];
    dgram
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("child: timeout: {e}"))?;
    let n = dgram
        .recv(&mut buf)
        .map_err(|e| format!("child: recv: {e}"))?;
    ensure!(
        buf.get(..n) == Some(&b"ping"[..]),
        "child: got {:?}",
        buf.get(..n)
    );
    Ok(())
}

fn child(port: u16, ready_fd: i32) -> ! {
    unshare_net();
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|_| die("child: tcp bind"));
    let dgram = UnixDatagram::bind_addr(&name()).unwrap_or_else(|_| die("child: bind abstract"));
    install_term_handler();
    // SAFETY: one byte written to the pipe the parent waits on.
    unsafe {
        libc::write(ready_fd, b"r".as_ptr().cast(), 1);
        libc::close(ready_fd);
    }
    while !term_requested() {
        sleep_ms(10);
    }
    match child_check(&listener, &dgram, port) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

fn root_check(
    child: i32,
    nsfd: &std::fs::File,
    reach: Option<&str>,
    port: u16,
) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (mine, theirs) = (netns_of("self")?, netns_of(&child.to_string())?);
    ensure!(
        mine != theirs,
        "the child is in the root's network namespace {mine}"
    );
    let held = nsfd
        .metadata()
        .map_err(|e| format!("fstat of the nsfd: {e}"))?
        .ino();
    ensure!(
        theirs == format!("net:[{held}]"),
        "the fd held is on net:[{held}], the child is in {theirs}"
    );
    let s = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    ensure!(
        s.connect_addr(&name()).is_err(),
        "the child's abstract name is bound in the root's network namespace"
    );
    if let Some(addr) = reach {
        let to: std::net::SocketAddr = format!("{addr}:{port}")
            .parse()
            .map_err(|e| format!("--reach {addr}: {e}"))?;
        TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map_err(|e| format!("connect to the child's listener at {to}: {e}"))?;
    }
    Ok(())
}

fn main() {
    let args = start();
    let port = args.num("port", 47100) as u16;
    if args.num("root-ns", 1) == 1 {
        unshare_net();
    }
    let mut p = [0i32; 2];
    // SAFETY: pipe fills the two-int array.
    if unsafe { libc::pipe(p.as_mut_ptr()) } != 0 {
        die("pipe");
    }
    // SAFETY: single-threaded; the child runs on in its own code.
    let c = unsafe { libc::fork() };
    if c < 0 {
        die("fork");
    }
    if c == 0 {
        // SAFETY: the read end is the parent's.
        unsafe { libc::close(p[0]) };
        child(port, p[1]);
    }
    let mut b = [0u8; 1];
    // SAFETY: one byte read from the pipe into `b`; the write end closed
    // here first, so a dead child gives 0.
    let n = unsafe {
        libc::close(p[1]);
        libc::read(p[0], b.as_mut_ptr().cast(), 1)
    };
    if n != 1 {
        die("the child did not get ready");
    }
    let nsfd = std::fs::File::open(format!("/proc/{c}/ns/net"))
        .unwrap_or_else(|_| die("open the child's network namespace"));
    ready(&args);
    wait_for_term(10, || {});
    let verdict = root_check(c, &nsfd, args.opt("reach"), port);
    let mut status = 0;
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(c, libc::SIGTERM);
        libc::waitpid(c, &mut status, 0);
    }
    let verdict = verdict.and_then(|()| {
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
            Ok(())
        } else {
            Err(format!(
                "the child failed its checks (status {status:#x}; its reason is on its stderr)"
            ))
        }
    });
    finish(&args, verdict);
}
