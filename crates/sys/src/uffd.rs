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
// caller can roll back on (see docs/arch-lints.md).
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
