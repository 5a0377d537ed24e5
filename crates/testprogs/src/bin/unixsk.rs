//! `unixsk`: unix sockets with queued data, checked after restore.
//!
//! `--mode`:
//! - `all --dir D` (default): one process holding
//!   - a stream, a datagram and a seqpacket socketpair, each with messages
//!     queued in both directions (a zero-length datagram among them, 60000
//!     bytes in one stream direction); SO_SNDBUF, SO_PASSCRED, SO_RCVTIMEO
//!     and O_NONBLOCK set on some ends;
//!   - a stream pair where one end did shutdown(SHUT_WR) after a message;
//!   - a datagram socket bound to D/dgram.sock and one bound to an abstract
//!     name, each with a datagram queued from a socket closed since;
//!   - a stream socket listening on D/listen.sock (backlog 5) and one on an
//!     abstract name.
//!
//!   The check: names, types, options, flags, every queued message exactly
//!   and in order then nothing more, the shutdown state, that the pairs
//!   still carry data both ways, and that new clients can connect to both
//!   listeners and talk to the accepted sockets.
//! - `child`: a stream and a seqpacket socketpair split between the parent
//!   and its child, messages queued both ways. The child checks its side
//!   and answers; its exit status is part of the verdict.
//! - `rights --dir D`: messages carrying fds (SCM_RIGHTS) queued on a
//!   datagram pair: a pipe's read end the process still holds, a regular
//!   file D/rights.txt at offset 6 and a stream socket with data queued,
//!   both closed by the process since. The check: each message comes with
//!   its fd, which works (the pipe carries data, the file reads from its
//!   offset, the socket has its data and talks to its peer).
//! - `rights-uffd`: a message carrying a userfaultfd, which crust refuses
//!   to dump. The check: the message and its fd are still there.
//! - `ext --dir D`: a datagram socket connected to D/ext.sock, bound by a
//!   process outside the tree. The check: it is still connected there and
//!   sends "after restore" to it.
//! - `pending --dir D`: a non-blocking listener on D/pending.sock with two
//!   connections not yet accepted. The check: both are accepted, in order,
//!   and carry data both ways; nothing more waits; new clients still
//!   connect.
//! - `pending-data --dir D`: the same, the first client having sent
//!   "early" before being accepted, which crust refuses to dump. The
//!   check: the same, "early" received first.

use crust_testprogs::{cpath, die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::path::Path;

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn pair(ty: i32) -> (i32, i32) {
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a writable array of two c_ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) } != 0 {
        die("socketpair");
    }
    (fds[0], fds[1])
}

fn sock(ty: i32) -> i32 {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
    if fd < 0 {
        die("socket");
    }
    fd
}

fn addr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: sockaddr_un is plain old data; zeroes are valid.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sun.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // Paths are passed with their NUL, abstract names without one.
    let extra = usize::from(name.first() != Some(&0));
    (sun, (2 + name.len() + extra) as libc::socklen_t)
}

fn bind(fd: i32, name: &[u8]) {
    let (sun, len) = addr(name);
    // SAFETY: sun is a valid sockaddr_un of at least len bytes.
    if unsafe { libc::bind(fd, &sun as *const _ as *const libc::sockaddr, len) } != 0 {
        die("bind");
    }
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
    let mut off = 0;
    loop {
        // SAFETY: data[off..] is readable.
        let n = unsafe {
            libc::send(
                fd,
                data[off..].as_ptr() as *const libc::c_void,
                data.len() - off,
                libc::MSG_NOSIGNAL,
            )
        };
        ensure!(n >= 0, "send on fd {fd}: {}", err());
        off += n as usize;
        if off >= data.len() {
            return Ok(());
        }
    }
}

fn sendto(fd: i32, data: &[u8], name: &[u8]) {
    let (sun, len) = addr(name);
    // SAFETY: data and sun are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr() as *const libc::c_void,
            data.len(),
            0,
            &sun as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if n != data.len() as isize {
        die("sendto");
    }
}

/// One recv of at most `max` bytes, non-blocking.
fn recv(fd: i32, max: usize) -> Result<Vec<u8>, std::io::Error> {
    let mut buf = vec![0u8; max];
    // SAFETY: buf is writable for max bytes.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr() as *mut libc::c_void,
            max,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn expect_msg(fd: i32, want: &[u8]) -> Result<(), String> {
    let got = recv(fd, want.len() + 64).map_err(|e| format!("recv on fd {fd}: {e}"))?;
    ensure!(
        got == want,
        "fd {fd}: got {:?}, expected {:?}",
        String::from_utf8_lossy(&got[..got.len().min(80)]),
        String::from_utf8_lossy(&want[..want.len().min(80)])
    );
    Ok(())
}

fn expect_stream(fd: i32, want: &[u8]) -> Result<(), String> {
    let mut got = Vec::new();
    while got.len() < want.len() {
        let c = recv(fd, want.len() - got.len())
            .map_err(|e| format!("recv on fd {fd} after {} bytes: {e}", got.len()))?;
        ensure!(
            !c.is_empty(),
            "end of stream on fd {fd} after {} bytes",
            got.len()
        );
        got.extend(c);
    }
    ensure!(got == want, "fd {fd}: the stream bytes differ");
    Ok(())
}

fn expect_empty(fd: i32) -> Result<(), String> {
    match recv(fd, 16) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(()),
        other => Err(format!("fd {fd} should have nothing queued: {other:?}")),
    }
}

fn getopt(fd: i32, opt: i32) -> Result<i32, String> {
    let mut v: libc::c_int = 0;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: v and len are valid out-pointers.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &mut v as *mut _ as *mut _,
            &mut len,
        )
    };
    ensure!(r == 0, "getsockopt {opt} on fd {fd}: {}", err());
    Ok(v)
}

fn setopt(fd: i32, opt: i32, v: i32) {
    // SAFETY: v is a readable c_int.
    let r = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, &v as *const _ as *const _, 4) };
    if r != 0 {
        die("setsockopt");
    }
}

fn sockname(fd: i32) -> Result<Vec<u8>, String> {
    // SAFETY: sockaddr_un is plain old data.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: sun and len are valid out-pointers.
    let r = unsafe { libc::getsockname(fd, &mut sun as *mut _ as *mut _, &mut len) };
    ensure!(r == 0, "getsockname fd {fd}: {}", err());
    Ok(sun.sun_path[..(len as usize).saturating_sub(2)]
        .iter()
        .map(|c| *c as u8)
        .collect())
}

fn accept(fd: i32) -> Result<i32, String> {
    // SAFETY: null address pointers are allowed.
    let c = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
    ensure!(c >= 0, "accept on fd {fd}: {}", err());
    Ok(c)
}

fn link(fd: i32) -> String {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// A new client of the listener at `name` exchanges data with the
/// accepted socket.
fn listener_works(l: i32, name: &[u8]) -> Result<(), String> {
    let c = sock(libc::SOCK_STREAM);
    connect(c, name)?;
    let a = accept(l)?;
    send(c, b"hello server")?;
    sleep_ms(10);
    expect_msg(a, b"hello server")?;
    send(a, b"hello client")?;
    sleep_ms(10);
    expect_msg(c, b"hello client")?;
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(a);
        libc::close(c);
    }
    Ok(())
}

fn rcvtimeo(fd: i32) -> (i64, i64) {
    // SAFETY: a timeval out-pointer and its length.
    let tv = unsafe {
        let mut tv: libc::timeval = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::timeval>() as u32;
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &mut tv as *mut _ as *mut _,
            &mut len,
        );
        tv
    };
    (tv.tv_sec, tv.tv_usec)
}

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 13 % 251) as u8).collect()
}

fn is_socket(fd: i32) -> Result<(), String> {
    ensure!(link(fd).starts_with("socket:["), "fd {fd} is {}", link(fd));
    Ok(())
}

fn check_type(fd: i32, ty: i32) -> Result<(), String> {
    is_socket(fd)?;
    let t = getopt(fd, libc::SO_TYPE)?;
    ensure!(t == ty, "fd {fd} has type {t}, not {ty}");
    Ok(())
}

fn mode_all(dir: &Path, me: u32) -> Box<dyn FnOnce() -> Result<(), String>> {
    let (s1, s2) = pair(libc::SOCK_STREAM);
    let data = big(60000);
    setopt(s1, libc::SO_SNDBUF, 300000);
    send(s1, &data).unwrap_or_else(|_| die("send"));
    send(s2, b"stream back").unwrap_or_else(|_| die("send"));
    // SAFETY: a timeval for SO_RCVTIMEO.
    unsafe {
        let tv = libc::timeval {
            tv_sec: 7,
            tv_usec: 250000,
        };
        libc::setsockopt(
            s2,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const _,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let tv0 = rcvtimeo(s2);
    let (d1, d2) = pair(libc::SOCK_DGRAM);
    for m in [&b"dgram one"[..], b"", b"dgram three"] {
        send(d1, m).unwrap_or_else(|_| die("send"));
    }
    send(d2, b"dgram back").unwrap_or_else(|_| die("send"));
    setopt(d2, libc::SO_PASSCRED, 1);
    // SAFETY: F_SETFL with an integer.
    unsafe { libc::fcntl(d1, libc::F_SETFL, libc::O_NONBLOCK) };
    let (q1, q2) = pair(libc::SOCK_SEQPACKET);
    send(q1, b"seq one").unwrap_or_else(|_| die("send"));
    send(q1, b"seq two, longer").unwrap_or_else(|_| die("send"));
    send(q2, b"seq back").unwrap_or_else(|_| die("send"));
    let (h1, h2) = pair(libc::SOCK_STREAM);
    send(h1, b"bye").unwrap_or_else(|_| die("send"));
    // SAFETY: shutdown of our own socket.
    unsafe { libc::shutdown(h1, libc::SHUT_WR) };
    let path = |n: &str| {
        let mut v = dir.join(n).as_os_str().as_encoded_bytes().to_vec();
        let _ = std::fs::remove_file(dir.join(n));
        v.shrink_to_fit();
        v
    };
    let dpath = path("dgram.sock");
    let b1 = sock(libc::SOCK_DGRAM);
    bind(b1, &dpath);
    let tmp = sock(libc::SOCK_DGRAM);
    sendto(tmp, b"to the bound path", &dpath);
    let aname = format!("\0crust-unixsk-dgram-{me}").into_bytes();
    let b2 = sock(libc::SOCK_DGRAM);
    bind(b2, &aname);
    sendto(tmp, b"to the abstract name", &aname);
    // SAFETY: closing our own fd.
    unsafe { libc::close(tmp) };
    let lpath = path("listen.sock");
    let l1 = sock(libc::SOCK_STREAM);
    bind(l1, &lpath);
    // SAFETY: listen on our own socket.
    unsafe { libc::listen(l1, 5) };
    let lname = format!("\0crust-unixsk-listen-{me}").into_bytes();
    let l2 = sock(libc::SOCK_STREAM);
    bind(l2, &lname);
    // SAFETY: listen on our own socket.
    unsafe { libc::listen(l2, 3) };
    Box::new(move || {
        check_type(s1, libc::SOCK_STREAM)?;
        check_type(d1, libc::SOCK_DGRAM)?;
        check_type(q1, libc::SOCK_SEQPACKET)?;
        check_type(l1, libc::SOCK_STREAM)?;
        ensure!(
            getopt(s1, libc::SO_SNDBUF)? == 600000,
            "fd {s1} SO_SNDBUF {}",
            getopt(s1, libc::SO_SNDBUF)?
        );
        ensure!(
            getopt(d2, libc::SO_PASSCRED)? == 1,
            "fd {d2} lost SO_PASSCRED"
        );
        ensure!(
            getopt(d1, libc::SO_PASSCRED)? == 0,
            "fd {d1} got SO_PASSCRED"
        );
        ensure!(
            getopt(l1, libc::SO_ACCEPTCONN)? == 1,
            "fd {l1} is not listening"
        );
        // SAFETY: F_GETFL takes no pointer.
        let fl = unsafe { libc::fcntl(d1, libc::F_GETFL) };
        ensure!(fl & libc::O_NONBLOCK != 0, "fd {d1} lost O_NONBLOCK");
        // SAFETY: F_GETFL takes no pointer.
        let fl = unsafe { libc::fcntl(d2, libc::F_GETFL) };
        ensure!(fl & libc::O_NONBLOCK == 0, "fd {d2} became O_NONBLOCK");
        // The kernel rounds the timeout to its clock ticks: compare with
        // what it said at set-up.
        let tv = rcvtimeo(s2);
        ensure!(
            tv.0 == 7 && tv == tv0,
            "fd {s2} SO_RCVTIMEO {tv:?}, was {tv0:?}"
        );
        // Queued data, exactly.
        expect_stream(s2, &data)?;
        expect_empty(s2)?;
        expect_msg(s1, b"stream back")?;
        expect_empty(s1)?;
        expect_msg(d2, b"dgram one")?;
        expect_msg(d2, b"")?;
        expect_msg(d2, b"dgram three")?;
        expect_empty(d2)?;
        expect_msg(d1, b"dgram back")?;
        expect_empty(d1)?;
        expect_msg(q2, b"seq one")?;
        expect_msg(q2, b"seq two, longer")?;
        expect_empty(q2)?;
        expect_msg(q1, b"seq back")?;
        expect_empty(q1)?;
        // Shutdown: the message, then end of stream; the other way works.
        expect_msg(h2, b"bye")?;
        let eof = recv(h2, 16).map_err(|e| format!("fd {h2} after bye: {e}"))?;
        ensure!(eof.is_empty(), "fd {h2} got more after bye");
        send(h2, b"still open")?;
        sleep_ms(10);
        expect_msg(h1, b"still open")?;
        // SAFETY: send on our own socket.
        let r = unsafe { libc::send(h1, b"x".as_ptr() as *const _, 1, libc::MSG_NOSIGNAL) };
        ensure!(r < 0, "fd {h1} can send after shutdown(SHUT_WR)");
        // Bound sockets.
        ensure!(
            sockname(b1)? == dpath.iter().copied().chain([0]).collect::<Vec<u8>>(),
            "fd {b1} name {:?}",
            sockname(b1)?
        );
        expect_msg(b1, b"to the bound path")?;
        expect_empty(b1)?;
        ensure!(sockname(b2)? == aname, "fd {b2} name {:?}", sockname(b2)?);
        expect_msg(b2, b"to the abstract name")?;
        expect_empty(b2)?;
        // The pairs still work both ways.
        for (a, b) in [(s1, s2), (d1, d2), (q1, q2)] {
            send(a, b"new")?;
            send(b, b"wen")?;
            sleep_ms(5);
            expect_msg(b, b"new")?;
            expect_msg(a, b"wen")?;
        }
        listener_works(l1, &lpath)?;
        listener_works(l2, &lname)?;
        Ok(())
    })
}

fn fork_child(f: impl FnOnce() -> Result<(), String>) -> i32 {
    // SAFETY: single-threaded process: the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork");
    }
    if pid == 0 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        while !term_requested() {
            sleep_ms(10);
        }
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child {}: {e}", std::process::id());
                1
            }
        };
        std::process::exit(code);
    }
    pid
}

fn mode_child() -> Box<dyn FnOnce() -> Result<(), String>> {
    let (s1, s2) = pair(libc::SOCK_STREAM);
    let (q1, q2) = pair(libc::SOCK_SEQPACKET);
    send(s1, b"parent to child").unwrap_or_else(|_| die("send"));
    send(s2, b"child to parent").unwrap_or_else(|_| die("send"));
    send(q1, b"seq parent to child").unwrap_or_else(|_| die("send"));
    send(q2, b"seq child to parent").unwrap_or_else(|_| die("send"));
    let child = fork_child(move || {
        expect_msg(s2, b"parent to child")?;
        expect_msg(q2, b"seq parent to child")?;
        send(s2, b"child alive")?;
        send(q2, b"seq child alive")?;
        Ok(())
    });
    // SAFETY: closing our own fds: the child holds the other ends.
    unsafe {
        libc::close(s2);
        libc::close(q2);
    }
    Box::new(move || {
        is_socket(s1)?;
        ensure!(link(s2).starts_with('<'), "the parent has fd {s2} again");
        expect_msg(s1, b"child to parent")?;
        expect_msg(q1, b"seq child to parent")?;
        let mut status = 0;
        // SAFETY: kill and waitpid on our own child.
        let r = unsafe {
            libc::kill(child, libc::SIGTERM);
            libc::waitpid(child, &mut status, 0)
        };
        ensure!(r == child, "waitpid: {}", err());
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed its check (status {status:#x})"
        );
        expect_msg(s1, b"child alive")?;
        expect_msg(q1, b"seq child alive")?;
        Ok(())
    })
}

/// Send the one byte `byte` on `sock` with `fd` attached (SCM_RIGHTS).
fn send_fd(sock: i32, byte: u8, fd: i32) {
    let data = [byte];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain old data; the control buffer has room for one
    // fd (CMSG_SPACE(4) = 24 bytes); every pointer lives during sendmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut _;
        msg.msg_controllen = libc::CMSG_SPACE(4) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::copy_nonoverlapping(fd.to_ne_bytes().as_ptr(), libc::CMSG_DATA(c), 4);
        if libc::sendmsg(sock, &msg, 0) != 1 {
            die("sendmsg");
        }
    }
}

/// Receive a one-byte message that must be `byte` and carry an fd.
fn recv_fd(sock: i32, byte: u8) -> Result<i32, String> {
    let mut buf = [0u8; 4];
    let mut control = [0u64; 4];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut _,
        iov_len: 4,
    };
    // SAFETY: as in send_fd, for recvmsg; CMSG_DATA is read only when a
    // control message came.
    let (n, fd) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut _;
        msg.msg_controllen = 32;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT);
        let c = libc::CMSG_FIRSTHDR(&msg);
        let fd = if n < 0 || c.is_null() {
            -1
        } else {
            let mut v = [0u8; 4];
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c), v.as_mut_ptr(), 4);
            i32::from_ne_bytes(v)
        };
        (n, fd)
    };
    ensure!(
        n == 1 && buf[0] == byte,
        "recvmsg: {n} {:?} {}",
        buf[0] as char,
        err()
    );
    ensure!(fd >= 0, "message {:?} came without its fd", byte as char);
    Ok(fd)
}

/// Messages carrying fds queued on a datagram pair: a pipe's read end the
/// process also holds, a regular file (offset 6) and one end of a stream
/// pair (with data queued) that it closed since.
fn mode_rights(dir: &Path) -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_DGRAM);
    let p = crust_testprogs::make_pipe();
    send_fd(a, b'P', p[0]);
    let fpath = dir.join("rights.txt");
    std::fs::write(&fpath, b"hello rights").unwrap_or_else(|_| die("write rights.txt"));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fpath)
        .unwrap_or_else(|_| die("open rights.txt"));
    {
        use std::io::Seek;
        (&file)
            .seek(std::io::SeekFrom::Start(6))
            .unwrap_or_else(|_| die("seek"));
    }
    send_fd(a, b'R', std::os::fd::AsRawFd::as_raw_fd(&file));
    drop(file);
    let (s0, s1) = pair(libc::SOCK_STREAM);
    send(s0, b"queued").unwrap_or_else(|_| die("send"));
    send_fd(a, b'S', s1);
    // SAFETY: closing our own fd, which only the message carries now.
    unsafe { libc::close(s1) };
    Box::new(move || {
        let fd = recv_fd(b, b'P')?;
        crust_testprogs::pipe_works([fd, p[1]])?;
        let fd = recv_fd(b, b'R')?;
        let mut buf = [0u8; 32];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut _, buf.len()) };
        ensure!(
            n == 6 && &buf[..6] == b"rights",
            "read from the carried file: {n} {:?}",
            String::from_utf8_lossy(&buf[..n.max(0) as usize])
        );
        let fd = recv_fd(b, b'S')?;
        expect_msg(fd, b"queued")?;
        send(s0, b"more")?;
        expect_msg(fd, b"more")?;
        send(fd, b"back")?;
        expect_msg(s0, b"back")?;
        Ok(())
    })
}

/// A message carrying a userfaultfd, which crust refuses to dump. The
/// check: the message and its fd are still there.
fn mode_rights_uffd() -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_DGRAM);
    let u = crust_testprogs::make_undumpable_fd();
    send_fd(a, b'U', u);
    // SAFETY: closing our own fd, which only the message carries now.
    unsafe { libc::close(u) };
    Box::new(move || {
        let fd = recv_fd(b, b'U')?;
        crust_testprogs::undumpable_fd_ok(fd)
    })
}

fn mode_pending(dir: &Path, early: bool) -> Box<dyn FnOnce() -> Result<(), String>> {
    let lpath = dir
        .join("pending.sock")
        .as_os_str()
        .as_encoded_bytes()
        .to_vec();
    let _ = std::fs::remove_file(dir.join("pending.sock"));
    let l = sock(libc::SOCK_STREAM | libc::SOCK_NONBLOCK);
    bind(l, &lpath);
    // SAFETY: listen on our own socket.
    unsafe { libc::listen(l, 4) };
    let c1 = sock(libc::SOCK_STREAM);
    connect(c1, &lpath).unwrap_or_else(|_| die("connect"));
    let c2 = sock(libc::SOCK_STREAM);
    connect(c2, &lpath).unwrap_or_else(|_| die("connect"));
    if early {
        send(c1, b"early").unwrap_or_else(|_| die("send"));
    }
    let _ = cpath(dir);
    Box::new(move || {
        // Both connections are waiting, in the order they were made.
        let a1 = accept(l)?;
        let a2 = accept(l)?;
        if early {
            expect_msg(a1, b"early")?;
        }
        for (c, a, m) in [(c1, a1, &b"one"[..]), (c2, a2, b"two")] {
            send(c, m)?;
            expect_msg(a, m)?;
            send(a, b"back")?;
            expect_msg(c, b"back")?;
        }
        // SAFETY: null address pointers are allowed.
        let third = unsafe { libc::accept4(l, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        ensure!(third < 0, "a third connection was waiting");
        listener_works(l, &lpath)
    })
}

fn mode_ext(dir: &Path) -> Box<dyn FnOnce() -> Result<(), String>> {
    let path = dir.join("ext.sock").as_os_str().as_encoded_bytes().to_vec();
    let c = sock(libc::SOCK_DGRAM);
    connect(c, &path).unwrap_or_else(|_| die("connect"));
    send(c, b"before dump").unwrap_or_else(|_| die("send"));
    Box::new(move || {
        // SAFETY: sockaddr_un is plain old data.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: sun and len are valid out-pointers.
        let r = unsafe { libc::getpeername(c, &mut sun as *mut _ as *mut _, &mut len) };
        ensure!(r == 0, "getpeername: {}", err());
        let peer: Vec<u8> = sun.sun_path[..(len as usize).saturating_sub(2)]
            .iter()
            .map(|c| *c as u8)
            .take_while(|c| *c != 0)
            .collect();
        ensure!(
            peer == path,
            "connected to {:?}",
            String::from_utf8_lossy(&peer)
        );
        send(c, b"after restore")
    })
}

/// Sockets whose bound file was unlinked: a listener with an accepted
/// connection, a datagram socket with a message queued.
fn mode_deleted(dir: &Path) -> Box<dyn FnOnce() -> Result<(), String>> {
    let lpath = dir
        .join("gone.sock")
        .as_os_str()
        .as_encoded_bytes()
        .to_vec();
    let dpath = dir
        .join("gone-dgram.sock")
        .as_os_str()
        .as_encoded_bytes()
        .to_vec();
    let l = sock(libc::SOCK_STREAM);
    bind(l, &lpath);
    // SAFETY: plain listen(2).
    if unsafe { libc::listen(l, 4) } != 0 {
        die("listen");
    }
    let c = sock(libc::SOCK_STREAM);
    connect(c, &lpath).unwrap_or_else(|_| die("connect"));
    let a = accept(l).unwrap_or_else(|_| die("accept"));
    send(c, b"to the server").unwrap_or_else(|_| die("send"));
    let d = sock(libc::SOCK_DGRAM);
    bind(d, &dpath);
    sendto(sock(libc::SOCK_DGRAM), b"queued", &dpath);
    for p in [&lpath, &dpath] {
        std::fs::remove_file(String::from_utf8_lossy(p).as_ref()).unwrap_or_else(|_| die("unlink"));
    }
    Box::new(move || {
        for (fd, p) in [(l, &lpath), (d, &dpath)] {
            let name = sockname(fd)?;
            ensure!(
                name.starts_with(p),
                "fd {fd} is bound to {:?}",
                String::from_utf8_lossy(&name)
            );
            let path = String::from_utf8_lossy(p).into_owned();
            ensure!(
                !Path::new(&path).exists(),
                "{path} exists again after restore"
            );
        }
        ensure!(
            getopt(l, libc::SO_ACCEPTCONN)? == 1,
            "the listener no longer listens"
        );
        expect_stream(a, b"to the server")?;
        send(a, b"to the client")?;
        sleep_ms(10);
        expect_stream(c, b"to the client")?;
        expect_msg(d, b"queued")
    })
}

/// A message and the credentials (SCM_CREDENTIALS) it came with.
fn recv_creds(fd: i32) -> Result<(Vec<u8>, Option<libc::ucred>), String> {
    let mut buf = vec![0u8; 256];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; zeroes are valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: the iovec and control buffers are writable and live.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    ensure!(n >= 0, "recvmsg on fd {fd}: {}", err());
    buf.truncate(n as usize);
    let mut creds = None;
    // SAFETY: the kernel filled msg_control; CMSG_* walk it within
    // msg_controllen, and a SCM_CREDENTIALS payload is a ucred.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                creds = Some(std::ptr::read_unaligned(
                    libc::CMSG_DATA(c) as *const libc::ucred
                ));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((buf, creds))
}

/// Messages in flight on sockets that pass credentials (SO_PASSCRED): the
/// receiver must see the same sender pid, uid and gid after restore, for a
/// message from this process and one from a child.
fn mode_creds() -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_DGRAM);
    setopt(b, libc::SO_PASSCRED, 1);
    let (s1, s2) = pair(libc::SOCK_SEQPACKET);
    setopt(s2, libc::SO_PASSCRED, 1);
    send(a, b"from parent").unwrap_or_else(|_| die("send"));
    send(s1, b"seqpacket from parent").unwrap_or_else(|_| die("send"));
    // SAFETY: single-threaded process: the child may run any code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let _ = send(a, b"from child");
        loop {
            sleep_ms(50);
        }
    }
    sleep_ms(100);
    let me = std::process::id() as i32;
    Box::new(move || {
        let check = |fd: i32, want: &[u8], pid: i32| -> Result<(), String> {
            let (got, c) = recv_creds(fd)?;
            ensure!(
                got == want,
                "fd {fd}: got {:?}",
                String::from_utf8_lossy(&got)
            );
            let c = c.ok_or_else(|| {
                format!(
                    "fd {fd}: no credentials with {:?}",
                    String::from_utf8_lossy(want)
                )
            })?;
            ensure!(
                c.pid == pid && c.uid == 0 && c.gid == 0,
                "fd {fd}: {:?} came from pid {} uid {} gid {}, expected pid {pid}",
                String::from_utf8_lossy(want),
                c.pid,
                c.uid,
                c.gid
            );
            Ok(())
        };
        let r = check(b, b"from parent", me)
            .and_then(|_| check(b, b"from child", child))
            .and_then(|_| check(s2, b"seqpacket from parent", me));
        // SAFETY: our child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        r
    })
}

fn main() {
    let args = start();
    let mode = args.opt("mode").unwrap_or("all").to_string();
    let me = std::process::id();
    crust_testprogs::install_term_handler();
    let check = match mode.as_str() {
        "all" => mode_all(&args.path("dir"), me),
        "child" => mode_child(),
        "rights" => mode_rights(&args.path("dir")),
        "rights-uffd" => mode_rights_uffd(),
        "pending" => mode_pending(&args.path("dir"), false),
        "pending-data" => mode_pending(&args.path("dir"), true),
        "ext" => mode_ext(&args.path("dir")),
        "deleted" => mode_deleted(&args.path("dir")),
        "creds" => mode_creds(),
        m => die(&format!("unknown mode {m}")),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, check());
}
