//! `dumpable`: a process of another uid (it drops root for nobody's,
//! 65534, first) with a child. After restore it must still be dumpable
//! (PR_GET_DUMPABLE = 1: a change of uid at restore resets it) and read
//! its child's /proc/PID/maps (which needs the child dumpable too).

use crust_testprogs::{die, ensure, install_term_handler, start, wait_for_term};
use std::ffi::CString;

const NOBODY: libc::uid_t = 65534;

fn main() {
    let args = start();
    // Not root, it cannot reach the test's files by path: it writes them
    // through a directory fd opened first (the test makes the dir 1777).
    let parent = args
        .ready
        .parent()
        .map(|d| d.to_path_buf())
        .unwrap_or_default();
    let dir = {
        let c = crust_testprogs::cpath(&parent);
        // SAFETY: a NUL-terminated path.
        unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) }
    };
    if dir < 0 {
        die("open the result directory");
    }
    let name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // SAFETY: plain integer arguments.
    let gid = unsafe { libc::setresgid(NOBODY, NOBODY, NOBODY) };
    // SAFETY: plain integer arguments.
    let uid = unsafe { libc::setresuid(NOBODY, NOBODY, NOBODY) };
    if gid != 0 || uid != 0 {
        die("setresuid(nobody)");
    }
    // Dropping root made it undumpable: undo that, as a program may.
    // SAFETY: plain integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    // SAFETY: the child only sleeps.
    let child = unsafe { libc::fork() };
    if child < 0 {
        die("fork");
    }
    if child == 0 {
        loop {
            // SAFETY: waiting for a signal.
            unsafe { libc::pause() };
        }
    }
    install_term_handler();
    write_at(dir, &name(&args.ready), "READY\n");
    wait_for_term(50, || {});
    let verdict = (|| -> Result<(), String> {
        // SAFETY: plain integer arguments.
        let d = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        ensure!(d == 1, "PR_GET_DUMPABLE is {d} after restore, expected 1");
        std::fs::read_to_string(format!("/proc/{child}/maps"))
            .map_err(|e| format!("cannot read the child's /proc/{child}/maps: {e}"))?;
        Ok(())
    })();
    // SAFETY: our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    let (text, code) = match verdict {
        Ok(()) => ("PASS\n".to_string(), 0),
        Err(e) => (format!("FAIL: {e}\n"), 1),
    };
    write_at(dir, &name(&args.result), &text);
    std::process::exit(code);
}

/// Write `text` to `name` in the directory `dir` (tmp + rename).
fn write_at(dir: i32, name: &str, text: &str) {
    let tmp = CString::new(format!("{name}.tmp")).unwrap_or_default();
    let dst = CString::new(name).unwrap_or_default();
    // SAFETY: NUL-terminated names relative to an open directory fd; the
    // buffer is `text`, readable for its length.
    unsafe {
        let fd = libc::openat(
            dir,
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            die(&format!("openat {name}.tmp"));
        }
        libc::write(fd, text.as_ptr().cast(), text.len());
        libc::close(fd);
        if libc::renameat(dir, tmp.as_ptr(), dir, dst.as_ptr()) != 0 {
            die(&format!("renameat {name}"));
        }
    }
}
