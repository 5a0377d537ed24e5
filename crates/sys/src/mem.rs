//! Copying memory between this process and another one.

// Runs while a task is under crust's control: no panics, only errors the
// caller can roll back on (see docs/ARCHITECTURE.md, "Lints").
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
        // Local iovecs: live buffers of their length, `&mut`-borrowed for
        // reads, only read by the kernel for writes.
        // SAFETY: as above; remote iovecs are only used in the other process.
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

/// `PAGEMAP_SCAN` (Linux 6.7): `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
/// Page categories of `PAGEMAP_SCAN` (include/uapi/linux/fs.h).
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// `PAGE_IS_PFNZERO`: the page is the kernel's shared zero page.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `PAGE_IS_GUARD` (Linux 6.15): a guard region's page (MADV_GUARD_INSTALL).
pub const PAGE_IS_GUARD: u64 = 1 << 8;

/// One region `PAGEMAP_SCAN` found (`struct page_region`): the pages
/// [start, end) all have the categories `categories` (masked by the
/// return mask).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// `struct pm_scan_arg`.
#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// Ask the kernel (`PAGEMAP_SCAN` on `pagemap`, an open
/// `/proc/PID/pagemap`) for the regions of [start, end) whose pages have
/// any of the categories `anyof`, without looking at anything else: the
/// kernel skips what has no page table, so a reservation nobody touched
/// costs nothing. Fills `out` from its start; returns how many regions it
/// filled and where the walk stopped (`end`, or earlier when `out` was
/// full: call again from there).
pub fn pagemap_scan(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    anyof: u64,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    let mut arg = scan_arg(start, end, out);
    arg.category_anyof_mask = anyof;
    arg.return_mask = anyof;
    scan(pagemap, arg, out)
}

/// The regions of [start, end) holding pages a dump stores: present or
/// swapped, neither the kernel's shared zero page (which the kernel knows
/// even where PFNs are hidden) nor a guard page. Fills `out` like
/// [`pagemap_scan`]; EINVAL on a kernel without guard pages' category.
pub fn pagemap_scan_stored(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    let mut arg = scan_arg(start, end, out);
    arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
    arg.category_mask = PAGE_IS_PFNZERO | PAGE_IS_GUARD;
    arg.category_inverted = PAGE_IS_PFNZERO | PAGE_IS_GUARD;
    arg.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
    scan(pagemap, arg, out)
}

/// `PAGE_IS_WRITTEN`: the page was written since it was last
/// write-protected through a userfaultfd in asynchronous mode.
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PM_SCAN_WP_MATCHING`: write-protect the pages the scan reports.
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PM_SCAN_CHECK_WPASYNC`: fail (EPERM) on a range not registered with an
/// asynchronous write-protect userfaultfd, rather than skip it.
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// The regions of [start, end) written since the last scan (or since they
/// were write-protected), write-protecting them again in the same walk
/// (`PAGEMAP_SCAN` with `PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC`,
/// category `PAGE_IS_WRITTEN`). Every page of the range must be registered
/// with an asynchronous write-protect userfaultfd ([`crate::uffd`]), or the
/// call fails with EPERM. Fills `out` like [`pagemap_scan`]; when `out`
/// fills up, the walk stops after the last region returned (the pages
/// after it are neither reported nor protected): call again from there.
pub fn pagemap_scan_written(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    let mut arg = scan_arg(start, end, out);
    arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
    arg.category_mask = PAGE_IS_WRITTEN;
    arg.return_mask = PAGE_IS_WRITTEN;
    scan(pagemap, arg, out)
}

fn scan_arg(start: u64, end: u64, out: &mut [PageRegion]) -> PmScanArg {
    PmScanArg {
        size: std::mem::size_of::<PmScanArg>() as u64,
        flags: 0,
        start,
        end,
        walk_end: 0,
        vec: out.as_mut_ptr() as u64,
        vec_len: out.len() as u64,
        max_pages: 0,
        category_inverted: 0,
        category_mask: 0,
        category_anyof_mask: 0,
        return_mask: 0,
    }
}

/// Run `PAGEMAP_SCAN` with `arg`, whose `vec` is `out` (from [`scan_arg`]).
fn scan(
    pagemap: &std::fs::File,
    mut arg: PmScanArg,
    out: &mut [PageRegion],
) -> io::Result<(usize, u64)> {
    use std::os::fd::AsRawFd;
    arg.vec = out.as_mut_ptr() as u64;
    arg.vec_len = out.len() as u64;
    // The kernel writes `walk_end` in `arg` and at most `vec_len` entries
    // (#[repr(C)], three u64 each) in `out`.
    // SAFETY: `arg` is a live pm_scan_arg of its size; `vec` points at
    // `out`, with room for `vec_len` entries.
    let n = unsafe {
        libc::ioctl(
            pagemap.as_raw_fd(),
            PAGEMAP_SCAN,
            &mut arg as *mut PmScanArg,
        )
    };
    let n = cvt(n as libc::c_long)? as usize;
    Ok((n.min(out.len()), arg.walk_end))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // tests may panic
mod tests {
    use super::*;

    #[test]
    fn pagemap_scan_stored_leaves_out_the_zero_page() {
        let page = 4096usize;
        let len = 256 * page;
        // A fresh mapping of its own (a heap allocation may reuse pages
        // another test touched).
        // SAFETY: a new anonymous mapping; nothing else refers to it.
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(m, libc::MAP_FAILED);
        // SAFETY: the mapping is `len` bytes, readable and writable, ours.
        let v = unsafe { std::slice::from_raw_parts_mut(m.cast::<u8>(), len) };
        let base = m as usize;
        // Written: 3, 4, 6. Only read (the zero page): 5, 7.
        for p in [3usize, 4, 6] {
            v[p * page] = 1;
        }
        let mut sum = 0u8;
        for p in [5usize, 7] {
            sum |= std::hint::black_box(v[p * page]);
        }
        assert_eq!(sum, 0);
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut out = [PageRegion::default(); 8];
        let (start, end) = (base as u64, (base + 200 * page) as u64);
        let (n, _) = pagemap_scan_stored(&pm, start, end, &mut out).unwrap();
        let got: Vec<(u64, u64)> = out[..n]
            .iter()
            .map(|r| ((r.start - start) / 4096, (r.end - start) / 4096))
            .collect();
        assert_eq!(got, vec![(3, 5), (6, 7)]);
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(m, len) };
    }

    #[test]
    fn pagemap_scan_finds_only_touched_pages() {
        let page = 4096usize;
        // Large enough to be a fresh, untouched mapping.
        let mut v = vec![0u8; 256 * page];
        let base = (v.as_ptr() as usize).div_ceil(page) * page;
        let off = base - v.as_ptr() as usize;
        for p in [3usize, 4, 10] {
            v[off + p * page] = 1;
        }
        let v = std::hint::black_box(v);
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut out = [PageRegion::default(); 1];
        let (start, end) = (base as u64, (base + 200 * page) as u64);
        // One region at a time: the walk stops after the first.
        let (n, stop) = pagemap_scan(&pm, start, end, PAGE_IS_PRESENT, &mut out).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            (out[0].start - start, out[0].end - start),
            (3 * 4096, 5 * 4096)
        );
        assert!(stop < end);
        let (n, _) = pagemap_scan(&pm, stop, end, PAGE_IS_PRESENT, &mut out).unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            (out[0].start - start, out[0].end - start),
            (10 * 4096, 11 * 4096)
        );
        drop(v);
    }
}
