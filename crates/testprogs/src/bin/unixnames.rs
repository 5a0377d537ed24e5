//! `unixnames`: unix sockets whose names or connections CRIU's zdtm
//! exercises beyond `unixsk`, checked after restore.
//!
//! `--mode`:
//! - `rel --dir D`: the process works in D and binds to relative names: a
//!   stream listener on `rel.sock` with a connection not yet accepted, a
//!   datagram socket on `rel-dgram.sock` with a datagram queued. The check:
//!   the names are still the relative ones, the waiting connection is
//!   accepted and carries data, the datagram is there, new clients connect
//!   by the relative name.
//! - `lone`: a datagram server on an abstract name that two clients
//!   connected to (the kernel reports it established, with no peer), one
//!   datagram from the first queued; a stream and a seqpacket socket bound
//!   to abstract names, never connected. The check: the datagram is there,
//!   both clients still reach the server, the server is connected nowhere,
//!   the unconnected sockets can listen and accept.
//! - `ghost --dir D`: names whose files were gone at dump time while
//!   something else took their place: a datagram server bound to
//!   D/sub/g.sock (D/sub removed since) with a client connected to it; a
//!   datagram socket bound to D/fifo.sock, whose file was replaced by a
//!   FIFO; two listeners bound to D/l.sock in turn, the first one's file
//!   renamed over the second's. The check: the client still reaches its
//!   server, D/sub is still gone, D/fifo.sock is still the FIFO, D/l.sock
//!   reaches the first listener.

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn sock(ty: i32) -> i32 {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
    if fd < 0 {
        die("socket");
    }
    fd
}

/// A sockaddr_un for `name`: a path without its NUL, or an abstract name
/// starting with one.
fn addr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain old data; zeroes are valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sun.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    (sun, (2 + name.len()) as libc::socklen_t)
}

fn bind(fd: i32, name: &[u8]) {
    let (sun, len) = addr(name);
    // SAFETY: sun is a valid sockaddr_un of at least len bytes.
    if unsafe { libc::bind(fd, &sun as *const _ as *const libc::sockaddr, len) } != 0 {
        die("bind");
    }
}

fn listen(fd: i32) -> Result<(), String> {
    // SAFETY: plain listen(2).
    ensure!(unsafe { libc::listen(fd, 4) } == 0, "listen: {}", err());
    Ok(())
}

fn connect(fd: i32, name: &[u8]) -> Result<(), String> {
    let (sun, len) = addr(name);
    // SAFETY: sun is a valid sockaddr_un of at least len bytes.
    let r = unsafe { libc::connect(fd, &sun as *const _ as *const libc::sockaddr, len) };
    ensure!(
        r == 0,
        "connect to {}: {}",
        String::from_utf8_lossy(name),
        err()
    );
    Ok(())
}

fn send(fd: i32, data: &[u8]) -> Result<(), String> {
    // SAFETY: data is readable for its length.
    let n = unsafe {
        libc::send(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    ensure!(n == data.len() as isize, "send on fd {fd}: {}", err());
    Ok(())
}

fn expect_msg(fd: i32, want: &[u8]) -> Result<(), String> {
    let mut buf = vec![0u8; want.len() + 64];
    // SAFETY: buf is writable for its length.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    ensure!(n >= 0, "recv on fd {fd}: {}", err());
    buf.truncate(n as usize);
    ensure!(
        buf == want,
        "fd {fd}: got {:?}, expected {:?}",
        String::from_utf8_lossy(&buf),
        String::from_utf8_lossy(want)
    );
    Ok(())
}

fn accept(fd: i32) -> Result<i32, String> {
    // SAFETY: null address pointers are allowed.
    let c = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
    ensure!(c >= 0, "accept on fd {fd}: {}", err());
    Ok(c)
}

/// getsockname or getpeername of `fd`, without a trailing NUL.
fn name_of(fd: i32, peer: bool) -> Result<Vec<u8>, String> {
    // SAFETY: sockaddr_un is plain old data.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = &mut sun as *mut _ as *mut libc::sockaddr;
    // SAFETY: sun and len are valid out-pointers.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    ensure!(r == 0, "getsockname/getpeername fd {fd}: {}", err());
    let mut n: Vec<u8> = sun.sun_path[..(len as usize).saturating_sub(2)]
        .iter()
        .map(|c| *c as u8)
        .collect();
    if n.first() != Some(&0) {
        while n.last() == Some(&0) {
            n.pop();
        }
    }
    Ok(n)
}

/// A new client of the listener `l`, reached at `name`, talks to it.
fn listener_works(l: i32, name: &[u8]) -> Result<(), String> {
    let c = sock(libc::SOCK_STREAM);
    connect(c, name)?;
    let a = accept(l)?;
    send(c, b"ping")?;
    sleep_ms(10);
    expect_msg(a, b"ping")?;
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(a);
        libc::close(c);
    }
    Ok(())
}

type Check = Box<dyn FnOnce() -> Result<(), String>>;

fn mode_rel(dir: &Path) -> Check {
    std::env::set_current_dir(dir).unwrap_or_else(|_| die("chdir"));
    let l = sock(libc::SOCK_STREAM);
    bind(l, b"rel.sock");
    listen(l).unwrap_or_else(|e| die(&e));
    let c = sock(libc::SOCK_STREAM);
    connect(c, b"rel.sock").unwrap_or_else(|e| die(&e));
    let d = sock(libc::SOCK_DGRAM);
    bind(d, b"rel-dgram.sock");
    let s = sock(libc::SOCK_DGRAM);
    connect(s, b"rel-dgram.sock").unwrap_or_else(|e| die(&e));
    send(s, b"queued by name").unwrap_or_else(|e| die(&e));
    // SAFETY: closing our own fd.
    unsafe { libc::close(s) };
    Box::new(move || {
        ensure!(name_of(l, false)? == b"rel.sock", "listener name changed");
        ensure!(
            name_of(d, false)? == b"rel-dgram.sock",
            "datagram name changed"
        );
        expect_msg(d, b"queued by name")?;
        let a = accept(l)?;
        send(c, b"waiting")?;
        sleep_ms(10);
        expect_msg(a, b"waiting")?;
        listener_works(l, b"rel.sock")
    })
}

fn mode_lone() -> Check {
    let name = format!("\0crust-unixnames-{}", std::process::id()).into_bytes();
    let srv = sock(libc::SOCK_DGRAM | libc::SOCK_NONBLOCK);
    bind(srv, &name);
    let c1 = sock(libc::SOCK_DGRAM);
    let c2 = sock(libc::SOCK_DGRAM);
    for c in [c1, c2] {
        connect(c, &name).unwrap_or_else(|e| die(&e));
    }
    send(c1, b"from c1").unwrap_or_else(|e| die(&e));
    let st = sock(libc::SOCK_STREAM);
    let st_name = [&name[..], b"-stream"].concat();
    bind(st, &st_name);
    let sp = sock(libc::SOCK_SEQPACKET);
    let sp_name = [&name[..], b"-seqpacket"].concat();
    bind(sp, &sp_name);
    Box::new(move || {
        expect_msg(srv, b"from c1")?;
        send(c2, b"from c2")?;
        expect_msg(srv, b"from c2")?;
        send(c1, b"again")?;
        expect_msg(srv, b"again")?;
        ensure!(
            name_of(srv, true).is_err(),
            "the server is connected somewhere"
        );
        for (fd, n) in [(st, &st_name), (sp, &sp_name)] {
            ensure!(name_of(fd, false)? == *n, "fd {fd}: name changed");
            listen(fd)?;
        }
        listener_works(st, &st_name)
    })
}

fn path_bytes(p: &Path) -> Vec<u8> {
    p.as_os_str().as_encoded_bytes().to_vec()
}

fn mode_ghost(dir: &Path) -> Check {
    let sub = dir.join("sub");
    std::fs::create_dir(&sub).unwrap_or_else(|_| die("mkdir"));
    let g = path_bytes(&sub.join("g.sock"));
    let srv = sock(libc::SOCK_DGRAM);
    bind(srv, &g);
    let cl = sock(libc::SOCK_DGRAM);
    connect(cl, &g).unwrap_or_else(|e| die(&e));
    std::fs::remove_file(sub.join("g.sock")).unwrap_or_else(|_| die("unlink"));
    std::fs::remove_dir(&sub).unwrap_or_else(|_| die("rmdir"));

    let fp = dir.join("fifo.sock");
    let fs = sock(libc::SOCK_DGRAM);
    bind(fs, &path_bytes(&fp));
    std::fs::remove_file(&fp).unwrap_or_else(|_| die("unlink"));
    let cp = crust_testprogs::cpath(&fp);
    // SAFETY: cp is a NUL-terminated path.
    if unsafe { libc::mkfifo(cp.as_ptr(), 0o600) } != 0 {
        die("mkfifo");
    }

    let lp = dir.join("l.sock");
    let tmp = dir.join("l.tmp");
    let l1 = sock(libc::SOCK_STREAM);
    bind(l1, &path_bytes(&lp));
    listen(l1).unwrap_or_else(|e| die(&e));
    std::fs::rename(&lp, &tmp).unwrap_or_else(|_| die("rename"));
    let l2 = sock(libc::SOCK_STREAM);
    bind(l2, &path_bytes(&lp));
    listen(l2).unwrap_or_else(|e| die(&e));
    std::fs::rename(&tmp, &lp).unwrap_or_else(|_| die("rename back"));
    Box::new(move || {
        send(cl, b"to the ghost")?;
        expect_msg(srv, b"to the ghost")?;
        ensure!(!sub.exists(), "{} exists again", sub.display());
        let ft = std::fs::symlink_metadata(&fp)
            .map_err(|e| format!("{}: {e}", fp.display()))?
            .file_type();
        ensure!(ft.is_fifo(), "{} is no longer the FIFO", fp.display());
        ensure!(
            name_of(fs, false)? == path_bytes(&fp),
            "the FIFO's socket lost its name"
        );
        ensure!(
            name_of(l2, false)? == path_bytes(&lp),
            "the second listener lost its name"
        );
        listener_works(l1, &path_bytes(&lp))
    })
}

fn main() {
    let args = start();
    let mode = args.opt("mode").unwrap_or("rel").to_string();
    crust_testprogs::install_term_handler();
    let check = match mode.as_str() {
        "rel" => mode_rel(&args.path("dir")),
        "lone" => mode_lone(),
        "ghost" => mode_ghost(&args.path("dir")),
        m => die(&format!("unknown mode {m}")),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, check());
}
