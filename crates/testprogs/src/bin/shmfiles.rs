//! `shmfiles --name NAME`: the shared memory of ordinary programs.
//!
//! - A named memfd ("vmem") mapped twice, read-write and read-execute, its
//!   fd closed after mapping (what Erlang/OTP's JIT does).
//! - A POSIX shared memory object `/dev/shm/NAME` (shm_open), mapped shared,
//!   its fd closed; the file stays.
//!
//! After restore: both memfd mappings still show the same object (a write
//! through one is read through the other), the contents are back, maps
//! names the memfd as before; a write through the /dev/shm mapping is in
//! the file, and one to the file is in the mapping.

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::unix::fs::FileExt;

const LEN: usize = 64 * 1024;

fn map(fd: i32, prot: i32) -> *mut u8 {
    // SAFETY: a fresh shared mapping of an fd we own; checked below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), LEN, prot, libc::MAP_SHARED, fd, 0) };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

fn pattern(i: usize, salt: u8) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(salt)
}

fn main() {
    let args = start();
    crust_testprogs::install_term_handler();
    let name = args.opt("name").unwrap_or("crust-shmfiles").to_string();
    let shm_path = std::path::PathBuf::from(format!("/dev/shm/{name}"));
    // SAFETY: memfd_create with a static name.
    let mfd = unsafe { libc::memfd_create(c"vmem".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(mfd >= 0);
    // SAFETY: sizes our own memfd.
    assert_eq!(unsafe { libc::ftruncate(mfd, LEN as i64) }, 0);
    let rw = map(mfd, libc::PROT_READ | libc::PROT_WRITE);
    let rx = map(mfd, libc::PROT_READ | libc::PROT_EXEC);
    // SAFETY: closes our fd; the mappings keep the memfd.
    unsafe { libc::close(mfd) };
    // SAFETY: rw is LEN bytes, mapped read-write, ours.
    let rw_s = unsafe { std::slice::from_raw_parts_mut(rw, LEN) };
    // SAFETY: rx is LEN bytes, mapped readable, ours.
    let rx_s = unsafe { std::slice::from_raw_parts(rx, LEN) };
    for (i, b) in rw_s.iter_mut().enumerate() {
        *b = pattern(i, 7);
    }

    let cname = std::ffi::CString::new(format!("/{name}")).unwrap_or_default();
    // SAFETY: shm_open of a name we own.
    let sfd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600) };
    assert!(sfd >= 0, "shm_open: {}", std::io::Error::last_os_error());
    // SAFETY: sizes our own object.
    assert_eq!(unsafe { libc::ftruncate(sfd, LEN as i64) }, 0);
    let shm = map(sfd, libc::PROT_READ | libc::PROT_WRITE);
    // SAFETY: closes our fd; the mapping keeps the file.
    unsafe { libc::close(sfd) };
    // SAFETY: shm is LEN bytes, mapped read-write, ours.
    let shm_s = unsafe { std::slice::from_raw_parts_mut(shm, LEN) };
    for (i, b) in shm_s.iter_mut().enumerate() {
        *b = pattern(i, 3);
    }

    ready(&args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        for i in 0..LEN {
            ensure!(
                rx_s[i] == pattern(i, 7),
                "memfd byte {i} differs after restore"
            );
            ensure!(
                shm_s[i] == pattern(i, 3),
                "/dev/shm byte {i} differs after restore"
            );
        }
        rw_s[100] = 0xa5;
        ensure!(
            rx_s[100] == 0xa5,
            "the two memfd mappings are no longer one object"
        );
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        ensure!(
            maps.lines()
                .filter(|l| l.ends_with("/memfd:vmem (deleted)"))
                .count()
                == 2,
            "maps does not show the memfd twice:\n{maps}"
        );
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&shm_path)
            .map_err(|e| format!("open {}: {e}", shm_path.display()))?;
        shm_s[200] = 0x5a;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 200).map_err(|e| e.to_string())?;
        ensure!(
            b[0] == 0x5a,
            "a write to the /dev/shm mapping is not in the file"
        );
        f.write_all_at(&[0x3c], 300).map_err(|e| e.to_string())?;
        ensure!(
            shm_s[300] == 0x3c,
            "a write to the file is not in the mapping"
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&shm_path);
    finish(&args, verdict);
}
