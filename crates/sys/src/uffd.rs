//! userfaultfd write-protection, for tracking the pages a task writes
//! without soft-dirty bits (Linux 6.7: `UFFD_FEATURE_WP_ASYNC` with
//! `PAGEMAP_SCAN`, see [`crate::mem::pagemap_scan_written`]).
//!
//! A userfaultfd acts on the memory of the process that created it, from
//! whichever process holds the descriptor: crust has the task create one
//! (a remote syscall), takes a copy with pidfd_getfd, and makes every
//! ioctl here itself. Closing the last descriptor unregisters every range
//! and drops the write protection: nothing is left in the task.

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/ARCHITECTURE.md, "Lints").
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::cvt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `UFFD_API`: the version of the userfaultfd API.
const UFFD_API: u64 = 0xAA;
/// `_IOWR(0xAA, 0x3F, struct uffdio_api)` (24 bytes).
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)` (32 bytes).
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `_IOR(0xAA, 0x01, struct uffdio_range)` (16 bytes).
const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_AA01;
/// `_IOWR(0xAA, 0x06, struct uffdio_writeprotect)` (24 bytes).
const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;

/// `UFFDIO_REGISTER_MODE_WP`: write-protect faults on the range.
const REGISTER_MODE_WP: u64 = 1 << 1;
/// `UFFDIO_WRITEPROTECT_MODE_WP`: set (not clear) the protection.
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;

/// `UFFD_FEATURE_EVENT_FORK`: a `fork` of a task with registered ranges
/// is reported (the fork waits until the message is read); the child's
/// copies of the ranges get a userfaultfd of their own, handed to the
/// reader with the message.
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`: an `mremap` of a registered range is
/// reported (the task waits until the message is read).
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`: `madvise(MADV_DONTNEED/REMOVE)` of a
/// registered range is reported before the pages go.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_EVENT_UNMAP`: `munmap` of a registered range is reported.
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`: write-protect on shmem and hugetlbfs.
pub const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
/// `UFFD_FEATURE_WP_UNPOPULATED`: protection also covers pages not yet
/// populated (anonymous memory: a marker in the empty page-table entry).
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7): a write to a protected page is not
/// reported; the kernel lifts the protection itself and the page reads as
/// written (`PAGE_IS_WRITTEN`) in `PAGEMAP_SCAN`.
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;

/// `UFFD_USER_MODE_ONLY`: the descriptor handles no fault taken in
/// kernel mode. Asynchronous write-protection handles none at all (the
/// kernel resolves every protected write itself, a `read(2)` into the page
/// included), and with this flag any process may create one whatever
/// `vm.unprivileged_userfaultfd` says.
pub const USER_MODE_ONLY: u64 = 1;

/// The flags of userfaultfd(2) for write tracking: close-on-exec,
/// non-blocking, user mode only.
pub const CREATE_FLAGS: u64 = libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64 | USER_MODE_ONLY;

/// The features write tracking needs.
pub const TRACKING_FEATURES: u64 = FEATURE_WP_ASYNC | FEATURE_WP_UNPOPULATED;

/// The features of write tracking of shared memory objects: writes
/// tracked as for [`TRACKING_FEATURES`], and reported (each waits until
/// the message is read) what could change an object's pages without a
/// write through a tracked mapping: a fork (the child's mappings are not
/// tracked), an `mremap` (the moved range), an `madvise(MADV_REMOVE)`
/// (the pages dropped from the object).
pub const OBJECT_TRACKING_FEATURES: u64 =
    TRACKING_FEATURES | FEATURE_EVENT_FORK | FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE;

/// The features of a synchronous write-protect snapshot (`dump -R`):
/// every write to a protected page waits for crust, and the changes of
/// the address space that could lose a page not yet saved are reported.
pub const SNAPSHOT_FEATURES: u64 = FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;

/// The flags for a userfaultfd of a synchronous snapshot: close-on-exec,
/// non-blocking, and NOT user mode only: a write the kernel makes for the
/// task (`read(2)` into a protected page) must wait for crust too (a user
/// mode only descriptor would fail it with EFAULT).
pub const SNAPSHOT_FLAGS: u64 = libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64;

/// `_IO(0xAA, 0x00)` on `/dev/userfaultfd`: a new userfaultfd for the
/// caller's memory (Linux 6.1+); allowed to whoever could open the device.
pub const USERFAULTFD_IOC_NEW: u64 = 0xAA00;

/// `UFFD_EVENT_FORK`.
const EVENT_FORK: u8 = 0x13;
/// `UFFD_EVENT_PAGEFAULT`.
const EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_EVENT_REMAP`.
const EVENT_REMAP: u8 = 0x14;
/// `UFFD_EVENT_REMOVE`.
const EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
const EVENT_UNMAP: u8 = 0x16;
/// `UFFD_PAGEFAULT_FLAG_WP`.
const PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// `sizeof(struct uffd_msg)`.
const MSG_SIZE: usize = 32;

/// One message read from a userfaultfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// A fault at `addr` (page-aligned); `wp`: a write to a protected page.
    Fault { addr: u64, wp: bool },
    /// [start, end) was unmapped, or its pages dropped (madvise).
    Removed { start: u64, end: u64 },
    /// `len` bytes moved from `from` to `to` (mremap).
    Remapped { from: u64, to: u64, len: u64 },
    /// The task forked; the child's userfaultfd that came with the
    /// message was closed by [`Uffd::read_msgs`] (the child's copies of
    /// the ranges are not registered any more).
    Forked,
    /// Any other event (its code).
    Other(u8),
}

/// Decode one `struct uffd_msg`.
fn decode(m: &[u8; MSG_SIZE]) -> Msg {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        if let Some(src) = m.get(8 + 8 * i..16 + 8 * i) {
            w.copy_from_slice(src);
        }
        u64::from_ne_bytes(w)
    };
    match m.first().copied().unwrap_or(0) {
        EVENT_PAGEFAULT => Msg::Fault {
            addr: word(1) & !(crate::PAGE_SIZE - 1),
            wp: word(0) & PAGEFAULT_FLAG_WP != 0,
        },
        EVENT_REMOVE | EVENT_UNMAP => Msg::Removed {
            start: word(0),
            end: word(1),
        },
        EVENT_FORK => Msg::Forked,
        EVENT_REMAP => Msg::Remapped {
            from: word(0),
            to: word(1),
            len: word(2),
        },
        e => Msg::Other(e),
    }
}

/// Close the child's userfaultfd a fork message installed in this
/// process (`arg.fork.ufd`, the first 4 bytes of the message's argument).
fn close_fork_fd(m: &[u8; MSG_SIZE]) {
    let mut b = [0u8; 4];
    if let Some(src) = m.get(8..12) {
        b.copy_from_slice(src);
    }
    let fd = i32::from_ne_bytes(b);
    if fd >= 0 {
        // The kernel installed `fd` in our table for this message alone.
        // SAFETY: nothing else owns `fd`: owned and dropped, it closes once.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Open `/dev/userfaultfd` (root only by default): a task given this
/// descriptor makes a full userfaultfd with [`USERFAULTFD_IOC_NEW`]
/// whatever `vm.unprivileged_userfaultfd` says.
pub fn open_dev() -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/userfaultfd")?;
    Ok(OwnedFd::from(f))
}

/// Wait until one of `fds` has something to read, at most `timeout_ms`
/// milliseconds; returns which are readable.
pub fn wait_readable(fds: &[BorrowedFd<'_>], timeout_ms: i32) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfd structures.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    match cvt(r as libc::c_long) {
        Ok(_) => Ok(p.iter().map(|x| x.revents != 0).collect()),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(vec![false; p.len()]),
        Err(e) => Err(e),
    }
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Range {
    start: u64,
    len: u64,
}

/// `struct uffdio_api`.
#[repr(C)]
struct Api {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
struct Register {
    range: Range,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
struct WriteProtect {
    range: Range,
    mode: u64,
}

/// A userfaultfd descriptor (of this process or taken from another one).
#[derive(Debug)]
pub struct Uffd(OwnedFd);

impl Uffd {
    /// Wrap a userfaultfd descriptor (from pidfd_getfd of a task's).
    pub fn from_fd(fd: OwnedFd) -> Uffd {
        Uffd(fd)
    }

    /// userfaultfd(2) in this process (close-on-exec, non-blocking, user
    /// mode only, [`CREATE_FLAGS`]): it tracks crust's own memory (probes
    /// and tests).
    pub fn new_local() -> io::Result<Uffd> {
        let flags = CREATE_FLAGS as libc::c_long;
        // SAFETY: userfaultfd takes one integer argument.
        let r = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        let fd = cvt(r)?;
        // SAFETY: the call succeeded: a new descriptor nobody else owns.
        Ok(Uffd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// UFFDIO_API asking for `features`; returns the features the kernel
    /// granted. Fails (EINVAL) when a feature is missing; only the first
    /// call on a descriptor succeeds.
    pub fn api(&self, features: u64) -> io::Result<u64> {
        let mut a = Api {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: `a` is a live, writable uffdio_api of the size the
        // request encodes.
        let r = unsafe { libc::ioctl(self.0.as_raw_fd(), UFFDIO_API, &mut a as *mut Api) };
        cvt(r as libc::c_long)?;
        Ok(a.features)
    }

    /// Register [start, start+len) (whole pages, every byte mapped) for
    /// write-protection. EBUSY: another userfaultfd has part of it.
    pub fn register_wp(&self, start: u64, len: u64) -> io::Result<()> {
        let mut reg = Register {
            range: Range { start, len },
            mode: REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: `reg` is a live, writable uffdio_register of the size the
        // request encodes.
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                UFFDIO_REGISTER,
                &mut reg as *mut Register,
            )
        };
        cvt(r as libc::c_long).map(|_| ())
    }

    /// Read the messages waiting (none: an empty list; the descriptor is
    /// non-blocking).
    pub fn read_msgs(&self) -> io::Result<Vec<Msg>> {
        let mut buf = [[0u8; MSG_SIZE]; 16];
        // SAFETY: the kernel writes at most the size given into `buf`, a
        // live array of that size.
        let r = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                std::mem::size_of_val(&buf),
            )
        };
        match cvt(r as libc::c_long) {
            Ok(n) => {
                let got = buf.get(..n as usize / MSG_SIZE).unwrap_or_default();
                for m in got.iter().filter(|m| m.first() == Some(&EVENT_FORK)) {
                    close_fork_fd(m);
                }
                Ok(got.iter().map(decode).collect())
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Unregister [start, start+len), dropping its write protection.
    pub fn unregister(&self, start: u64, len: u64) -> io::Result<()> {
        let range = Range { start, len };
        // SAFETY: the kernel only reads `range`, a live uffdio_range.
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                UFFDIO_UNREGISTER,
                &range as *const Range,
            )
        };
        cvt(r as libc::c_long).map(|_| ())
    }

    /// Set (`protect`) or clear the write protection of [start, start+len)
    /// (a registered range).
    pub fn write_protect(&self, start: u64, len: u64, protect: bool) -> io::Result<()> {
        let mut wp = WriteProtect {
            range: Range { start, len },
            mode: if protect { WRITEPROTECT_MODE_WP } else { 0 },
        };
        // SAFETY: `wp` is a live, writable uffdio_writeprotect of the size
        // the request encodes.
        let r = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                UFFDIO_WRITEPROTECT,
                &mut wp as *mut WriteProtect,
            )
        };
        cvt(r as libc::c_long).map(|_| ())
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
#[path = "uffd_tests.rs"]
mod tests;
