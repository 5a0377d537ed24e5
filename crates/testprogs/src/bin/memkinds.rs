//! `memkinds`: VMA flags and shared memory objects that zdtm checks.
//!
//! - Locked memory (mlock: VmFlags "lo"), MADV_SEQUENTIAL ("sr") and
//!   MADV_RANDOM ("rr") regions, and a MAP_DROPPABLE one ("dp", where the
//!   kernel has it): the same flags after restore.
//! - Shared anonymous memory also mapped privately through
//!   /proc/self/map_files: the private page written before the dump keeps
//!   its value, an untouched one shows what is written into the object after
//!   restore.
//! - A memfd open as an fd and mapped shared and private: a write through
//!   the shared mapping is read back through the fd; its content is a
//!   "#!/bin/true" script that execveat(fd, "", AT_EMPTY_PATH) runs (a
//!   restore that reopens it for writing makes that fail with ETXTBSY).
//! - An empty memfd (nothing stored for it).
//! - A child that moved its copy of a shared anonymous region (mremap):
//!   it goes on counting in it, and the parent sees the count move.
//! - Anonymous hugetlb memory, private and shared, where the machine has
//!   huge pages: values and the "ht" flag kept.
//! - A private mapping of a deleted file whose first pages were written
//!   before the fork: parent and child still share those copies (same page
//!   frames, read from /proc/PID/pagemap: run as root).

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

const PAGE: usize = 4096;
const MAP_DROPPABLE: i32 = 0x08;
const SCRIPT: &[u8] = b"#!/bin/true\n";

fn mmap(len: usize, prot: i32, flags: i32, fd: i32, off: i64) -> Option<*mut u8> {
    // SAFETY: a new mapping at a kernel-chosen address overlaps nothing we own.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, off) };
    (p != libc::MAP_FAILED).then_some(p as *mut u8)
}

fn anon(len: usize, flags: i32) -> *mut u8 {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    mmap(len, rw, flags | libc::MAP_ANONYMOUS, -1, 0).unwrap_or_else(|| die("mmap"))
}

fn read_at(p: *const u8, off: usize) -> u64 {
    // SAFETY: callers pass an 8-aligned offset inside one of our mappings.
    unsafe { std::ptr::read_volatile(p.add(off) as *const u64) }
}

fn write_at(p: *mut u8, off: usize, v: u64) {
    // SAFETY: callers pass an 8-aligned offset inside one of our writable
    // mappings.
    unsafe { std::ptr::write_volatile(p.add(off) as *mut u64, v) }
}

/// The VmFlags of the VMA that holds `addr`, from /proc/self/smaps.
fn vm_flags(addr: *const u8) -> Result<Vec<String>, String> {
    let a = addr as u64;
    let text = std::fs::read_to_string("/proc/self/smaps").map_err(|e| format!("smaps: {e}"))?;
    let mut inside = false;
    for line in text.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((s, e)) = range.split_once('-') {
                if let (Ok(s), Ok(e)) = (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16)) {
                    inside = s <= a && a < e;
                    continue;
                }
            }
        }
        if inside {
            if let Some(f) = line.strip_prefix("VmFlags:") {
                return Ok(f.split_whitespace().map(String::from).collect());
            }
        }
    }
    Err(format!("no VmFlags for {a:#x}"))
}

fn has_flag(addr: *const u8, flag: &str) -> Result<bool, String> {
    Ok(vm_flags(addr)?.iter().any(|f| f == flag))
}

fn memfd(name: &str) -> OwnedFd {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: `c` is NUL-terminated and lives across the call.
    let fd = unsafe { libc::memfd_create(c.as_ptr(), 0) };
    if fd < 0 {
        die("memfd_create");
    }
    // SAFETY: a new fd nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// execveat(fd, "", AT_EMPTY_PATH) in a child: its exit status.
fn exec_fd(fd: i32) -> Result<(), String> {
    // SAFETY: the child only makes async-signal-safe calls before exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork".into());
    }
    if pid == 0 {
        let argv: [*const libc::c_char; 2] = [c"true".as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // SAFETY: NUL-terminated argument arrays that live across the call.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(*libc::__errno_location());
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(
        status == 0,
        "execveat of the memfd: child exit status {:#x} (errno {})",
        status,
        status >> 8
    );
    Ok(())
}

/// The default huge page size on x86_64 (2 MiB).
const HUGE: usize = 2 << 20;

/// Pages of the private file mapping (the first half written).
const COW_PAGES: usize = 8;

/// The page frame at `addr` of process `pid` (0 if not present).
fn pfn(pid: i32, addr: u64) -> Result<u64, String> {
    let f = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .map_err(|e| format!("open pagemap of {pid}: {e}"))?;
    let mut b = [0u8; 8];
    f.read_at(&mut b, addr / PAGE as u64 * 8)
        .map_err(|e| format!("read pagemap of {pid}: {e}"))?;
    let e = u64::from_ne_bytes(b);
    Ok(if e >> 63 == 1 { e & ((1 << 55) - 1) } else { 0 })
}

fn main() {
    let args = start();
    let rw = libc::PROT_READ | libc::PROT_WRITE;

    // VMA flags.
    let locked = anon(4 * PAGE, libc::MAP_PRIVATE);
    write_at(locked, 0, 0x10c4);
    // SAFETY: our own mapping.
    if unsafe { libc::mlock(locked as *const libc::c_void, 4 * PAGE) } != 0 {
        die("mlock");
    }
    let seq = anon(4 * PAGE, libc::MAP_PRIVATE);
    let rnd = anon(4 * PAGE, libc::MAP_PRIVATE);
    for (p, adv) in [(seq, libc::MADV_SEQUENTIAL), (rnd, libc::MADV_RANDOM)] {
        // SAFETY: our own mappings.
        if unsafe { libc::madvise(p as *mut libc::c_void, 4 * PAGE, adv) } != 0 {
            die("madvise");
        }
    }
    let droppable = mmap(2 * PAGE, rw, MAP_DROPPABLE | libc::MAP_ANONYMOUS, -1, 0);

    // Shared anonymous memory mapped privately too.
    let shared = anon(4 * PAGE, libc::MAP_SHARED);
    for page in 0..4 {
        write_at(shared, page * PAGE, 100 + page as u64);
    }
    let link = format!(
        "/proc/self/map_files/{:x}-{:x}",
        shared as u64,
        shared as u64 + 4 * PAGE as u64
    );
    let obj = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .unwrap_or_else(|_| die("open map_files"));
    let private = mmap(4 * PAGE, rw, libc::MAP_PRIVATE, obj.as_raw_fd(), 0)
        .unwrap_or_else(|| die("mmap private"));
    drop(obj);
    write_at(private, PAGE, 0x9717);

    // A memfd: fd, shared and private mappings, a script inside.
    let mfd = memfd("memkinds");
    let mf = std::fs::File::from(mfd);
    mf.set_len(PAGE as u64).unwrap_or_else(|_| die("ftruncate"));
    mf.write_all_at(SCRIPT, 0)
        .unwrap_or_else(|_| die("write memfd"));
    let mshared = mmap(PAGE, rw, libc::MAP_SHARED, mf.as_raw_fd(), 0)
        .unwrap_or_else(|| die("mmap memfd shared"));
    let mprivate = mmap(PAGE, libc::PROT_READ, libc::MAP_PRIVATE, mf.as_raw_fd(), 0)
        .unwrap_or_else(|| die("mmap memfd private"));
    let empty = memfd("memkinds-empty");

    // A private mapping of a (deleted) file, written before the fork: the
    // child shares the written copies with the parent, copy-on-write.
    let path = std::env::temp_dir().join(format!("memkinds-{}", std::process::id()));
    let file = std::fs::File::create_new(&path).unwrap_or_else(|_| die("create file"));
    file.set_len(COW_PAGES as u64 * PAGE as u64)
        .unwrap_or_else(|_| die("ftruncate file"));
    let _ = std::fs::remove_file(&path);
    let fpriv = mmap(COW_PAGES * PAGE, rw, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
        .unwrap_or_else(|| die("mmap file private"));
    drop(file);
    for page in 0..COW_PAGES / 2 {
        write_at(fpriv, page * PAGE, 0xc0 + page as u64);
    }

    // Anonymous hugetlb memory, private and shared, where the machine has
    // huge pages (vm.nr_hugepages): checked only when both maps work.
    let flags = libc::MAP_ANONYMOUS | libc::MAP_HUGETLB;
    let hpriv = mmap(HUGE, rw, flags | libc::MAP_PRIVATE, -1, 0);
    let hshared = mmap(HUGE, rw, flags | libc::MAP_SHARED, -1, 0);
    let huge = hpriv.zip(hshared);
    if let Some((p, q)) = huge {
        write_at(p, 8, 0x4a9e);
        write_at(q, HUGE - 8, 0x5a9e);
    }

    // A child that moves its copy of a shared region and counts in it.
    let counted = anon(2 * PAGE, libc::MAP_SHARED);
    // SAFETY: the child only touches memory and sleeps.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        let to = anon(2 * PAGE, libc::MAP_PRIVATE);
        // SAFETY: moving our own mapping onto another of ours.
        let moved = unsafe {
            libc::mremap(
                counted as *mut libc::c_void,
                2 * PAGE,
                2 * PAGE,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                to as *mut libc::c_void,
            )
        };
        if moved == libc::MAP_FAILED {
            // SAFETY: exiting the child.
            unsafe { libc::_exit(2) };
        }
        let mut n = 0u64;
        loop {
            n += 1;
            write_at(moved as *mut u8, PAGE, n);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    let before: Vec<Vec<String>> = [locked, seq, rnd]
        .iter()
        .map(|p| vm_flags(*p).unwrap_or_default())
        .collect();
    let dp_before = droppable.map(|p| has_flag(p, "dp").unwrap_or(false));
    let exec_before = exec_fd(mf.as_raw_fd());
    ready(&args);
    wait_for_term(50, || {});

    let verdict = (|| -> Result<(), String> {
        exec_before.map_err(|e| format!("before the dump: {e}"))?;
        for (p, (flag, old)) in [locked, seq, rnd].iter().zip([
            ("lo", &before[0]),
            ("sr", &before[1]),
            ("rr", &before[2]),
        ]) {
            ensure!(
                old.iter().any(|f| f == flag),
                "{flag} was not set before the dump: {old:?}"
            );
            let now = vm_flags(*p)?;
            ensure!(now == *old, "VmFlags {old:?} became {now:?}");
        }
        ensure!(read_at(locked, 0) == 0x10c4, "locked memory lost its value");
        if let (Some(p), Some(true)) = (droppable, dp_before) {
            ensure!(has_flag(p, "dp")?, "the droppable mapping lost dp");
        }

        ensure!(
            read_at(private, PAGE) == 0x9717,
            "the private copy lost its page"
        );
        ensure!(
            read_at(private, 0) == 100,
            "private page 0 does not show the object"
        );
        write_at(shared, 2 * PAGE, 0x5eed);
        ensure!(
            read_at(private, 2 * PAGE) == 0x5eed,
            "a write into the object does not show through the private mapping"
        );

        let head = read_at(mshared, 0).to_ne_bytes();
        ensure!(head[..8] == SCRIPT[..8], "memfd mapping lost the script");
        ensure!(
            read_at(mprivate, 0).to_ne_bytes() == head,
            "private memfd mapping differs"
        );
        write_at(mshared, 64, 0xfeed);
        let mut b = [0u8; 8];
        mf.read_at(&mut b, 64)
            .map_err(|e| format!("pread memfd: {e}"))?;
        ensure!(
            u64::from_ne_bytes(b) == 0xfeed,
            "a write through the memfd mapping is not in the memfd fd's file"
        );
        write_at(mshared, 64, 0);
        exec_fd(mf.as_raw_fd())?;
        let len = std::fs::File::from(empty)
            .metadata()
            .map_err(|e| format!("fstat empty memfd: {e}"))?
            .len();
        ensure!(len == 0, "empty memfd has {len} bytes");

        for page in 0..COW_PAGES / 2 {
            let a = fpriv as u64 + (page * PAGE) as u64;
            ensure!(
                read_at(fpriv, page * PAGE) == 0xc0 + page as u64,
                "file copy {page} lost"
            );
            let (mine, theirs) = (pfn(std::process::id() as i32, a)?, pfn(child, a)?);
            ensure!(
                mine != 0 && mine == theirs,
                "written page {page} of the private file mapping is not shared with the child ({mine:#x}, {theirs:#x})"
            );
        }

        if let Some((p, q)) = huge {
            ensure!(
                read_at(p, 8) == 0x4a9e,
                "private hugetlb memory lost its value"
            );
            ensure!(
                read_at(q, HUGE - 8) == 0x5a9e,
                "shared hugetlb memory lost its value"
            );
            ensure!(
                has_flag(p, "ht")? && has_flag(q, "ht")?,
                "hugetlb memory lost ht"
            );
        }

        let c0 = read_at(counted, PAGE);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let c1 = read_at(counted, PAGE);
        ensure!(
            c1 > c0,
            "the child's count does not move in the parent's mapping ({c0} then {c1})"
        );
        Ok(())
    })();
    // SAFETY: our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, verdict);
}
