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

pub use client::{object_record_name, record_name, PageServerSink, Remote};
pub use conn::{Conn, Listener};
pub use server::{serve, ImagesProvider, PageProvider, ServeStats};

/// `page-server --prev-images-dir DIR`: the `parent` link its OPEN2 and
/// PS_IOV_PARENT answers come from, as CRIU's page server makes it.
pub use crate::mem::chain::link_parent;

use crate::{Error, Options};
use std::sync::Arc;

/// With `--page-server`, the sink of a dump or pre-dump: connected to
/// `--address`/`--port` (or on `--ps-socket FD`), TLS done. None without
/// the option. Close it with [`PageServerSink::close`]`(opts.ps_socket.is_some())`
/// once every page is sent, before the dump counts as done.
pub fn connect_sink(opts: &Options) -> Result<Option<Arc<PageServerSink>>, Error> {
    if !opts.page_server {
        return Ok(None);
    }
    let conn = match opts.ps_socket {
        Some(fd) => Conn::from_fd(fd, opts, false)?,
        None => Conn::connect(opts)?,
    };
    log::info!("pages go to the page server at {}", conn.peer());
    Ok(Some(Arc::new(
        PageServerSink::new(conn).with_local(&opts.images_dir),
    )))
}

/// Close the sink of [`connect_sink`] once every page is sent: the server
/// confirms it has them all before the dump counts as done (and before
/// the tree may be killed). Nothing without one.
/// Nothing else may hold the sink by then.
pub fn close_sink(sink: Option<Arc<PageServerSink>>, opts: &Options) -> Result<(), Error> {
    let Some(s) = sink else {
        return Ok(());
    };
    match Arc::try_unwrap(s) {
        Ok(s) => s.close(opts.ps_socket.is_some()),
        Err(_) => Err(Error::unsupported(
            "the page server connection is still in use at the end of the dump (crust bug)",
        )),
    }
}

#[cfg(test)]
mod tests;
