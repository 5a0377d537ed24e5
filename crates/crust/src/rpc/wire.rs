//! CRIU's RPC wire: a unix SOCK_SEQPACKET socket carrying one protobuf
//! message per packet, with no magic and no length prefix: `criu_req`
//! from the client, `criu_resp` back (a notify answer is a `criu_req` of
//! type NOTIFY). A response may carry one fd (SCM_RIGHTS).

use std::io;
use std::os::fd::BorrowedFd;

use crust_images::proto::{CriuReq, CriuResp};
use crust_images::wire::Message;
use crust_sys::unix;

/// The largest request crust reads (CRIU has no limit; a real request is
/// a few KiB: options and lists of paths). A larger packet is read away
/// and answered with an error.
pub const MAX_REQUEST: usize = 1 << 20;

/// What came from the client.
#[derive(Debug)]
pub enum Incoming {
    /// A request.
    Req(Box<CriuReq>),
    /// The client closed its end (or sent an empty packet, which CRIU
    /// takes for the same).
    Closed,
    /// A packet of this many bytes, over [`MAX_REQUEST`]; read away.
    Oversized(usize),
    /// A packet that is not a `criu_req`: why.
    Malformed(String),
}

/// Read one packet from `sk` and decode it.
pub fn recv_req(sk: BorrowedFd<'_>) -> io::Result<Incoming> {
    let peeked = retry(|| unix::recvmsg(sk, &mut [], libc::MSG_PEEK))?;
    let len = peeked.full_len;
    if len == 0 {
        // Take the empty packet (or see the end of the stream again).
        let _ = retry(|| unix::recvmsg(sk, &mut [], 0));
        return Ok(Incoming::Closed);
    }
    if len > MAX_REQUEST {
        retry(|| unix::recvmsg(sk, &mut [0u8; 16], 0))?;
        return Ok(Incoming::Oversized(len));
    }
    let mut buf = vec![0u8; len];
    let got = retry(|| unix::recvmsg(sk, &mut buf, 0))?;
    Ok(decode_req(buf.get(..got.len).unwrap_or_default()))
}

/// Decode one packet as a `criu_req`.
pub fn decode_req(buf: &[u8]) -> Incoming {
    if buf.is_empty() {
        return Incoming::Closed;
    }
    match CriuReq::decode(buf) {
        Ok(r) => Incoming::Req(Box::new(r)),
        Err(e) => Incoming::Malformed(e.to_string()),
    }
}

/// Send `resp` to the client, with `fd` attached when given. Never raises
/// SIGPIPE: a client gone is an error (EPIPE).
pub fn send_resp(
    sk: BorrowedFd<'_>,
    resp: &CriuResp,
    fd: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let buf = resp.encode_to_vec();
    let n = match fd {
        Some(fd) => unix::send_with_fds(sk, &buf, None, &[fd], libc::MSG_NOSIGNAL)?,
        None => unix::send(sk, &buf, None, libc::MSG_NOSIGNAL)?,
    };
    if n != buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    Ok(())
}

/// Whether the client has closed its end: a packet waiting or none yet
/// means it is there.
pub fn peer_gone(sk: BorrowedFd<'_>) -> bool {
    match unix::recvmsg(sk, &mut [0u8; 1], libc::MSG_PEEK | libc::MSG_DONTWAIT) {
        Ok(r) => r.full_len == 0,
        Err(e) => !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)),
    }
}

fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::proto::{criu_req_type, CriuOpts};
    use std::os::fd::AsFd;

    fn pair() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        unix::socketpair(libc::SOCK_SEQPACKET).unwrap()
    }

    /// One message per packet, both ways, field numbers as CRIU's.
    #[test]
    fn request_and_response_round_trip() {
        let (a, b) = pair();
        let req = CriuReq {
            r#type: criu_req_type::DUMP,
            opts: Some(CriuOpts {
                images_dir_fd: -1,
                pid: Some(42),
                leave_running: Some(true),
                ..Default::default()
            }),
            keep_open: Some(false),
            ..Default::default()
        };
        let bytes = req.encode_to_vec();
        // criu_req.type is field 1, a varint: 0x08 0x01.
        assert_eq!(&bytes[..2], &[0x08, 0x01]);
        unix::send(a.as_fd(), &bytes, None, 0).unwrap();
        match recv_req(b.as_fd()).unwrap() {
            Incoming::Req(r) => assert_eq!(*r, req),
            other => panic!("{other:?}"),
        }
        let resp = CriuResp {
            r#type: criu_req_type::VERSION,
            success: true,
            ..Default::default()
        };
        send_resp(b.as_fd(), &resp, None).unwrap();
        let mut buf = [0u8; 64];
        let got = unix::recvmsg(a.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(CriuResp::decode(&buf[..got.len]).unwrap(), resp);
        assert!(!peer_gone(b.as_fd()));
        drop(a);
        assert!(peer_gone(b.as_fd()));
        assert!(matches!(recv_req(b.as_fd()).unwrap(), Incoming::Closed));
    }

    #[test]
    fn bad_packets() {
        let (a, b) = pair();
        // A tag of wire type 7 does not exist.
        unix::send(a.as_fd(), &[0x0f, 0x01], None, 0).unwrap();
        assert!(matches!(
            recv_req(b.as_fd()).unwrap(),
            Incoming::Malformed(_)
        ));
        // The required type is missing.
        unix::send(a.as_fd(), &[0x18, 0x01], None, 0).unwrap();
        assert!(matches!(
            recv_req(b.as_fd()).unwrap(),
            Incoming::Malformed(_)
        ));
        // Unknown enum values decode (the service answers them).
        unix::send(a.as_fd(), &[0x08, 0x63], None, 0).unwrap();
        match recv_req(b.as_fd()).unwrap() {
            Incoming::Req(r) => assert_eq!(r.r#type, 99),
            other => panic!("{other:?}"),
        }
        // Too big: read away, the next packet is read as usual.
        crust_sys::unix::setsockopt_int(
            a.as_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            16 << 20,
        )
        .or_else(|_| {
            crust_sys::unix::setsockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 16 << 20)
        })
        .unwrap();
        let big = vec![0u8; MAX_REQUEST + 1];
        if unix::send(a.as_fd(), &big, None, 0).is_ok() {
            assert!(matches!(
                recv_req(b.as_fd()).unwrap(),
                Incoming::Oversized(n) if n == MAX_REQUEST + 1
            ));
        }
        unix::send(a.as_fd(), &[0x08, 0x0a], None, 0).unwrap();
        assert!(matches!(recv_req(b.as_fd()).unwrap(), Incoming::Req(_)));
    }
}
