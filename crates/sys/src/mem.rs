//! Copying memory between this process and another one.

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/arch-lints.md).
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::{cvt, RemoteAddr};
use std::io;

/// Largest number of iovecs one process_vm_* call accepts (UIO_MAXIOV).
pub const IOV_MAX: usize = 1024;

/// Read `buf.len()` bytes at `addr` of process `pid` (process_vm_readv).
/// Returns how many bytes were read (short at an unmapped page).
pub fn read(pid: i32, addr: RemoteAddr, buf: &mut [u8]) -> io::Result<usize> {
    readv(pid, &mut [buf], &[(addr, 0)])
}

/// Scatter read: fills `bufs` in order from the remote ranges
/// `(addr, len)`; a `len` of 0 means "the length of the matching buffer"
/// when the lists have equal size.
pub fn readv(
    pid: i32,
    bufs: &mut [&mut [u8]],
    remote: &[(RemoteAddr, usize)],
) -> io::Result<usize> {
    let local: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    transfer(pid, &local, remote, Dir::Read)
}

/// Write `buf` at `addr` of process `pid` (process_vm_writev). Respects the
/// page protections of the target.
pub fn write(pid: i32, addr: RemoteAddr, buf: &[u8]) -> io::Result<usize> {
    writev(pid, &[buf], &[(addr, 0)])
}

/// Gather write, the mirror of [`readv`].
pub fn writev(pid: i32, bufs: &[&[u8]], remote: &[(RemoteAddr, usize)]) -> io::Result<usize> {
    let local: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    transfer(pid, &local, remote, Dir::Write)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read,
    Write,
}

/// process_vm_readv/writev over any number of iovecs, IOV_MAX at a time;
/// stops at the first short transfer.
fn transfer(
    pid: i32,
    local: &[libc::iovec],
    remote: &[(RemoteAddr, usize)],
    dir: Dir,
) -> io::Result<usize> {
    let rem = remote_iovs(remote, local.iter().map(|v| v.iov_len));
    let mut done = 0usize;
    for (l, r) in local.chunks(IOV_MAX).zip(rem.chunks(IOV_MAX)) {
        // SAFETY: each local iovec points into a live buffer of its length,
        // exclusively borrowed for reads (the callers hold `&mut`) and only
        // read by the kernel for writes; remote iovecs are only interpreted
        // in the other process.
        let n = unsafe {
            let f = match dir {
                Dir::Read => libc::process_vm_readv,
                Dir::Write => libc::process_vm_writev,
            };
            f(
                pid,
                l.as_ptr(),
                l.len() as libc::c_ulong,
                r.as_ptr(),
                r.len() as libc::c_ulong,
                0,
            )
        };
        let n = cvt(n as libc::c_long)? as usize;
        done += n;
        let want: usize = l.iter().map(|v| v.iov_len).sum();
        if n < want {
            break;
        }
    }
    Ok(done)
}

fn remote_iovs(
    remote: &[(RemoteAddr, usize)],
    local_lens: impl Iterator<Item = usize>,
) -> Vec<libc::iovec> {
    let lens: Vec<usize> = local_lens.collect();
    remote
        .iter()
        .enumerate()
        .map(|(i, (a, len))| libc::iovec {
            iov_base: a.0 as *mut libc::c_void,
            iov_len: if *len == 0 {
                lens.get(i).copied().unwrap_or(0)
            } else {
                *len
            },
        })
        .collect()
}
