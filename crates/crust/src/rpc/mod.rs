//! CRIU's RPC: `crust swrk FD` (a client such as runc, go-criu, libcriu
//! or pycriu starts crust with one end of a SOCK_SEQPACKET socket pair as
//! fd FD) and `crust service` (a daemon listening on a unix socket; each
//! connection is served by a process of its own). Requests are served one
//! after another on a connection, as CRIU's cr-service.c serves them:
//! after each one the connection ends unless the request said `keep_open`
//! (which CRIU allows only for VERSION, FEATURE_CHECK, CPUINFO_* and
//! PAGE_SERVER*).
//!
//! - `wire`: one protobuf message per packet;
//! - `opts`: `criu_opts` into the options the command line fills;
//! - `notify`: the notify callbacks, through the engine's action hooks;
//! - `handle`: each request type;
//! - `service`: the listening daemon.

mod handle;
mod notify;
mod opts;
mod service;
mod wire;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use anyhow::{bail, Context, Result};
use crust_images::proto::{criu_req_type, CriuResp};

use crate::cli::Opts;
use wire::Incoming;

pub use service::service;

/// `crust swrk FD`: serve the client at the other end of fd FD, then exit.
pub fn swrk(o: &Opts) -> Result<i32> {
    let Some(arg) = o.args.first() else {
        bail!("Usage: crust swrk <fd>");
    };
    let fd = crate::getopt::atoi(arg);
    let sk =
        take_fd(fd).with_context(|| format!("swrk: fd {arg} is not an open socket of crust"))?;
    Ok(serve(sk, o, true))
}

/// `crust __rpc-conn`: one connection of `crust service`, given as fd 0,
/// served with CRIU's defaults (the service's options are not the
/// request's, as CRIU resets them for each connection).
pub fn service_conn() -> i32 {
    let _ = crate::logger::init(2, None, false);
    let sk = match take_fd(0) {
        Ok(sk) => sk,
        Err(e) => {
            eprintln!("Error: crust service connection: {e:#}");
            return 1;
        }
    };
    serve(sk, &Opts::default(), false)
}

/// A copy of crust's fd `fd` (taken with pidfd_getfd from crust itself),
/// the original closed.
fn own_fd(fd: i32) -> Result<OwnedFd> {
    let me = crust_sys::process::getpid();
    let pidfd = crust_sys::unix::pidfd_open(me).context("pidfd_open of crust itself")?;
    let f = crust_sys::unix::pidfd_getfd(pidfd.as_fd(), fd).with_context(|| format!("fd {fd}"))?;
    drop(pidfd);
    crust_sys::probe::close_fd(fd).with_context(|| format!("closing fd {fd}"))?;
    Ok(f)
}

/// The connected socket `fd` as crust's own; fds 0, 1 and 2 are then made
/// to exist (a client that closed them, as pycriu does, must not see
/// crust's files opened on them and written to as stdout or stderr).
fn take_fd(fd: i32) -> Result<OwnedFd> {
    // First, so that the copy is not made at 0, 1 or 2 (where println!
    // would write into the client's socket); again once `fd` is closed.
    fill_std_fds();
    let sk = own_fd(fd)?;
    crust_sys::unix::peer_cred(sk.as_fd())
        .with_context(|| format!("fd {fd} is not a connected unix socket"))?;
    fill_std_fds();
    Ok(sk)
}

/// CRIU's status-ready: one NUL byte to the status fd, which is closed.
pub(crate) fn status_ready(fd: i32) {
    use std::io::Write;
    match own_fd(fd) {
        Ok(f) => {
            if let Err(e) = std::fs::File::from(f).write_all(&[0]) {
                log::warn!("cannot write to the status fd {fd}: {e}");
            }
        }
        Err(e) => log::warn!("status fd {fd}: {e:#}"),
    }
}

/// Flush the log and stdio (before a fork).
pub(crate) fn flush_all() {
    use std::io::Write;
    log::logger().flush();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

/// Open /dev/null onto whichever of fds 0, 1, 2 is closed.
pub(crate) fn fill_std_fds() {
    use std::os::fd::IntoRawFd;
    for _ in 0..3 {
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        else {
            return;
        };
        let raw = f.into_raw_fd();
        if raw > 2 {
            let _ = crust_sys::probe::close_fd(raw);
            return;
        }
        // fd 0, 1 or 2 now: kept open for the life of crust.
    }
}

/// Serve requests on `sk` until the connection ends; the exit code: 0
/// when the last request succeeded.
fn serve(sk: OwnedFd, base: &Opts, swrk: bool) -> i32 {
    let peer = match crust_sys::unix::peer_cred(sk.as_fd()) {
        Ok((pid, _, _)) => pid,
        Err(e) => {
            log::error!("Can't get socket options: {e}");
            return 1;
        }
    };
    // CRIU's pre_dump_loop: after a PRE_DUMP the connection carries the
    // next PRE_DUMP or the final DUMP, nothing else.
    let mut pre_dumping = false;
    loop {
        let req = match wire::recv_req(sk.as_fd()) {
            Ok(Incoming::Req(r)) => r,
            Ok(Incoming::Closed) => {
                log::info!("Client exited unexpectedly");
                return 1;
            }
            Ok(Incoming::Oversized(n)) => {
                bad_request(
                    sk.as_fd(),
                    &format!(
                        "a request of {n} bytes, over crust's limit of {} bytes",
                        wire::MAX_REQUEST
                    ),
                );
                return 1;
            }
            Ok(Incoming::Malformed(why)) => {
                bad_request(sk.as_fd(), &format!("Failed unpacking request: {why}"));
                return 1;
            }
            Err(e) => {
                log::error!("Can't recv request: {e}");
                return 1;
            }
        };
        let pre_dump = req.r#type == criu_req_type::PRE_DUMP;
        if pre_dumping && !pre_dump && req.r#type != criu_req_type::DUMP {
            bad_request(sk.as_fd(), "Bad req seq");
            return 1;
        }
        let keep_open = req.keep_open == Some(true);
        if keep_open && !keep_open_allowed(req.r#type) {
            // CRIU ends the connection without a word; crust says why.
            let resp = handle::failure(
                req.r#type,
                Some(libc::EBADRQC),
                "keep_open is not allowed for this request type",
            );
            let _ = wire::send_resp(sk.as_fd(), &resp, None);
            return 1;
        }
        let ctx = handle::Ctx {
            sk: sk.as_fd(),
            peer: opts::Peer { pid: peer, swrk },
            base,
        };
        let ok = handle::request(&ctx, &req);
        pre_dumping = ok && pre_dump;
        if !(ok && (keep_open || pre_dumping)) {
            return i32::from(!ok);
        }
    }
}

/// CRIU's chk_keepopen_req: the requests after which a connection may
/// stay open.
fn keep_open_allowed(ty: i32) -> bool {
    matches!(
        ty,
        criu_req_type::PAGE_SERVER
            | criu_req_type::PAGE_SERVER_CHLD
            | criu_req_type::CPUINFO_DUMP
            | criu_req_type::CPUINFO_CHECK
            | criu_req_type::FEATURE_CHECK
            | criu_req_type::VERSION
    )
}

/// Answer a packet that is not a request CRIU-style (type EMPTY, no
/// success), so that the client learns why before the connection ends.
fn bad_request(sk: BorrowedFd<'_>, why: &str) {
    log::error!("RPC error: {why}");
    let resp: CriuResp = handle::failure(criu_req_type::EMPTY, None, why);
    let _ = wire::send_resp(sk, &resp, None);
}
