//! `hugememfd`: hugetlb memfds (memfd_create with MFD_HUGETLB), as zdtm's
//! memfd02-hugetlb makes one, and more. Needs 6 free huge pages of the
//! default size (2 MiB on x86_64); the e2e script sees to vm.nr_hugepages.
//!
//! - "crust-huge-fd": two huge pages, its fd kept open at offset 12345,
//!   mapped shared (data at the start and at the end, zeros between) and
//!   private (the second huge page written through it: a private copy).
//! - "crust-huge-map": one huge page mapped shared, its fd closed.
//!
//! After restore: the contents are back in the mappings and through the
//! fd (pread); the fd's size, offset and name are; the file is still on
//! hugetlbfs with 2 MiB pages (fstatfs); the mappings are still hugetlb
//! ("ht", KernelPageSize 2048 kB), on the same device, named as before;
//! the shared mapping, the fd and the untouched part of the private one
//! are one object, and the private copy is the process's own.

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

const HUGE: usize = 2 << 20;
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;
const POS: i64 = 12345;

fn memfd(name: &std::ffi::CStr, len: usize) -> OwnedFd {
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_HUGETLB) };
    if fd < 0 {
        die("memfd_create(MFD_HUGETLB)");
    }
    // SAFETY: memfd_create just returned this fd; nobody else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sizes our own memfd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len as i64) } != 0 {
        die("ftruncate");
    }
    fd
}

fn map(fd: &OwnedFd, len: usize, flags: i32) -> *mut u8 {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a new mapping of our own memfd where the kernel likes.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, rw, flags, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        die("mmap (free huge pages? vm.nr_hugepages)");
    }
    p.cast()
}

fn get(p: *const u8, off: usize) -> u64 {
    // SAFETY: callers pass an 8-aligned offset inside one of our mappings.
    unsafe { std::ptr::read_volatile(p.add(off) as *const u64) }
}

fn put(p: *mut u8, off: usize, v: u64) {
    // SAFETY: callers pass an 8-aligned offset inside one of our writable
    // mappings.
    unsafe { std::ptr::write_volatile(p.add(off) as *mut u64, v) }
}

/// The maps line and the smaps fields of the VMA starting at `p`.
fn vma_of(p: *const u8) -> Result<(String, String), String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(|e| e.to_string())?;
    let start = format!("{:x}-", p as usize);
    let mut lines = smaps.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(&start) {
            let mut rest = String::new();
            for f in lines.by_ref() {
                rest.push_str(f);
                rest.push('\n');
                if f.starts_with("VmFlags:") {
                    break;
                }
            }
            return Ok((l.to_string(), rest));
        }
    }
    Err(format!("no VMA at {p:p} in smaps"))
}

/// The device field of the maps line of the VMA at `p`.
fn dev_of(p: *const u8) -> Result<String, String> {
    let (line, _) = vma_of(p)?;
    Ok(line.split_whitespace().nth(3).unwrap_or("").to_string())
}

fn check_huge_vma(p: *const u8, name: &str) -> Result<(), String> {
    let (line, fields) = vma_of(p)?;
    ensure!(
        line.ends_with(&format!("/memfd:{name} (deleted)")),
        "the mapping at {p:p} is no longer of memfd {name}: {line}"
    );
    let flags = fields
        .lines()
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .unwrap_or("");
    ensure!(
        flags.split_whitespace().any(|f| f == "ht"),
        "the mapping at {p:p} is no longer hugetlb (VmFlags{flags})"
    );
    ensure!(
        fields
            .lines()
            .any(|l| l.starts_with("KernelPageSize:") && l.contains(" 2048 kB")),
        "the mapping at {p:p} has lost its 2 MiB pages:\n{fields}"
    );
    Ok(())
}

fn main() {
    let args = start();
    let a = memfd(c"crust-huge-fd", 2 * HUGE);
    let shared = map(&a, 2 * HUGE, libc::MAP_SHARED);
    put(shared, 0, 0xa0a0);
    put(shared, 2 * HUGE - 8, 0xa1a1);
    let private = map(&a, 2 * HUGE, libc::MAP_PRIVATE);
    put(private, HUGE + 16, 0xb1b1);
    // SAFETY: moves the offset of our own fd.
    if unsafe { libc::lseek(a.as_raw_fd(), POS, libc::SEEK_SET) } != POS {
        die("lseek");
    }
    let b = memfd(c"crust-huge-map", HUGE);
    let alone = map(&b, HUGE, libc::MAP_SHARED);
    drop(b);
    put(alone, 3 * 4096, 0xc0c0);
    let devs = [shared, private, alone].map(|p| dev_of(p).unwrap_or_default());

    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        ensure!(
            get(shared, 0) == 0xa0a0 && get(shared, 2 * HUGE - 8) == 0xa1a1,
            "the shared mapping lost its data"
        );
        ensure!(
            get(shared, HUGE) == 0,
            "the shared mapping has data where it had zeros"
        );
        ensure!(
            get(private, HUGE + 16) == 0xb1b1 && get(private, 2 * HUGE - 8) == 0xa1a1,
            "the private copy lost its data"
        );
        ensure!(
            get(private, 0) == 0xa0a0,
            "the private mapping no longer reads the memfd"
        );
        ensure!(
            get(alone, 3 * 4096) == 0xc0c0,
            "the memfd mapped alone lost its data"
        );
        // The fd, the shared mapping and the untouched private part are
        // one object; the private copy is not.
        let f = std::fs::File::from(a.try_clone().map_err(|e| e.to_string())?);
        let mut w = [0u8; 8];
        f.read_exact_at(&mut w, 2 * HUGE as u64 - 8)
            .map_err(|e| format!("pread: {e}"))?;
        ensure!(
            u64::from_ne_bytes(w) == 0xa1a1,
            "the fd does not read the data"
        );
        put(shared, 0, 0xd0d0);
        put(shared, HUGE + 16, 0xd1d1);
        f.read_exact_at(&mut w, 0)
            .map_err(|e| format!("pread: {e}"))?;
        ensure!(
            u64::from_ne_bytes(w) == 0xd0d0,
            "the fd and the shared mapping are not one memfd"
        );
        ensure!(
            get(private, 0) == 0xd0d0,
            "the private mapping is not of the fd's memfd"
        );
        ensure!(
            get(private, HUGE + 16) == 0xb1b1,
            "the private copy is shared with the memfd"
        );
        let md = f.metadata().map_err(|e| e.to_string())?;
        ensure!(
            md.len() == 2 * HUGE as u64,
            "the memfd's size is {}",
            md.len()
        );
        // SAFETY: reads the offset of our own fd.
        let pos = unsafe { libc::lseek(a.as_raw_fd(), 0, libc::SEEK_CUR) };
        ensure!(pos == POS, "the fd's offset is {pos}, not {POS}");
        // SAFETY: an all-zero statfs is valid; fstatfs fills it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: our own fd and a writable statfs.
        if unsafe { libc::fstatfs(a.as_raw_fd(), &mut st) } != 0 {
            return Err(format!("fstatfs: {}", std::io::Error::last_os_error()));
        }
        ensure!(
            st.f_type as i64 == HUGETLBFS_MAGIC && st.f_bsize as usize == HUGE,
            "the memfd is no longer on hugetlbfs with 2 MiB pages (f_type {:#x}, f_bsize {})",
            st.f_type,
            st.f_bsize
        );
        let link = std::fs::read_link(format!("/proc/self/fd/{}", a.as_raw_fd()))
            .map_err(|e| e.to_string())?;
        ensure!(
            link.to_string_lossy() == "/memfd:crust-huge-fd (deleted)",
            "the fd is on {}",
            link.display()
        );
        for (p, name) in [
            (shared, "crust-huge-fd"),
            (private, "crust-huge-fd"),
            (alone, "crust-huge-map"),
        ] {
            check_huge_vma(p, name)?;
        }
        let now = [shared, private, alone].map(|p| dev_of(p).unwrap_or_default());
        ensure!(
            now == devs,
            "the mappings' devices were {devs:?}, now {now:?}"
        );
        Ok(())
    })();
    finish(&args, verdict);
}
