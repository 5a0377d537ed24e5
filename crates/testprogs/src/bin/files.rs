//! `files --dir D`: a file open O_RDONLY at offset 10, one O_RDWR at offset 200,
//! one O_WRONLY|O_APPEND, and one O_RDONLY with FD_CLOEXEC. After restore the
//! offsets, status flags, fd flags and contents are unchanged and an append goes
//! to the end of the file even after seeking to 0.

use std::path::Path;

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term};

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn open(path: &Path, flags: i32) -> i32 {
    let c = cpath(path);
    // SAFETY: a valid NUL-terminated path; the mode argument is only read with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    if fd < 0 {
        die(&format!("open {}", path.display()));
    }
    fd
}

fn seek(fd: i32, off: i64, whence: i32) -> i64 {
    // SAFETY: lseek on an fd number has no memory effects.
    unsafe { libc::lseek(fd, off, whence) }
}

fn getfl(fd: i32) -> i32 {
    // SAFETY: fcntl F_GETFL takes no pointer.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

fn getfd(fd: i32) -> i32 {
    // SAFETY: fcntl F_GETFD takes no pointer.
    unsafe { libc::fcntl(fd, libc::F_GETFD) }
}

fn read_n(fd: i32, n: usize) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    // SAFETY: buf has n writable bytes.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, n) };
    ensure!(r >= 0, "read fd {fd}: {}", std::io::Error::last_os_error());
    buf.truncate(r as usize);
    Ok(buf)
}

fn write_all(fd: i32, data: &[u8]) -> Result<(), String> {
    // SAFETY: data is a valid readable buffer of data.len() bytes.
    let r = unsafe { libc::write(fd, data.as_ptr() as *const libc::c_void, data.len()) };
    ensure!(
        r == data.len() as isize,
        "write fd {fd}: {r} ({})",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let ro_path = dir.join("ro.dat");
    let rw_path = dir.join("rw.dat");
    let app_path = dir.join("append.log");
    let cx_path = dir.join("cloexec.dat");
    let ro_data = pattern(4096, 1);
    let rw_data = pattern(8192, 7);
    let cx_data = pattern(100, 3);
    let ok = std::fs::write(&ro_path, &ro_data)
        .and_then(|_| std::fs::write(&rw_path, &rw_data))
        .and_then(|_| std::fs::write(&app_path, b"first\n"))
        .and_then(|_| std::fs::write(&cx_path, &cx_data));
    if let Err(e) = ok {
        eprintln!("cannot create files in {}: {e}", dir.display());
        std::process::exit(3);
    }

    let ro = open(&ro_path, libc::O_RDONLY);
    seek(ro, 10, libc::SEEK_SET);
    let rw = open(&rw_path, libc::O_RDWR);
    seek(rw, 200, libc::SEEK_SET);
    let app = open(&app_path, libc::O_WRONLY | libc::O_APPEND);
    if write_all(app, b"second\n").is_err() {
        die("write append.log");
    }
    let cx = open(&cx_path, libc::O_RDONLY | libc::O_CLOEXEC);
    seek(cx, 50, libc::SEEK_SET);
    let fl = [getfl(ro), getfl(rw), getfl(app), getfl(cx)];
    let fdfl = [getfd(ro), getfd(rw), getfd(app), getfd(cx)];

    ready(&args);
    wait_for_term(20, || {});

    let verdict = (|| {
        let now = [getfl(ro), getfl(rw), getfl(app), getfl(cx)];
        ensure!(now == fl, "F_GETFL {now:?}, expected {fl:?}");
        ensure!(
            fl[0] & libc::O_ACCMODE == libc::O_RDONLY,
            "ro fd not O_RDONLY"
        );
        ensure!(fl[1] & libc::O_ACCMODE == libc::O_RDWR, "rw fd not O_RDWR");
        ensure!(fl[2] & libc::O_APPEND != 0, "append fd lost O_APPEND");
        let nowfd = [getfd(ro), getfd(rw), getfd(app), getfd(cx)];
        ensure!(nowfd == fdfl, "F_GETFD {nowfd:?}, expected {fdfl:?}");
        ensure!(
            nowfd == [0, 0, 0, libc::FD_CLOEXEC],
            "F_GETFD {nowfd:?}, expected only the last with FD_CLOEXEC"
        );
        let pos = [
            seek(ro, 0, libc::SEEK_CUR),
            seek(rw, 0, libc::SEEK_CUR),
            seek(app, 0, libc::SEEK_CUR),
            seek(cx, 0, libc::SEEK_CUR),
        ];
        ensure!(
            pos == [10, 200, 13, 50],
            "offsets {pos:?}, expected [10, 200, 13, 50]"
        );
        ensure!(
            read_n(ro, 10)? == ro_data[10..20],
            "ro.dat content at 10 differs"
        );
        ensure!(
            read_n(rw, 16)? == rw_data[200..216],
            "rw.dat content at 200 differs"
        );
        ensure!(
            read_n(cx, 10)? == cx_data[50..60],
            "cloexec.dat content at 50 differs"
        );
        // The rw file description is writable and shared with the file.
        seek(rw, 300, libc::SEEK_SET);
        write_all(rw, b"XYZ")?;
        let disk = std::fs::read(&rw_path).map_err(|e| format!("read rw.dat: {e}"))?;
        ensure!(
            &disk[300..303] == b"XYZ" && disk.len() == 8192,
            "write through rw fd not in rw.dat"
        );
        // Appends go to the end whatever the offset.
        seek(app, 0, libc::SEEK_SET);
        write_all(app, b"third\n")?;
        let log = std::fs::read(&app_path).map_err(|e| format!("read append.log: {e}"))?;
        ensure!(
            log == b"first\nsecond\nthird\n",
            "append.log is {:?}",
            String::from_utf8_lossy(&log)
        );
        Ok(())
    })();
    finish(&args, verdict)
}
