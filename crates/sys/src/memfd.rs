//! memfd: create one with a name, read and add its seals.

use crate::cvt;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// memfd_create(2) with `MFD_CLOEXEC | MFD_ALLOW_SEALING` (and `extra`
/// flags); `name` must not hold a NUL byte.
pub fn memfd_create(name: &str, extra: u32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | extra;
    // SAFETY: `c` is a NUL-terminated string that lives across the call;
    // the flags are plain integers.
    let r = unsafe { libc::memfd_create(c.as_ptr(), flags) };
    cvt(r as libc::c_long)?;
    // SAFETY: memfd_create succeeded: `r` is a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// F_GET_SEALS: the seals of the memfd (or shmem file) `fd` is on.
pub fn seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: F_GET_SEALS takes no third argument; the fd is borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    cvt(r as libc::c_long).map(|v| v as u32)
}

/// F_ADD_SEALS: add `seals` to the memfd `fd` is on.
pub fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS takes an integer third argument; the fd is
    // borrowed.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals as libc::c_int) };
    cvt(r as libc::c_long).map(drop)
}

/// statfs f_type of hugetlbfs (the file system of hugetlb memfds).
pub const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
/// memfd_create's MFD_HUGETLB.
pub const MFD_HUGETLB: u32 = 4;
/// Where memfd_create and mmap take the huge page size: log2 of the size,
/// in the 6 bits from bit 26 (MFD_HUGE_SHIFT, MAP_HUGE_SHIFT).
pub const HUGE_SHIFT: u32 = 26;
pub const HUGE_MASK: u32 = 0x3f << HUGE_SHIFT;

/// The huge page size of the hugetlbfs file `fd` is on (fstatfs: f_type
/// HUGETLBFS_MAGIC, f_bsize the page size); `None` for a file elsewhere.
pub fn hugetlb_page_size(fd: BorrowedFd<'_>) -> io::Result<Option<u64>> {
    // SAFETY: an all-zero statfs is a valid value of the plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is borrowed for the call; `st` is a writable statfs.
    let r = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    cvt(r as libc::c_long)?;
    Ok((st.f_type as i64 == HUGETLBFS_MAGIC).then_some(st.f_bsize as u64))
}

/// A shared read-write mapping of a whole file (hugetlbfs has no write(2):
/// a hugetlb memfd is filled through one), unmapped when dropped.
pub struct SharedMap {
    addr: *mut libc::c_void,
    len: usize,
}

impl SharedMap {
    /// mmap `len` bytes of `fd` from offset 0, MAP_SHARED, read-write.
    pub fn new(fd: BorrowedFd<'_>, len: usize) -> io::Result<SharedMap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        // SAFETY: a new mapping at an address the kernel picks overlaps
        // nothing of this process; the fd is borrowed for the call.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap { addr, len })
    }

    /// Copy `data` into the mapping at offset `off`; EINVAL if it does
    /// not fit.
    pub fn write_at(&mut self, off: usize, data: &[u8]) -> io::Result<()> {
        let end = off.checked_add(data.len());
        if end.is_none_or(|e| e > self.len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let dst = (self.addr as *mut u8).wrapping_add(off);
        // `data` is a Rust slice, so it cannot overlap this mapping.
        // SAFETY: [off, off + data.len()) is inside the mapping (checked
        // above), which lives as long as `self`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` are the mapping made in `new`, unmapped only
        // here.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}
