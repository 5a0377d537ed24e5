//! userfaultfd missing-page handling, for lazy restore (issue 15): a
//! restored task's private anonymous memory is registered in MISSING mode
//! and left empty; the lazy-pages daemon reads its faults and events and
//! puts pages in with `UFFDIO_COPY` / `UFFDIO_ZEROPAGE`.
//!
//! Events of a non-cooperative handler (the task does not know about the
//! userfaultfd): `fork` (the child gets a userfaultfd of its own, installed
//! in the reader's fd table when the message is read), `mremap`,
//! `madvise(MADV_DONTNEED/MADV_REMOVE)` and `munmap`. Each blocks the task
//! until the message is read.

// Runs while a task is under crust's control: no panics.
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::cvt;
use crate::uffd::Uffd;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `UFFD_FEATURE_EVENT_FORK`.
pub const FEATURE_EVENT_FORK: u64 = 1 << 1;
/// `UFFD_FEATURE_EVENT_REMAP`.
pub const FEATURE_EVENT_REMAP: u64 = 1 << 2;
/// `UFFD_FEATURE_EVENT_REMOVE`.
pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
/// `UFFD_FEATURE_EVENT_UNMAP`.
pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// The features lazy restore asks for (CRIU's `NEED_UFFD_API_FEATURES`).
pub const LAZY_FEATURES: u64 =
    FEATURE_EVENT_FORK | FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;

/// The flags userfaultfd(2) is called with for lazy restore: close-on-exec
/// and non-blocking; not user-mode-only (a `read(2)` by the kernel into a
/// missing page must be handled too, not fail).
pub const LAZY_CREATE_FLAGS: u64 = libc::O_CLOEXEC as u64 | libc::O_NONBLOCK as u64;

/// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
/// `_IOR(0xAA, 0x02, struct uffdio_range)`.
const UFFDIO_WAKE: libc::c_ulong = 0x8010_AA02;
/// `_IOWR(0xAA, 0x03, struct uffdio_copy)` (40 bytes).
const UFFDIO_COPY: libc::c_ulong = 0xC028_AA03;
/// `_IOWR(0xAA, 0x04, struct uffdio_zeropage)` (32 bytes).
const UFFDIO_ZEROPAGE: libc::c_ulong = 0xC020_AA04;
/// `UFFDIO_REGISTER_MODE_MISSING`.
const REGISTER_MODE_MISSING: u64 = 1;

const EVENT_PAGEFAULT: u8 = 0x12;
const EVENT_FORK: u8 = 0x13;
const EVENT_REMAP: u8 = 0x14;
const EVENT_REMOVE: u8 = 0x15;
const EVENT_UNMAP: u8 = 0x16;
/// `sizeof(struct uffd_msg)`.
const MSG_SIZE: usize = 32;

#[repr(C)]
struct Register {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct Copy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct Zero {
    start: u64,
    len: u64,
    mode: u64,
    zeropage: i64,
}

/// One message read from a userfaultfd.
#[derive(Debug)]
pub enum Event {
    /// A thread waits for the page at `addr` (page-aligned down by the
    /// reader).
    PageFault { addr: u64, write: bool },
    /// The process forked: the child's userfaultfd, now in this process.
    Fork(Uffd),
    /// `mremap`: `len` bytes moved from `from` to `to`.
    Remap { from: u64, to: u64, len: u64 },
    /// `madvise(MADV_DONTNEED/REMOVE)` of [start, end): those pages are
    /// now empty and must not be filled from the images.
    Remove { start: u64, end: u64 },
    /// `munmap` of [start, end).
    Unmap { start: u64, end: u64 },
    /// An event this code does not know (ignored by the reader).
    Other(u8),
}

/// What an `UFFDIO_COPY` or `UFFDIO_ZEROPAGE` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Filled {
    /// `n` bytes put in (all, or up to a page that was there already:
    /// `EEXIST`, or an event pending: `EAGAIN`, see `stopped`).
    Done { n: u64, stopped: Option<i32> },
    /// The address space is gone (the process exited: `ESRCH`/`ENOSPC`).
    Gone,
}

fn u64_at(b: &[u8; MSG_SIZE], off: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(off..off + 8) {
        w.copy_from_slice(s);
    }
    u64::from_ne_bytes(w)
}

fn parse(b: &[u8; MSG_SIZE]) -> Event {
    match b.first().copied().unwrap_or(0) {
        EVENT_PAGEFAULT => {
            let flags = u64_at(b, 8);
            let addr = u64_at(b, 16);
            Event::PageFault {
                addr: addr & !4095,
                write: flags & 1 != 0,
            }
        }
        EVENT_FORK => {
            let fd = u64_at(b, 8) as u32 as RawFd;
            // SAFETY: the kernel installed this descriptor in our fd table
            // while the message was read; nothing else owns it.
            Event::Fork(Uffd::from_fd(unsafe { OwnedFd::from_raw_fd(fd) }))
        }
        EVENT_REMAP => Event::Remap {
            from: u64_at(b, 8),
            to: u64_at(b, 16),
            len: u64_at(b, 24),
        },
        EVENT_REMOVE => Event::Remove {
            start: u64_at(b, 8),
            end: u64_at(b, 16),
        },
        EVENT_UNMAP => Event::Unmap {
            start: u64_at(b, 8),
            end: u64_at(b, 16),
        },
        other => Event::Other(other),
    }
}

impl Uffd {
    /// Register [start, start+len) in MISSING mode: a thread touching an
    /// empty page waits until a page is put there.
    pub fn register_missing(&self, start: u64, len: u64) -> io::Result<()> {
        let mut reg = Register {
            start,
            len,
            mode: REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: `reg` is a live, writable uffdio_register of the size the
        // request encodes.
        let r = unsafe {
            libc::ioctl(
                self.as_fd().as_raw_fd(),
                UFFDIO_REGISTER,
                &mut reg as *mut Register,
            )
        };
        cvt(r as libc::c_long).map(drop)
    }

    /// Copy `src` (whole pages) to `dst` in the registered process and wake
    /// whoever waits there.
    pub fn copy(&self, dst: u64, src: &[u8]) -> Filled {
        let mut c = Copy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: `c` is a live, writable uffdio_copy; its source is `src`,
        // readable for `len` bytes for the whole call.
        let r = unsafe { libc::ioctl(self.as_fd().as_raw_fd(), UFFDIO_COPY, &mut c as *mut Copy) };
        outcome(r, c.copy, c.len)
    }

    /// Copy `len` bytes at `at` of `w` (whole pages, inside it) to `dst`
    /// in the registered process: the kernel reads the file's pages
    /// through the window, crust never touches them (a file cut short
    /// meanwhile fails the copy with EFAULT, crust takes no SIGBUS).
    pub fn copy_window(&self, dst: u64, w: &FileWindow, at: usize, len: usize) -> Filled {
        if at.checked_add(len).is_none_or(|end| end > w.len) {
            return Filled::Done {
                n: 0,
                stopped: Some(libc::EINVAL),
            };
        }
        let mut c = Copy {
            dst,
            src: (w.addr + at) as u64,
            len: len as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: `c` is a live, writable uffdio_copy; its source lies
        // inside the window, mapped (read-only) until `w` is dropped.
        let r = unsafe { libc::ioctl(self.as_fd().as_raw_fd(), UFFDIO_COPY, &mut c as *mut Copy) };
        outcome(r, c.copy, c.len)
    }

    /// Map the zero page over [start, start+len) and wake whoever waits.
    pub fn zeropage(&self, start: u64, len: u64) -> Filled {
        let mut z = Zero {
            start,
            len,
            mode: 0,
            zeropage: 0,
        };
        // SAFETY: `z` is a live, writable uffdio_zeropage.
        let r = unsafe {
            libc::ioctl(
                self.as_fd().as_raw_fd(),
                UFFDIO_ZEROPAGE,
                &mut z as *mut Zero,
            )
        };
        outcome(r, z.zeropage, len)
    }

    /// Wake the threads waiting in [start, start+len) (the page is there).
    pub fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let range = [start, len];
        // SAFETY: the kernel reads a uffdio_range (two u64) from `range`.
        let r = unsafe { libc::ioctl(self.as_fd().as_raw_fd(), UFFDIO_WAKE, range.as_ptr()) };
        cvt(r as libc::c_long).map(drop)
    }

    /// The next message, or `None` when there is none now (the
    /// descriptor is non-blocking).
    pub fn read_event(&self) -> io::Result<Option<Event>> {
        let mut b = [0u8; MSG_SIZE];
        // SAFETY: `b` is writable for MSG_SIZE bytes.
        let r = unsafe {
            libc::read(
                self.as_fd().as_raw_fd(),
                b.as_mut_ptr() as *mut libc::c_void,
                MSG_SIZE,
            )
        };
        match cvt(r as libc::c_long) {
            Ok(n) if n as usize == MSG_SIZE => Ok(Some(parse(&b))),
            Ok(_) => Err(io::Error::from_raw_os_error(libc::EIO)),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The outcome of a fill ioctl that returned `r`, having done `done`
/// bytes (negative: an error code) of `len`.
fn outcome(r: libc::c_int, done: i64, len: u64) -> Filled {
    if r == 0 {
        return Filled::Done {
            n: len,
            stopped: None,
        };
    }
    let err = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    if err == libc::ESRCH || err == libc::ENOSPC {
        return Filled::Gone;
    }
    Filled::Done {
        n: u64::try_from(done).unwrap_or(0),
        stopped: Some(err),
    }
}

/// The features a userfaultfd made as lazy restore makes it (not
/// user-mode-only: root, or `vm.unprivileged_userfaultfd`) is offered:
/// `UFFDIO_API` asking for none returns every one the kernel has (CRIU's
/// probe). ENOSYS: no userfaultfd; EPERM: not allowed.
pub fn available_features() -> io::Result<u64> {
    // SAFETY: userfaultfd takes one integer argument.
    let r = unsafe { libc::syscall(libc::SYS_userfaultfd, LAZY_CREATE_FLAGS as libc::c_long) };
    let fd = cvt(r)?;
    // SAFETY: the call succeeded: a new descriptor nobody else owns.
    let uffd = Uffd::from_fd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    uffd.api(0)
}

/// poll(2) on `fds` (descriptor, events asked); returns the events
/// returned for each, in order. `timeout_ms` < 0 waits forever.
pub fn poll(fds: &[(BorrowedFd<'_>, i16)], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|(fd, ev)| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: *ev,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfd structures.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    match cvt(r as libc::c_long) {
        Ok(_) => Ok(p.iter().map(|x| x.revents).collect()),
        Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(vec![0; p.len()]),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "uffd_missing_tests.rs"]
mod tests;

/// A piece of a file mapped read-only and shared, with its page table
/// entries made at once (MAP_POPULATE), as the source of
/// [`Uffd::copy_window`]: UFFDIO_COPY then reads the page cache directly
/// (no pread into a buffer first). Only the kernel reads it; unmapped when
/// dropped.
#[derive(Debug)]
pub struct FileWindow {
    addr: usize,
    len: usize,
}

impl FileWindow {
    /// Map `len` bytes (> 0) of `fd` from `off` (a multiple of the page
    /// size).
    pub fn map(fd: BorrowedFd<'_>, off: u64, len: usize) -> io::Result<FileWindow> {
        let off =
            libc::off_t::try_from(off).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a new mapping anywhere the kernel chooses; nothing of
        // this process is replaced.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(FileWindow {
            addr: p as usize,
            len,
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: see [`FileWindow::map`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for FileWindow {
    fn drop(&mut self) {
        // SAFETY: the mapping made by `map`, of this length, used by
        // nothing else.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}
