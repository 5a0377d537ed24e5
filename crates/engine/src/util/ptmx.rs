//! Pty masters with a given index, and those made early for the mount
//! tree.
//!
//! A devpts instance numbers its ptys lowest free first: a master is
//! opened again until its slave has the index wanted ([`open_at_index`]).
//! A bind mount of a slave's file (`/dev/console` bound from
//! `/dev/pts/N`, zdtm pty-console) needs that file before the mount can be
//! made, long before the pty kind makes the tree's pairs: the mount
//! restore makes the pair then and leaves its master here
//! ([`keep_master`]), where the pty kind takes it for the pair of that
//! index ([`take_master`]) instead of opening a new one.

use crust_sys::tty as sys;
use log::warn;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

/// How many masters are opened at most to reach a slave's index.
const INDEX_TRIES: u32 = 64;

/// Masters made for bind mounts of slaves' files, by index.
static KEPT: Mutex<Option<HashMap<u32, OwnedFd>>> = Mutex::new(None);

/// Open a pty master with `open` until its slave has index `want` (the
/// masters with lower indexes opened on the way are closed). If `want`
/// cannot be had (taken), the first master opened: (master, its index).
pub(crate) fn open_at_index(
    want: u32,
    open: &dyn Fn() -> std::io::Result<OwnedFd>,
) -> std::io::Result<(OwnedFd, u32)> {
    let mut passed: Vec<(OwnedFd, u32)> = Vec::new();
    for _ in 0..INDEX_TRIES {
        let m = open()?;
        let got = sys::pty_index(m.as_fd())?;
        if got == want {
            return Ok((m, got));
        }
        let keep_on = got < want && want - got < INDEX_TRIES;
        passed.push((m, got));
        if !keep_on {
            break;
        }
    }
    // Not reached: the lowest index opened stays, the others close.
    match passed.into_iter().next() {
        Some((m, got)) => {
            warn!("/dev/pts/{want} is taken: the pty is /dev/pts/{got} now");
            Ok((m, got))
        }
        None => Err(std::io::Error::other("no pty master was opened")),
    }
}

/// Keep `master`, the master of the pty of index `index` made for a bind
/// mount of its slave's file.
pub(crate) fn keep_master(index: u32, master: OwnedFd) {
    if let Ok(mut k) = KEPT.lock() {
        k.get_or_insert_with(HashMap::new).insert(index, master);
    }
}

/// The master kept for index `index`, if any (taken: kept no more).
pub(crate) fn take_master(index: u32) -> Option<OwnedFd> {
    KEPT.lock().ok()?.as_mut()?.remove(&index)
}

/// Close every master kept (the restore is over, or failed).
pub(crate) fn drop_kept() {
    if let Ok(mut k) = KEPT.lock() {
        *k = None;
    }
}
