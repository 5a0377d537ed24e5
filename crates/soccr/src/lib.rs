//! crust-soccr: TCP connection repair ("socket checkpoint/restore").
//!
//! Linux's `TCP_REPAIR` mode lets a privileged process (CAP_NET_ADMIN) read
//! everything that makes up a live TCP connection — sequence numbers, the
//! bytes waiting in both queues, negotiated options, window state — and build
//! a new socket that carries on the very same connection, without a
//! handshake and without the peer noticing. This crate is crust's own take on
//! what CRIU's libsoccr does:
//!
//! * [`Repair`] puts an existing socket into repair mode and reads its
//!   [`TcpState`] (dump side). Resuming it ([`Repair::resume`]) lets the
//!   connection go on; dropping it instead frees the socket silently.
//! * [`Builder`] makes a new socket in repair mode and rebuilds a connection
//!   from a [`TcpState`] (restore side), in two steps: [`Builder::restore`]
//!   does everything that sends nothing to the network, [`Builder::finish`]
//!   replays FINs, sends the never-sent tail of the send queue and leaves
//!   repair mode.
//! * [`send_segment`] injects a crafted TCP segment "from the peer" (used to
//!   replay a FIN the peer had sent), marked with [`SOCCR_MARK`].
//!
//! IPv4, IPv6 and IPv4-mapped IPv6 (an AF_INET6 socket whose addresses are
//! `::ffff:a.b.c.d`) connections are handled, in the states ESTABLISHED,
//! FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK and CLOSING (the half-closed
//! ones are rebuilt as established and then brought to their state by
//! replaying the FINs), CLOSE (a connection over, reset or closed both
//! ways: rebuilt closed both ways with what it had received, as CRIU's
//! libsoccr does), and SYN_SENT (a connect not answered yet: its SYN is
//! sent again with the same initial sequence number). Listening sockets
//! have no repair mode: they are simply made again by the caller.
//!
//! # The network must be locked
//!
//! Between the moment a connection is dumped and the end of its restore, the
//! connection's packets must not reach either end: the caller must lock it
//! out of the network (a firewall rule dropping its packets, letting through
//! only packets marked with [`SOCCR_MARK`], as CRIU's network lock does).
//! Otherwise the peer's retransmissions reach a host with no socket for the
//! connection, or a half-rebuilt one, and the kernel answers with a reset.
//! On loopback, rebuilding both ends with [`Builder::restore`] before
//! calling [`Builder::finish`] on either is enough (see the tests).
//!
//! # Closing in repair mode
//!
//! Closing a socket that is in repair mode frees it silently: no FIN and no
//! RST are sent, the peer is not told. That is how a dumped connection is
//! taken away from the dumped process. Repair mode belongs to the socket,
//! not to the fd: when the [`Repair`] holds a copy of another process's fd
//! (pidfd_getfd), dropping the copy leaves that process's socket in repair
//! mode until [`Repair::resume`] (or its owner closing it).
//!
//! # Example
//!
//! ```no_run
//! use crust_soccr::{Builder, Repair};
//! use std::os::fd::OwnedFd;
//!
//! fn migrate(sock: OwnedFd) -> Result<OwnedFd, crust_soccr::Error> {
//!     // Dump: take the socket into repair mode and read its state.
//!     let r = Repair::start(sock)?;
//!     let st = r.state()?;
//!     // Close it silently (the peer sees nothing); with a pidfd_getfd copy
//!     // the owner would close its fd too (or be killed).
//!     drop(r);
//!     // Restore: a new socket, same connection.
//!     let mut b = Builder::new(&st.local, None)?;
//!     b.restore(&st)?;
//!     b.finish(&st)
//! }
//! ```
//!
//! Options that are not part of the TCP repair state (buffer sizes,
//! keepalive, SO_MARK, ...) are the caller's: set them on [`Builder::fd`]
//! before [`Builder::restore`]. SO_RCVBUF and SO_SNDBUF at least as big as
//! the original's are needed for the queues to fit.

#![warn(missing_docs)]

mod builder;
mod error;
mod packet;
mod repair;
mod state;

pub use builder::Builder;
pub use error::{Conn, Error};
pub use packet::{build_segment, checksum, send_segment, wire_addr, SOCCR_MARK};
pub use repair::Repair;
pub use state::{state_name, TcpState, Window};

/// TCP state numbers of the kernel (include/net/tcp_states.h), as found in
/// [`TcpState::state`] and in CRIU's images.
pub mod tcp_state {
    /// Connection established.
    pub const ESTABLISHED: u8 = 1;
    /// SYN sent, waiting for SYN-ACK.
    pub const SYN_SENT: u8 = 2;
    /// SYN received.
    pub const SYN_RECV: u8 = 3;
    /// Our FIN sent, not yet acknowledged.
    pub const FIN_WAIT1: u8 = 4;
    /// Our FIN acknowledged, waiting for the peer's.
    pub const FIN_WAIT2: u8 = 5;
    /// Both FINs done, waiting out 2MSL.
    pub const TIME_WAIT: u8 = 6;
    /// Closed.
    pub const CLOSE: u8 = 7;
    /// The peer's FIN received, ours not sent.
    pub const CLOSE_WAIT: u8 = 8;
    /// The peer's FIN received, ours sent and not yet acknowledged.
    pub const LAST_ACK: u8 = 9;
    /// Listening.
    pub const LISTEN: u8 = 10;
    /// Both FINs sent at once, ours not yet acknowledged.
    pub const CLOSING: u8 = 11;
}

/// Bits of [`TcpState::opt_mask`] (TCPI_OPT_* of linux/tcp.h): options the
/// connection negotiated.
pub mod tcp_opt {
    /// Timestamps (RFC 7323).
    pub const TIMESTAMPS: u32 = 1;
    /// Selective acknowledgements allowed.
    pub const SACK: u32 = 2;
    /// Window scaling.
    pub const WSCALE: u32 = 4;
    /// ECN was negotiated.
    pub const ECN: u32 = 8;
}

/// Raw kernel constants of TCP repair (linux/tcp.h), for callers that talk
/// to the socket themselves.
pub mod consts {
    /// Socket option: repair mode on (1), off (0), off without window probe
    /// (-1).
    pub const TCP_REPAIR: i32 = 19;
    /// Socket option: which queue TCP_QUEUE_SEQ and send/recv act on.
    pub const TCP_REPAIR_QUEUE: i32 = 20;
    /// Socket option: the sequence number of the selected queue.
    pub const TCP_QUEUE_SEQ: i32 = 21;
    /// Socket option: an array of (code, value) negotiated options.
    pub const TCP_REPAIR_OPTIONS: i32 = 22;
    /// Socket option: the timestamp clock of the connection.
    pub const TCP_TIMESTAMP: i32 = 24;
    /// Socket option: `struct tcp_repair_window`.
    pub const TCP_REPAIR_WINDOW: i32 = 29;
    /// TCP_REPAIR value: on.
    pub const TCP_REPAIR_ON: i32 = 1;
    /// TCP_REPAIR value: off (sends a window probe).
    pub const TCP_REPAIR_OFF: i32 = 0;
    /// TCP_REPAIR_QUEUE value: no queue.
    pub const TCP_NO_QUEUE: i32 = 0;
    /// TCP_REPAIR_QUEUE value: the receive queue.
    pub const TCP_RECV_QUEUE: i32 = 1;
    /// TCP_REPAIR_QUEUE value: the send queue.
    pub const TCP_SEND_QUEUE: i32 = 2;
    /// TCP option kind: maximum segment size.
    pub const TCPOPT_MAXSEG: u32 = 2;
    /// TCP option kind: window scale.
    pub const TCPOPT_WINDOW: u32 = 3;
    /// TCP option kind: SACK permitted.
    pub const TCPOPT_SACK_PERM: u32 = 4;
    /// TCP option kind: timestamps.
    pub const TCPOPT_TIMESTAMP: u32 = 8;
    /// SO_MARK (asm-generic/socket.h).
    pub const SO_MARK: i32 = 36;
    /// IPV6_HDRINCL (linux/in6.h).
    pub const IPV6_HDRINCL: i32 = 36;
    /// TCP header flag FIN.
    pub const TH_FIN: u8 = 0x01;
    /// TCP header flag RST.
    pub const TH_RST: u8 = 0x04;
    /// TCP header flag ACK.
    pub const TH_ACK: u8 = 0x10;
}

/// Whether this process can use TCP repair: makes a TCP socket and turns
/// repair mode on (needs CAP_NET_ADMIN). The error says why not.
pub fn repair_available() -> Result<(), Error> {
    let fd = crust_sys::net::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_TCP)
        .map_err(|e| Error::io("socket(AF_INET, SOCK_STREAM)", Conn::none(), e))?;
    let r = Repair::start(fd)?;
    drop(r);
    Ok(())
}
