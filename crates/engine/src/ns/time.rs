//! The time namespace: `timens-ID.img`, one `TimensEntry`.
//!
//! As CRIU 4.2 does, the image holds the clocks (CLOCK_MONOTONIC and
//! CLOCK_BOOTTIME) as the namespace saw them at dump, not its offsets: a
//! restore computes new offsets from the restoring machine's clocks so
//! that the clocks inside go on from where they were. The same entry, with
//! id 0, holds the dumping tool's own clocks when the tree shares its time
//! namespace ([`own_clocks`]; CRIU restores such a tree into a new time
//! namespace of its own from it, crust restores it in its own).
//!
//! The offsets of a time namespace can only be set before a process is in
//! it, so the restore does not clone the root with CLONE_NEWTIME: crust's
//! thread makes the namespace for its children (unshare), writes the
//! offsets, clones the root (which is born in it), then goes back to its
//! own time namespace ([`TimeNs::enter_for_children`], [`ForChildren`]).
//!
//! Clocks of the tree inside are read without joining the namespace: the
//! offsets of the tree's and of crust's namespaces (`/proc/PID/timens_offsets`)
//! give them from crust's clocks.

use crate::util::{read_one, sys_err, write_image};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::timens::{TimensEntry, Timespec};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

const NSEC: i128 = 1_000_000_000;

/// The two clocks a time namespace shifts, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Clocks {
    monotonic: i128,
    boottime: i128,
}

impl Clocks {
    fn sub(self, o: Clocks) -> Clocks {
        Clocks {
            monotonic: self.monotonic - o.monotonic,
            boottime: self.boottime - o.boottime,
        }
    }

    fn add(self, o: Clocks) -> Clocks {
        Clocks {
            monotonic: self.monotonic + o.monotonic,
            boottime: self.boottime + o.boottime,
        }
    }
}

/// Parse a `timens_offsets` file: lines `monotonic SEC NSEC` and
/// `boottime SEC NSEC` (the kernel may also name the clocks by number).
fn parse_offsets(text: &str) -> Option<Clocks> {
    let mut c = Clocks::default();
    let (mut mono, mut boot) = (false, false);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(name), Some(sec), Some(nsec)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let v = i128::from(sec.parse::<i64>().ok()?) * NSEC + i128::from(nsec.parse::<i64>().ok()?);
        match name {
            "monotonic" | "1" => (c.monotonic, mono) = (v, true),
            "boottime" | "7" => (c.boottime, boot) = (v, true),
            _ => {}
        }
    }
    (mono && boot).then_some(c)
}

/// The offsets of the time namespace for the children of process `pid`
/// (`/proc/PID/timens_offsets`; "self" for crust).
fn offsets(pid: &str) -> Result<Clocks, Error> {
    let path = format!("/proc/{pid}/timens_offsets");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
        op: "read",
        path: path.clone().into(),
        source,
    })?;
    parse_offsets(&text).ok_or_else(|| Error::Restore {
        pid: std::process::id() as i32,
        what: format!("{path} does not hold the monotonic and boottime offsets: {text:?}"),
    })
}

/// crust's clocks now.
fn now() -> Result<Clocks, Error> {
    let me = crust_sys::process::getpid();
    let read = |id, name: &str| {
        crust_sys::process::clock_gettime(id)
            .map(|(s, n)| i128::from(s) * NSEC + i128::from(n))
            .map_err(sys_err(me, format!("clock_gettime({name})")))
    };
    Ok(Clocks {
        monotonic: read(libc::CLOCK_MONOTONIC, "CLOCK_MONOTONIC")?,
        boottime: read(libc::CLOCK_BOOTTIME, "CLOCK_BOOTTIME")?,
    })
}

/// Whether crust's own time namespace is the one its children are born in
/// (then `/proc/self/timens_offsets` gives crust's own offsets).
fn self_offsets() -> Result<Clocks, Error> {
    use std::os::unix::fs::MetadataExt;
    let ino = |n: &str| std::fs::metadata(format!("/proc/self/ns/{n}")).map(|m| m.ino());
    if let (Ok(own), Ok(kids)) = (ino("time"), ino("time_for_children")) {
        if own != kids {
            return Err(Error::unsupported(
                "crust itself runs with a time namespace for its children other than its own: run it from a process that did not unshare(CLONE_NEWTIME)".to_string(),
            ));
        }
    }
    offsets("self")
}

fn entry(c: Clocks, what: &str) -> Result<TimensEntry, Error> {
    let ts = |v: i128| -> Result<Timespec, Error> {
        if v < 0 {
            return Err(Error::unsupported(format!(
                "the {what} clocks are negative ({v} ns): they cannot be recorded"
            )));
        }
        Ok(Timespec {
            tv_sec: (v / NSEC) as u64,
            tv_nsec: (v % NSEC) as u64,
            ..Default::default()
        })
    };
    Ok(TimensEntry {
        monotonic: ts(c.monotonic)?,
        boottime: ts(c.boottime)?,
        ..Default::default()
    })
}

/// crust's own clocks, for `timens-0.img` (written when the tree shares
/// crust's time namespace, as CRIU does).
pub(crate) fn own_clocks() -> Result<TimensEntry, Error> {
    entry(now()?, "dumping tool's")
}

/// Dump the clocks of the time namespace process `pid` is in (its own and
/// its children's: a process whose differ is refused before), as id `id`.
pub(crate) fn dump(dir: &Path, pid: i32, id: u32) -> Result<(), Error> {
    let mine = self_offsets()?;
    let tree = offsets(&pid.to_string())?;
    let inside = now()?.sub(mine).add(tree);
    log::debug!("time namespace {id} (of process {pid}): offsets {tree:?}, clocks {inside:?}");
    write_image(
        dir,
        ImageType::Timens,
        u64::from(id),
        &[entry(inside, &format!("time namespace {id}'s"))?],
    )
}

/// A time namespace to make: its clocks at dump, checked.
#[derive(Debug)]
pub(crate) struct TimeNs {
    id: u32,
    clocks: Clocks,
}

impl TimeNs {
    /// Read `timens-ID.img`.
    pub(crate) fn load(dir: &Path, id: u32) -> Result<TimeNs, Error> {
        let e: TimensEntry = read_one(dir, ImageType::Timens, u64::from(id))?;
        let val = |t: &Timespec, what: &str| -> Result<i128, Error> {
            if t.tv_nsec >= NSEC as u64 || t.tv_sec > i64::MAX as u64 / 2 {
                return Err(Error::BadImage {
                    dir: dir.to_path_buf(),
                    why: format!(
                        "timens-{id}.img: the {what} clock {}s {}ns is out of range",
                        t.tv_sec, t.tv_nsec
                    ),
                });
            }
            Ok(i128::from(t.tv_sec) * NSEC + i128::from(t.tv_nsec))
        };
        Ok(TimeNs {
            id,
            clocks: Clocks {
                monotonic: val(&e.monotonic, "monotonic")?,
                boottime: val(&e.boottime, "boottime")?,
            },
        })
    }

    /// Make a new time namespace for the children of crust's main thread,
    /// whose clocks go on from the dumped ones: the root cloned next is
    /// born in it. Dropping the result (or [`ForChildren::leave`]) brings
    /// the thread's children back to crust's own time namespace. Must run
    /// on crust's main thread (`/proc/self/timens_offsets` is its).
    pub(crate) fn enter_for_children(&self) -> Result<ForChildren, Error> {
        let me = crust_sys::process::getpid();
        if crust_sys::process::gettid() != me {
            return Err(Error::Restore {
                pid: me,
                what: "the time namespace must be made by crust's main thread".into(),
            });
        }
        let mine = self_offsets()?;
        let own = File::open("/proc/self/ns/time").map_err(|source| Error::Io {
            op: "open",
            path: "/proc/self/ns/time".into(),
            source,
        })?;
        crust_sys::ns::unshare(libc::CLONE_NEWTIME).map_err(sys_err(
            me,
            "unshare(CLONE_NEWTIME) for the tree's time namespace",
        ))?;
        let guard = ForChildren {
            own: Some(own),
            mine,
        };
        // The new namespace starts with crust's offsets: the machine's
        // clocks are crust's minus them.
        let host = now()?.sub(offsets("self")?);
        let off = self.clocks.sub(host);
        log::debug!(
            "time namespace {}: clocks {:?}, offsets {off:?}",
            self.id,
            self.clocks
        );
        write_offsets(off, &format!("the tree's time namespace {}", self.id))?;
        Ok(guard)
    }
}

/// Write the offsets of the (unentered) time namespace for crust's
/// children.
fn write_offsets(off: Clocks, what: &str) -> Result<(), Error> {
    let line =
        |clock: i32, v: i128| format!("{clock} {} {}\n", v.div_euclid(NSEC), v.rem_euclid(NSEC));
    let text =
        line(libc::CLOCK_MONOTONIC, off.monotonic) + &line(libc::CLOCK_BOOTTIME, off.boottime);
    std::fs::write("/proc/self/timens_offsets", &text).map_err(|source| Error::Sys {
        pid: crust_sys::process::getpid(),
        op: format!(
            "setting the offsets {:?} of {what} (/proc/self/timens_offsets)",
            text.trim()
        ),
        source,
    })
}

/// crust's main thread's children are born in the tree's new time
/// namespace until this is left or dropped.
#[must_use = "dropping it brings crust's children back to its own time namespace"]
pub(crate) struct ForChildren {
    own: Option<File>,
    /// crust's own offsets.
    mine: Clocks,
}

impl ForChildren {
    /// Bring the children of crust's thread back to its own time namespace.
    pub(crate) fn leave(mut self) -> Result<(), Error> {
        self.back()
    }

    fn back(&mut self) -> Result<(), Error> {
        let Some(own) = self.own.take() else {
            return Ok(());
        };
        let me = crust_sys::process::getpid();
        let Err(e) = crust_sys::ns::setns(own.as_fd(), libc::CLONE_NEWTIME) else {
            return Ok(());
        };
        // setns into a time namespace needs a single-threaded caller: else
        // a new namespace for the children, with crust's own clocks.
        log::debug!("setns back into crust's time namespace: {e}; making one with its clocks");
        crust_sys::ns::unshare(libc::CLONE_NEWTIME).map_err(sys_err(
            me,
            "unshare(CLONE_NEWTIME) to leave the tree's time namespace after cloning its root",
        ))?;
        write_offsets(self.mine, "a time namespace with crust's clocks")
    }
}

impl Drop for ForChildren {
    fn drop(&mut self) {
        if let Err(e) = self.back() {
            log::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse_by_name_and_number() {
        let c = parse_offsets("monotonic           5         7\nboottime           -3         0\n");
        assert_eq!(
            c,
            Some(Clocks {
                monotonic: 5 * NSEC + 7,
                boottime: -3 * NSEC
            })
        );
        let c = parse_offsets("1 0 1\n7 2 0\n");
        assert_eq!(
            c,
            Some(Clocks {
                monotonic: 1,
                boottime: 2 * NSEC
            })
        );
        assert_eq!(parse_offsets("monotonic 1 0\n"), None, "boottime missing");
        assert_eq!(parse_offsets("monotonic x 0\nboottime 0 0\n"), None);
    }

    #[test]
    fn entries_hold_seconds_and_nanoseconds() {
        let e = entry(
            Clocks {
                monotonic: 3 * NSEC + 5,
                boottime: 4 * NSEC,
            },
            "test",
        )
        .unwrap();
        assert_eq!((e.monotonic.tv_sec, e.monotonic.tv_nsec), (3, 5));
        assert_eq!((e.boottime.tv_sec, e.boottime.tv_nsec), (4, 0));
        assert!(entry(
            Clocks {
                monotonic: -1,
                boottime: 0
            },
            "test"
        )
        .is_err());
    }
}
