//! Where netlink messages go: a real netlink socket, or a fake.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

/// Sends requests to the kernel and receives its answers, one datagram at
/// a time.
pub trait Transport {
    /// Send one complete message (or several, back to back).
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receive one datagram into `buf`; returns its length (a datagram
    /// longer than `buf` is cut to it, as the kernel does).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// A raw netlink socket (close-on-exec) talking to the kernel (port 0).
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A socket of netlink `protocol` (NETLINK_*).
    pub fn open(protocol: i32) -> io::Result<Socket> {
        crust_sys::unix::netlink_socket(protocol).map(|fd| Socket { fd })
    }

    /// A NETLINK_SOCK_DIAG socket: sockets of crust's network namespace.
    pub fn sock_diag() -> io::Result<Socket> {
        Socket::open(crust_sys::unix::NETLINK_SOCK_DIAG)
    }

    /// A NETLINK_NETFILTER socket (nfnetlink: NFLOG, conntrack, ...).
    pub fn netfilter() -> io::Result<Socket> {
        Socket::open(libc::NETLINK_NETFILTER)
    }

    /// Make [`Transport::recv`] fail with `WouldBlock` after `timeout`
    /// without a datagram (SO_RCVTIMEO).
    pub fn set_recv_timeout(&self, timeout: Duration) -> io::Result<()> {
        crust_sys::unix::setsockopt_timeval(
            self.fd.as_fd(),
            libc::SO_RCVTIMEO,
            timeout.as_secs(),
            u64::from(timeout.subsec_micros()),
        )
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Transport for Socket {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        crust_sys::unix::netlink_send(self.fd.as_fd(), msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crust_sys::unix::netlink_recv(self.fd.as_fd(), buf)
    }
}

/// A transport for tests: records what is sent and answers with datagrams
/// (or errors) queued beforehand, in order. With nothing queued, `recv`
/// fails with `WouldBlock`, as a socket with a receive timeout does.
#[derive(Debug, Default)]
pub struct Fake {
    /// Every message sent, in order.
    pub sent: Vec<Vec<u8>>,
    replies: VecDeque<io::Result<Vec<u8>>>,
    send_error: Option<io::Error>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// Queue a datagram for `recv`.
    pub fn reply(&mut self, datagram: impl Into<Vec<u8>>) -> &mut Fake {
        self.replies.push_back(Ok(datagram.into()));
        self
    }

    /// Queue an error for `recv`.
    pub fn reply_error(&mut self, e: io::Error) -> &mut Fake {
        self.replies.push_back(Err(e));
        self
    }

    /// Make the next `send` fail with `e`.
    pub fn fail_send(&mut self, e: io::Error) -> &mut Fake {
        self.send_error = Some(e);
        self
    }

    /// Datagrams still queued.
    pub fn pending(&self) -> usize {
        self.replies.len()
    }
}

impl Transport for Fake {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        if let Some(e) = self.send_error.take() {
            return Err(e);
        }
        self.sent.push(msg.to_vec());
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let d = self
            .replies
            .pop_front()
            .unwrap_or_else(|| Err(io::ErrorKind::WouldBlock.into()))?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok(n)
    }
}

impl<T: Transport + ?Sized> Transport for &mut T {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        (**self).send(msg)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).recv(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_records_and_replays() {
        let mut f = Fake::new();
        f.reply(vec![1, 2, 3, 4, 5])
            .reply_error(io::ErrorKind::Other.into());
        f.send(&[9, 9]).unwrap();
        assert_eq!(f.sent, vec![vec![9, 9]]);
        let mut buf = [0u8; 3];
        assert_eq!(f.recv(&mut buf).unwrap(), 3);
        assert_eq!(buf, [1, 2, 3]);
        assert_eq!(f.recv(&mut buf).unwrap_err().kind(), io::ErrorKind::Other);
        assert_eq!(
            f.recv(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        f.fail_send(io::ErrorKind::BrokenPipe.into());
        assert!(f.send(&[1]).is_err());
        assert!(f.send(&[2]).is_ok());
        assert_eq!(f.sent.len(), 2);
    }

    #[test]
    fn real_sock_diag_socket_answers() {
        // Every kernel crust runs on has sock_diag; an unprivileged
        // NETLINK_SOCK_DIAG socket may be opened by anyone.
        let mut s = Socket::sock_diag().unwrap();
        s.set_recv_timeout(Duration::from_secs(5)).unwrap();
        // unix_diag_req: family AF_UNIX, every state, show nothing extra.
        let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
        req.extend_from_slice(&u32::MAX.to_ne_bytes());
        req.extend_from_slice(&[0; 4 + 4 + 8]);
        crate::diag_dump(&mut s, &req, |m| {
            // unix_diag_msg: family first.
            assert_eq!(m.first(), Some(&(libc::AF_UNIX as u8)));
            Ok(())
        })
        .unwrap();
    }
}
