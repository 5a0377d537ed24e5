//! `flocks`: file locks held across a dump and restore (`--file-locks`).
//!
//! Set-up in `--dir D` (files of 4096 bytes, never changed afterwards):
//! - fd 3 on D/a: flock(LOCK_EX);
//! - fd 4 on D/b: POSIX write lock on bytes 0-99, read lock on 200-EOF;
//! - fd 5 on D/c: OFD write lock on bytes 10-19;
//! - fd 6 on D/d: flock(LOCK_SH).
//!
//! With `--child 1` a child (forked after the set-up, sharing the
//! descriptions) also takes its own POSIX write lock on bytes 100-149 of
//! D/b through the inherited fd 4, and waits for SIGTERM too (the parent
//! forwards it and checks the child's exit status).
//!
//! After SIGTERM it checks that the kernel still lists every lock in its
//! fdinfo, that a new open file description is refused the flock and OFD
//! locks, and that another process (forked for the check) is refused the
//! POSIX locks (while a compatible read lock is granted).

use crust_testprogs::{cpath, die, ensure, finish, ready, start, term_requested};
use std::path::Path;

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn open_rw(path: &Path) -> i32 {
    let c = cpath(path);
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::open(c.as_ptr(), libc::O_RDWR) }
}

fn make_file(path: &Path, fd: i32) {
    let c = cpath(path);
    // SAFETY: `c` is a NUL-terminated path; open/dup2/close take integers.
    unsafe {
        let f = libc::open(
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        );
        if f < 0 {
            die("open");
        }
        let buf = [b'x'; 4096];
        if libc::write(f, buf.as_ptr() as *const libc::c_void, buf.len()) != 4096 {
            die("write");
        }
        if f != fd {
            if libc::dup2(f, fd) < 0 {
                die("dup2");
            }
            libc::close(f);
        }
    }
}

fn flk(ltype: i32, start: i64, len: i64) -> libc::flock {
    // SAFETY: struct flock is plain data; all zeroes is a valid value.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = ltype as i16;
    l.l_whence = libc::SEEK_SET as i16;
    l.l_start = start;
    l.l_len = len;
    l
}

fn setlk(fd: i32, cmd: i32, ltype: i32, start: i64, len: i64) -> i32 {
    let l = flk(ltype, start, len);
    // SAFETY: `l` is a valid struct flock for the duration of the call.
    unsafe { libc::fcntl(fd, cmd, &l) }
}

fn flock(fd: i32, op: i32) -> i32 {
    // SAFETY: flock takes integers.
    unsafe { libc::flock(fd, op) }
}

fn close(fd: i32) {
    // SAFETY: `fd` is an fd this program opened and no longer uses.
    unsafe {
        libc::close(fd);
    }
}

fn refused(e: i32) -> bool {
    e == libc::EAGAIN || e == libc::EACCES || e == libc::EWOULDBLOCK
}

/// Checks made by a second process: POSIX locks of the first are held.
fn other_process_checks(dir: &Path, owner: i32, child_lock: bool) -> Result<(), String> {
    let b = open_rw(&dir.join("b"));
    ensure!(b >= 0, "open b: {}", err());
    ensure!(
        setlk(b, libc::F_SETLK, libc::F_WRLCK, 50, 1) < 0 && refused(errno()),
        "another process got a write lock on byte 50 of b: {}",
        err()
    );
    ensure!(
        setlk(b, libc::F_SETLK, libc::F_RDLCK, 20, 1) < 0 && refused(errno()),
        "another process got a read lock on byte 20 of b (write-locked)"
    );
    ensure!(
        setlk(b, libc::F_SETLK, libc::F_WRLCK, 300, 1) < 0 && refused(errno()),
        "another process got a write lock on byte 300 of b (read-locked)"
    );
    ensure!(
        setlk(b, libc::F_SETLK, libc::F_RDLCK, 300, 1) == 0,
        "a read lock on byte 300 of b (read-locked) was refused: {}",
        err()
    );
    if !child_lock {
        ensure!(
            setlk(b, libc::F_SETLK, libc::F_WRLCK, 120, 1) == 0,
            "a write lock on byte 120 of b (free) was refused: {}",
            err()
        );
    }
    let mut l = flk(libc::F_WRLCK, 0, 1);
    // SAFETY: `l` is a valid struct flock, written by the kernel.
    let r = unsafe { libc::fcntl(b, libc::F_GETLK, &mut l) };
    ensure!(r == 0, "F_GETLK: {}", err());
    ensure!(
        l.l_type == libc::F_WRLCK as i16 && l.l_pid == owner && l.l_start == 0 && l.l_len == 100,
        "F_GETLK on byte 0 of b says type {} pid {} start {} len {} (expected a write lock 0+100 of {owner})",
        l.l_type,
        l.l_pid,
        l.l_start,
        l.l_len
    );
    close(b);
    Ok(())
}

fn run_in_child(dir: &Path, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    let note = dir.join("check-error");
    let _ = std::fs::remove_file(&note);
    // SAFETY: the child only runs the check and exits with _exit.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: {}", err());
    if pid == 0 {
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                let _ = std::fs::write(&note, e.as_bytes());
                1
            }
        };
        // SAFETY: leaves the forked child at once.
        unsafe { libc::_exit(code) };
    }
    let mut st = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    ensure!(r == pid, "waitpid: {}", err());
    ensure!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "the checking process failed (status {st:#x}): {}",
        std::fs::read_to_string(&note).unwrap_or_default()
    );
    Ok(())
}

fn fdinfo_has(fd: i32, what: &[&str]) -> Result<(), String> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(|e| format!("fdinfo {fd}: {e}"))?;
    let locks: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("lock:"))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect();
    for w in what {
        ensure!(
            locks
                .iter()
                .any(|l| l.starts_with(w.split(' ').next().unwrap_or(""))
                    && l.contains(&w[w.find(' ').unwrap_or(0)..])),
            "fd {fd}: no lock '{w}' in fdinfo (locks: {locks:?})"
        );
    }
    Ok(())
}

fn check(dir: &Path, child: Option<i32>) -> Result<(), String> {
    let me = std::process::id() as i32;
    fdinfo_has(3, &["FLOCK ADVISORY WRITE"])?;
    fdinfo_has(
        4,
        &[
            &format!("POSIX ADVISORY WRITE {me} "),
            &format!("POSIX ADVISORY READ {me} "),
        ],
    )?;
    fdinfo_has(5, &["OFDLCK ADVISORY WRITE -1 "])?;
    fdinfo_has(6, &["FLOCK ADVISORY READ"])?;
    // flock and OFD locks belong to the open file description: a new one,
    // even in this process, is refused.
    let a = open_rw(&dir.join("a"));
    ensure!(a >= 0, "open a: {}", err());
    ensure!(
        flock(a, libc::LOCK_SH | libc::LOCK_NB) < 0 && refused(errno()),
        "a new description of a got a shared flock (fd 3 holds LOCK_EX)"
    );
    close(a);
    let d = open_rw(&dir.join("d"));
    ensure!(d >= 0, "open d: {}", err());
    ensure!(
        flock(d, libc::LOCK_EX | libc::LOCK_NB) < 0 && refused(errno()),
        "a new description of d got an exclusive flock (fd 6 holds LOCK_SH)"
    );
    ensure!(
        flock(d, libc::LOCK_SH | libc::LOCK_NB) == 0,
        "a shared flock on d was refused: {}",
        err()
    );
    close(d);
    let c = open_rw(&dir.join("c"));
    ensure!(c >= 0, "open c: {}", err());
    ensure!(
        setlk(c, libc::F_OFD_SETLK, libc::F_WRLCK, 15, 1) < 0 && refused(errno()),
        "a new description of c got an OFD lock on byte 15"
    );
    ensure!(
        setlk(c, libc::F_OFD_SETLK, libc::F_WRLCK, 30, 1) == 0,
        "an OFD lock on byte 30 of c (free) was refused: {}",
        err()
    );
    close(c);
    let has_child = child.is_some();
    run_in_child(dir, || other_process_checks(dir, me, has_child))?;
    if let Some(k) = child {
        // The child's own lock is held by the child.
        let b = open_rw(&dir.join("b"));
        let mut l = flk(libc::F_WRLCK, 120, 1);
        // SAFETY: `l` is a valid struct flock, written by the kernel.
        let r = unsafe { libc::fcntl(b, libc::F_GETLK, &mut l) };
        close(b);
        ensure!(
            r == 0 && l.l_pid == k && l.l_type == libc::F_WRLCK as i16,
            "F_GETLK on byte 120 of b says type {} pid {} (expected the child {k}'s write lock)",
            l.l_type,
            l.l_pid
        );
        // SAFETY: signals and waits for our own child.
        unsafe {
            libc::kill(k, libc::SIGTERM);
            let mut st = 0;
            ensure!(libc::waitpid(k, &mut st, 0) == k, "waitpid: {}", err());
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "the child failed (status {st:#x})"
            );
        }
    }
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    make_file(&dir.join("a"), 3);
    make_file(&dir.join("b"), 4);
    make_file(&dir.join("c"), 5);
    make_file(&dir.join("d"), 6);
    if flock(3, libc::LOCK_EX) != 0 {
        die("flock a");
    }
    if setlk(4, libc::F_SETLK, libc::F_WRLCK, 0, 100) != 0 {
        die("lock b 0-99");
    }
    if setlk(4, libc::F_SETLK, libc::F_RDLCK, 200, 0) != 0 {
        die("lock b 200-EOF");
    }
    if setlk(5, libc::F_OFD_SETLK, libc::F_WRLCK, 10, 10) != 0 {
        die("OFD lock c");
    }
    if flock(6, libc::LOCK_SH) != 0 {
        die("flock d");
    }
    let mut child = None;
    if args.num("child", 0) == 1 {
        let (r, w) = {
            let p = crust_testprogs::make_pipe();
            (p[0], p[1])
        };
        // SAFETY: the child only uses async-signal-safe calls and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            die("fork");
        }
        if pid == 0 {
            crust_testprogs::install_term_handler();
            if setlk(4, libc::F_SETLK, libc::F_WRLCK, 100, 50) != 0 {
                // SAFETY: leaves the child.
                unsafe { libc::_exit(5) };
            }
            close(r);
            close(w);
            while !term_requested() {
                crust_testprogs::sleep_ms(20);
            }
            let me = std::process::id();
            let ok = std::fs::read_to_string("/proc/self/fdinfo/4")
                .map(|t| t.contains(&format!("POSIX  ADVISORY  WRITE {me} ")))
                .unwrap_or(false);
            // SAFETY: leaves the child.
            unsafe { libc::_exit(if ok { 0 } else { 6 }) };
        }
        close(w);
        // Wait for the child's lock: it closes the pipe once it holds it.
        let mut b = [0u8; 1];
        // SAFETY: reads at most one byte into `b`.
        unsafe { libc::read(r, b.as_mut_ptr() as *mut libc::c_void, 1) };
        close(r);
        child = Some(pid);
    }
    ready(&args);
    while !term_requested() {
        crust_testprogs::sleep_ms(20);
    }
    finish(&args, check(&dir, child));
}
