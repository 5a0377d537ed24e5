//! Pipes and the fcntl/ioctl requests crust uses on them (and on FIFOs):
//! pipe2, tee, splice (out of a pipe, into one, into a file at an offset), pipe capacity, queued byte count, file status flags.
//! Every function here takes only integer arguments or buffers it owns.

use crate::cvt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// pipe2(2): `(read end, write end)`.
pub fn pipe2(flags: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as RawFd; 2];
    // SAFETY: `fds` is a writable array of two c_ints, as pipe2 requires.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    cvt(r as libc::c_long)?;
    let [r, w] = fds;
    // SAFETY: pipe2 succeeded, so the read end is open and owned by nobody
    // else.
    let r = unsafe { OwnedFd::from_raw_fd(r) };
    // SAFETY: likewise the write end.
    let w = unsafe { OwnedFd::from_raw_fd(w) };
    Ok((r, w))
}

/// tee(2): duplicate up to `len` bytes queued in pipe `from` into pipe `to`
/// without consuming them. Returns the number of bytes duplicated.
pub fn tee(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize, flags: u32) -> io::Result<usize> {
    // SAFETY: tee takes only fds, a length and flags; both fds are borrowed
    // (open for the call's duration).
    let r = unsafe { libc::tee(from.as_raw_fd(), to.as_raw_fd(), len, flags) };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// splice(2) from `from` to `to`, the input at its own position, the
/// output at `*off_out` (advanced) or at its own position (None).
fn splice_raw(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    off_out: Option<&mut libc::loff_t>,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let off = off_out.map_or(std::ptr::null_mut(), |o| o as *mut libc::loff_t);
    // SAFETY: `off` is null or a loff_t lent for the call (null input
    // offset: the input's own position); the rest: integers, borrowed fds.
    let r = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            off,
            len,
            flags,
        )
    };
    cvt(r as libc::c_long).map(|n| n as usize)
}

/// splice(2) from `from` to `to`, one of them a pipe, the other a socket
/// or a file at its current offset (advanced): moves up to `len` bytes
/// without copying them through user space (out of a socket into a pipe
/// the pipe takes references). Returns the number of bytes moved (0: the
/// input ended: a pipe empty with its write end closed, a socket shut).
pub fn splice_out(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    splice_raw(from, to, None, len, flags)
}

/// splice(2) from pipe `from` into file `to` at offset `at` (the file's
/// own position is neither used nor moved, as with pwrite): up to `len`
/// bytes. Returns the number of bytes moved (0: the pipe is empty and its
/// write end closed).
pub fn splice_at(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    at: u64,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let mut off =
        libc::loff_t::try_from(at).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    splice_raw(from, to, Some(&mut off), len, flags)
}

/// fcntl with an integer argument, for the requests listed below only (none
/// of them takes a pointer).
fn fcntl_int(fd: BorrowedFd<'_>, cmd: i32, arg: libc::c_long) -> io::Result<i32> {
    debug_assert!(matches!(
        cmd,
        libc::F_GETPIPE_SZ | libc::F_SETPIPE_SZ | libc::F_GETFL | libc::F_SETFL
    ));
    // SAFETY: `cmd` is one of F_GETPIPE_SZ, F_SETPIPE_SZ, F_GETFL, F_SETFL,
    // whose third argument is an integer (or unused); the fd is borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) };
    cvt(r as libc::c_long).map(|v| v as i32)
}

/// F_GETPIPE_SZ: the capacity of a pipe (or FIFO) in bytes.
pub fn pipe_size(fd: BorrowedFd<'_>) -> io::Result<u32> {
    fcntl_int(fd, libc::F_GETPIPE_SZ, 0).map(|v| v as u32)
}

/// F_SETPIPE_SZ: set the capacity (the kernel rounds up to a power-of-two
/// number of pages); returns the capacity now in force.
pub fn set_pipe_size(fd: BorrowedFd<'_>, size: u32) -> io::Result<u32> {
    fcntl_int(fd, libc::F_SETPIPE_SZ, size as libc::c_long).map(|v| v as u32)
}

/// F_GETFL: access mode and status flags of the open file description.
pub fn status_flags(fd: BorrowedFd<'_>) -> io::Result<i32> {
    fcntl_int(fd, libc::F_GETFL, 0)
}

/// F_SETFL: set the status flags (O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME,
/// O_NONBLOCK; the kernel ignores the others).
pub fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) -> io::Result<()> {
    fcntl_int(fd, libc::F_SETFL, flags as libc::c_long).map(drop)
}

/// FIONREAD: bytes queued in a pipe, FIFO or socket.
pub fn queued_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to the pointer, which points to `n`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n as *mut libc::c_int) };
    cvt(r as libc::c_long)?;
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn splice_at_writes_at_the_offset_and_keeps_the_position() {
        use std::io::Seek;
        let path = std::env::temp_dir().join(format!("crust-splice-at-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let (r, w) = pipe2(libc::O_CLOEXEC).unwrap();
        std::fs::File::from(w).write_all(b"pages").unwrap();
        assert_eq!(splice_at(r.as_fd(), f.as_fd(), 3, 64, 0).unwrap(), 5);
        assert_eq!(f.stream_position().unwrap(), 0);
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"\0\0\0pages");
        assert_eq!(splice_at(r.as_fd(), f.as_fd(), 8, 64, 0).unwrap(), 0);
    }

    #[test]
    fn splice_out_takes_from_a_socket() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (&a).write_all(b"bytes").unwrap();
        drop(a);
        let (r, w) = pipe2(libc::O_CLOEXEC).unwrap();
        assert_eq!(splice_out(b.as_fd(), w.as_fd(), 64, 0).unwrap(), 5);
        assert_eq!(splice_out(b.as_fd(), w.as_fd(), 64, 0).unwrap(), 0);
        drop(w);
        let mut got = Vec::new();
        std::fs::File::from(r).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bytes");
    }

    #[test]
    fn splice_out_moves_bytes() {
        let (r, w) = pipe2(libc::O_CLOEXEC).unwrap();
        let (r2, w2) = pipe2(libc::O_CLOEXEC).unwrap();
        std::fs::File::from(w).write_all(b"spliced").unwrap();
        assert_eq!(splice_out(r.as_fd(), w2.as_fd(), 64, 0).unwrap(), 7);
        drop(w2);
        let mut got = Vec::new();
        std::fs::File::from(r2).read_to_end(&mut got).unwrap();
        assert_eq!(got, b"spliced");
        let (_r3, w3) = pipe2(libc::O_CLOEXEC).unwrap();
        assert_eq!(splice_out(r.as_fd(), w3.as_fd(), 64, 0).unwrap(), 0);
    }

    #[test]
    fn tee_keeps_data() {
        let (r, w) = pipe2(libc::O_CLOEXEC).unwrap();
        let mut wf = std::fs::File::from(w);
        wf.write_all(b"hello pipe").unwrap();
        assert_eq!(queued_bytes(r.as_fd()).unwrap(), 10);
        let size = pipe_size(r.as_fd()).unwrap();
        let (cr, cw) = pipe2(libc::O_CLOEXEC | libc::O_NONBLOCK).unwrap();
        assert_eq!(set_pipe_size(cw.as_fd(), size).unwrap(), size);
        let n = tee(
            r.as_fd(),
            cw.as_fd(),
            size as usize,
            libc::SPLICE_F_NONBLOCK,
        )
        .unwrap();
        assert_eq!(n, 10);
        drop(cw);
        let mut copy = Vec::new();
        std::fs::File::from(cr).read_to_end(&mut copy).unwrap();
        assert_eq!(copy, b"hello pipe");
        // Still there in the original.
        assert_eq!(queued_bytes(r.as_fd()).unwrap(), 10);
        set_status_flags(r.as_fd(), libc::O_NONBLOCK).unwrap();
        assert_ne!(status_flags(r.as_fd()).unwrap() & libc::O_NONBLOCK, 0);
    }
}
