//! Kernel tests of write tracking: a forked child creates the userfaultfd
//! (it tracks the child's memory), the test takes it with pidfd_getfd and
//! drives everything from outside, as crust does with a dumped task.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::*;
use crate::mem::{pagemap_scan_written, PageRegion};
use crate::unix::{pidfd_getfd, pidfd_open};

const PAGE: u64 = 4096;
const PAGES: u64 = 16;
/// The command byte that makes the child exit.
const QUIT: u8 = 255;

/// A forked child that made a userfaultfd and writes the pages of a
/// shared-address region on command.
struct Child {
    pid: i32,
    /// Commands to the child (page numbers, or QUIT).
    cmd: OwnedFd,
    /// The child's answers.
    ack: OwnedFd,
    /// The region (mapped before the fork: same address in the child).
    base: u64,
}

/// A fresh read-write anonymous mapping of `len` bytes (`kind`:
/// `MAP_PRIVATE` or `MAP_SHARED`); the caller unmaps it.
fn map_anon(len: usize, kind: libc::c_int) -> *mut libc::c_void {
    // SAFETY: a new mapping at an address the kernel picks: nothing of
    // this process's is overwritten.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, alive for the call.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: both descriptors were just created and nobody owns them.
    let rd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let wr = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    (rd, wr)
}

fn read_exact(fd: &OwnedFd, buf: &mut [u8]) {
    // SAFETY: reads into `buf`, a live buffer of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, buf.len() as isize, "short read from the child");
}

fn write_all(fd: &OwnedFd, buf: &[u8]) {
    // SAFETY: the kernel only reads `buf`, a live buffer of its length.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    assert_eq!(n, buf.len() as isize, "short write to the child");
}

/// The child's side: raw syscalls only (a fork of a threaded process).
fn child_main(base: u64, cmd: RawFd, ack: RawFd) -> ! {
    // SAFETY: userfaultfd takes one integer argument.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, CREATE_FLAGS) } as i32;
    let bytes = fd.to_ne_bytes();
    // SAFETY: the kernel only reads `bytes`, a live 4-byte buffer.
    unsafe { libc::write(ack, bytes.as_ptr().cast(), 4) };
    loop {
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into `b`.
        let n = unsafe { libc::read(cmd, b.as_mut_ptr().cast(), 1) };
        if n != 1 || b[0] == QUIT {
            // SAFETY: _exit ends this process; nothing to clean up.
            unsafe { libc::_exit(0) };
        }
        let at = (base + u64::from(b[0]) * PAGE) as *mut u8;
        // SAFETY: `at` is in the region mapped before the fork, writable,
        // that only this process uses in its copy of the memory.
        unsafe { std::ptr::write_volatile(at, b[0]) };
        // SAFETY: the kernel only reads `b`.
        unsafe { libc::write(ack, b.as_ptr().cast(), 1) };
    }
}

impl Child {
    /// Map the region, write every page (present), fork; returns the child
    /// and the number of its userfaultfd.
    fn spawn() -> (Child, i32) {
        let len = (PAGES * PAGE) as usize;
        let p = map_anon(len, libc::MAP_PRIVATE);
        let base = p as u64;
        for i in 0..PAGES {
            // SAFETY: inside the mapping just made.
            unsafe { std::ptr::write_volatile((base + i * PAGE) as *mut u8, 1) };
        }
        let (cmd_rd, cmd_wr) = pipe();
        let (ack_rd, ack_wr) = pipe();
        // SAFETY: the child only runs raw syscalls (child_main) and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            child_main(base, cmd_rd.as_raw_fd(), ack_wr.as_raw_fd());
        }
        // SAFETY: the parent's copy of the region is no longer used.
        unsafe { libc::munmap(p, len) };
        let child = Child {
            pid,
            cmd: cmd_wr,
            ack: ack_rd,
            base,
        };
        let mut fd = [0u8; 4];
        read_exact(&child.ack, &mut fd);
        let fd = i32::from_ne_bytes(fd);
        assert!(fd >= 0, "userfaultfd failed in the child");
        (child, fd)
    }

    fn write_page(&self, n: u8) {
        write_all(&self.cmd, &[n]);
        let mut b = [0u8; 1];
        read_exact(&self.ack, &mut b);
        assert_eq!(b[0], n);
    }

    fn pagemap(&self) -> std::fs::File {
        std::fs::File::open(format!("/proc/{}/pagemap", self.pid)).unwrap()
    }

    /// The written pages (numbers in the region), write-protecting them.
    fn written(&self, pm: &std::fs::File) -> Vec<(u64, u64)> {
        let mut out = [PageRegion::default(); 8];
        let end = self.base + PAGES * PAGE;
        let (n, stop) = pagemap_scan_written(pm, self.base, end, &mut out).unwrap();
        assert_eq!(stop, end);
        out[..n]
            .iter()
            .map(|r| ((r.start - self.base) / PAGE, (r.end - self.base) / PAGE))
            .collect()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = write_all_quiet(&self.cmd, &[QUIT]);
        let mut st = 0;
        // SAFETY: reaps our own child; `st` is a live int.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
    }
}

fn write_all_quiet(fd: &OwnedFd, buf: &[u8]) -> isize {
    // SAFETY: the kernel only reads `buf`.
    unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) }
}

#[test]
fn tracks_the_pages_a_child_writes() {
    if !crate::testing::require_root("tracks_the_pages_a_child_writes") {
        return;
    }
    let (child, fd) = Child::spawn();
    let pidfd = pidfd_open(child.pid).unwrap();
    let uffd = Uffd::from_fd(pidfd_getfd(pidfd.as_fd(), fd).unwrap());
    let got = uffd.api(TRACKING_FEATURES).unwrap();
    assert_eq!(got & TRACKING_FEATURES, TRACKING_FEATURES);
    let len = PAGES * PAGE;
    uffd.register_wp(child.base, len).unwrap();
    let pm = child.pagemap();
    // Before any protection every page reads as written.
    assert_eq!(child.written(&pm), vec![(0, PAGES)]);
    // That scan protected them all.
    assert_eq!(child.written(&pm), vec![]);
    child.write_page(3);
    child.write_page(7);
    assert_eq!(child.written(&pm), vec![(3, 4), (7, 8)]);
    // Protected again by the scan.
    assert_eq!(child.written(&pm), vec![]);
    // A page written twice between scans is reported once.
    child.write_page(7);
    child.write_page(7);
    child.write_page(8);
    assert_eq!(child.written(&pm), vec![(7, 9)]);
    // Unregistered, the range cannot be scanned with CHECK_WPASYNC.
    uffd.unregister(child.base, len).unwrap();
    let mut out = [PageRegion::default(); 4];
    let err = pagemap_scan_written(&pm, child.base, child.base + len, &mut out).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM));
}

#[test]
fn write_protect_ioctl_protects_a_range() {
    if !crate::testing::require_root("write_protect_ioctl_protects_a_range") {
        return;
    }
    let (child, fd) = Child::spawn();
    let pidfd = pidfd_open(child.pid).unwrap();
    let uffd = Uffd::from_fd(pidfd_getfd(pidfd.as_fd(), fd).unwrap());
    uffd.api(TRACKING_FEATURES).unwrap();
    uffd.register_wp(child.base, PAGES * PAGE).unwrap();
    uffd.write_protect(child.base, PAGES * PAGE, true).unwrap();
    let pm = child.pagemap();
    assert_eq!(child.written(&pm), vec![]);
    child.write_page(0);
    child.write_page(15);
    // Lifting the protection of pages 4..6 makes them read as written.
    uffd.write_protect(child.base + 4 * PAGE, 2 * PAGE, false)
        .unwrap();
    assert_eq!(child.written(&pm), vec![(0, 1), (4, 6), (15, 16)]);
    assert_eq!(child.written(&pm), vec![]);
}

#[test]
fn a_local_uffd_tracks_this_process() {
    let Ok(uffd) = Uffd::new_local() else {
        crate::testing::skip("a_local_uffd_tracks_this_process", "no userfaultfd");
        return;
    };
    uffd.api(TRACKING_FEATURES).unwrap();
    let len = 4 * PAGE as usize;
    let p = map_anon(len, libc::MAP_PRIVATE);
    let base = p as u64;
    uffd.register_wp(base, len as u64).unwrap();
    uffd.write_protect(base, len as u64, true).unwrap();
    let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut out = [PageRegion::default(); 4];
    let end = base + len as u64;
    // Unpopulated pages are protected too (WP_UNPOPULATED): nothing yet.
    assert_eq!(pagemap_scan_written(&pm, base, end, &mut out).unwrap().0, 0);
    // SAFETY: page 2 of the mapping made above.
    unsafe { std::ptr::write_volatile((base + 2 * PAGE) as *mut u8, 9) };
    let (n, _) = pagemap_scan_written(&pm, base, end, &mut out).unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        (out[0].start, out[0].end),
        (base + 2 * PAGE, base + 3 * PAGE)
    );
    assert_eq!(pagemap_scan_written(&pm, base, end, &mut out).unwrap().0, 0);
    // A write by the kernel (read(2) into page 0, protected and present)
    // goes through even though the descriptor is user-mode only.
    // SAFETY: page 0 of the mapping made above.
    unsafe { std::ptr::write_volatile(base as *mut u8, 1) };
    assert_eq!(pagemap_scan_written(&pm, base, end, &mut out).unwrap().0, 1);
    let (rd, wr) = pipe();
    write_all(&wr, b"kernel");
    // SAFETY: reads 6 bytes into page 0 of the mapping made above.
    let n = unsafe { libc::read(rd.as_raw_fd(), (base + 16) as *mut libc::c_void, 6) };
    assert_eq!(n, 6, "{}", io::Error::last_os_error());
    // And into page 3, never populated (a marker of WP_UNPOPULATED).
    write_all(&wr, b"kernel");
    // SAFETY: reads 6 bytes into page 3 of the mapping made above.
    let n = unsafe { libc::read(rd.as_raw_fd(), (base + 3 * PAGE) as *mut libc::c_void, 6) };
    assert_eq!(n, 6, "{}", io::Error::last_os_error());
    let (n, _) = pagemap_scan_written(&pm, base, end, &mut out).unwrap();
    assert_eq!(n, 2);
    assert_eq!((out[0].start, out[0].end), (base, base + PAGE));
    assert_eq!((out[1].start, out[1].end), (base + 3 * PAGE, end));
    drop(uffd);
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(p, len) };
}

/// Track the `len` bytes at `base` (mapped by the caller) with `uffd`:
/// nothing is written after the first protection; after `pages` are
/// written exactly they are reported, and nothing on the scan after.
fn expect_written(uffd: Uffd, base: u64, len: usize, pages: [u64; 2]) {
    uffd.register_wp(base, len as u64).unwrap();
    uffd.write_protect(base, len as u64, true).unwrap();
    let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut out = [PageRegion::default(); 4];
    let end = base + len as u64;
    assert_eq!(pagemap_scan_written(&pm, base, end, &mut out).unwrap().0, 0);
    for page in pages {
        // SAFETY: a page of the caller's mapping of `len` bytes at `base`.
        unsafe { std::ptr::write_volatile((base + page * PAGE) as *mut u8, 7) };
    }
    let (n, _) = pagemap_scan_written(&pm, base, end, &mut out).unwrap();
    let got: Vec<(u64, u64)> = out[..n]
        .iter()
        .map(|r| ((r.start - base) / PAGE, (r.end - base) / PAGE))
        .collect();
    let want: Vec<(u64, u64)> = pages.iter().map(|&p| (p, p + 1)).collect();
    assert_eq!(got, want);
    assert_eq!(pagemap_scan_written(&pm, base, end, &mut out).unwrap().0, 0);
}

#[test]
fn shared_anonymous_memory_is_tracked_too() {
    let Ok(uffd) = Uffd::new_local() else {
        crate::testing::skip("shared_anonymous_memory_is_tracked_too", "no userfaultfd");
        return;
    };
    uffd.api(TRACKING_FEATURES).unwrap();
    let len = 4 * PAGE as usize;
    let p = map_anon(len, libc::MAP_SHARED);
    let base = p as u64;
    // SAFETY: page 0 of the mapping made above: present before tracking.
    unsafe { std::ptr::write_volatile(base as *mut u8, 1) };
    expect_written(uffd, base, len, [0, 2]);
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(p, len) };
}

#[test]
fn a_private_file_mapping_is_tracked() {
    let Ok(uffd) = Uffd::new_local() else {
        crate::testing::skip("a_private_file_mapping_is_tracked", "no userfaultfd");
        return;
    };
    uffd.api(TRACKING_FEATURES).unwrap();
    let path = std::env::temp_dir().join(format!("crust-uffd-test-{}", std::process::id()));
    std::fs::write(&path, vec![5u8; 4 * PAGE as usize]).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let len = 4 * PAGE as usize;
    // SAFETY: a fresh private mapping of a file opened read-only (writes
    // go to private copies), only this test uses it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let base = p as u64;
    // SAFETY: page 1 of the mapping made above, read: a file page mapped.
    let first = unsafe { std::ptr::read_volatile((base + PAGE) as *const u8) };
    assert_eq!(first, 5);
    expect_written(uffd, base, len, [1, 3]);
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(p, len) };
}

#[test]
fn a_full_buffer_stops_the_walk_before_what_it_did_not_report() {
    let Ok(uffd) = Uffd::new_local() else {
        crate::testing::skip("a_full_buffer_stops_the_walk", "no userfaultfd");
        return;
    };
    uffd.api(TRACKING_FEATURES).unwrap();
    let len = 16 * PAGE as usize;
    let p = map_anon(len, libc::MAP_PRIVATE);
    let (base, end) = (p as u64, p as u64 + len as u64);
    uffd.register_wp(base, len as u64).unwrap();
    uffd.write_protect(base, len as u64, true).unwrap();
    for page in [3, 7, 12] {
        // SAFETY: a page of the mapping made above.
        unsafe { std::ptr::write_volatile((base + page * PAGE) as *mut u8, 1) };
    }
    let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
    // Room for one region a call: three calls, each resuming where the
    // previous one stopped, find the three pages.
    let mut out = [PageRegion::default(); 1];
    let mut at = base;
    let mut found = vec![];
    while at < end {
        let (n, stop) = pagemap_scan_written(&pm, at, end, &mut out).unwrap();
        found.extend(
            out[..n]
                .iter()
                .map(|r| ((r.start - base) / PAGE, (r.end - base) / PAGE)),
        );
        assert!(stop > at);
        at = stop;
    }
    assert_eq!(found, vec![(3, 4), (7, 8), (12, 13)]);
    assert_eq!(pagemap_scan_written(&pm, base, end, &mut out).unwrap().0, 0);
    drop(uffd);
    // SAFETY: unmaps the mapping made above.
    unsafe { libc::munmap(p, len) };
}

/// Why a tracker protects its ranges whole: a part of a registered range
/// left unprotected (here every page but page 0, most of it without page
/// tables) is reported written by the first scan, which then protects it,
/// filling its page tables with markers. Only later writes are reported
/// after that, first touches included.
/// An 8 MiB private anonymous mapping of this process, tracked by a local
/// userfaultfd in asynchronous write-protect mode (registered, nothing
/// protected yet). None: no userfaultfd here (the test `name` skipped).
struct Local8M {
    uffd: Uffd,
    p: *mut libc::c_void,
    base: u64,
    end: u64,
    pm: std::fs::File,
}

impl Local8M {
    const LEN: usize = 8 << 20;

    fn new(name: &str) -> Option<Local8M> {
        let Ok(uffd) = Uffd::new_local() else {
            crate::testing::skip(name, "no userfaultfd");
            return None;
        };
        uffd.api(TRACKING_FEATURES).unwrap();
        let p = map_anon(Self::LEN, libc::MAP_PRIVATE);
        let base = p as u64;
        let pm = std::fs::File::open("/proc/self/pagemap").unwrap();
        Some(Local8M {
            uffd,
            p,
            base,
            end: base + Self::LEN as u64,
            pm,
        })
    }

    /// Register and protect the whole mapping: nothing is written yet.
    fn protect_all(&self) {
        self.uffd.register_wp(self.base, Self::LEN as u64).unwrap();
        self.uffd
            .write_protect(self.base, Self::LEN as u64, true)
            .unwrap();
        assert_eq!(self.scan(PAGE), []);
    }

    fn write(&self, at: u64) {
        // SAFETY: a byte of the mapping this fixture made (callers pass
        // addresses inside [base, end)).
        unsafe { std::ptr::write_volatile(at as *mut u8, 1) };
    }

    /// The written regions (protected again), as offsets from `base`
    /// divided by `unit`.
    fn scan(&self, unit: u64) -> Vec<(u64, u64)> {
        let mut out = [PageRegion::default(); 8];
        let (n, _) = pagemap_scan_written(&self.pm, self.base, self.end, &mut out).unwrap();
        (out[..n].iter())
            .map(|r| ((r.start - self.base) / unit, (r.end - self.base) / unit))
            .collect()
    }
}

impl Drop for Local8M {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping this fixture made; nothing refers to
        // it any more.
        unsafe { libc::munmap(self.p, Self::LEN) };
    }
}

#[test]
fn an_unprotected_part_of_a_registered_range_counts_as_written_once() {
    let Some(m) = Local8M::new("an_unprotected_part_of_a_registered_range") else {
        return;
    };
    m.write(m.base);
    m.uffd.register_wp(m.base, Local8M::LEN as u64).unwrap();
    m.uffd.write_protect(m.base, PAGE, true).unwrap();
    assert_eq!(m.scan(PAGE), [(1, Local8M::LEN as u64 / PAGE)]);
    // Page 1536, never touched.
    m.write(m.base + 1536 * PAGE);
    assert_eq!(m.scan(PAGE), [(1536, 1537)]);
    assert_eq!(m.scan(PAGE), []);
}

/// What incremental dumps rely on (`Pages::since_by_ranges` in the
/// engine): a protected page that is dropped (`MADV_DONTNEED`: one page,
/// or a whole page table's worth, whose table the kernel may free) counts
/// as written, so that a dump never leaves it to the parent set; a
/// protected page never touched and then read in is not written.
#[test]
fn a_dropped_page_counts_as_written() {
    let Some(m) = Local8M::new("a_dropped_page_counts_as_written") else {
        return;
    };
    // The 2 MiB-aligned 2 MiB after the first 2 MiB.
    let huge = 2u64 << 20;
    let table = (m.base + huge).next_multiple_of(huge);
    // Every page written but the last 16, never touched.
    for a in (m.base..m.end - 16 * PAGE).step_by(PAGE as usize) {
        m.write(a);
    }
    m.protect_all();
    let dontneed = |at: u64, n: u64| {
        // SAFETY: drops pages of the fixture's mapping.
        let r = unsafe { libc::madvise(at as *mut libc::c_void, n as usize, libc::MADV_DONTNEED) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
    };
    dontneed(m.base + 3 * PAGE, PAGE);
    dontneed(table, huge);
    // SAFETY: reads a page never touched (the last one of the mapping).
    let _ = unsafe { std::ptr::read_volatile((m.end - PAGE) as *const u8) };
    let t = table - m.base;
    assert_eq!(m.scan(1), [(3 * PAGE, 4 * PAGE), (t, t + huge)]);
    assert_eq!(m.scan(1), []);
}

/// A swap file of a test's own, on (under the build's target directory:
/// a filesystem that takes swap files, unlike tmpfs); off and removed when
/// dropped.
struct SwapFile(std::ffi::CString);

impl SwapFile {
    /// None: it cannot be made here (the test skipped, or failed in CI).
    fn on(test: &str) -> Option<SwapFile> {
        if !crate::testing::require_root(test) {
            return None;
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target");
        let path = format!("{dir}/swaptest-{}", std::process::id());
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| {
                // SAFETY: fallocate on a file this test just created; a
                // swap file must have no holes.
                let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, 64 << 20) };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut perm = f.metadata()?.permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
                f.set_permissions(perm)
            })
            .and_then(|()| {
                let st = std::process::Command::new("mkswap")
                    .arg("-q")
                    .arg(&path)
                    .status()?;
                st.success()
                    .then_some(())
                    .ok_or_else(|| io::Error::other(format!("mkswap: {st}")))
            });
        let c = std::ffi::CString::new(path.clone()).unwrap();
        let on = made.and_then(|()| {
            // SAFETY: swapon of the file made above; the path is a valid C
            // string that outlives the call.
            let r = unsafe { libc::swapon(c.as_ptr(), 0) };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
        match on {
            Ok(()) => Some(SwapFile(c)),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                crate::testing::skip(test, &format!("no swap file at {path}: {e}"));
                None
            }
        }
    }
}

impl Drop for SwapFile {
    fn drop(&mut self) {
        // SAFETY: swapoff of the file `on` turned on; a valid C string.
        unsafe { libc::swapoff(self.0.as_ptr()) };
        if let Ok(p) = self.0.to_str() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Swapped-out pages keep what tracking knows of them: a page written
/// since the protection and then swapped out (`MADV_PAGEOUT`) is
/// reported written, the ones not written are not (e2e `predump-swap`
/// and `snapshot-swap` check chains and snapshots of swapped memory).
#[test]
fn a_swapped_page_keeps_its_written_state() {
    let test = "a_swapped_page_keeps_its_written_state";
    let swap_on = std::fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1);
    let _swap = match swap_on {
        true => None,
        false => match SwapFile::on(test) {
            Some(s) => Some(s),
            None => return,
        },
    };
    let Some(m) = Local8M::new(test) else {
        return;
    };
    for a in (m.base..m.end).step_by(PAGE as usize) {
        m.write(a);
    }
    m.protect_all();
    m.write(m.base + 5 * PAGE);
    m.write(m.base + 700 * PAGE);
    // SAFETY: asks the kernel to swap out the fixture's mapping.
    let r = unsafe { libc::madvise(m.p, Local8M::LEN, libc::MADV_PAGEOUT) };
    assert_eq!(r, 0, "{}", io::Error::last_os_error());
    let swapped_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmSwap:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    assert!(
        swapped_kb >= 4096,
        "MADV_PAGEOUT swapped out {swapped_kb} kB only"
    );
    assert_eq!(m.scan(PAGE), [(5, 6), (700, 701)]);
    assert_eq!(m.scan(PAGE), []);
}

/// Guard regions under tracking: `MADV_GUARD_INSTALL` over protected
/// pages (written or not, present or never touched) and
/// `MADV_GUARD_REMOVE` after it make those pages count as written.
#[test]
fn guard_regions_count_as_written() {
    const INSTALL: libc::c_int = 102;
    const REMOVE: libc::c_int = 103;
    let Some(m) = Local8M::new("guard_regions_count_as_written") else {
        return;
    };
    for a in (m.base..m.base + 64 * PAGE).step_by(PAGE as usize) {
        m.write(a);
    }
    m.protect_all();
    let advise = |page: u64, n: u64, advice| {
        // SAFETY: advice on pages of the fixture's mapping.
        let r = unsafe {
            libc::madvise(
                (m.base + page * PAGE) as *mut libc::c_void,
                (n * PAGE) as usize,
                advice,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        }
        r == 0
    };
    // Present pages 10-11, and never-touched pages 100-101.
    if !advise(10, 2, INSTALL) {
        eprintln!("guard_regions_count_as_written: no MADV_GUARD_INSTALL here: not run");
        return;
    }
    assert!(advise(100, 2, INSTALL));
    assert_eq!(m.scan(PAGE), [(10, 12), (100, 102)]);
    assert_eq!(m.scan(PAGE), []);
    assert!(advise(10, 1, REMOVE));
    assert_eq!(m.scan(PAGE), [(10, 11)]);
}
