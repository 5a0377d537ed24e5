//! `scmepoll`: epolls carried by messages queued on unix sockets
//! (SCM_RIGHTS) that no fd of the process holds any more, checked after
//! restore.
//!
//! `--mode`:
//! - `socket` (default): a datagram pair; an epoll watching the receiving
//!   end (EPOLLIN, data 0x5ca1ab1e) is sent twice over the pair, then
//!   closed. The check: the first message brings an epoll that reports
//!   the socket readable with its data; EPOLL_CTL_DEL of the socket by its
//!   fd number works (the registration kept its number); the second
//!   message brings the same epoll (nothing registered any more).
//! - `other`: an epoll watching a pipe's read end with bytes in it (data
//!   0x1111) and an eventfd with a count (data 0x2222) registered as fd N,
//!   since moved to another number with dup2 and N closed, is sent on a
//!   stream pair, then closed. The check: the epoll reports both ready,
//!   with their data and nothing else; EPOLL_CTL_DEL of the pipe by its
//!   number works; the pipe and the eventfd still work. `--moved 0`: the
//!   eventfd stays at the number it was registered with (CRIU 4.2 records
//!   a carried epoll's target numbers as registered, so only then can it
//!   restore its own images of this state).
//! - `child`: an epoll watching a pipe's read end, sent on a datagram pair
//!   whose sending end only a child holds (with the read end, at the same
//!   number); the parent keeps the receiving end and the write end. The
//!   check: the parent's message brings the epoll, reporting the pipe
//!   readable (its targets were registered in the child, whose fds name
//!   them); the child still has its fds and exits 0 on SIGTERM.
//! - `unheld`: an epoll watching a pipe's read end, both sent in one
//!   message and closed by the process: no process holds the watched
//!   file, which crust refuses to dump. The check: the message is still
//!   there with both fds, the epoll reporting the pipe readable.

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};

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

fn epoll() -> i32 {
    // SAFETY: epoll_create1 takes only integers.
    let ep = unsafe { libc::epoll_create1(0) };
    if ep < 0 {
        die("epoll_create1");
    }
    ep
}

fn ctl(ep: i32, op: i32, fd: i32, events: u32, data: u64) -> Result<(), String> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: ev is a valid epoll_event for the call.
    let r = unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
    ensure!(r == 0, "epoll_ctl({op}) of fd {fd}: {}", err());
    Ok(())
}

fn close(fd: i32) {
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
}

fn write_all(fd: i32, b: &[u8]) {
    // SAFETY: b is readable for its length.
    if unsafe { libc::write(fd, b.as_ptr() as *const _, b.len()) } != b.len() as isize {
        die("write");
    }
}

/// Send the one byte `byte` on `sock` with `fds` attached (SCM_RIGHTS).
fn send_fds(sock: i32, byte: u8, fds: &[i32]) {
    let data = [byte];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    let n = (fds.len() * 4) as u32;
    // The control buffer has room for up to 8 fds (CMSG_SPACE(32) = 48).
    // SAFETY: msghdr is plain old data; every pointer lives during sendmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut _;
        msg.msg_controllen = libc::CMSG_SPACE(n) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(n) as usize;
        let bytes: Vec<u8> = fds.iter().flat_map(|f| f.to_ne_bytes()).collect();
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), libc::CMSG_DATA(c), bytes.len());
        if libc::sendmsg(sock, &msg, 0) != 1 {
            die("sendmsg");
        }
    }
}

/// Receive a one-byte message that must be `byte` and carry `n` fds.
fn recv_fds(sock: i32, byte: u8, n: usize) -> Result<Vec<i32>, String> {
    let mut buf = [0u8; 4];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut _,
        iov_len: 4,
    };
    // SAFETY: as in send_fds, for recvmsg; CMSG_DATA is read only when a
    // control message came, for no more than its length says.
    let (got, fds) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut _;
        msg.msg_controllen = std::mem::size_of_val(&control);
        let got = libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT);
        let c = libc::CMSG_FIRSTHDR(&msg);
        let mut fds = Vec::new();
        if got >= 0 && !c.is_null() {
            let len = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
            let mut v = vec![0u8; len.min(32)];
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c), v.as_mut_ptr(), v.len());
            fds = v
                .chunks_exact(4)
                .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
        }
        (got, fds)
    };
    ensure!(
        got == 1 && buf[0] == byte,
        "recvmsg: {got} {:?} {}",
        buf[0] as char,
        err()
    );
    ensure!(
        fds.len() == n,
        "message {:?} came with {} fds, not {n}",
        byte as char,
        fds.len()
    );
    Ok(fds)
}

/// The ready events of `ep` now: (events, data), sorted by data.
fn ready_events(ep: i32) -> Result<Vec<(u32, u64)>, String> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 8];
    // SAFETY: evs is writable for 8 events.
    let n = unsafe { libc::epoll_wait(ep, evs.as_mut_ptr(), 8, 0) };
    ensure!(n >= 0, "epoll_wait: {}", err());
    let mut out: Vec<(u32, u64)> = evs[..n as usize]
        .iter()
        .map(|e| (e.events, e.u64))
        .collect();
    out.sort_by_key(|e| e.1);
    Ok(out)
}

fn is_epoll(fd: i32) -> Result<(), String> {
    let l = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|e| e.to_string())?;
    ensure!(
        l.to_string_lossy() == "anon_inode:[eventpoll]",
        "fd {fd} is {}",
        l.display()
    );
    Ok(())
}

const SOCK_DATA: u64 = 0x5ca1_ab1e;

/// An epoll watching the socket its messages are queued on.
fn mode_socket() -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_DGRAM);
    let ep = epoll();
    ctl(ep, libc::EPOLL_CTL_ADD, b, libc::EPOLLIN as u32, SOCK_DATA).unwrap_or_else(|e| die(&e));
    send_fds(a, b'1', &[ep]);
    send_fds(a, b'2', &[ep]);
    close(ep);
    Box::new(move || {
        let ep = recv_fds(b, b'1', 1)?[0];
        is_epoll(ep)?;
        // The second message is still queued: readable.
        let got = ready_events(ep)?;
        ensure!(
            got == [(libc::EPOLLIN as u32, SOCK_DATA)],
            "the epoll reports {got:x?}"
        );
        ctl(ep, libc::EPOLL_CTL_DEL, b, 0, 0)?;
        let ep2 = recv_fds(b, b'2', 1)?[0];
        is_epoll(ep2)?;
        // The same epoll: the socket is no longer in it.
        ctl(ep2, libc::EPOLL_CTL_ADD, b, libc::EPOLLIN as u32, 1)?;
        let e = ctl(ep, libc::EPOLL_CTL_ADD, b, libc::EPOLLIN as u32, 1);
        ensure!(e.is_err(), "the two epolls received are not one");
        Ok(())
    })
}

const PIPE_DATA: u64 = 0x1111;
const EVFD_DATA: u64 = 0x2222;

/// An epoll watching a pipe and an eventfd (moved since) the process holds.
fn mode_other(moved: bool) -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_STREAM);
    let p = crust_testprogs::make_pipe();
    write_all(p[1], b"pipe bytes");
    // SAFETY: eventfd takes only integers.
    let e0 = unsafe { libc::eventfd(0, 0) };
    if e0 < 0 {
        die("eventfd");
    }
    write_all(e0, &3u64.to_ne_bytes());
    let ep = epoll();
    let ein = libc::EPOLLIN as u32;
    ctl(ep, libc::EPOLL_CTL_ADD, p[0], ein, PIPE_DATA).unwrap_or_else(|e| die(&e));
    ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        e0,
        ein | libc::EPOLLET as u32,
        EVFD_DATA,
    )
    .unwrap_or_else(|e| die(&e));
    // The eventfd moves to another number: registered as e0, it is e1.
    let e1 = if moved { 40 } else { e0 };
    if moved {
        // SAFETY: dup2 on our own fds.
        if unsafe { libc::dup2(e0, e1) } != e1 {
            die("dup2");
        }
        close(e0);
    }
    send_fds(a, b'E', &[ep]);
    close(ep);
    Box::new(move || {
        ensure!(
            !moved || std::fs::read_link(format!("/proc/self/fd/{e0}")).is_err(),
            "fd {e0} is open again"
        );
        let ep = recv_fds(b, b'E', 1)?[0];
        is_epoll(ep)?;
        let got = ready_events(ep)?;
        ensure!(
            got == [
                (libc::EPOLLIN as u32, PIPE_DATA),
                (libc::EPOLLIN as u32, EVFD_DATA)
            ],
            "the epoll reports {got:x?}"
        );
        ctl(ep, libc::EPOLL_CTL_DEL, p[0], 0, 0)?;
        let got = ready_events(ep)?;
        // Edge-triggered: the eventfd was reported already.
        ensure!(got.is_empty(), "after DEL the epoll reports {got:x?}");
        let mut buf = [0u8; 16];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::read(p[0], buf.as_mut_ptr() as *mut _, buf.len()) };
        ensure!(
            n == 10 && &buf[..10] == b"pipe bytes",
            "the pipe holds {n} bytes"
        );
        // SAFETY: as above, 8 bytes.
        let n = unsafe { libc::read(e1, buf.as_mut_ptr() as *mut _, 8) };
        ensure!(
            n == 8 && buf[..8] == 3u64.to_ne_bytes(),
            "the eventfd reads {n} bytes"
        );
        Ok(())
    })
}

/// An epoll sent on a socket pair whose sending end a child holds.
fn mode_child() -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_DGRAM);
    let p = crust_testprogs::make_pipe();
    write_all(p[1], b"x");
    let ep = epoll();
    ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        p[0],
        libc::EPOLLIN as u32,
        PIPE_DATA,
    )
    .unwrap_or_else(|e| die(&e));
    send_fds(a, b'C', &[ep]);
    let sync = crust_testprogs::make_pipe();
    // SAFETY: single-threaded process: the child may run any code.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        for fd in [ep, b, p[1], sync[0]] {
            close(fd);
        }
        write_all(sync[1], b"!");
        close(sync[1]);
        while !term_requested() {
            sleep_ms(10);
        }
        let have = |fd: i32| std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok();
        std::process::exit(if have(a) && have(p[0]) && !have(ep) {
            0
        } else {
            1
        });
    }
    for fd in [ep, a, p[0], sync[1]] {
        close(fd);
    }
    let mut c = [0u8; 1];
    // SAFETY: c is writable for one byte.
    if unsafe { libc::read(sync[0], c.as_mut_ptr() as *mut _, 1) } != 1 {
        die("the child did not start");
    }
    close(sync[0]);
    Box::new(move || {
        let r = recv_fds(b, b'C', 1).and_then(|fds| {
            is_epoll(fds[0])?;
            let got = ready_events(fds[0])?;
            ensure!(
                got == [(libc::EPOLLIN as u32, PIPE_DATA)],
                "the epoll reports {got:x?}"
            );
            Ok(())
        });
        let mut status = 0;
        // SAFETY: kill and waitpid on our own child.
        let w = unsafe {
            libc::kill(child, libc::SIGTERM);
            libc::waitpid(child, &mut status, 0)
        };
        r?;
        ensure!(w == child, "waitpid: {}", err());
        ensure!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child failed its check (status {status:#x})"
        );
        Ok(())
    })
}

/// An epoll watching a pipe that only the same message holds.
fn mode_unheld() -> Box<dyn FnOnce() -> Result<(), String>> {
    let (a, b) = pair(libc::SOCK_DGRAM);
    let p = crust_testprogs::make_pipe();
    write_all(p[1], b"x");
    let ep = epoll();
    ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        p[0],
        libc::EPOLLIN as u32,
        PIPE_DATA,
    )
    .unwrap_or_else(|e| die(&e));
    send_fds(a, b'U', &[ep, p[0]]);
    close(ep);
    close(p[0]);
    Box::new(move || {
        let fds = recv_fds(b, b'U', 2)?;
        is_epoll(fds[0])?;
        let got = ready_events(fds[0])?;
        ensure!(
            got == [(libc::EPOLLIN as u32, PIPE_DATA)],
            "the epoll reports {got:x?}"
        );
        Ok(())
    })
}

fn main() {
    let args = start();
    let mode = args.opt("mode").unwrap_or("socket").to_string();
    crust_testprogs::install_term_handler();
    let check = match mode.as_str() {
        "socket" => mode_socket(),
        "other" => mode_other(args.num("moved", 1) != 0),
        "child" => mode_child(),
        "unheld" => mode_unheld(),
        m => die(&format!("unknown mode {m}")),
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(&args, check());
}
