//! `sysvshm`: a System V shared memory segment (IPC_PRIVATE, 64 KiB)
//! attached and filled with a pattern; it is marked for removal at once, so
//! it goes away with the process. After SIGTERM the pattern must be intact
//! and the segment still attached at the same address.
//!
//! It lives in the host's IPC namespace and only this process uses it:
//! crust dumps it, it goes with the process, and the restore makes it
//! again (and marks it for removal again).
//!
//! With `--huge 1` the segment is made with SHM_HUGETLB (huge pages of the
//! default size), and must still be hugetlb memory after the restore.

use crust_testprogs::{die, ensure, finish, ready, start, term_requested};

const SIZE: usize = 64 << 10;

fn main() {
    let args = start();
    let huge = args.num("huge", 0) == 1;
    let flag = if huge { libc::SHM_HUGETLB } else { 0 };
    // SAFETY: shmget/shmat/shmctl take integers and a null address hint;
    // the segment is SIZE bytes and stays attached for the program's life.
    let base = unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, SIZE, libc::IPC_CREAT | 0o600 | flag);
        if id < 0 {
            die("shmget");
        }
        let p = libc::shmat(id, std::ptr::null(), 0);
        if p as isize == -1 {
            die("shmat");
        }
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        p as *mut u8
    };
    // SAFETY: `base` points to SIZE bytes of attached, writable memory.
    let mem = unsafe { std::slice::from_raw_parts_mut(base, SIZE) };
    for (i, b) in mem.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    ready(&args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    let verdict = (|| -> Result<(), String> {
        let bad = mem
            .iter()
            .enumerate()
            .find(|(i, b)| **b != (*i % 251) as u8);
        ensure!(bad.is_none(), "segment byte {:?} changed", bad);
        let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        let at = format!("{:x}-", base as usize);
        ensure!(
            maps.lines()
                .any(|l| l.starts_with(&at) && l.contains("/SYSV")),
            "the segment is no longer mapped at {at}"
        );
        if huge {
            let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(|e| e.to_string())?;
            let block = smaps
                .split_inclusive('\n')
                .skip_while(|l| !l.starts_with(&at))
                .find(|l| l.starts_with("VmFlags:"))
                .unwrap_or("");
            ensure!(
                block.split_whitespace().any(|w| w == "ht"),
                "the segment is no longer hugetlb memory: {block:?}"
            );
        }
        Ok(())
    })();
    finish(&args, verdict);
}
