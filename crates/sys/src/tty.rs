//! Terminal ioctls for pseudo-terminal pairs: termios (termios2, with the
//! speeds), window size, packet mode, the pty lock, the pty index, and
//! opening the slave of a master (TIOCGPTPEER).

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Kernel termios with speeds (`struct termios2`).
pub type Termios = libc::termios2;
/// `struct winsize`.
pub type Winsize = libc::winsize;

/// An ioctl whose argument points to an int the kernel fills.
fn get_int(fd: BorrowedFd<'_>, req: libc::Ioctl) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: `req` is FIONREAD or one of the TIOCG* requests below, which
    // write one int through the pointer; `v` lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut libc::c_int) };
    cvt(r as libc::c_long)?;
    Ok(v)
}

/// An ioctl whose argument points to an int the kernel reads.
fn set_int(fd: BorrowedFd<'_>, req: libc::Ioctl, v: i32) -> io::Result<()> {
    let v: libc::c_int = v;
    // SAFETY: `req` is TIOCSPTLCK or TIOCPKT, which read one int through the
    // pointer; `v` lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &v as *const libc::c_int) };
    cvt(r as libc::c_long).map(drop)
}

/// TIOCGPTN: the index N of the /dev/pts/N slave of a master.
pub fn pty_index(master: BorrowedFd<'_>) -> io::Result<u32> {
    get_int(master, libc::TIOCGPTN).map(|v| v as u32)
}

/// FIONREAD: how many bytes wait to be read on a terminal (nothing is
/// consumed).
pub fn queued(fd: BorrowedFd<'_>) -> io::Result<u32> {
    get_int(fd, libc::FIONREAD).map(|v| v.max(0) as u32)
}

/// TIOCGPTLCK: whether the slave of a master is locked.
pub fn pty_locked(master: BorrowedFd<'_>) -> io::Result<bool> {
    get_int(master, libc::TIOCGPTLCK).map(|v| v != 0)
}

/// TIOCSPTLCK: lock or unlock the slave of a master.
pub fn set_pty_locked(master: BorrowedFd<'_>, locked: bool) -> io::Result<()> {
    set_int(master, libc::TIOCSPTLCK, locked as i32)
}

/// TIOCGPKT: whether a master is in packet mode.
pub fn packet_mode(master: BorrowedFd<'_>) -> io::Result<bool> {
    get_int(master, libc::TIOCGPKT).map(|v| v != 0)
}

/// TIOCPKT: set packet mode of a master.
pub fn set_packet_mode(master: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    set_int(master, libc::TIOCPKT, on as i32)
}

/// TIOCGEXCL: whether a terminal is in exclusive mode.
pub fn exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    get_int(fd, libc::TIOCGEXCL).map(|v| v != 0)
}

/// TIOCEXCL / TIOCNXCL.
pub fn set_exclusive(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let req = if on { libc::TIOCEXCL } else { libc::TIOCNXCL };
    // SAFETY: TIOCEXCL and TIOCNXCL take no argument.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req) };
    cvt(r as libc::c_long).map(drop)
}

/// TCGETS2: the termios of a terminal.
pub fn termios(fd: BorrowedFd<'_>) -> io::Result<Termios> {
    // SAFETY: termios2 is plain integers: all zeros is a valid value.
    let mut t: Termios = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS2 writes one struct termios2 through the pointer; `t`
    // is one and lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCGETS2, &mut t as *mut Termios) };
    cvt(r as libc::c_long)?;
    Ok(t)
}

/// TIOCGLCKTRMIOS: the locked termios of a terminal (the flags and
/// characters that termios changes may not alter), as a termios2 whose
/// speeds are zero (the kernel writes a `struct termios`, without them).
pub fn termios_locked(fd: BorrowedFd<'_>) -> io::Result<Termios> {
    // SAFETY: termios2 is plain integers: all zeros is a valid value.
    let mut t: Termios = unsafe { std::mem::zeroed() };
    // A struct termios is the leading part of a termios2 (no speeds).
    // SAFETY: TIOCGLCKTRMIOS writes one termios through the pointer; `t`
    // is larger and lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGLCKTRMIOS, &mut t as *mut Termios) };
    cvt(r as libc::c_long)?;
    t.c_ispeed = 0;
    t.c_ospeed = 0;
    Ok(t)
}

/// TCSETS2: set the termios of a terminal (at once).
pub fn set_termios(fd: BorrowedFd<'_>, t: &Termios) -> io::Result<()> {
    // SAFETY: TCSETS2 reads one struct termios2 through the pointer; `t`
    // is one and lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TCSETS2, t as *const Termios) };
    cvt(r as libc::c_long).map(drop)
}

/// A termios with every field zero.
pub fn zero_termios() -> Termios {
    // SAFETY: termios2 is plain integers: all zeros is a valid value.
    unsafe { std::mem::zeroed() }
}

/// TIOCGWINSZ: the window size of a terminal.
pub fn winsize(fd: BorrowedFd<'_>) -> io::Result<Winsize> {
    let mut w = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one struct winsize through the pointer; `w`
    // is one and lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut w as *mut Winsize) };
    cvt(r as libc::c_long)?;
    Ok(w)
}

/// TIOCSWINSZ: set the window size of a terminal.
pub fn set_winsize(fd: BorrowedFd<'_>, w: &Winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one struct winsize through the pointer; `w`
    // is one and lives across the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, w as *const Winsize) };
    cvt(r as libc::c_long).map(drop)
}

/// TIOCGPTPEER: open the slave of a master with open flags `flags`
/// (O_NOCTTY and O_CLOEXEC are always added).
pub fn open_peer(master: BorrowedFd<'_>, flags: i32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags as an integer argument and
    // returns a new fd.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    cvt(r as libc::c_long)?;
    // SAFETY: the ioctl succeeded: `r` is a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}
