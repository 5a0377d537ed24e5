//! `stdiopipe`: stdout is a pipe to a reader outside the tree (as a
//! container's stdio under runc). Every 20 ms it writes `tick N` there;
//! restored with `--inherit-fd fd[K]:pipe:[INO]`, its fd 1 is the new pipe
//! crust got as fd K, and the ticks written after the restore must reach
//! that pipe's reader. On SIGTERM it writes `done N` and checks that fd 1
//! is still a pipe and that no write failed (SIGPIPE is ignored, so a pipe
//! without a reader shows as EPIPE).

use crust_testprogs::{ensure, finish, ready, sleep_ms, start, term_requested};

fn write_line(line: &str) -> Result<(), String> {
    let b = line.as_bytes();
    // SAFETY: b is a readable buffer of b.len() bytes.
    let w = unsafe { libc::write(1, b.as_ptr() as *const libc::c_void, b.len()) };
    if w != b.len() as isize {
        return Err(format!(
            "write of {line:?} to fd 1: {w} ({})",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn fd1_is_pipe() -> bool {
    // SAFETY: st is a writable stat buffer; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 1 is a number; &mut st is valid for the call.
    let r = unsafe { libc::fstat(1, &mut st) };
    r == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO
}

fn main() {
    let args = start();
    // SAFETY: setting a signal's disposition to SIG_IGN takes no pointers.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    if !fd1_is_pipe() {
        eprintln!("stdiopipe: fd 1 must be a pipe");
        std::process::exit(3);
    }
    let mut n: u64 = 0;
    let mut first_err: Option<String> = None;
    let tick = |n: &mut u64, err: &mut Option<String>| {
        *n += 1;
        if let Err(e) = write_line(&format!("tick {n}\n")) {
            err.get_or_insert(e);
        }
    };
    tick(&mut n, &mut first_err);
    ready(&args);
    while !term_requested() {
        tick(&mut n, &mut first_err);
        sleep_ms(20);
    }
    let verdict = (|| {
        if let Some(e) = first_err.take() {
            return Err(e);
        }
        ensure!(fd1_is_pipe(), "fd 1 is no longer a pipe");
        write_line(&format!("done {n}\n"))
    })();
    finish(&args, verdict)
}
