//! The crate's error type.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Which connection an error is about: its local and remote addresses, as
/// far as they are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Conn {
    /// The local address, if known.
    pub local: Option<SocketAddr>,
    /// The peer's address, if known.
    pub remote: Option<SocketAddr>,
}

impl Conn {
    /// Nothing known yet (a socket not bound or not looked at).
    pub fn none() -> Conn {
        Conn::default()
    }

    /// Both ends known.
    pub fn new(local: SocketAddr, remote: SocketAddr) -> Conn {
        Conn {
            local: Some(local),
            remote: Some(remote),
        }
    }
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.local, self.remote) {
            (Some(l), Some(r)) => write!(f, "{l} -> {r}"),
            (Some(l), None) => write!(f, "{l}"),
            (None, Some(r)) => write!(f, "? -> {r}"),
            (None, None) => write!(f, "(unnamed)"),
        }
    }
}

/// What went wrong while dumping or rebuilding a TCP connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed: `step` names it (and its arguments), `conn`
    /// the connection.
    #[error("{step} failed on TCP socket {conn}")]
    Io {
        /// What was being done, e.g. "TCP_REPAIR on" or "restore of the
        /// receive queue".
        step: &'static str,
        /// The connection.
        conn: Conn,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// TCP repair cannot be switched on: no CAP_NET_ADMIN, or not a TCP
    /// socket.
    #[error("TCP repair mode cannot be turned on for socket {conn}")]
    RepairUnavailable {
        /// The connection.
        conn: Conn,
        /// The kernel's error (EPERM, ENOPROTOOPT...).
        #[source]
        source: io::Error,
    },
    /// The socket is in a TCP state this crate does not dump or rebuild.
    #[error("TCP socket {conn} is in state {} ({state}), which cannot be dumped or rebuilt", crate::state_name(*.state))]
    UnsupportedState {
        /// The connection.
        conn: Conn,
        /// The kernel's state number.
        state: u8,
    },
    /// The kernel reported something that does not add up (a queue shorter
    /// than its size, too short a TCP_INFO) or the given state is not
    /// self-consistent.
    #[error("inconsistent TCP state of socket {conn}: {why}")]
    Inconsistent {
        /// The connection.
        conn: Conn,
        /// What does not add up.
        why: String,
    },
    /// A queue could not be put back because the new socket's buffer is too
    /// small for it.
    #[error("the {queue} of TCP socket {conn} ({len} bytes) does not fit the new socket's buffer: set {option} at least as big as the original's before restore")]
    BufferTooSmall {
        /// The connection.
        conn: Conn,
        /// "receive queue" or "send queue".
        queue: &'static str,
        /// Its length.
        len: usize,
        /// SO_RCVBUF or SO_SNDBUF.
        option: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// [`crate::Builder::finish`] was called before a successful
    /// [`crate::Builder::restore`], or with another state.
    #[error("TCP socket {conn}: finish called without a matching restore")]
    NotRestored {
        /// The connection.
        conn: Conn,
    },
}

impl Error {
    /// An [`Error::Io`].
    pub(crate) fn io(step: &'static str, conn: Conn, source: io::Error) -> Error {
        Error::Io { step, conn, source }
    }

    /// The errno underneath, if the error came from a system call.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. }
            | Error::RepairUnavailable { source, .. }
            | Error::BufferTooSmall { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_connection() {
        let c = Conn::new(
            "127.0.0.1:1".parse().unwrap(),
            "[::ffff:10.0.0.1]:2".parse().unwrap(),
        );
        assert_eq!(c.to_string(), "127.0.0.1:1 -> [::ffff:10.0.0.1]:2");
        assert_eq!(Conn::none().to_string(), "(unnamed)");
        let e = Error::UnsupportedState { conn: c, state: 10 };
        assert_eq!(
            e.to_string(),
            "TCP socket 127.0.0.1:1 -> [::ffff:10.0.0.1]:2 is in state LISTEN (10), which cannot be dumped or rebuilt"
        );
        let e = Error::io("bind", c, io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        assert!(std::error::Error::source(&e).is_some());
    }
}
