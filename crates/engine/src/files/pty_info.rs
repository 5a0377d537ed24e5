//! The tty-info.img entries of pty ends: live ends (termios, window size,
//! modes, owner) and hung-up slaves.
//!
//! Pty slaves whose master was closed: the pair is hung up (every ioctl
//! answers EIO, reads end, writes fail) and devpts removed the slave's file,
//! so the fd's link reads `/dev/pts/N (deleted)`. Recorded as CRIU records
//! them: a tty-info entry without termios (which marks it hung up), with
//! the device and owner; restored as slaves of a new pair whose master is
//! closed at once (zdtm pty04).

use super::pty::{End, NCCS};
use crate::files::fdpass::take_fd;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::tty::{TermiosEntry, TtyInfoEntry, TtyPtyEntry, TtyType, WinsizeEntry};
use crust_sys::tty as sys;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// The index of a hung-up slave from its fd link, `/dev/pts/N (deleted)`.
pub(crate) fn hung_index(target: &str) -> Option<u32> {
    let n = target
        .strip_suffix(" (deleted)")?
        .strip_prefix("/dev/pts/")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The tty-info entry `info_id` of the hung-up slave at fd `fd` of `pid`.
pub(crate) fn hung_info(
    pid: i32,
    fd: i32,
    index: u32,
    info_id: u32,
) -> Result<TtyInfoEntry, Error> {
    let copy = take_fd(pid, fd)?;
    match sys::exclusive(copy.as_fd()) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => {}
        _ => {
            return Err(Error::unsupported(format!(
                "process {pid} fd {fd}: /dev/pts/{index} was removed but its pair is not hung up; crust cannot dump it"
            )))
        }
    }
    let md = std::fs::File::from(copy)
        .metadata()
        .map_err(sys_err(pid, format!("fstat of fd {fd}")))?;
    Ok(TtyInfoEntry {
        id: info_id,
        r#type: TtyType::PTY,
        rdev: md.rdev() as u32,
        pty: Some(TtyPtyEntry {
            index,
            ..Default::default()
        }),
        uid: Some(crate::util::idmap::to_ns_uid(md.uid())),
        gid: Some(crate::util::idmap::to_ns_gid(md.gid())),
        ..Default::default()
    })
}

/// The slave descriptions `slaves` ((files.img id, flags)) of a hung-up
/// pair that was /dev/pts/`index`: opened on a new pair (with that index
/// if free) whose master is then closed.
pub(crate) fn open_hung(
    slaves: &[(u32, u32)],
    kept: u32,
    index: u32,
) -> std::io::Result<Vec<(u32, OwnedFd)>> {
    let (master, _) =
        crate::util::ptmx::open_at_index(index, &|| super::pty_ns::open_ptmx(libc::O_RDWR as u32))?;
    sys::set_pty_locked(master.as_fd(), false)?;
    let mut out = Vec::with_capacity(slaves.len());
    for &(id, flags) in slaves {
        out.push((id, sys::open_peer(master.as_fd(), (flags & kept) as i32)?));
    }
    // Closing the master hangs the slaves up.
    drop(master);
    Ok(out)
}

/// The control characters as CRIU records them: the bytes of the array
/// copied over the words of `c_cc` (four a word, little-endian), 19 words.
fn pack_cc(cc: &[u8]) -> Vec<u32> {
    (0..NCCS)
        .map(|w| {
            (0..4).fold(0u32, |acc, b| {
                let byte = cc.get(w * 4 + b).copied().unwrap_or(0);
                acc | (u32::from(byte) << (8 * b))
            })
        })
        .collect()
}

/// The control characters of CRIU's `c_cc` words ([`pack_cc`]).
fn unpack_cc(words: &[u32], cc: &mut [u8]) {
    for (j, d) in cc.iter_mut().enumerate().take(NCCS) {
        let w = words.get(j / 4).copied().unwrap_or(0);
        *d = (w >> (8 * (j % 4))) as u8;
    }
}

fn termios_entry(t: &sys::Termios) -> TermiosEntry {
    TermiosEntry {
        c_iflag: t.c_iflag,
        c_oflag: t.c_oflag,
        c_cflag: t.c_cflag,
        c_lflag: t.c_lflag,
        c_line: t.c_line as u32,
        c_ispeed: t.c_ispeed,
        c_ospeed: t.c_ospeed,
        c_cc: pack_cc(&t.c_cc),
        ..Default::default()
    }
}

/// The tty-info entry `id` of a live pty end (crust's copy `f`).
pub(super) fn read_info(
    pid: i32,
    f: BorrowedFd<'_>,
    end: End,
    id: u32,
    what: &str,
) -> Result<TtyInfoEntry, Error> {
    let err = |op: &str| sys_err(pid, format!("{op} of {what}"));
    let md = std::fs::File::from(f.try_clone_to_owned().map_err(err("dup"))?)
        .metadata()
        .map_err(err("fstat"))?;
    let termios = sys::termios(f).map_err(err("TCGETS2"))?;
    // Recorded for CRIU, which wants it on every live end; crust does not
    // set it back (the kernel's default on a new pty is all zero).
    let locked_termios = sys::termios_locked(f).map_err(err("TIOCGLCKTRMIOS"))?;
    let ws = sys::winsize(f).map_err(err("TIOCGWINSZ"))?;
    let exclusive = sys::exclusive(f).map_err(err("TIOCGEXCL"))?;
    let (locked, packet_mode) = if end.master {
        (
            sys::pty_locked(f).map_err(err("TIOCGPTLCK"))?,
            sys::packet_mode(f).map_err(err("TIOCGPKT"))?,
        )
    } else {
        (false, false)
    };
    if end.master {
        let n = sys::pty_index(f).map_err(err("TIOCGPTN"))?;
        if n != end.index {
            return Err(Error::Sys {
                pid,
                op: format!("check the index of {what}"),
                source: std::io::Error::other(format!("TIOCGPTN says {n}")),
            });
        }
    }
    Ok(TtyInfoEntry {
        id,
        r#type: TtyType::PTY,
        locked,
        exclusive,
        packet_mode,
        sid: 0,
        pgrp: 0,
        rdev: md.rdev() as u32,
        termios: Some(termios_entry(&termios)),
        termios_locked: Some(termios_entry(&locked_termios)),
        winsize: Some(WinsizeEntry {
            ws_row: ws.ws_row as u32,
            ws_col: ws.ws_col as u32,
            ws_xpixel: ws.ws_xpixel as u32,
            ws_ypixel: ws.ws_ypixel as u32,
            ..Default::default()
        }),
        pty: Some(TtyPtyEntry {
            index: end.index,
            ..Default::default()
        }),
        uid: Some(crate::util::idmap::to_ns_uid(md.uid())),
        gid: Some(crate::util::idmap::to_ns_gid(md.gid())),
        ..Default::default()
    })
}

/// One end of a pair as its tty-info entry records it, checked.
#[derive(Debug, Clone)]
pub(super) struct EndImage {
    pub termios: Option<sys::Termios>,
    pub winsize: Option<sys::Winsize>,
    pub locked: bool,
    pub exclusive: bool,
    pub packet_mode: bool,
    /// (uid, gid) of the device file (given back on the slave's, as CRIU).
    pub owner: Option<(u32, u32)>,
}

/// The end recorded by tty-info entry `e`, checked.
pub(super) fn end_image(
    e: &TtyInfoEntry,
    bad: &dyn Fn(String) -> Error,
) -> Result<EndImage, Error> {
    let termios = match &e.termios {
        None => None,
        Some(t) => {
            if t.c_cc.len() > NCCS {
                return Err(bad(format!(
                    "tty info {}: {} c_cc entries (at most {NCCS})",
                    e.id,
                    t.c_cc.len()
                )));
            }
            if t.c_line > 255 {
                return Err(bad(format!("tty info {}: c_line out of range", e.id)));
            }
            let mut k = sys::zero_termios();
            k.c_iflag = t.c_iflag;
            k.c_oflag = t.c_oflag;
            k.c_cflag = t.c_cflag;
            k.c_lflag = t.c_lflag;
            k.c_line = t.c_line as u8;
            k.c_ispeed = t.c_ispeed;
            k.c_ospeed = t.c_ospeed;
            unpack_cc(&t.c_cc, &mut k.c_cc);
            Some(k)
        }
    };
    let winsize = match &e.winsize {
        None => None,
        Some(w) => {
            let f = |v: u32| {
                u16::try_from(v)
                    .map_err(|_| bad(format!("tty info {}: window size value {v}", e.id)))
            };
            Some(sys::Winsize {
                ws_row: f(w.ws_row)?,
                ws_col: f(w.ws_col)?,
                ws_xpixel: f(w.ws_xpixel)?,
                ws_ypixel: f(w.ws_ypixel)?,
            })
        }
    };
    Ok(EndImage {
        termios,
        winsize,
        locked: e.locked,
        exclusive: e.exclusive,
        packet_mode: e.packet_mode,
        owner: e.uid.zip(e.gid),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    /// CRIU's c_cc: the bytes over the words, four a word.
    #[test]
    fn cc_words() {
        let cc: Vec<u8> = (1..=19).collect();
        let w = pack_cc(&cc);
        assert_eq!(w.len(), NCCS);
        assert_eq!(w[0], 0x0403_0201);
        assert_eq!(w[4], 0x0013_1211);
        assert!(w[5..].iter().all(|&x| x == 0));
        let mut back = [0u8; NCCS];
        unpack_cc(&w, &mut back);
        assert_eq!(back.to_vec(), cc);
    }

    #[test]
    fn hung_links() {
        assert_eq!(hung_index("/dev/pts/3 (deleted)"), Some(3));
        assert_eq!(hung_index("/dev/pts/3"), None);
        assert_eq!(hung_index("/dev/pts/x (deleted)"), None);
    }

    /// A slave whose master is closed answers EIO, as the dump expects.
    #[test]
    fn hung_slaves_answer_eio() {
        let s = open_hung(&[(1, libc::O_RDWR as u32)], libc::O_ACCMODE as u32, 0).unwrap();
        let e = sys::exclusive(s[0].1.as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    /// Both ends of a live pair are recorded with termios, locked termios
    /// and window size, which CRIU requires of a live end (all or none).
    #[test]
    fn live_ends_have_every_term_option() {
        let m: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/ptmx")
            .unwrap()
            .into();
        sys::set_pty_locked(m.as_fd(), false).unwrap();
        let index = sys::pty_index(m.as_fd()).unwrap();
        let s = sys::open_peer(m.as_fd(), libc::O_RDWR).unwrap();
        let me = std::process::id() as i32;
        for (master, f) in [(true, m.as_fd()), (false, s.as_fd())] {
            let e = read_info(me, f, End { master, index }, 1, "a test pty").unwrap();
            assert!(e.termios.is_some() && e.termios_locked.is_some() && e.winsize.is_some());
            let l = e.termios_locked.unwrap();
            assert_eq!((l.c_ispeed, l.c_ospeed), (0, 0));
        }
    }
}
