//! Restore side: a new socket rebuilt in repair mode from a [`TcpState`].

use crate::consts::*;
use crate::error::{Conn, Error};
use crate::packet::send_segment;
use crate::repair::{set_queue, set_repair};
use crate::state::TcpState;
use crate::tcp_opt;
use crate::tcp_state::*;
use crust_sys::{net, pipe};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// How long [`Builder::finish`] waits for a replayed segment to be taken,
/// or for room in the send buffer.
const WAIT: Duration = Duration::from_secs(5);

/// A new TCP socket in repair mode, being rebuilt into a live connection.
///
/// 1. [`Builder::new`] makes the socket and turns repair mode on; the caller
///    may then set socket options on [`Builder::fd`] (SO_RCVBUF and
///    SO_SNDBUF at least as big as the original's, SO_REUSEADDR, marks...).
/// 2. [`Builder::restore`] binds it, sets the sequence numbers, "connects"
///    without a handshake, sets the negotiated options, puts back the
///    unread received bytes and the sent-unacknowledged bytes, and the
///    window. Nothing is sent to the network.
/// 3. [`Builder::finish`] sends the never-sent tail of the send queue,
///    replays the FINs of a half-closed connection and turns repair mode
///    off: the connection is live again.
///
/// When both ends of a connection are rebuilt on one host (loopback), call
/// `restore` on both before `finish` on either: what `finish` sends must
/// find the other end already in place. Dropping a `Builder` closes its
/// socket silently (repair mode).
#[derive(Debug)]
pub struct Builder {
    fd: OwnedFd,
    family: i32,
    restored: Option<Conn>,
}

impl Builder {
    /// A new TCP socket of the family of `local` (AF_INET or AF_INET6) in
    /// repair mode. `ipv6_only` sets IPV6_V6ONLY on an AF_INET6 socket when
    /// given; when not, an IPv4-mapped `local` gets IPV6_V6ONLY off (it
    /// needs it) and others keep the system default. Only the family of
    /// `local` is used here; [`Builder::restore`] binds the state's address.
    pub fn new(local: &SocketAddr, ipv6_only: Option<bool>) -> Result<Builder, Error> {
        let conn = Conn {
            local: Some(*local),
            remote: None,
        };
        let family = net::family_of(local);
        let fd = net::socket(family, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            .map_err(|e| Error::io("socket(SOCK_STREAM)", conn, e))?;
        if let SocketAddr::V6(a) = local {
            let v6only = match ipv6_only {
                Some(v) => Some(v),
                None if a.ip().to_ipv4_mapped().is_some() => Some(false),
                None => None,
            };
            if let Some(v) = v6only {
                net::setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, v as i32)
                    .map_err(|e| Error::io("setsockopt(IPV6_V6ONLY)", conn, e))?;
            }
        }
        set_repair(fd.as_fd(), TCP_REPAIR_ON)
            .map_err(|source| Error::RepairUnavailable { conn, source })?;
        Ok(Builder {
            fd,
            family,
            restored: None,
        })
    }

    /// Rebuild on `fd`, a TCP socket made by the caller (e.g. in another
    /// network namespace, or with options already set), not bound nor
    /// connected; repair mode is turned on.
    pub fn from_fd(fd: OwnedFd) -> Result<Builder, Error> {
        let conn = Conn::none();
        let family = net::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN)
            .map_err(|e| Error::io("getsockopt(SO_DOMAIN)", conn, e))?;
        set_repair(fd.as_fd(), TCP_REPAIR_ON)
            .map_err(|source| Error::RepairUnavailable { conn, source })?;
        Ok(Builder {
            fd,
            family,
            restored: None,
        })
    }

    /// The socket (in repair mode), to set options on.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Rebuild the connection `st` on the socket, in repair mode, sending
    /// nothing (except for SYN_SENT: the SYN is sent again): bind to `st.local` (repair mode ignores address conflicts,
    /// but the dumped socket must be gone: two sockets of one connection
    /// cannot both be connected), both queues' sequence numbers, connect to
    /// `st.remote` (no SYN), TCP_REPAIR_OPTIONS (MSS, window scale, SACK,
    /// timestamps), the timestamp clock, the unread received bytes, the sent
    /// but unacknowledged bytes, the window, TCP_NODELAY.
    pub fn restore(&mut self, st: &TcpState) -> Result<(), Error> {
        st.validate()?;
        let conn = st.conn();
        let fd = self.fd.as_fd();
        if net::family_of(&st.local) != self.family {
            return Err(Error::Inconsistent {
                conn,
                why: "the state's addresses are not of the socket's family".into(),
            });
        }
        let io = |step: &'static str| move |e: io::Error| Error::io(step, conn, e);

        net::bind(fd, &st.local).map_err(io("bind"))?;
        if st.state == SYN_SENT {
            self.restore_syn_sent(st)?;
            self.restored = Some(conn);
            return Ok(());
        }
        set_queue(fd, TCP_RECV_QUEUE).map_err(io("TCP_REPAIR_QUEUE receive"))?;
        net::setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            TCP_QUEUE_SEQ,
            st.recv_queue_seq() as i32,
        )
        .map_err(io("TCP_QUEUE_SEQ of the receive queue"))?;
        set_queue(fd, TCP_SEND_QUEUE).map_err(io("TCP_REPAIR_QUEUE send"))?;
        net::setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            TCP_QUEUE_SEQ,
            st.send_queue_seq() as i32,
        )
        .map_err(io("TCP_QUEUE_SEQ of the send queue"))?;
        set_queue(fd, TCP_NO_QUEUE).map_err(io("TCP_REPAIR_QUEUE none"))?;
        connect_repair(fd, st, conn)?;

        net::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            TCP_REPAIR_OPTIONS,
            &repair_options(st),
        )
        .map_err(io("TCP_REPAIR_OPTIONS"))?;
        if st.opt_mask & tcp_opt::TIMESTAMPS != 0 {
            net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP, st.timestamp as i32)
                .map_err(io("TCP_TIMESTAMP"))?;
        }

        set_queue(fd, TCP_RECV_QUEUE).map_err(io("TCP_REPAIR_QUEUE receive"))?;
        put_queue(fd, &st.inq).map_err(|source| match source.raw_os_error() {
            Some(libc::ENOMEM | libc::EAGAIN | libc::EMSGSIZE | libc::ENOBUFS) => {
                Error::BufferTooSmall {
                    conn,
                    queue: "receive queue",
                    len: st.inq.len(),
                    option: "SO_RCVBUF",
                    source,
                }
            }
            _ => Error::io("restore of the receive queue", conn, source),
        })?;
        set_queue(fd, TCP_SEND_QUEUE).map_err(io("TCP_REPAIR_QUEUE send"))?;
        put_queue(fd, &st.outq[..st.sent_len()]).map_err(|source| match source.raw_os_error() {
            Some(libc::ENOMEM) | Some(libc::EAGAIN) => Error::BufferTooSmall {
                conn,
                queue: "send queue",
                len: st.sent_len(),
                option: "SO_SNDBUF",
                source,
            },
            _ => Error::io("restore of the send queue (sent part)", conn, source),
        })?;
        set_queue(fd, TCP_NO_QUEUE).map_err(io("TCP_REPAIR_QUEUE none"))?;

        if let Some(mut w) = st.window {
            // The peer's FIN is replayed later: until then rcv_nxt is one
            // short, and the kernel wants rcv_wup not after rcv_nxt.
            if st.peer_fin() {
                w.rcv_wup = w.rcv_wup.wrapping_sub(1);
                w.rcv_wnd = w.rcv_wnd.wrapping_add(1);
            }
            net::setsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &w.to_bytes())
                .map_err(io("TCP_REPAIR_WINDOW"))?;
        }
        if st.nodelay {
            net::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
                .map_err(io("TCP_NODELAY"))?;
        }
        log::debug!(
            "{conn}: rebuilt in repair mode as established ({}), inq {} sent {}",
            crate::state_name(st.state),
            st.inq.len(),
            st.sent_len()
        );
        self.restored = Some(conn);
        Ok(())
    }

    /// A connection whose SYN got no answer yet: connect again with repair
    /// mode off and the same initial sequence number, which sends the SYN
    /// (the network lock drops it; it is sent again by the retransmission
    /// timer after the unlock). The socket is made non-blocking for the
    /// connect and put back as it was.
    fn restore_syn_sent(&mut self, st: &TcpState) -> Result<(), Error> {
        let conn = st.conn();
        let fd = self.fd.as_fd();
        let io = |step: &'static str| move |e: io::Error| Error::io(step, conn, e);
        set_queue(fd, TCP_SEND_QUEUE).map_err(io("TCP_REPAIR_QUEUE send"))?;
        let isn = st.send_queue_seq().wrapping_sub(1);
        net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ, isn as i32)
            .map_err(io("TCP_QUEUE_SEQ of the send queue"))?;
        set_queue(fd, TCP_NO_QUEUE).map_err(io("TCP_REPAIR_QUEUE none"))?;
        let flags = pipe::status_flags(fd).map_err(io("fcntl(F_GETFL)"))?;
        pipe::set_status_flags(fd, flags | libc::O_NONBLOCK).map_err(io("fcntl(F_SETFL)"))?;
        set_repair(fd, TCP_REPAIR_OFF).map_err(io("TCP_REPAIR off"))?;
        let r = match net::connect(fd, &st.remote) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(()),
            Err(e) => Err(Error::io("connect (SYN_SENT)", conn, e)),
        };
        let back = pipe::set_status_flags(fd, flags).map_err(io("fcntl(F_SETFL)"));
        r?;
        back?;
        set_repair(fd, TCP_REPAIR_ON).map_err(io("TCP_REPAIR on"))?;
        if st.nodelay {
            net::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
                .map_err(io("TCP_NODELAY"))?;
        }
        log::debug!("{conn}: SYN sent again (isn {isn})");
        Ok(())
    }

    /// Bring the rebuilt connection to life: send the never-sent tail of
    /// `st.outq` (repair mode off), replay the FINs of a half-closed state
    /// (our own with shutdown, the peer's with a crafted segment marked
    /// [`crate::SOCCR_MARK`], in the order that leads to the state), turn
    /// repair mode off (a window probe is sent) and set TCP_CORK. `st` must
    /// be the state given to [`Builder::restore`].
    pub fn finish(self, st: &TcpState) -> Result<OwnedFd, Error> {
        let conn = st.conn();
        if self.restored != Some(conn) {
            return Err(Error::NotRestored { conn });
        }
        let fd = self.fd.as_fd();
        let io = |step: &'static str| move |e: io::Error| Error::io(step, conn, e);
        let fins = st.own_fin() || st.peer_fin();
        let tail = &st.outq[st.sent_len()..];
        let mut in_repair = true;
        if !tail.is_empty() {
            set_repair(fd, TCP_REPAIR_OFF).map_err(io("TCP_REPAIR off"))?;
            in_repair = false;
            send_unsent(fd, tail).map_err(|source| match source.raw_os_error() {
                Some(libc::EAGAIN) => Error::BufferTooSmall {
                    conn,
                    queue: "send queue",
                    len: tail.len(),
                    option: "SO_SNDBUF",
                    source,
                },
                _ => Error::io("sending the unsent tail of the send queue", conn, source),
            })?;
            if fins {
                set_repair(fd, TCP_REPAIR_ON).map_err(io("TCP_REPAIR on"))?;
                in_repair = true;
            }
        }
        // The peer's window as it would advertise it.
        let window = st
            .window
            .map(|w| (w.snd_wnd >> st.snd_wscale.min(14)).min(0xffff))
            .unwrap_or(0xffff) as u16;

        if matches!(st.state, FIN_WAIT1 | FIN_WAIT2 | CLOSING) {
            own_fin(fd, st.own_fin_acked()).map_err(io("shutdown(SHUT_WR) in repair mode"))?;
        }
        if st.peer_fin() {
            // The peer's FIN: its sequence number is the last of inq_seq;
            // it acknowledges what the peer had acknowledged.
            send_segment(
                &st.remote,
                &st.local,
                st.inq_seq.wrapping_sub(1),
                st.send_queue_seq(),
                TH_FIN | TH_ACK,
                window,
            )?;
            let want = if st.state == CLOSING {
                CLOSING
            } else {
                CLOSE_WAIT
            };
            wait_state(fd, conn, want, "the replayed FIN of the peer")?;
        }
        if matches!(st.state, LAST_ACK | CLOSE) {
            // CLOSE: our FIN goes in as sent (a transmission the lock drops
            // would leave it unsent, and the replayed ACK of it refused).
            own_fin(fd, st.state == CLOSE).map_err(io("shutdown(SHUT_WR) in repair mode"))?;
        }
        if st.own_fin_acked() {
            // The peer's acknowledgement of our FIN.
            send_segment(
                &st.remote,
                &st.local,
                st.inq_seq,
                st.outq_seq,
                TH_ACK,
                window,
            )?;
            // FIN_WAIT2; from LAST_ACK, CLOSE (the connection is over).
            let want = if st.state == CLOSE { CLOSE } else { FIN_WAIT2 };
            wait_state(fd, conn, want, "the replayed ACK of our FIN")?;
        }
        if in_repair {
            set_repair(fd, TCP_REPAIR_OFF).map_err(io("TCP_REPAIR off"))?;
        }
        if st.cork {
            net::setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_CORK, 1)
                .map_err(io("TCP_CORK"))?;
        }
        log::debug!("{conn}: live again in {}", crate::state_name(st.state));
        Ok(self.fd)
    }
}

/// connect(2) in repair mode (no SYN). EADDRNOTAVAIL means another socket
/// still holds the connection: the dumped one, maybe only for a moment (a
/// copy of its fd in a child between fork and exec); so try a little longer
/// before giving up.
fn connect_repair(fd: BorrowedFd<'_>, st: &TcpState, conn: Conn) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        match net::connect(fd, &st.remote) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => return Ok(()),
            Err(e)
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    && start.elapsed() < Duration::from_millis(500) =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {
                return Err(Error::io(
                    "connect in repair mode (another socket still holds this connection: is the dumped one closed?)",
                    conn,
                    e,
                ))
            }
            Err(e) => return Err(Error::io("connect in repair mode", conn, e)),
        }
    }
}

/// The TCP_REPAIR_OPTIONS argument for `st`: an array of `struct
/// tcp_repair_opt { u32 opt_code; u32 opt_val; }`.
pub(crate) fn repair_options(st: &TcpState) -> Vec<u8> {
    let mut opts: Vec<(u32, u32)> = Vec::new();
    if st.opt_mask & tcp_opt::SACK != 0 {
        opts.push((TCPOPT_SACK_PERM, 0));
    }
    if st.opt_mask & tcp_opt::WSCALE != 0 {
        opts.push((TCPOPT_WINDOW, st.snd_wscale | (st.rcv_wscale << 16)));
    }
    if st.opt_mask & tcp_opt::TIMESTAMPS != 0 {
        opts.push((TCPOPT_TIMESTAMP, 0));
    }
    opts.push((TCPOPT_MAXSEG, st.mss_clamp));
    opts.iter()
        .flat_map(|(c, v)| c.to_ne_bytes().into_iter().chain(v.to_ne_bytes()))
        .collect()
}

/// Put `data` into the selected queue (repair mode), in chunks that get
/// smaller when the kernel cannot allocate one that big (the receive queue
/// is filled with one buffer per send call).
fn put_queue(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    let mut max = data.len().max(1);
    while off < data.len() {
        let end = data.len().min(off + max);
        match net::send(fd, &data[off..end], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::Error::from_raw_os_error(libc::ENOMEM)),
            Ok(n) => off += n,
            // Too big a buffer for one allocation (EMSGSIZE, ENOBUFS) or
            // for memory (ENOMEM): try smaller pieces.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOMEM | libc::EMSGSIZE | libc::ENOBUFS)
                ) && max > 1024 =>
            {
                max /= 2
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Send `data` normally (repair mode off), waiting for room in the send
/// buffer a while if needed.
fn send_unsent(fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    let mut off = 0;
    let mut last = Instant::now();
    while off < data.len() {
        match net::send(fd, &data[off..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) => {
                off += n;
                last = Instant::now();
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && last.elapsed() < WAIT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Our FIN: shutdown(SHUT_WR) in repair mode. When the peer had
/// acknowledged it, it is put in the send queue as sent (not transmitted).
fn own_fin(fd: BorrowedFd<'_>, acked: bool) -> io::Result<()> {
    if acked {
        set_queue(fd, TCP_SEND_QUEUE)?;
    }
    let r = net::shutdown(fd, libc::SHUT_WR);
    if acked {
        set_queue(fd, TCP_NO_QUEUE)?;
    }
    r
}

/// Wait until the socket is in `want` (a replayed segment was taken).
fn wait_state(fd: BorrowedFd<'_>, conn: Conn, want: u8, what: &str) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let mut b = [0u8; 8];
        let n = net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)
            .map_err(|e| Error::io("getsockopt(TCP_INFO)", conn, e))?;
        let now = if n > 0 { b[0] } else { 0 };
        if now == want {
            return Ok(());
        }
        if start.elapsed() > WAIT {
            return Err(Error::Inconsistent {
                conn,
                why: format!(
                    "{what} was not taken: the socket is in {} instead of {} (is the crafted packet dropped by a firewall?)",
                    crate::state_name(now),
                    crate::state_name(want)
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_encoding() {
        let mut st = TcpState {
            local: "127.0.0.1:1".parse().unwrap(),
            remote: "127.0.0.1:2".parse().unwrap(),
            state: ESTABLISHED,
            inq_seq: 0,
            outq_seq: 0,
            inq: vec![],
            outq: vec![],
            unsq_len: 0,
            opt_mask: tcp_opt::TIMESTAMPS | tcp_opt::SACK | tcp_opt::WSCALE,
            snd_wscale: 7,
            rcv_wscale: 9,
            mss_clamp: 1460,
            timestamp: 0,
            window: None,
            nodelay: false,
            cork: false,
        };
        let b = repair_options(&st);
        let words: Vec<u32> = b
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(words, vec![4, 0, 3, 7 | (9 << 16), 8, 0, 2, 1460]);
        st.opt_mask = 0;
        assert_eq!(repair_options(&st).len(), 8);
    }
}
