//! A page-server connection: plain TCP, TLS over TCP (`--tls`), or a
//! socket the caller passed (`--ps-socket FD`). Reads and writes of a
//! client time out, so a server or a network that goes away fails the
//! dump instead of hanging it.

use super::proto::{Iov, IOV_SIZE};
use super::tls;
use crate::options::Options;
use crate::Error;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// CRIU's default port of a page server.
pub const DEFAULT_PORT: u16 = 27;

/// How long a client waits for the server to take or give data.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// An error of the connection to or from `peer`.
pub(super) fn ps_err(peer: &str, what: impl Into<String>, source: std::io::Error) -> Error {
    Error::PageServer {
        peer: peer.to_string(),
        what: what.into(),
        source,
    }
}

enum Inner {
    Plain(TcpStream),
    Client(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Server(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

/// One connection between a page server and its client.
pub struct Conn {
    inner: Inner,
    peer: String,
}

fn address(opts: &Options) -> (String, u16) {
    (
        opts.address.clone().unwrap_or_else(|| "0.0.0.0".into()),
        opts.port.unwrap_or(DEFAULT_PORT),
    )
}

impl Conn {
    /// Connect to the page server at `--address`/`--port` (with `--tls`,
    /// and the handshake done).
    pub fn connect(opts: &Options) -> Result<Conn, Error> {
        let Some(addr) = opts.address.clone() else {
            return Err(Error::refused(
                crate::ErrorKind::InvalidRequest,
                "--page-server needs --address of the page server",
            ));
        };
        let port = opts.port.unwrap_or(DEFAULT_PORT);
        let peer = format!("{addr}:{port}");
        let targets: Vec<_> = (addr.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| ps_err(&peer, "cannot resolve the address", e))?
            .collect();
        let mut last = std::io::Error::other("no address");
        let mut sk = None;
        for t in targets {
            match TcpStream::connect_timeout(&t, CLIENT_TIMEOUT) {
                Ok(s) => {
                    sk = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let sk = sk.ok_or_else(|| {
            ps_err(
                &peer,
                "cannot connect to the page server (is it running? start it first)",
                last,
            )
        })?;
        Self::client_on(sk, opts, peer)
    }

    fn client_on(sk: TcpStream, opts: &Options, peer: String) -> Result<Conn, Error> {
        let io = |e| ps_err(&peer, "cannot set socket options", e);
        sk.set_read_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
        sk.set_write_timeout(Some(CLIENT_TIMEOUT)).map_err(io)?;
        sk.set_nodelay(true).map_err(io)?;
        if !opts.tls.enabled {
            return Ok(Conn {
                inner: Inner::Plain(sk),
                peer,
            });
        }
        let host = opts.address.clone().unwrap_or_default();
        let cfg = tls::client_config(&opts.tls, &host, &peer)?;
        let name = tls::server_name(&host)
            .or_else(|| tls::server_name("localhost"))
            .ok_or_else(|| ps_err(&peer, "bad name", std::io::Error::other(host.clone())))?;
        let c = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name)
            .map_err(|e| ps_err(&peer, "cannot start TLS", std::io::Error::other(e)))?;
        let mut s = rustls::StreamOwned::new(c, sk);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| ps_err(&peer, "TLS handshake with the page server failed", e))?;
        }
        Ok(Conn {
            inner: Inner::Client(Box::new(s)),
            peer,
        })
    }

    /// A connection on a socket the caller passed (`--ps-socket FD`): the
    /// fd is duplicated, the caller keeps its own.
    pub fn from_fd(fd: i32, opts: &Options, server: bool) -> Result<Conn, Error> {
        let peer = format!("socket fd {fd}");
        let owned = crust_sys::psock::dup_fd(fd)
            .map_err(|e| ps_err(&peer, "cannot use the --ps-socket fd", e))?;
        let sk = TcpStream::from(owned);
        if server {
            Self::server_on(sk, opts, peer)
        } else {
            Self::client_on(sk, opts, peer)
        }
    }

    fn server_on(sk: TcpStream, opts: &Options, peer: String) -> Result<Conn, Error> {
        let _ = sk.set_nodelay(true);
        if !opts.tls.enabled {
            return Ok(Conn {
                inner: Inner::Plain(sk),
                peer,
            });
        }
        let cfg = tls::server_config(&opts.tls, &peer)?;
        let c = rustls::ServerConnection::new(std::sync::Arc::new(cfg))
            .map_err(|e| ps_err(&peer, "cannot start TLS", std::io::Error::other(e)))?;
        let mut s = rustls::StreamOwned::new(c, sk);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| ps_err(&peer, "TLS handshake with the client failed", e))?;
        }
        if let (false, Some(addr)) = (opts.tls.no_cn_verify, opts.address.as_deref()) {
            tls::check_peer_name(s.conn.peer_certificates(), addr, &peer)?;
        }
        Ok(Conn {
            inner: Inner::Server(Box::new(s)),
            peer,
        })
    }

    /// Is the connection TLS? (CRIU's TLS server polls the socket between
    /// reads: what it needs must not wait in a record it has half read.)
    pub fn is_tls(&self) -> bool {
        !matches!(self.inner, Inner::Plain(_))
    }

    /// Who is at the other end (for errors).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn tcp(&self) -> &TcpStream {
        match &self.inner {
            Inner::Plain(s) => s,
            Inner::Client(s) => &s.sock,
            Inner::Server(s) => &s.sock,
        }
    }

    /// Turn the client's timeouts off or on (a server waits as long as
    /// the dump takes).
    pub fn set_timeout(&self, t: Option<Duration>) -> Result<(), Error> {
        let io = |e| ps_err(&self.peer, "cannot set socket timeouts", e);
        self.tcp().set_read_timeout(t).map_err(io)?;
        self.tcp().set_write_timeout(t).map_err(io)
    }

    pub fn send_iov(&mut self, iov: &Iov) -> Result<(), Error> {
        self.send(&iov.to_bytes(), "cannot send a command to the page server")
    }

    /// Read one command; None at a clean end of the connection.
    pub fn recv_iov(&mut self) -> Result<Option<Iov>, Error> {
        let mut b = [0u8; IOV_SIZE];
        let mut got = 0usize;
        while got < IOV_SIZE {
            let n = match self.read(b.get_mut(got..).unwrap_or_default()) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ps_err(&self.peer, "cannot read a command", e)),
            };
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                return Err(ps_err(
                    &self.peer,
                    "the connection ended inside a command",
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            got += n;
        }
        Ok(Some(Iov::from_bytes(&b)))
    }

    /// Write all of `bytes` (`what` says what, in the error).
    pub fn send(&mut self, bytes: &[u8], what: &str) -> Result<(), Error> {
        self.write_all(bytes)
            .map_err(|e| ps_err(&self.peer, what.to_string(), e))
    }

    /// Move exactly `len` bytes queued in `pipe` to the socket with
    /// splice (no copy through crust): plain TCP only, TLS must see the
    /// bytes.
    pub fn splice_from(
        &mut self,
        pipe: std::os::fd::BorrowedFd<'_>,
        len: u64,
        what: &str,
    ) -> Result<(), Error> {
        use std::os::fd::AsFd;
        let sk = match &self.inner {
            Inner::Plain(s) => s,
            _ => {
                return Err(ps_err(
                    &self.peer,
                    what.to_string(),
                    std::io::Error::from(std::io::ErrorKind::Unsupported),
                ))
            }
        };
        let mut left = len;
        while left > 0 {
            let n = left.min(isize::MAX as u64) as usize;
            match crust_sys::pipe::splice_out(pipe, sk.as_fd(), n, libc::SPLICE_F_MORE) {
                Ok(0) => {
                    return Err(ps_err(
                        &self.peer,
                        format!("{what}: the pipe ended {left} bytes early"),
                        std::io::ErrorKind::UnexpectedEof.into(),
                    ))
                }
                Ok(n) => left -= n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ps_err(&self.peer, what.to_string(), e)),
            }
        }
        Ok(())
    }

    /// Move up to `len` bytes from a plain connection into `pipe` with
    /// splice, as they come (at least one byte, unless the stream ended:
    /// 0). TLS must see its bytes: Unsupported.
    pub fn splice_into(
        &mut self,
        pipe: std::os::fd::BorrowedFd<'_>,
        len: usize,
    ) -> std::io::Result<usize> {
        use std::os::fd::AsFd;
        let Inner::Plain(sk) = &self.inner else {
            return Err(std::io::ErrorKind::Unsupported.into());
        };
        loop {
            match crust_sys::pipe::splice_out(sk.as_fd(), pipe, len, libc::SPLICE_F_MOVE) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => return r,
            }
        }
    }

    /// Read exactly `buf.len()` bytes.
    pub fn recv(&mut self, buf: &mut [u8], what: &str) -> Result<(), Error> {
        self.read_exact(buf)
            .map_err(|e| ps_err(&self.peer, what.to_string(), e))
    }

    /// Push out what TLS holds back.
    pub fn push(&mut self) -> Result<(), Error> {
        self.flush()
            .map_err(|e| ps_err(&self.peer, "cannot send to the page server", e))
    }

    /// Say nothing more will be sent while the connection stays open (the
    /// other side reads the end of the stream): TLS's close_notify
    /// ([`Conn::end`]) already says it; plain TCP shuts its writing half.
    pub fn end_sending(&mut self) {
        self.end();
        if let Inner::Plain(s) = &self.inner {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
    }

    /// End TLS politely (close_notify); plain TCP needs nothing.
    pub fn end(&mut self) {
        match &mut self.inner {
            Inner::Plain(_) => {}
            Inner::Client(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
                // Read the server's own close_notify (CRIU's server sends
                // it, then waits for the end of the stream): a socket
                // closed with it unread resets the connection, and the
                // server takes the reset for a failure.
                let _ = s
                    .sock
                    .set_read_timeout(Some(std::time::Duration::from_secs(2)));
                let mut buf = [0u8; 512];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
            Inner::Server(s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = match &mut self.inner {
            Inner::Plain(s) => s.read(buf),
            Inner::Client(s) => s.read(buf),
            Inner::Server(s) => s.read(buf),
        };
        // A TLS peer that closes without close_notify: an end all the same.
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(s) => s.write(buf),
            Inner::Client(s) => s.write(buf),
            Inner::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.inner {
            Inner::Plain(s) => s.flush(),
            Inner::Client(s) => s.flush(),
            Inner::Server(s) => s.flush(),
        }
    }
}

/// A listening page server.
pub struct Listener {
    sk: Option<TcpListener>,
    fd: Option<i32>,
    port: u16,
}

impl Listener {
    /// Listen at `--address` (all addresses without it) and `--port`
    /// (port 0: any free port, see [`Listener::port`]); with
    /// `--ps-socket FD`, no listening: the fd is the connection.
    pub fn bind(opts: &Options) -> Result<Listener, Error> {
        if let Some(fd) = opts.ps_socket {
            return Ok(Listener {
                sk: None,
                fd: Some(fd),
                port: opts.port.unwrap_or(DEFAULT_PORT),
            });
        }
        let (addr, port) = address(opts);
        let peer = format!("{addr}:{port}");
        let sk = TcpListener::bind((addr.as_str(), port))
            .map_err(|e| ps_err(&peer, "cannot listen (is the port in use?)", e))?;
        let port = sk
            .local_addr()
            .map_err(|e| ps_err(&peer, "cannot read the bound address", e))?
            .port();
        Ok(Listener {
            sk: Some(sk),
            fd: None,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Like [`Listener::accept`], but give up after `within` (and when
    /// crust is asked to stop): a peer that never comes must not keep the
    /// caller waiting for ever (a dump holding a frozen tree).
    pub fn accept_within(self, opts: &Options, within: std::time::Duration) -> Result<Conn, Error> {
        let Some(sk) = self.sk.as_ref() else {
            return self.accept(opts);
        };
        let peer = format!("port {}", self.port);
        sk.set_nonblocking(true)
            .map_err(|e| ps_err(&peer, "cannot make the listening socket non-blocking", e))?;
        let deadline = std::time::Instant::now() + within;
        loop {
            match sk.accept() {
                Ok((c, from)) => {
                    c.set_nonblocking(false)
                        .map_err(|e| ps_err(&peer, "cannot make the connection blocking", e))?;
                    log::info!("page server: connection from {from}");
                    return Conn::server_on(c, opts, from.to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ps_err(&peer, "cannot accept a connection", e)),
            }
            crate::util::check_stop()?;
            if std::time::Instant::now() >= deadline {
                return Err(ps_err(
                    &peer,
                    format!(
                        "no client connected within {} s (start the other side sooner, \
                         or raise CRUST_LAZY_WAIT)",
                        within.as_secs()
                    ),
                    std::io::ErrorKind::TimedOut.into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Wait for the one client (or take the passed socket), TLS included.
    pub fn accept(self, opts: &Options) -> Result<Conn, Error> {
        if let Some(fd) = self.fd {
            return Conn::from_fd(fd, opts, true);
        }
        let peer = format!("port {}", self.port);
        let Some(sk) = self.sk else {
            return Err(ps_err(&peer, "no socket", std::io::Error::other("none")));
        };
        let (c, from) = sk
            .accept()
            .map_err(|e| ps_err(&peer, "cannot accept a connection", e))?;
        log::info!("page server: connection from {from}");
        Conn::server_on(c, opts, from.to_string())
    }
}
