//! Dump side: a live socket held in repair mode, and reading its state.

use crate::consts::*;
use crate::error::{Conn, Error};
use crate::state::{TcpState, Window};
use crate::tcp_opt;
use crate::tcp_state::{CLOSE, SYN_SENT};
use crust_sys::net;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// setsockopt(SOL_TCP, TCP_REPAIR, val).
pub(crate) fn set_repair(fd: BorrowedFd<'_>, val: i32) -> io::Result<()> {
    net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, val)
}

/// setsockopt(SOL_TCP, TCP_REPAIR_QUEUE, queue).
pub(crate) fn set_queue(fd: BorrowedFd<'_>, queue: i32) -> io::Result<()> {
    net::setsockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
}

/// The first bytes of `struct tcp_info` this crate uses.
struct TcpInfo {
    state: u8,
    options: u8,
    snd_wscale: u8,
    rcv_wscale: u8,
}

fn tcp_info(fd: BorrowedFd<'_>, conn: Conn) -> Result<TcpInfo, Error> {
    let mut b = [0u8; 256];
    let n = net::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)
        .map_err(|e| Error::io("getsockopt(TCP_INFO)", conn, e))?;
    if n < 8 {
        return Err(Error::Inconsistent {
            conn,
            why: format!("TCP_INFO of {n} bytes"),
        });
    }
    // tcpi_state, ca_state, retransmits, probes, backoff, options, then a
    // byte of two 4-bit fields: snd_wscale (low), rcv_wscale (high).
    Ok(TcpInfo {
        state: b[0],
        options: b[5],
        snd_wscale: b[6] & 0xf,
        rcv_wscale: b[6] >> 4,
    })
}

/// A socket in TCP repair mode, on the dump side.
///
/// While in repair mode the socket sends nothing of its own (no data, no
/// FIN); its state can be read with [`Repair::state`]. Then either
/// [`Repair::resume`] turns repair mode off and the connection carries on,
/// or the `Repair` is dropped: closing a socket in repair mode frees it
/// silently, without FIN or RST (if the fd is the last one on the socket;
/// a pidfd_getfd copy dropped leaves the owner's socket in repair mode).
#[derive(Debug)]
pub struct Repair {
    fd: OwnedFd,
}

impl Repair {
    /// Turn TCP repair mode on for `fd`, a TCP socket (possibly a
    /// pidfd_getfd copy of another process's fd: the mode is the socket's).
    /// Fails with [`Error::RepairUnavailable`] without CAP_NET_ADMIN or on a
    /// socket that is not TCP, with [`Error::UnsupportedState`] on a
    /// listening socket (the kernel has no repair mode for those).
    pub fn start(fd: OwnedFd) -> Result<Repair, Error> {
        if let Err(source) = set_repair(fd.as_fd(), TCP_REPAIR_ON) {
            let conn = Conn {
                local: net::getsockname(fd.as_fd()).ok(),
                remote: net::getpeername(fd.as_fd()).ok(),
            };
            // The kernel refuses repair mode on listening sockets.
            if net::getsockopt_int(fd.as_fd(), libc::SOL_SOCKET, libc::SO_ACCEPTCONN).ok()
                == Some(1)
            {
                return Err(Error::UnsupportedState {
                    conn,
                    state: crate::tcp_state::LISTEN,
                });
            }
            return Err(Error::RepairUnavailable { conn, source });
        }
        Ok(Repair { fd })
    }

    /// The socket.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket, still in repair mode (closing it frees it silently).
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The connection's addresses, as far as the kernel tells them.
    pub fn conn(&self) -> Conn {
        Conn {
            local: net::getsockname(self.fd()).ok(),
            remote: net::getpeername(self.fd()).ok(),
        }
    }

    /// Read the whole state of the connection: TCP state and options
    /// (TCP_INFO), MSS clamp, timestamp clock, window (TCP_REPAIR_WINDOW),
    /// queue lengths (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD), sequence numbers
    /// (TCP_QUEUE_SEQ) and the queued bytes of both queues (peeked, nothing
    /// is consumed), TCP_NODELAY and TCP_CORK. Fails with
    /// [`Error::UnsupportedState`] for states other than ESTABLISHED,
    /// SYN_SENT, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING and
    /// CLOSE (a connection over, its send queue dropped). A
    /// SYN_SENT socket has no peer name: see [`Repair::state_with_remote`].
    pub fn state(&self) -> Result<TcpState, Error> {
        self.state_with_remote(None)
    }

    /// [`Repair::state`], with the peer's address given by the caller when
    /// the kernel does not tell it: getpeername fails on a socket still in
    /// SYN_SENT, whose peer crust knows from sock_diag. `remote` is used only
    /// when getpeername fails.
    pub fn state_with_remote(&self, remote: Option<SocketAddr>) -> Result<TcpState, Error> {
        let fd = self.fd();
        let mut conn = self.conn();
        let ti = tcp_info(fd, conn)?;
        if !TcpState::supported_state(ti.state) {
            return Err(Error::UnsupportedState {
                conn,
                state: ti.state,
            });
        }
        let local = net::getsockname(fd).map_err(|e| Error::io("getsockname", conn, e))?;
        let remote = match (net::getpeername(fd), remote) {
            (Ok(r), _) => r,
            (Err(_), Some(r)) => r,
            (Err(e), None) => return Err(Error::io("getpeername", conn, e)),
        };
        conn = Conn::new(local, remote);

        let ioctl = |req: u64, step: &'static str| -> Result<u32, Error> {
            net::ioctl_int(fd, req)
                .map(|v| v as u32)
                .map_err(|e| Error::io(step, conn, e))
        };
        let mut outq_len = ioctl(net::SIOCOUTQ, "ioctl(SIOCOUTQ)")?;
        let mut unsq_len = ioctl(net::SIOCOUTQNSD, "ioctl(SIOCOUTQNSD)")?;
        let inq_len = ioctl(net::SIOCINQ, "ioctl(SIOCINQ)")?;

        let mut st = TcpState {
            local,
            remote,
            state: ti.state,
            inq_seq: 0,
            outq_seq: 0,
            inq: Vec::new(),
            outq: Vec::new(),
            unsq_len: 0,
            opt_mask: ti.options as u32,
            snd_wscale: 0,
            rcv_wscale: 0,
            mss_clamp: 0,
            timestamp: 0,
            window: None,
            nodelay: false,
            cork: false,
        };
        // Our FIN is in the send queue's length (not in its bytes) once we
        // shut down, until it is acknowledged.
        if st.own_fin() {
            outq_len = outq_len.saturating_sub(1);
            unsq_len = unsq_len.saturating_sub(1);
        }
        // A connection over: what it had not sent or got acknowledged can
        // never be read by anyone (a reset drops it), as CRIU's libsoccr
        // says; only what it received is kept.
        if st.state == CLOSE {
            outq_len = 0;
            unsq_len = 0;
        }
        st.unsq_len = unsq_len;

        st.mss_clamp = net::getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG)
            .map_err(|e| Error::io("getsockopt(TCP_MAXSEG)", conn, e))?
            as u32;
        if st.opt_mask & tcp_opt::WSCALE != 0 {
            st.snd_wscale = ti.snd_wscale as u32;
            st.rcv_wscale = ti.rcv_wscale as u32;
        }
        if st.opt_mask & tcp_opt::TIMESTAMPS != 0 {
            st.timestamp = net::getsockopt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP)
                .map_err(|e| Error::io("getsockopt(TCP_TIMESTAMP)", conn, e))?
                as u32;
        }
        let mut w = [0u8; 20];
        match net::getsockopt(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &mut w) {
            _ if st.state == SYN_SENT => {}
            Ok(n) => st.window = Window::from_bytes(&w[..n]),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => {
                log::debug!("{conn}: no TCP_REPAIR_WINDOW (kernel before 4.8)");
            }
            Err(e) => return Err(Error::io("getsockopt(TCP_REPAIR_WINDOW)", conn, e)),
        }
        st.nodelay = net::getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)
            .map_err(|e| Error::io("getsockopt(TCP_NODELAY)", conn, e))?
            != 0;
        st.cork = net::getsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_CORK)
            .map_err(|e| Error::io("getsockopt(TCP_CORK)", conn, e))?
            != 0;

        let r = read_queue(fd, conn, TCP_RECV_QUEUE, inq_len, "receive queue");
        let s = r.and_then(|(seq, data)| {
            st.inq_seq = seq;
            st.inq = data;
            read_queue(fd, conn, TCP_SEND_QUEUE, outq_len, "send queue")
        });
        // Leave the socket with no queue selected, whatever happened.
        let reset = set_queue(fd, TCP_NO_QUEUE);
        let (seq, data) = s?;
        reset.map_err(|e| Error::io("TCP_REPAIR_QUEUE none", conn, e))?;
        st.outq_seq = seq;
        st.outq = data;
        log::debug!(
            "{conn}: {} inq {}@{} outq {}@{} (unsent {}) opts {:#x} mss {}",
            crate::state_name(st.state),
            st.inq.len(),
            st.inq_seq,
            st.outq.len(),
            st.outq_seq,
            st.unsq_len,
            st.opt_mask,
            st.mss_clamp
        );
        Ok(st)
    }

    /// Turn repair mode off (a window probe is sent) and give the socket
    /// back: the connection carries on as if nothing happened.
    pub fn resume(self) -> Result<OwnedFd, Error> {
        set_repair(self.fd(), TCP_REPAIR_OFF)
            .map_err(|e| Error::io("TCP_REPAIR off", self.conn(), e))?;
        Ok(self.fd)
    }
}

/// Select `queue`, read its sequence number and peek its `len` bytes
/// (asking for one more to be sure there are no more).
fn read_queue(
    fd: BorrowedFd<'_>,
    conn: Conn,
    queue: i32,
    len: u32,
    what: &'static str,
) -> Result<(u32, Vec<u8>), Error> {
    set_queue(fd, queue).map_err(|e| Error::io("TCP_REPAIR_QUEUE", conn, e))?;
    let seq = net::getsockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ)
        .map_err(|e| Error::io("getsockopt(TCP_QUEUE_SEQ)", conn, e))? as u32;
    let mut buf = vec![0u8; len as usize + 1];
    if len == 0 {
        return Ok((seq, Vec::new()));
    }
    let n = net::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)
        .map_err(|e| Error::io("peeking a queue (recv MSG_PEEK)", conn, e))?;
    if n != len as usize {
        return Err(Error::Inconsistent {
            conn,
            why: format!("{what}: peeked {n} bytes, its size is {len}"),
        });
    }
    buf.truncate(n);
    Ok((seq, buf))
}
