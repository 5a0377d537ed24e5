//! The state of one TCP connection, as plain data.

use crate::error::{Conn, Error};
use crate::tcp_state::*;
use std::net::SocketAddr;

/// The name of a kernel TCP state number ("ESTABLISHED", "FIN_WAIT1"...),
/// or "UNKNOWN".
pub fn state_name(state: u8) -> &'static str {
    match state {
        ESTABLISHED => "ESTABLISHED",
        SYN_SENT => "SYN_SENT",
        SYN_RECV => "SYN_RECV",
        FIN_WAIT1 => "FIN_WAIT1",
        FIN_WAIT2 => "FIN_WAIT2",
        TIME_WAIT => "TIME_WAIT",
        CLOSE => "CLOSE",
        CLOSE_WAIT => "CLOSE_WAIT",
        LAST_ACK => "LAST_ACK",
        LISTEN => "LISTEN",
        CLOSING => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Window state of a connection (`struct tcp_repair_window`, kernel 4.8 and
/// later), as read with TCP_REPAIR_WINDOW.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// Sequence number of the segment that last updated the send window.
    pub snd_wl1: u32,
    /// The send window (the peer's receive window, unscaled bytes).
    pub snd_wnd: u32,
    /// The largest window the peer ever offered.
    pub max_window: u32,
    /// The receive window we offered.
    pub rcv_wnd: u32,
    /// rcv_nxt when the window was last advertised.
    pub rcv_wup: u32,
}

impl Window {
    /// The 20 bytes of `struct tcp_repair_window` (native endian).
    pub fn to_bytes(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        for (i, v) in [
            self.snd_wl1,
            self.snd_wnd,
            self.max_window,
            self.rcv_wnd,
            self.rcv_wup,
        ]
        .iter()
        .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b
    }

    /// Parse `struct tcp_repair_window`; None if `b` is shorter than 20
    /// bytes.
    pub fn from_bytes(b: &[u8]) -> Option<Window> {
        if b.len() < 20 {
            return None;
        }
        let w = |i: usize| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().unwrap());
        Some(Window {
            snd_wl1: w(0),
            snd_wnd: w(1),
            max_window: w(2),
            rcv_wnd: w(3),
            rcv_wup: w(4),
        })
    }
}

/// Everything needed to rebuild one TCP connection. Plain data: the caller
/// stores it as it likes (crust maps it to CRIU's tcp-stream and inetsk
/// images: `inq_len`/`outq_len` are the queue lengths, the sequence numbers
/// and lengths have CRIU's meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpState {
    /// Local address (for an IPv4-mapped connection on an AF_INET6 socket,
    /// `[::ffff:a.b.c.d]:port`).
    pub local: SocketAddr,
    /// The peer's address, of the same family as `local`.
    pub remote: SocketAddr,
    /// Kernel TCP state number (see [`crate::tcp_state`]).
    pub state: u8,
    /// rcv_nxt: the sequence number after the last byte received (counting
    /// the peer's FIN when it was received).
    pub inq_seq: u32,
    /// write_seq: the sequence number after the last byte queued for
    /// sending (counting our FIN once shut down).
    pub outq_seq: u32,
    /// Received bytes the application has not read yet.
    pub inq: Vec<u8>,
    /// The whole send queue: sent but not acknowledged bytes first, then
    /// the never-sent ones (the FIN is not in it).
    pub outq: Vec<u8>,
    /// How many bytes at the end of `outq` were never sent.
    pub unsq_len: u32,
    /// Negotiated options, [`crate::tcp_opt`] bits.
    pub opt_mask: u32,
    /// Send window scale (shift applied to windows the peer advertises).
    pub snd_wscale: u32,
    /// Receive window scale (shift applied to windows we advertise).
    pub rcv_wscale: u32,
    /// Maximum segment size clamp.
    pub mss_clamp: u32,
    /// The connection's timestamp clock (TCP_TIMESTAMP), when timestamps
    /// are on.
    pub timestamp: u32,
    /// Window state, when the kernel has TCP_REPAIR_WINDOW.
    pub window: Option<Window>,
    /// TCP_NODELAY was set.
    pub nodelay: bool,
    /// TCP_CORK was set.
    pub cork: bool,
}

impl TcpState {
    /// The connection, for messages.
    pub fn conn(&self) -> Conn {
        Conn::new(self.local, self.remote)
    }

    /// Number of unread received bytes (CRIU's inq_len).
    pub fn inq_len(&self) -> u32 {
        self.inq.len() as u32
    }

    /// Number of bytes in the send queue (CRIU's outq_len).
    pub fn outq_len(&self) -> u32 {
        self.outq.len() as u32
    }

    /// Bytes of `outq` that were sent but not acknowledged.
    pub fn sent_len(&self) -> usize {
        self.outq.len() - (self.unsq_len as usize).min(self.outq.len())
    }

    /// Whether the peer's FIN had been received (CLOSE_WAIT, LAST_ACK,
    /// CLOSING; CLOSE, a connection over, is rebuilt as one closed both
    /// ways, as CRIU's libsoccr does).
    pub fn peer_fin(&self) -> bool {
        matches!(self.state, CLOSE_WAIT | LAST_ACK | CLOSING | CLOSE)
    }

    /// Whether we had shut down our side, our FIN being counted in
    /// `outq_seq` (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK).
    pub fn own_fin(&self) -> bool {
        matches!(
            self.state,
            FIN_WAIT1 | FIN_WAIT2 | CLOSING | LAST_ACK | CLOSE
        )
    }

    /// Whether our FIN had been acknowledged by the peer (FIN_WAIT2,
    /// CLOSE).
    pub fn own_fin_acked(&self) -> bool {
        matches!(self.state, FIN_WAIT2 | CLOSE)
    }

    /// The sequence number of the first byte of `inq` (copied_seq).
    pub fn recv_queue_seq(&self) -> u32 {
        self.inq_seq
            .wrapping_sub(self.peer_fin() as u32)
            .wrapping_sub(self.inq_len())
    }

    /// The sequence number of the first byte of `outq` (snd_una; in
    /// SYN_SENT, the one after the SYN's).
    pub fn send_queue_seq(&self) -> u32 {
        self.outq_seq
            .wrapping_sub(self.own_fin() as u32)
            .wrapping_sub(self.outq_len())
    }

    /// Whether the connection runs over IPv4 on the wire (an AF_INET socket,
    /// or an AF_INET6 one with IPv4-mapped addresses).
    pub fn is_ipv4_on_wire(&self) -> bool {
        matches!(crate::wire_addr(&self.local), SocketAddr::V4(_))
    }

    /// Whether `state` is one this crate dumps and rebuilds.
    pub fn supported_state(state: u8) -> bool {
        matches!(
            state,
            ESTABLISHED
                | SYN_SENT
                | FIN_WAIT1
                | FIN_WAIT2
                | CLOSE_WAIT
                | LAST_ACK
                | CLOSING
                | CLOSE
        )
    }

    /// Check that the state can be rebuilt: a supported TCP state, both
    /// addresses of one family and consistent queue lengths.
    pub fn validate(&self) -> Result<(), Error> {
        let conn = self.conn();
        if !Self::supported_state(self.state) {
            return Err(Error::UnsupportedState {
                conn,
                state: self.state,
            });
        }
        let bad = |why: String| Err(Error::Inconsistent { conn, why });
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return bad("local and remote addresses are of different families".into());
        }
        if self.is_ipv4_on_wire() != matches!(crate::wire_addr(&self.remote), SocketAddr::V4(_)) {
            return bad("one address is IPv4-mapped and the other is not".into());
        }
        if self.unsq_len as usize > self.outq.len() {
            return bad(format!(
                "{} unsent bytes but a send queue of {}",
                self.unsq_len,
                self.outq.len()
            ));
        }
        if self.state == SYN_SENT && !(self.inq.is_empty() && self.outq.is_empty()) {
            return bad("a connection still in SYN_SENT with queued bytes".into());
        }
        if self.own_fin_acked() && !self.outq.is_empty() {
            return bad(format!(
                "our FIN is acknowledged ({}) but {} bytes are still in the send queue",
                state_name(self.state),
                self.outq.len()
            ));
        }
        if self.window.is_none() && self.peer_fin() {
            log::debug!("{conn}: no window state, the peer's FIN is replayed without it");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(state: u8) -> TcpState {
        TcpState {
            local: "127.0.0.1:1000".parse().unwrap(),
            remote: "127.0.0.1:2000".parse().unwrap(),
            state,
            inq_seq: 5000,
            outq_seq: 9000,
            inq: vec![1; 100],
            outq: vec![2; 300],
            unsq_len: 200,
            opt_mask: 7,
            snd_wscale: 7,
            rcv_wscale: 7,
            mss_clamp: 65483,
            timestamp: 1234,
            window: Some(Window {
                snd_wl1: 4000,
                snd_wnd: 65536,
                max_window: 65536,
                rcv_wnd: 65536,
                rcv_wup: 4900,
            }),
            nodelay: true,
            cork: false,
        }
    }

    #[test]
    fn names() {
        assert_eq!(state_name(1), "ESTABLISHED");
        assert_eq!(state_name(11), "CLOSING");
        assert_eq!(state_name(99), "UNKNOWN");
    }

    #[test]
    fn window_bytes_roundtrip() {
        let w = sample(1).window.unwrap();
        let b = w.to_bytes();
        assert_eq!(&b[4..8], &65536u32.to_ne_bytes());
        assert_eq!(Window::from_bytes(&b), Some(w));
        assert_eq!(Window::from_bytes(&b[..19]), None);
    }

    #[test]
    fn queue_start_sequences() {
        let s = sample(ESTABLISHED);
        assert_eq!(s.recv_queue_seq(), 4900);
        assert_eq!(s.send_queue_seq(), 8700);
        assert_eq!(s.sent_len(), 100);
        // Both FINs counted in the sequence numbers, not in the queues.
        let mut s = sample(LAST_ACK);
        assert!(s.peer_fin() && s.own_fin() && !s.own_fin_acked());
        assert_eq!(s.recv_queue_seq(), 4899);
        assert_eq!(s.send_queue_seq(), 8699);
        s.state = FIN_WAIT2;
        assert!(!s.peer_fin() && s.own_fin() && s.own_fin_acked());
        // A connection over (reset, or closed both ways): both FINs, ours
        // acknowledged.
        s.state = CLOSE;
        assert!(s.peer_fin() && s.own_fin() && s.own_fin_acked());
        // Sequence numbers wrap.
        s.state = CLOSE_WAIT;
        s.inq_seq = 50;
        assert_eq!(s.recv_queue_seq(), 50u32.wrapping_sub(101));
    }

    #[test]
    fn validation() {
        assert!(sample(ESTABLISHED).validate().is_ok());
        assert!(matches!(
            sample(LISTEN).validate(),
            Err(Error::UnsupportedState { state: 10, .. })
        ));
        let mut s = sample(ESTABLISHED);
        s.unsq_len = 301;
        assert!(matches!(s.validate(), Err(Error::Inconsistent { .. })));
        let mut s = sample(ESTABLISHED);
        s.remote = "[::1]:2".parse().unwrap();
        assert!(s.validate().is_err());
        let mut s = sample(ESTABLISHED);
        s.local = "[::ffff:127.0.0.1]:1000".parse().unwrap();
        s.remote = "[::1]:2000".parse().unwrap();
        assert!(s.validate().is_err());
        s.remote = "[::ffff:127.0.0.1]:2000".parse().unwrap();
        assert!(s.validate().is_ok());
        assert!(s.is_ipv4_on_wire());
        assert!(sample(FIN_WAIT2).validate().is_err());
        assert!(sample(SYN_SENT).validate().is_err());
        let mut s = sample(SYN_SENT);
        s.inq.clear();
        s.outq.clear();
        s.unsq_len = 0;
        assert!(s.validate().is_ok());
    }
}
