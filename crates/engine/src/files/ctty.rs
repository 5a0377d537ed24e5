//! Controlling terminals given back to session leaders at restore: through
//! an fd the leader holds on the slave, or, for a leader that holds none
//! (it closed its fds on the terminal, as CRIU's zdtm tty00 and pty03 do),
//! through a slave fd crust lends it for the moment.

use crate::files::fdpass::{give_fds, Gift};
use crate::task::remote::Remote;
use crate::util::sys_err;
use crate::Error;
use log::debug;
use std::os::fd::{AsFd, BorrowedFd};

/// Make the slave at `fd` the controlling terminal of the task (a session
/// leader without one) and put `pgrp` in its foreground. The task's
/// signals are blocked, so TIOCSPGRP from the background is allowed.
pub fn set_ctty(r: &mut Remote<'_>, fd: i32, pgrp: i32) -> Result<(), Error> {
    r.call(
        &format!("ioctl(TIOCSCTTY) on fd {fd}"),
        libc::SYS_ioctl,
        [fd as u64, libc::TIOCSCTTY, 0, 0, 0, 0],
    )?;
    let a = r.put(0, &pgrp.to_ne_bytes())?;
    r.call(
        &format!("ioctl(TIOCSPGRP, {pgrp}) on fd {fd}"),
        libc::SYS_ioctl,
        [fd as u64, libc::TIOCSPGRP, a.get(), 0, 0, 0],
    )?;
    debug!(
        "{}: fd {fd} is its controlling terminal, group {pgrp} in the foreground",
        r.pid()
    );
    Ok(())
}

/// Give the task the slave of the pty whose master crust holds as
/// `master` as its controlling terminal, through a slave fd lent at
/// `spare` (a number the task does not use), closed afterwards.
pub fn set_ctty_lent(
    r: &mut Remote<'_>,
    master: BorrowedFd<'_>,
    spare: i32,
    pgrp: i32,
) -> Result<(), Error> {
    use crust_sys::tty;
    let me = crust_sys::process::getpid();
    // A pty locked again (TIOCSPTLCK) opens no slave: unlocked for the
    // moment.
    let locked = tty::pty_locked(master).unwrap_or(false);
    if locked {
        tty::set_pty_locked(master, false).map_err(sys_err(me, "TIOCSPTLCK 0"))?;
    }
    let slave = tty::open_peer(master, libc::O_RDWR);
    if locked {
        tty::set_pty_locked(master, true).map_err(sys_err(me, "TIOCSPTLCK 1"))?;
    }
    let slave = slave.map_err(sys_err(me, "TIOCGPTPEER for a controlling terminal"))?;
    give_fds(
        r,
        &[Gift {
            fd: slave.as_fd(),
            target: spare,
            cloexec: true,
        }],
    )?;
    let set = set_ctty(r, spare, pgrp);
    let closed = r.call(
        &format!("close of the lent terminal fd {spare}"),
        libc::SYS_close,
        [spare as u64, 0, 0, 0, 0, 0],
    );
    set?;
    closed.map(drop)
}
