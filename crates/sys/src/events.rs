//! Event files crust makes itself when it restores them: eventfd, signalfd,
//! timerfd, epoll, inotify, fanotify; plus open_by_handle_at (inotify
//! watches and fanotify marks are recorded by file handle) and
//! clock_gettime on any clock id.
//! Every function takes integers, borrowed fds, or buffers it owns.

use crate::cvt;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// TFD_IOC_SET_TICKS: `_IOW('T', 0, u64)`.
pub const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
/// Largest file handle the kernel hands out (MAX_HANDLE_SZ).
pub const MAX_HANDLE_SZ: usize = 128;

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    let fd = cvt(ret)?;
    // SAFETY: the syscall succeeded and returned a new fd that nobody else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// eventfd2(2).
pub fn eventfd(initval: u32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: eventfd2 takes only integers.
    owned(unsafe { libc::syscall(libc::SYS_eventfd2, initval, flags) })
}

/// signalfd4(2) making a new signalfd for the signals in `mask` (bit N-1
/// for signal N).
pub fn signalfd(mask: u64, flags: i32) -> io::Result<OwnedFd> {
    let m = mask;
    // SAFETY: `m` is a kernel sigset_t (8 bytes on x86_64) living for the
    // call; its size is passed.
    owned(unsafe {
        libc::syscall(
            libc::SYS_signalfd4,
            -1,
            &m as *const u64,
            std::mem::size_of::<u64>(),
            flags,
        )
    })
}

/// timerfd_create(2).
pub fn timerfd_create(clockid: i32, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes only integers.
    owned(unsafe { libc::syscall(libc::SYS_timerfd_create, clockid, flags) })
}

/// A `(seconds, nanoseconds)` pair.
pub type Ts = (i64, i64);

fn itimerspec(value: Ts, interval: Ts) -> libc::itimerspec {
    libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: interval.0,
            tv_nsec: interval.1,
        },
        it_value: libc::timespec {
            tv_sec: value.0,
            tv_nsec: value.1,
        },
    }
}

/// timerfd_settime(2) with `flags` (TFD_TIMER_ABSTIME...).
pub fn timerfd_settime(fd: BorrowedFd<'_>, flags: i32, value: Ts, interval: Ts) -> io::Result<()> {
    let spec = itimerspec(value, interval);
    // SAFETY: `spec` is a valid itimerspec living for the call; the old
    // value pointer is NULL (not wanted).
    let r = unsafe {
        libc::syscall(
            libc::SYS_timerfd_settime,
            fd.as_raw_fd(),
            flags,
            &spec as *const libc::itimerspec,
            std::ptr::null_mut::<libc::itimerspec>(),
        )
    };
    cvt(r).map(drop)
}

/// timerfd_gettime(2): `(remaining, interval)`.
pub fn timerfd_gettime(fd: BorrowedFd<'_>) -> io::Result<(Ts, Ts)> {
    let mut spec = itimerspec((0, 0), (0, 0));
    // SAFETY: `spec` is a writable itimerspec living for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_timerfd_gettime,
            fd.as_raw_fd(),
            &mut spec as *mut libc::itimerspec,
        )
    };
    cvt(r)?;
    Ok((
        (spec.it_value.tv_sec, spec.it_value.tv_nsec),
        (spec.it_interval.tv_sec, spec.it_interval.tv_nsec),
    ))
}

/// TFD_IOC_SET_TICKS: set the expirations not yet read (needs
/// CONFIG_CHECKPOINT_RESTORE).
pub fn timerfd_set_ticks(fd: BorrowedFd<'_>, ticks: u64) -> io::Result<()> {
    let t = ticks;
    // SAFETY: TFD_IOC_SET_TICKS reads one u64 from the pointer, which points
    // to `t`, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioctl,
            fd.as_raw_fd(),
            TFD_IOC_SET_TICKS,
            &t as *const u64,
        )
    };
    cvt(r).map(drop)
}

/// clock_gettime(2) on any clock id.
pub fn clock_gettime(clockid: i32) -> io::Result<Ts> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a writable timespec living for the call.
    let r = unsafe { libc::syscall(libc::SYS_clock_gettime, clockid, &mut ts as *mut _) };
    cvt(r)?;
    Ok((ts.tv_sec, ts.tv_nsec))
}

/// epoll_create1(2).
pub fn epoll_create1(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: epoll_create1 takes only an integer.
    owned(unsafe { libc::syscall(libc::SYS_epoll_create1, flags) })
}

/// inotify_init1(2).
pub fn inotify_init1(flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: inotify_init1 takes only an integer.
    owned(unsafe { libc::syscall(libc::SYS_inotify_init1, flags) })
}

/// inotify_add_watch(2): returns the watch descriptor.
pub fn inotify_add_watch(fd: BorrowedFd<'_>, path: &CStr, mask: u32) -> io::Result<i32> {
    // SAFETY: `path` is a NUL-terminated string living for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_inotify_add_watch,
            fd.as_raw_fd(),
            path.as_ptr(),
            mask,
        )
    };
    cvt(r).map(|v| v as i32)
}

/// inotify_rm_watch(2).
pub fn inotify_rm_watch(fd: BorrowedFd<'_>, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes only integers.
    cvt(unsafe { libc::syscall(libc::SYS_inotify_rm_watch, fd.as_raw_fd(), wd) }).map(drop)
}

/// open_by_handle_at(2) of the handle `handle` (its `f_handle` bytes) of
/// type `handle_type`, on the filesystem `mount_fd` is on.
pub fn open_by_handle_at(
    mount_fd: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
    flags: i32,
) -> io::Result<OwnedFd> {
    if handle.len() > MAX_HANDLE_SZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // struct file_handle: u32 handle_bytes, i32 handle_type, then the bytes.
    let mut buf = vec![0u8; 8 + MAX_HANDLE_SZ];
    buf[0..4].copy_from_slice(&(handle.len() as u32).to_ne_bytes());
    buf[4..8].copy_from_slice(&handle_type.to_ne_bytes());
    buf[8..8 + handle.len()].copy_from_slice(handle);
    // SAFETY: `buf` holds a struct file_handle whose handle_bytes (at most
    // MAX_HANDLE_SZ) fit in the buffer, which lives for the call.
    owned(unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount_fd.as_raw_fd(),
            buf.as_mut_ptr(),
            flags,
        )
    })
}

/// fanotify_init(2).
pub fn fanotify_init(flags: u32, event_f_flags: u32) -> io::Result<OwnedFd> {
    // SAFETY: fanotify_init takes only integers.
    owned(unsafe { libc::syscall(libc::SYS_fanotify_init, flags, event_f_flags) })
}

/// fanotify_mark(2) of `path` (resolved from the current directory when
/// relative; a `/proc/self/fd/N` link marks the file fd N is on).
pub fn fanotify_mark(fd: BorrowedFd<'_>, flags: u32, mask: u64, path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is a NUL-terminated string living for the call; the
    // other arguments are integers (the 64-bit mask is one register on
    // x86_64).
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fanotify_mark,
            fd.as_raw_fd(),
            flags,
            mask,
            libc::AT_FDCWD,
            path.as_ptr(),
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn eventfd_and_timerfd() {
        let e = eventfd(0, libc::EFD_CLOEXEC).unwrap();
        let mut f = std::fs::File::from(e);
        f.write_all(&42u64.to_ne_bytes()).unwrap();
        let mut b = [0u8; 8];
        f.read_exact(&mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), 42);

        let t = timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC).unwrap();
        timerfd_settime(t.as_fd(), 0, (100, 0), (5, 0)).unwrap();
        let ((s, _), (i, _)) = timerfd_gettime(t.as_fd()).unwrap();
        assert!((98..=100).contains(&s), "{s}");
        assert_eq!(i, 5);
        let now = clock_gettime(libc::CLOCK_MONOTONIC).unwrap();
        assert!(now.0 > 0);
        let s = signalfd(1 << (libc::SIGUSR1 - 1), libc::SFD_CLOEXEC).unwrap();
        drop(s);
        let i = inotify_init1(libc::IN_CLOEXEC).unwrap();
        let wd = inotify_add_watch(i.as_fd(), c"/", libc::IN_CREATE).unwrap();
        assert!(wd > 0);
        inotify_rm_watch(i.as_fd(), wd).unwrap();
        epoll_create1(libc::EPOLL_CLOEXEC).unwrap();
        let f = fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC,
            libc::O_RDONLY as u32,
        )
        .unwrap();
        fanotify_mark(f.as_fd(), libc::FAN_MARK_ADD, libc::FAN_MODIFY, c"/tmp").unwrap();
    }
}
