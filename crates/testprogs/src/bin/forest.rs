//! `forest --n N`: a tree of N processes (default 100): the root and N-1
//! descendants, each process forking up to 3 children breadth first. Every
//! process waits for SIGTERM, passes it to its children, checks that each
//! exits with 0 and that its own pid and parent are unchanged.
//! `--pipe 1`: the last process holds a pipe (crust cannot dump pipes yet;
//! the error test expects the dump to name that process).
//! `--uffd 1`: the same with a userfaultfd, which crust refuses to dump.

use crust_testprogs::{finish, ready, sleep_ms, start, term_requested};

fn me() -> (i32, i32) {
    // SAFETY: getpid/getppid take no arguments and cannot fail.
    unsafe { (libc::getpid(), libc::getppid()) }
}

/// Wait for SIGTERM, forward it to `kids`, and report whether all is well.
fn serve(kids: &[i32], root: bool) -> Result<(), String> {
    let was = me();
    while !term_requested() {
        sleep_ms(50);
    }
    // The root's parent is outside the tree (the harness's subshell, or the
    // subreaper once that exited): not compared.
    let now = me();
    if now.0 != was.0 || (!root && now.1 != was.1) {
        return Err(format!("pid/ppid {was:?} became {now:?}"));
    }
    for &k in kids {
        // SAFETY: kill and waitpid with a valid out-pointer.
        let st = unsafe {
            libc::kill(k, libc::SIGTERM);
            let mut st = 0;
            libc::waitpid(k, &mut st, 0);
            st
        };
        if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
            return Err(format!("child {k} ended with status {st:#x}"));
        }
    }
    Ok(())
}

fn main() {
    let args = start();
    let n = args.num("n", 100).max(1) as usize;
    crust_testprogs::install_term_handler();
    // Process i (0 = root) has children 3i+1, 3i+2, 3i+3 below n.
    let mut index = 0usize;
    let mut kids = Vec::new();
    let mut c = 3 * index + 1;
    while c < n && c <= 3 * index + 3 {
        // SAFETY: single-threaded program; the child continues this loop as
        // process `c`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            eprintln!("fork failed");
            std::process::exit(3);
        }
        if pid == 0 {
            index = c;
            kids.clear();
            c = 3 * index + 1;
            continue;
        }
        kids.push(pid);
        c += 1;
    }
    if index != 0 {
        if args.num("pipe", 0) != 0 && index == n - 1 {
            let mut fds = [0i32; 2];
            // SAFETY: fds is a writable array of two ints.
            unsafe { libc::pipe(fds.as_mut_ptr()) };
        }
        if args.num("uffd", 0) != 0 && index == n - 1 {
            crust_testprogs::make_undumpable_fd();
        }
        let code = i32::from(serve(&kids, false).is_err());
        // SAFETY: _exit ends the child without running atexit handlers.
        unsafe { libc::_exit(code) };
    }
    // The root: wait until the whole tree exists.
    let me_pid = std::process::id();
    for _ in 0..500 {
        if count_descendants(me_pid as i32) + 1 >= n {
            break;
        }
        sleep_ms(10);
    }
    ready(&args);
    finish(&args, serve(&kids, true))
}

fn count_descendants(pid: i32) -> usize {
    let kids: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    kids.len() + kids.iter().map(|k| count_descendants(*k)).sum::<usize>()
}
