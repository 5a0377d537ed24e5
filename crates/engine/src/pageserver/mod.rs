//! CRIU 4.2's page server, both sides (docs/ARCHITECTURE.md, "Live migration"): the wire
//! format ([`proto`]), the connection with its TLS ([`conn`]), a dump's
//! pages sent over it and lazy-pages' requests ([`client`]), and the
//! server that writes them into an images directory ([`server`]).

mod certname;
pub mod client;
pub mod conn;
pub mod proto;
pub mod server;
mod tls;

pub use client::{PageServerSink, Remote};
pub use conn::{Conn, Listener};
pub use server::{serve, ImagesProvider, PageProvider, ServeStats};

use crate::{Error, Options};

/// With `--page-server`, the sink of a dump or pre-dump: connected to
/// `--address`/`--port` (or on `--ps-socket FD`), TLS done. None without
/// the option. Close it with [`PageServerSink::close`]`(opts.ps_socket.is_some())`
/// once every page is sent, before the dump counts as done.
pub fn connect_sink(opts: &Options) -> Result<Option<PageServerSink>, Error> {
    if !opts.page_server {
        return Ok(None);
    }
    let conn = match opts.ps_socket {
        Some(fd) => Conn::from_fd(fd, opts, false)?,
        None => Conn::connect(opts)?,
    };
    log::info!("pages go to the page server at {}", conn.peer());
    Ok(Some(PageServerSink::new(conn)))
}

/// Close the sink of [`connect_sink`] once every page is sent: the server
/// confirms it has them all before the dump counts as done (and before
/// the tree may be killed). Nothing without one.
pub fn close_sink(sink: Option<PageServerSink>, opts: &Options) -> Result<(), Error> {
    match sink {
        Some(s) => s.close(opts.ps_socket.is_some()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
