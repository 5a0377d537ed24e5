//! Many established TCP connections in one process (the dumped side of
//! `bench/tcp-conns.sh`): an echo server.
//!
//! `tcpmany --ready F --result F --port-file P [--listen ADDR] [--conns N]`
//!
//! Binds ADDR (default 127.0.0.1:0), writes the port it got to P, accepts N
//! connections (default 1000), closes the listener and writes READY. Then,
//! until SIGTERM, it echoes every byte it reads on a connection back on
//! that connection. A connection that fails (reset) is a FAIL; one the peer
//! closed is fine. At SIGTERM every open connection must still be
//! non-blocking (O_NONBLOCK, set before READY: a restore must keep it);
//! stderr says how many bytes were echoed.
//!
//! Each readiness reported by poll gets one read, so a socket that lost
//! O_NONBLOCK does not hang the loop (the check at SIGTERM reports it).

use crust_testprogs::{ensure, finish, ready, start, term_requested, write_atomic, Args};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Write all of `data` on a non-blocking socket (the echo of one read is
/// small: waiting for room is rare and short).
fn write_all_nb(s: &mut TcpStream, mut data: &[u8]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.is_empty() {
        match s.write(data) {
            Ok(0) => return Err("write returned 0".into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                ensure!(Instant::now() < deadline, "echo stuck for 10 s");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let n = args.num("conns", 1000) as usize;
    let addr = args.opt("listen").unwrap_or("127.0.0.1:0");
    let l = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    write_atomic(&args.path("port-file"), &format!("{port}\n"))
        .map_err(|e| format!("port file: {e}"))?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let (s, _) = l.accept().map_err(|e| format!("accept #{i}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        conns.push(Some(s));
    }
    drop(l);
    ready(args);

    let mut pfds: Vec<libc::pollfd> = conns
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_ref().map_or(-1, |s| s.as_raw_fd()),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut echoed = 0u64;
    let mut closed = 0usize;
    let mut buf = [0u8; 4096];
    while !term_requested() {
        // SAFETY: pfds is a live, writable array of pfds.len() pollfd
        // structs for the duration of the call.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 200) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            ensure!(e.kind() == ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        for (i, p) in pfds.iter_mut().enumerate() {
            if p.revents == 0 {
                continue;
            }
            p.revents = 0;
            let Some(s) = conns[i].as_mut() else {
                continue;
            };
            match s.read(&mut buf) {
                Ok(0) => {
                    // The peer is done with this one.
                    conns[i] = None;
                    p.fd = -1;
                    closed += 1;
                }
                Ok(k) => {
                    write_all_nb(s, &buf[..k]).map_err(|e| format!("connection #{i}: {e}"))?;
                    echoed += k as u64;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("connection #{i}: read: {e}")),
            }
        }
    }
    for (i, s) in conns.iter().enumerate() {
        let Some(s) = s else { continue };
        // SAFETY: F_GETFL on an fd this process owns; no pointers.
        let fl = unsafe { libc::fcntl(s.as_raw_fd(), libc::F_GETFL) };
        ensure!(
            fl >= 0,
            "connection #{i}: F_GETFL: {}",
            std::io::Error::last_os_error()
        );
        ensure!(
            fl & libc::O_NONBLOCK != 0,
            "connection #{i} (fd {}) is not O_NONBLOCK any more (flags {fl:#o})",
            s.as_raw_fd()
        );
    }
    eprintln!("tcpmany: echoed {echoed} bytes; {closed} of {n} connections closed by the peer");
    Ok(())
}

fn main() {
    let args = start();
    let verdict = run(&args);
    finish(&args, verdict)
}
