//! Take a live loopback TCP connection, dump both ends with TCP repair,
//! free them silently, rebuild them from the dumped state and show that the
//! stream carries on: bytes queued before the move arrive after it, once
//! and in order, and new bytes follow. Needs root (CAP_NET_ADMIN).
//!
//! `cargo run -p crust-soccr --example migrate`

use crust_soccr::{Builder, Repair, TcpState};
use std::error::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

/// The whole demonstration; prints what it does.
pub fn run() -> Result<(), Box<dyn Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    let (mut server, _) = listener.accept()?;
    println!(
        "connected {} -> {}",
        client.local_addr()?,
        client.peer_addr()?
    );

    client.write_all(b"hello from the client, ")?;
    server.write_all(b"hello from the server, ")?;
    // Let loopback deliver: the bytes wait, unread, in the receive queues.
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Dump: both ends in repair mode, then read their states.
    let rc = Repair::start(OwnedFd::from(client))?;
    let rs = Repair::start(OwnedFd::from(server))?;
    let (cst, sst) = (rc.state()?, rs.state()?);
    for (who, st) in [("client", &cst), ("server", &sst)] {
        describe(who, st);
    }
    // Closing sockets in repair mode frees them without FIN or RST.
    drop(rc);
    drop(rs);
    println!("both sockets closed silently");

    // Restore: both ends rebuilt in repair mode, then brought to life.
    let mut bc = Builder::new(&cst.local, None)?;
    let mut bs = Builder::new(&sst.local, None)?;
    bc.restore(&cst)?;
    bs.restore(&sst)?;
    let mut client = TcpStream::from(bc.finish(&cst)?);
    let mut server = TcpStream::from(bs.finish(&sst)?);
    println!("both sockets rebuilt");

    client.write_all(b"and after the move.")?;
    server.write_all(b"and after the move.")?;
    client.shutdown(std::net::Shutdown::Write)?;
    server.shutdown(std::net::Shutdown::Write)?;
    let (mut at_server, mut at_client) = (String::new(), String::new());
    server.read_to_string(&mut at_server)?;
    client.read_to_string(&mut at_client)?;
    println!("server read: {at_server:?}");
    println!("client read: {at_client:?}");
    if at_server != "hello from the client, and after the move."
        || at_client != "hello from the server, and after the move."
    {
        return Err("the stream did not carry on intact".into());
    }
    println!("the connection survived the move");
    Ok(())
}

fn describe(who: &str, st: &TcpState) {
    println!(
        "dumped {who} {} -> {}: {}, {} unread bytes (seq {}), {} bytes in the send queue (seq {}), mss {}, options {:#x}",
        st.local,
        st.remote,
        crust_soccr::state_name(st.state),
        st.inq.len(),
        st.inq_seq,
        st.outq.len(),
        st.outq_seq,
        st.mss_clamp,
        st.opt_mask
    );
}

fn main() {
    if let Err(e) = crust_soccr::repair_available() {
        eprintln!("TCP repair is not available here: {e}");
        std::process::exit(2);
    }
    if let Err(e) = run() {
        let mut msg = e.to_string();
        let mut src = e.source();
        while let Some(s) = src {
            msg += &format!(": {s}");
            src = s.source();
        }
        eprintln!("migrate: {msg}");
        std::process::exit(1);
    }
}
