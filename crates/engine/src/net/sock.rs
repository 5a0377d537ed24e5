//! Socket helpers every family shares: the socket options (SO_*) CRIU's
//! `SkOptsEntry` holds, read at dump and set again at restore.

use crust_images::proto::sk_opts::SkOptsEntry;
use crust_sys::unix as su;
use log::debug;
use std::os::fd::BorrowedFd;

/// SO_BUF_LOCK (Linux 5.14).
const SO_BUF_LOCK: i32 = 72;

/// The socket options (SO_*) and the classic BPF filter of a packet or
/// netlink socket. Options a family does not have (SO_PASSCRED is for unix
/// and netlink sockets only) are left out.
pub(crate) fn dump_sk_opts(sock: BorrowedFd<'_>) -> std::io::Result<SkOptsEntry> {
    let get = |o: i32| su::getsockopt_int(sock, libc::SOL_SOCKET, o);
    let flag = |o: i32| get(o).ok().map(|v| v != 0);
    let (snd_s, snd_us) = su::getsockopt_timeval(sock, libc::SO_SNDTIMEO)?;
    let (rcv_s, rcv_us) = su::getsockopt_timeval(sock, libc::SO_RCVTIMEO)?;
    let mark = get(libc::SO_MARK).unwrap_or(0) as u32;
    Ok(SkOptsEntry {
        so_sndbuf: get(libc::SO_SNDBUF)? as u32,
        so_rcvbuf: get(libc::SO_RCVBUF)? as u32,
        so_snd_tmo_sec: snd_s,
        so_snd_tmo_usec: snd_us,
        so_rcv_tmo_sec: rcv_s,
        so_rcv_tmo_usec: rcv_us,
        reuseaddr: flag(libc::SO_REUSEADDR),
        so_priority: get(libc::SO_PRIORITY).ok().map(|v| v as u32),
        so_rcvlowat: get(libc::SO_RCVLOWAT).ok().map(|v| v as u32),
        so_mark: (mark != 0).then_some(mark),
        so_passcred: flag(libc::SO_PASSCRED),
        so_passsec: flag(libc::SO_PASSSEC),
        so_dontroute: flag(libc::SO_DONTROUTE),
        so_no_check: flag(libc::SO_NO_CHECK),
        so_reuseport: flag(libc::SO_REUSEPORT),
        so_broadcast: flag(libc::SO_BROADCAST),
        so_keepalive: flag(libc::SO_KEEPALIVE),
        so_oobinline: get(libc::SO_OOBINLINE).ok().map(|v| v as u32),
        so_buf_lock: get(SO_BUF_LOCK).ok().map(|v| v as u32),
        so_filter: crust_sys::sockfilter::get_filter(sock)?
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
            .collect(),
        so_bound_dev: bound_dev(sock)?,
        ..Default::default()
    })
}

/// Set the options [`dump_sk_opts`] read.
pub(crate) fn set_sk_opts(sock: BorrowedFd<'_>, o: &SkOptsEntry) -> std::io::Result<()> {
    set_opts(sock, o)?;
    if !o.so_filter.is_empty() {
        let prog: Vec<u8> = o.so_filter.iter().flat_map(|w| w.to_ne_bytes()).collect();
        crust_sys::sockfilter::attach_filter(sock, &prog)?;
    }
    if let Some(dev) = o.so_bound_dev.as_deref().filter(|d| !d.is_empty()) {
        crust_sys::net::setsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_bytes(),
        )?;
    }
    Ok(())
}

/// The interface the socket is bound to with SO_BINDTODEVICE, if any.
fn bound_dev(sock: BorrowedFd<'_>) -> std::io::Result<Option<String>> {
    let mut name = [0u8; libc::IFNAMSIZ];
    let n = crust_sys::net::getsockopt(sock, libc::SOL_SOCKET, libc::SO_BINDTODEVICE, &mut name)?;
    let name = &name[..n.min(name.len())];
    let name = name.split(|b| *b == 0).next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned()))
}

/// The generic socket options (SO_*) of `o` a socket of any family has:
/// buffers, time-outs, flags, priority, mark.
pub(crate) fn set_opts(s: BorrowedFd<'_>, o: &SkOptsEntry) -> std::io::Result<()> {
    let set = |opt: i32, v: i32| su::setsockopt_int(s, libc::SOL_SOCKET, opt, v);
    let cur = |opt: i32| su::getsockopt_int(s, libc::SOL_SOCKET, opt).unwrap_or(-1);
    // The kernel doubles the value it is given.
    if o.so_sndbuf != 0 && cur(libc::SO_SNDBUF) != o.so_sndbuf as i32 {
        set(libc::SO_SNDBUFFORCE, (o.so_sndbuf / 2) as i32)?;
    }
    if o.so_rcvbuf != 0 && cur(libc::SO_RCVBUF) != o.so_rcvbuf as i32 {
        set(libc::SO_RCVBUFFORCE, (o.so_rcvbuf / 2) as i32)?;
    }
    if let Some(l) = o.so_buf_lock {
        if let Err(e) = set(SO_BUF_LOCK, l as i32) {
            debug!("SO_BUF_LOCK: {e}");
        }
    }
    if o.so_snd_tmo_sec != 0 || o.so_snd_tmo_usec != 0 {
        su::setsockopt_timeval(s, libc::SO_SNDTIMEO, o.so_snd_tmo_sec, o.so_snd_tmo_usec)?;
    }
    if o.so_rcv_tmo_sec != 0 || o.so_rcv_tmo_usec != 0 {
        su::setsockopt_timeval(s, libc::SO_RCVTIMEO, o.so_rcv_tmo_sec, o.so_rcv_tmo_usec)?;
    }
    let flags = [
        (o.reuseaddr, libc::SO_REUSEADDR),
        (o.so_passcred, libc::SO_PASSCRED),
        (o.so_passsec, libc::SO_PASSSEC),
        (o.so_dontroute, libc::SO_DONTROUTE),
        (o.so_no_check, libc::SO_NO_CHECK),
        (o.so_broadcast, libc::SO_BROADCAST),
        (o.so_keepalive, libc::SO_KEEPALIVE),
    ];
    for (v, opt) in flags {
        if v == Some(true) {
            set(opt, 1)?;
        }
    }
    if let Some(p) = o.so_priority.filter(|p| *p != 0) {
        set(libc::SO_PRIORITY, p as i32)?;
    }
    if let Some(l) = o.so_rcvlowat.filter(|l| *l > 1) {
        set(libc::SO_RCVLOWAT, l as i32)?;
    }
    if let Some(m) = o.so_mark.filter(|m| *m != 0) {
        set(libc::SO_MARK, m as i32)?;
    }
    if let Some(v) = o.so_oobinline.filter(|v| *v != 0) {
        set(libc::SO_OOBINLINE, v as i32)?;
    }
    Ok(())
}
