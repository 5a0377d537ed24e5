//! `pipes`: pipes and FIFOs with data queued in them, checked after restore.
//!
//! `--mode`:
//! - `single` (default): one process. Pipe A (fds 3, 4) holds `--bytes N`
//!   bytes (default 50000) of a pattern, its capacity raised to 1 MiB; fd 5
//!   is a dup of fd 3 (the same description); pipe B (fds 6, 7) was made
//!   with O_NONBLOCK and holds a short message; fd 7 is close-on-exec.
//!   The check: links, capacity, flags, sharing (kcmp), the exact bytes
//!   queued, then nothing more (EAGAIN on the non-blocking one).
//! - `child`: the parent keeps only the write end (fd 4), its child only the
//!   read end (fd 3), with a message queued. At the check the parent closes
//!   its end and the child must read the message then end-of-file (so no
//!   stray writer was left by the restore); its exit status is the verdict.
//! - `three`: a pipe (fds 3, 4) shared by the parent (both ends), child A
//!   (read end) and child B (write end), capacity 128 KiB, a message
//!   queued. The check: same descriptions in all three (kcmp), the parent
//!   reads the message; B writes a reply that A reads.
//! - `fifo --dir D`: a FIFO D/fifo open for reading (fd 3, O_NONBLOCK) and
//!   writing (fd 4), with a message queued. The check: both fds are on the
//!   FIFO at its path, flags kept, the message comes out, the FIFO works.
//! - `packet`: a pipe in packet mode (O_DIRECT, fds 3 and 4), which crust
//!   refuses to dump. The check: it still carries a packet.

use crust_testprogs::{cpath, die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::os::unix::fs::MetadataExt;

const MSG_CHILD: &[u8] = b"pipes: from the parent to its child, queued across the dump\n";
const MSG_THREE: &[u8] = b"pipes: queued in a pipe three processes share\n";
const MSG_B: &[u8] = b"pipes: reply written by B after restore\n";
const MSG_NB: &[u8] = b"pipes: in a non-blocking pipe\n";
const MSG_FIFO: &[u8] = b"pipes: waiting in a named FIFO\n";

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn write_all(fd: i32, data: &[u8]) -> Result<(), String> {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: the pointer and length describe the rest of `data`.
        let n = unsafe {
            libc::write(
                fd,
                data[off..].as_ptr() as *const libc::c_void,
                data.len() - off,
            )
        };
        ensure!(n > 0, "write to fd {fd}: {}", err());
        off += n as usize;
    }
    Ok(())
}

/// Read up to `max` bytes (one read call).
fn read_once(fd: i32, max: usize) -> Result<Vec<u8>, std::io::Error> {
    let mut buf = vec![0u8; max];
    // SAFETY: buf is writable for max bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, max) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Read exactly `n` bytes (blocking or not: a short non-blocking read is an
/// error).
fn read_exact(fd: i32, n: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let chunk = read_once(fd, n - out.len())
            .map_err(|e| format!("read from fd {fd} after {} of {n} bytes: {e}", out.len()))?;
        ensure!(
            !chunk.is_empty(),
            "end of file on fd {fd} after {} of {n} bytes",
            out.len()
        );
        out.extend(chunk);
    }
    Ok(out)
}

fn queued(fd: i32) -> Result<usize, String> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int to &n.
    let r = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n as *mut libc::c_int) };
    ensure!(r == 0, "FIONREAD on fd {fd}: {}", err());
    Ok(n as usize)
}

fn getfl(fd: i32) -> Result<i32, String> {
    // SAFETY: F_GETFL takes no pointer.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    ensure!(r >= 0, "F_GETFL on fd {fd}: {}", err());
    Ok(r)
}

fn getfd(fd: i32) -> Result<i32, String> {
    // SAFETY: F_GETFD takes no pointer.
    let r = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    ensure!(r >= 0, "F_GETFD on fd {fd}: {}", err());
    Ok(r)
}

fn pipe_size(fd: i32) -> Result<i32, String> {
    // SAFETY: F_GETPIPE_SZ takes no pointer.
    let r = unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) };
    ensure!(r >= 0, "F_GETPIPE_SZ on fd {fd}: {}", err());
    Ok(r)
}

fn link(pid: i32, fd: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// Are fd `a` of `p1` and fd `b` of `p2` the same open file description?
fn same_file(p1: i32, a: i32, p2: i32, b: i32) -> Result<bool, String> {
    // SAFETY: kcmp with KCMP_FILE (0) takes only integers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, p1, p2, 0, a, b) };
    ensure!(r >= 0, "kcmp({p1} fd {a}, {p2} fd {b}): {}", err());
    Ok(r == 0)
}

/// Make a pipe at exactly fds `rd`, `wr` (which must be free above 2).
fn pipe_at(rd: i32, wr: i32, flags: i32) {
    let mut fds = [-1i32; 2];
    // SAFETY: fds is a writable array of two c_ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        die("pipe2");
    }
    for (have, want) in [(fds[0], rd), (fds[1], wr)] {
        if have != want {
            let cloexec = if flags & libc::O_CLOEXEC != 0 {
                libc::O_CLOEXEC
            } else {
                0
            };
            // SAFETY: dup3/close on our own fds.
            unsafe {
                if libc::dup3(have, want, cloexec) != want {
                    die("dup3");
                }
                libc::close(have);
            }
        }
    }
}

fn set_pipe_size(fd: i32, size: i32) {
    // SAFETY: F_SETPIPE_SZ takes an integer.
    if unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) } < size {
        die("F_SETPIPE_SZ");
    }
}

fn close(fd: i32) {
    // SAFETY: closing our own fd, which no Rust object owns.
    unsafe { libc::close(fd) };
}

/// Fork a child that closes fd `drop_fd`, then runs `f` when SIGTERM
/// arrives and exits with 0 (Ok) or 1 (the parent reports the status).
/// Returns once the child has closed the fd.
fn fork_child(drop_fd: i32, f: impl FnOnce() -> Result<(), String>) -> i32 {
    // SAFETY: single-threaded process: the child may run any code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork");
    }
    if pid == 0 {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        close(drop_fd);
        while !term_requested() {
            sleep_ms(10);
        }
        let code = match f() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child {}: {e}", std::process::id());
                1
            }
        };
        std::process::exit(code);
    }
    for _ in 0..500 {
        if link(pid, drop_fd).starts_with('<') {
            return pid;
        }
        sleep_ms(10);
    }
    die("the child did not close its fd")
}

/// Ask a child to run its check (SIGTERM) and wait for its verdict.
fn child_verdict(pid: i32, name: &str) -> Result<(), String> {
    let mut status = 0;
    // SAFETY: kill and waitpid on our own child with a valid status pointer.
    let r = unsafe {
        libc::kill(pid, libc::SIGTERM);
        libc::waitpid(pid, &mut status, 0)
    };
    ensure!(r == pid, "waitpid({name} {pid}): {}", err());
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{name} {pid} failed its check (status {status:#x})"
    );
    Ok(())
}

fn main() {
    let args = start();
    let mode = args.opt("mode").unwrap_or("single").to_string();
    let me = std::process::id() as i32;
    // The SIGTERM handler must be in place before children are forked (they
    // inherit it); ready() installs it again, harmlessly.
    crust_testprogs::install_term_handler();
    let check: Box<dyn FnOnce() -> Result<(), String>> = match mode.as_str() {
        "single" => {
            let n = args.num("bytes", 50000) as usize;
            pipe_at(3, 4, 0);
            set_pipe_size(4, 1 << 20);
            // SAFETY: dup2 of our own fd.
            if unsafe { libc::dup2(3, 5) } != 5 {
                die("dup2");
            }
            let data = pattern(n);
            if write_all(4, &data).is_err() {
                die("fill pipe A");
            }
            pipe_at(6, 7, libc::O_NONBLOCK);
            // SAFETY: F_SETFD takes an integer.
            unsafe { libc::fcntl(7, libc::F_SETFD, libc::FD_CLOEXEC) };
            if write_all(7, MSG_NB).is_err() {
                die("fill pipe B");
            }
            Box::new(move || {
                let a = link(me, 3);
                ensure!(a.starts_with("pipe:["), "fd 3 is {a}, not a pipe");
                for fd in [4, 5] {
                    ensure!(link(me, fd) == a, "fd {fd} is {}, not {a}", link(me, fd));
                }
                let b = link(me, 6);
                ensure!(b.starts_with("pipe:[") && b != a, "fd 6 is {b}");
                ensure!(link(me, 7) == b, "fd 7 is {}, not {b}", link(me, 7));
                ensure!(
                    same_file(me, 3, me, 5)?,
                    "fds 3 and 5 are no longer one description"
                );
                ensure!(!same_file(me, 3, me, 4)?, "fds 3 and 4 are one description");
                ensure!(
                    pipe_size(3)? == 1 << 20,
                    "pipe A capacity is {}",
                    pipe_size(3)?
                );
                ensure!(
                    getfl(3)? & libc::O_ACCMODE == libc::O_RDONLY,
                    "fd 3 is not read-only"
                );
                ensure!(
                    getfl(4)? & libc::O_ACCMODE == libc::O_WRONLY,
                    "fd 4 is not write-only"
                );
                for fd in [3, 4] {
                    ensure!(
                        getfl(fd)? & libc::O_NONBLOCK == 0,
                        "fd {fd} became non-blocking"
                    );
                }
                for fd in [6, 7] {
                    ensure!(
                        getfl(fd)? & libc::O_NONBLOCK != 0,
                        "fd {fd} lost O_NONBLOCK"
                    );
                }
                ensure!(getfd(7)? & libc::FD_CLOEXEC != 0, "fd 7 lost FD_CLOEXEC");
                for fd in [3, 4, 5, 6] {
                    ensure!(
                        getfd(fd)? & libc::FD_CLOEXEC == 0,
                        "fd {fd} became close-on-exec"
                    );
                }
                ensure!(
                    queued(3)? == n,
                    "pipe A holds {} bytes, not {n}",
                    queued(3)?
                );
                let got = read_exact(5, n)?;
                ensure!(got == data, "pipe A: the bytes differ");
                ensure!(
                    queued(6)? == MSG_NB.len(),
                    "pipe B holds {} bytes",
                    queued(6)?
                );
                let got = read_exact(6, MSG_NB.len())?;
                ensure!(
                    got == MSG_NB,
                    "pipe B: got {:?}",
                    String::from_utf8_lossy(&got)
                );
                match read_once(6, 16) {
                    Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                    other => return Err(format!("empty non-blocking pipe B read: {other:?}")),
                }
                // Still a working pipe.
                write_all(4, b"ok")?;
                ensure!(read_exact(3, 2)? == b"ok", "pipe A does not carry new data");
                Ok(())
            })
        }
        "child" => {
            pipe_at(3, 4, 0);
            write_all(4, MSG_CHILD).unwrap_or_else(|_| die("write"));
            let child = fork_child(4, || {
                let l = link(std::process::id() as i32, 3);
                ensure!(l.starts_with("pipe:["), "child fd 3 is {l}");
                ensure!(
                    queued(3)? == MSG_CHILD.len(),
                    "child: {} bytes queued",
                    queued(3)?
                );
                let mut all = Vec::new();
                loop {
                    let c = read_once(3, 4096).map_err(|e| format!("child read: {e}"))?;
                    if c.is_empty() {
                        break;
                    }
                    all.extend(c);
                }
                ensure!(
                    all == MSG_CHILD,
                    "child read {:?}",
                    String::from_utf8_lossy(&all)
                );
                Ok(())
            });
            close(3);
            // The child keeps only the read end.
            Box::new(move || {
                let l = link(me, 4);
                ensure!(l.starts_with("pipe:["), "parent fd 4 is {l}");
                ensure!(
                    link(child, 3) == l,
                    "child fd 3 is {}, parent fd 4 {l}",
                    link(child, 3)
                );
                ensure!(link(child, 4).starts_with('<'), "the child has an fd 4");
                ensure!(link(me, 3).starts_with('<'), "the parent has an fd 3");
                close(4);
                child_verdict(child, "child")
            })
        }
        "three" => {
            pipe_at(3, 4, 0);
            set_pipe_size(4, 128 << 10);
            write_all(4, MSG_THREE).unwrap_or_else(|_| die("write"));
            let a = fork_child(4, || {
                let got = read_exact(3, MSG_B.len())?;
                ensure!(got == MSG_B, "A read {:?}", String::from_utf8_lossy(&got));
                Ok(())
            });
            let b = fork_child(3, || write_all(4, MSG_B));
            Box::new(move || {
                // A has only the read end, B only the write end (they closed
                // the other before the dump).
                ensure!(same_file(me, 3, a, 3)?, "parent fd 3 and A's fd 3 differ");
                ensure!(same_file(me, 4, b, 4)?, "parent fd 4 and B's fd 4 differ");
                ensure!(pipe_size(3)? == 128 << 10, "capacity is {}", pipe_size(3)?);
                ensure!(queued(3)? == MSG_THREE.len(), "{} bytes queued", queued(3)?);
                let got = read_exact(3, MSG_THREE.len())?;
                ensure!(
                    got == MSG_THREE,
                    "parent read {:?}",
                    String::from_utf8_lossy(&got)
                );
                child_verdict(b, "B")?;
                child_verdict(a, "A")
            })
        }
        "fifo" => {
            let dir = args.path("dir");
            let path = dir.join("fifo");
            let c = cpath(&path);
            // SAFETY: c is a NUL-terminated path.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                die("mkfifo");
            }
            // SAFETY: c is a NUL-terminated path; the fds are ours.
            unsafe {
                if libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) != 3 {
                    die("open fifo for reading at fd 3");
                }
                if libc::open(c.as_ptr(), libc::O_WRONLY) != 4 {
                    die("open fifo for writing at fd 4");
                }
            }
            write_all(4, MSG_FIFO).unwrap_or_else(|_| die("write"));
            let ino = std::fs::metadata(&path).map(|m| m.ino()).unwrap_or(0);
            Box::new(move || {
                let p = path.to_string_lossy().into_owned();
                for fd in [3, 4] {
                    ensure!(link(me, fd) == p, "fd {fd} is {}, not {p}", link(me, fd));
                    let md = std::fs::metadata(format!("/proc/self/fd/{fd}"))
                        .map_err(|e| format!("stat fd {fd}: {e}"))?;
                    ensure!(
                        md.ino() == ino,
                        "fd {fd} is on inode {}, not {ino}",
                        md.ino()
                    );
                }
                ensure!(getfl(3)? & libc::O_NONBLOCK != 0, "fd 3 lost O_NONBLOCK");
                ensure!(
                    getfl(4)? & libc::O_NONBLOCK == 0,
                    "fd 4 became non-blocking"
                );
                ensure!(
                    getfl(3)? & libc::O_ACCMODE == libc::O_RDONLY,
                    "fd 3 is not read-only"
                );
                ensure!(
                    getfl(4)? & libc::O_ACCMODE == libc::O_WRONLY,
                    "fd 4 is not write-only"
                );
                ensure!(queued(3)? == MSG_FIFO.len(), "{} bytes queued", queued(3)?);
                ensure!(
                    read_exact(3, MSG_FIFO.len())? == MSG_FIFO,
                    "FIFO data differs"
                );
                write_all(4, b"again")?;
                ensure!(
                    read_exact(3, 5)? == b"again",
                    "the FIFO does not carry new data"
                );
                let _ = std::fs::remove_file(&path);
                Ok(())
            })
        }
        "packet" => {
            pipe_at(3, 4, libc::O_DIRECT);
            Box::new(move || {
                // Only the write end has O_DIRECT.
                ensure!(getfl(4)? & libc::O_DIRECT != 0, "fd 4 lost O_DIRECT");
                write_all(4, b"packet")?;
                ensure!(
                    read_exact(3, 6)? == b"packet",
                    "the packet did not come through"
                );
                Ok(())
            })
        }
        other => {
            eprintln!("unknown --mode {other}");
            std::process::exit(2);
        }
    };
    ready(&args);
    while !term_requested() {
        sleep_ms(10);
    }
    finish(&args, check())
}
