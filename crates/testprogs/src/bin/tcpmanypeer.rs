//! The outside peer of `tcpmany` (not dumped; `bench/tcp-conns.sh`).
//!
//! `tcpmanypeer --ready F --result F --connect ADDR [--conns N]`
//!
//! Opens N connections (default 1000) to the `tcpmany` at ADDR and checks
//! one echoed line on each, then writes READY. At SIGTERM (sent once the
//! server was dumped and restored) it sends one more line on every
//! connection, checks every echo (30 s at most) and reports PASS; a reset,
//! an end of file or a wrong or missing echo is a FAIL naming the
//! connection. It prints how long the round trips took to stderr.

use crust_testprogs::{ensure, finish, ready, start, term_requested, Args};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Send `line` on every connection, then read each echo back.
fn round_trips(conns: &mut [TcpStream], tag: &str) -> Result<(), String> {
    let lines: Vec<String> = (0..conns.len())
        .map(|i| format!("{tag} on connection {i}\n"))
        .collect();
    for (i, s) in conns.iter_mut().enumerate() {
        s.write_all(lines[i].as_bytes())
            .map_err(|e| format!("{tag}: connection #{i}: write: {e}"))?;
    }
    let mut buf = Vec::new();
    for (i, s) in conns.iter_mut().enumerate() {
        let want = lines[i].as_bytes();
        buf.resize(want.len(), 0);
        s.read_exact(&mut buf)
            .map_err(|e| format!("{tag}: connection #{i}: reading the echo: {e}"))?;
        ensure!(
            buf == want,
            "{tag}: connection #{i}: echo {:?}, expected {:?}",
            String::from_utf8_lossy(&buf),
            lines[i]
        );
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let n = args.num("conns", 1000) as usize;
    let to: SocketAddr = args
        .opt("connect")
        .ok_or("missing --connect ADDR")?
        .parse()
        .map_err(|e| format!("--connect: {e}"))?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let s = TcpStream::connect(to).map_err(|e| format!("connect #{i} to {to}: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        conns.push(s);
    }
    round_trips(&mut conns, "before the dump")?;
    ready(args);
    while !term_requested() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t = Instant::now();
    round_trips(&mut conns, "after the restore")?;
    eprintln!(
        "tcpmanypeer: {n} round trips after the restore in {:.3} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let args = start();
    let verdict = run(&args);
    finish(&args, verdict)
}
