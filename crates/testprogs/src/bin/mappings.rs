//! `mappings --dir D`: a MAP_PRIVATE file mapping modified after mapping (the file
//! stays unchanged), a MAP_SHARED file mapping written (the file shows it), a
//! PROT_NONE region, an anonymous RW region whose middle was made read-only (three
//! VMAs), and the brk heap grown by 8 MiB holding a pattern. The fds of the files
//! are closed once mapped.

use std::path::Path;

use crust_testprogs::{cpath, die, ensure, finish, ready, self_maps, start, wait_for_term};

const PAGE: usize = 4096;
const FILE_PAGES: usize = 4;
const ANON_PART: usize = 16 * PAGE;
const BRK_GROW: usize = 8 << 20;

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(salt) ^ (i >> 12) as u8)
        .collect()
}

fn map(len: usize, prot: i32, flags: i32, fd: i32) -> *mut u8 {
    // SAFETY: a new mapping at a kernel-chosen address overlaps nothing we own.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        die("mmap");
    }
    p as *mut u8
}

fn map_file(path: &Path, shared: bool) -> *mut u8 {
    let c = cpath(path);
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR) };
    if fd < 0 {
        die(&format!("open {}", path.display()));
    }
    let flags = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    let p = map(
        FILE_PAGES * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        flags,
        fd,
    );
    // SAFETY: closing our own fd; the mapping keeps the file.
    unsafe { libc::close(fd) };
    p
}

/// A view of `len` bytes at `p`.
///
/// # Safety
/// `p..p+len` is a readable mapping that stays mapped while the slice is used.
unsafe fn bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(p, len) }
}

fn write_at(p: *mut u8, data: &[u8]) {
    // SAFETY: every caller passes a pointer inside one of our writable mappings
    // with room for data.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
}

fn vma(
    maps: &[(u64, u64, String, String)],
    addr: u64,
) -> Result<(u64, u64, String, String), String> {
    maps.iter()
        .find(|(s, e, _, _)| *s <= addr && addr < *e)
        .cloned()
        .ok_or_else(|| format!("no mapping contains {addr:#x}"))
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let priv_path = dir.join("private.dat");
    let shared_path = dir.join("shared.dat");
    let flen = FILE_PAGES * PAGE;
    let priv_data = pattern(flen, 11);
    let shared_data = pattern(flen, 77);
    if let Err(e) = std::fs::write(&priv_path, &priv_data)
        .and_then(|_| std::fs::write(&shared_path, &shared_data))
    {
        eprintln!("cannot create files in {}: {e}", dir.display());
        std::process::exit(3);
    }

    let pmap = map_file(&priv_path, false);
    write_at(pmap.wrapping_add(PAGE + 100), b"PRIVATE-COW-PAGE");
    let smap = map_file(&shared_path, true);
    write_at(smap.wrapping_add(2 * PAGE + 8), b"SHARED-WRITE");

    let none = map(
        8 * PAGE,
        libc::PROT_NONE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    let anon = map(
        3 * ANON_PART,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
    );
    let anon_data = pattern(3 * ANON_PART, 5);
    write_at(anon, &anon_data);
    // SAFETY: the middle third of our own anonymous mapping.
    if unsafe {
        libc::mprotect(
            anon.wrapping_add(ANON_PART) as *mut libc::c_void,
            ANON_PART,
            libc::PROT_READ,
        )
    } != 0
    {
        die("mprotect");
    }

    // SAFETY: sbrk grows the data segment; the new bytes belong to us only
    // (malloc never hands out memory it did not get from its own sbrk calls).
    let heap = unsafe { libc::sbrk(BRK_GROW as libc::intptr_t) };
    if heap as isize == -1 {
        die("sbrk");
    }
    let heap = heap as *mut u8;
    let heap_data = pattern(BRK_GROW, 99);
    write_at(heap, &heap_data);
    let heap_end = heap as u64 + BRK_GROW as u64;

    ready(&args);
    wait_for_term(20, || {});

    let verdict = (|| {
        // Private file mapping: modified in memory, not on disk.
        // SAFETY: our mapping of flen bytes.
        let pm = unsafe { bytes(pmap, flen) };
        let mut want = priv_data.clone();
        want[PAGE + 100..PAGE + 116].copy_from_slice(b"PRIVATE-COW-PAGE");
        ensure!(
            pm == want.as_slice(),
            "private file mapping content differs"
        );
        let disk = std::fs::read(&priv_path).map_err(|e| format!("read private.dat: {e}"))?;
        ensure!(disk == priv_data, "private.dat changed on disk");

        // Shared file mapping: the earlier write is in the file; a new one reaches it too.
        // SAFETY: our mapping of flen bytes.
        let sm = unsafe { bytes(smap, flen) };
        let mut want = shared_data.clone();
        want[2 * PAGE + 8..2 * PAGE + 20].copy_from_slice(b"SHARED-WRITE");
        ensure!(sm == want.as_slice(), "shared file mapping content differs");
        let disk = std::fs::read(&shared_path).map_err(|e| format!("read shared.dat: {e}"))?;
        ensure!(
            disk == want,
            "shared.dat does not hold the write made before the checkpoint"
        );
        write_at(smap.wrapping_add(3 * PAGE + 1), b"AFTER");
        let disk = std::fs::read(&shared_path).map_err(|e| format!("read shared.dat: {e}"))?;
        ensure!(
            &disk[3 * PAGE + 1..3 * PAGE + 6] == b"AFTER",
            "a write to the shared mapping after restore did not reach shared.dat"
        );

        // Anonymous region contents (all three parts) and the brk heap.
        // SAFETY: our readable anonymous mapping and our sbrk'd range.
        let an = unsafe { bytes(anon, 3 * ANON_PART) };
        ensure!(
            an == anon_data.as_slice(),
            "anonymous region content differs"
        );
        // SAFETY: as above.
        let hp = unsafe { bytes(heap, BRK_GROW) };
        ensure!(hp == heap_data.as_slice(), "brk heap content differs");
        // SAFETY: sbrk(0) only queries.
        let brk_now = unsafe { libc::sbrk(0) } as u64;
        ensure!(
            brk_now >= heap_end,
            "program break {brk_now:#x} below {heap_end:#x}"
        );

        let maps = self_maps()?;
        let (_, _, perms, name) = vma(&maps, pmap as u64)?;
        ensure!(
            perms == "rw-p" && name.ends_with("/private.dat"),
            "private mapping is {perms} {name}"
        );
        let (_, _, perms, name) = vma(&maps, smap as u64)?;
        ensure!(
            perms == "rw-s" && name.ends_with("/shared.dat"),
            "shared mapping is {perms} {name}"
        );
        let (_, _, perms, _) = vma(&maps, none as u64)?;
        ensure!(perms == "---p", "PROT_NONE region is {perms}");
        let a = anon as u64;
        let p = ANON_PART as u64;
        let first = vma(&maps, a)?;
        let mid = vma(&maps, a + p)?;
        let last = vma(&maps, a + 2 * p)?;
        ensure!(
            first.2 == "rw-p" && first.1 == a + p,
            "first part of the anon region: {first:x?}"
        );
        ensure!(
            mid.2 == "r--p" && mid.0 == a + p && mid.1 == a + 2 * p,
            "middle part of the anon region: {mid:x?}"
        );
        ensure!(
            last.2 == "rw-p" && last.0 == a + 2 * p,
            "last part of the anon region: {last:x?}"
        );
        let h = vma(&maps, heap as u64)?;
        ensure!(
            h.3 == "[heap]" && h.2 == "rw-p" && h.1 >= heap_end,
            "brk heap mapping: {h:x?}"
        );
        Ok(())
    })();
    finish(&args, verdict)
}
