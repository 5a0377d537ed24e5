//! `delmap --dir DIR`: a file mapped private and shared, then deleted and
//! its fd closed: only the mappings hold it. After restore both mappings
//! show its content (the private one with its own change), maps names the
//! deleted file, and the shared mapping is still the file's pages: a write
//! through it is read back through /proc/self/map_files.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::unix::fs::FileExt;

const LEN: usize = 64 * 1024;

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(13).wrapping_add(5)
}

fn map(fd: i32, flags: i32) -> *mut u8 {
    // SAFETY: a fresh mapping of an fd we own; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let path = args.path("dir").join("mapped.dat");
    let data: Vec<u8> = (0..LEN).map(pattern).collect();
    std::fs::write(&path, &data).expect("write the file");
    let cpath = crust_testprogs::cpath(&path);
    // SAFETY: open with a NUL-terminated path.
    let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0);
    let private = map(fd, libc::MAP_PRIVATE);
    let shared = map(fd, libc::MAP_SHARED);
    // SAFETY: closes our fd; the mappings keep the file.
    unsafe { libc::close(fd) };
    std::fs::remove_file(&path).expect("unlink");
    // SAFETY: both are LEN bytes, mapped read-write, ours.
    let (p, s) = unsafe {
        (
            std::slice::from_raw_parts_mut(private, LEN),
            std::slice::from_raw_parts_mut(shared, LEN),
        )
    };
    p[10] = 0xee;
    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        for i in 0..LEN {
            let want = if i == 10 { 0xee } else { pattern(i) };
            ensure!(
                p[i] == want,
                "private byte {i} is {:#x}, not {want:#x}",
                p[i]
            );
            ensure!(s[i] == pattern(i), "shared byte {i} differs");
        }
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let line = format!("{} (deleted)", path.display());
        ensure!(
            maps.lines().filter(|l| l.ends_with(&line)).count() == 2,
            "maps does not name {line} twice:\n{maps}"
        );
        s[100] = 0x42;
        let mf = format!(
            "/proc/self/map_files/{:x}-{:x}",
            shared as usize,
            shared as usize + LEN
        );
        let f = std::fs::File::open(&mf).map_err(|e| format!("open {mf}: {e}"))?;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 100).map_err(|e| e.to_string())?;
        ensure!(b[0] == 0x42, "the shared mapping is not the file's pages");
        Ok(())
    })();
    finish(&args, verdict);
}
