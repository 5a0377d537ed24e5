//! `forest --n N`: a tree of N processes (default 100): the root and N-1
//! descendants, each process forking up to 3 children breadth first. Every
//! process waits for SIGTERM, passes it to its children, checks that each
//! exits with 0 and that its own pid and parent are unchanged.
//! `--pipe 1`: the last process holds a pipe (crust cannot dump pipes yet;
//! the error test expects the dump to name that process).
//! `--uffd 1`: the same with a userfaultfd, which crust refuses to dump.
//! `--mix 1`: a tree of every kind a restore builds on two CPUs or on one
//! (restore/split.rs): process i with i % 5 == 1 leads a process group
//! (its subtree is in it), with i % 6 == 3 maps a shared anonymous page its
//! subtree inherits (each process of the subtree adds one to it after
//! SIGTERM; i checks the sum), with i % 7 == 2 runs a second thread, with
//! i % 11 == 4 holds a zombie child (reaped after SIGTERM). Each checks
//! its group too.

use crust_testprogs::{finish, ready, sleep_ms, start, term_requested};

fn me() -> (i32, i32) {
    // SAFETY: getpid/getppid take no arguments and cannot fail.
    unsafe { (libc::getpid(), libc::getppid()) }
}

/// What a process of `--mix 1` checks after SIGTERM besides its pid.
#[derive(Default)]
struct Mix {
    /// Its process group, as it was made.
    pgid: i32,
    /// Shared pages it inherited or made: each gets one added.
    pages: Vec<*mut u64>,
    /// The page it made, and how many processes share it.
    own: Option<(*mut u64, u64)>,
    /// It runs a second thread.
    thread: bool,
    /// Its zombie child.
    zombie: Option<i32>,
}

/// Processes in the subtree of process `i` of an `n`-process forest.
fn subtree(i: usize, n: usize) -> u64 {
    1 + (3 * i + 1..=3 * i + 3)
        .filter(|&c| c < n)
        .map(|c| subtree(c, n))
        .sum::<u64>()
}

/// Process `i` of `--mix 1`, just forked: what it makes of its own.
fn mix_start(i: usize, n: usize, mix: &mut Mix) {
    // The parent's own page is one it inherited.
    mix.own = None;
    // SAFETY: plain syscalls on this process; the mapping is fresh and
    // never unmapped.
    unsafe {
        if i % 5 == 1 {
            libc::setpgid(0, 0);
        }
        if i % 6 == 3 {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if p == libc::MAP_FAILED {
                crust_testprogs::die("mmap shared");
            }
            mix.pages.push(p as *mut u64);
            mix.own = Some((p as *mut u64, subtree(i, n)));
        }
    }
}

/// The rest of `--mix 1` for process `i`, once its children are made.
fn mix_settle(i: usize, mix: &mut Mix) {
    // SAFETY: getpgid and fork in a process that runs one thread yet.
    unsafe {
        mix.pgid = libc::getpgid(0);
        if i % 11 == 4 {
            let z = libc::fork();
            if z == 0 {
                libc::_exit(0);
            }
            mix.zombie = Some(z);
        }
    }
    if i % 7 == 2 {
        std::thread::spawn(|| loop {
            sleep_ms(1000);
        });
        mix.thread = true;
    }
}

/// The checks of `--mix 1` after SIGTERM, before the children are told.
fn mix_check(mix: &Mix) -> Result<(), String> {
    // SAFETY: getpgid on itself; the pages are mapped for good; waitpid
    // with a valid out-pointer.
    unsafe {
        if mix.pgid != 0 && libc::getpgid(0) != mix.pgid {
            return Err(format!("group {} became {}", mix.pgid, libc::getpgid(0)));
        }
        for &p in &mix.pages {
            std::sync::atomic::AtomicU64::from_ptr(p)
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        if let Some(z) = mix.zombie {
            let mut st = 0;
            if libc::waitpid(z, &mut st, libc::WNOHANG) != z || st != 0 {
                return Err(format!("zombie child {z} is not one ({st:#x})"));
            }
        }
    }
    if mix.thread {
        let n = std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count());
        if n != 2 {
            return Err(format!("{n} threads, not 2"));
        }
    }
    Ok(())
}

/// The sum on the shared page process `i` made, once its subtree ended.
fn mix_sum(mix: &Mix) -> Result<(), String> {
    if let Some((p, want)) = mix.own {
        // SAFETY: the page is mapped for good.
        let got = unsafe { std::sync::atomic::AtomicU64::from_ptr(p) }
            .load(std::sync::atomic::Ordering::SeqCst);
        if got != want {
            return Err(format!("the shared page counts {got}, not {want}"));
        }
    }
    Ok(())
}

/// Wait for SIGTERM, forward it to `kids`, and report whether all is well.
fn serve(kids: &[i32], root: bool, mix: &Mix) -> Result<(), String> {
    let was = me();
    while !term_requested() {
        sleep_ms(50);
    }
    // Checked now, told after the children are (none is left behind).
    let mixed = mix_check(mix);
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
    mixed?;
    mix_sum(mix)
}

fn main() {
    let args = start();
    let n = args.num("n", 100).max(1) as usize;
    crust_testprogs::install_term_handler();
    // Process i (0 = root) has children 3i+1, 3i+2, 3i+3 below n.
    let mut index = 0usize;
    let mut kids = Vec::new();
    let mixed = args.num("mix", 0) != 0;
    let mut mix = Mix::default();
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
            if mixed {
                mix_start(index, n, &mut mix);
            }
            continue;
        }
        kids.push(pid);
        c += 1;
    }
    if mixed {
        mix_settle(index, &mut mix);
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
        let verdict = serve(&kids, false, &mix);
        if let Err(e) = &verdict {
            eprintln!("forest process {index}: {e}");
        }
        let code = i32::from(verdict.is_err());
        // SAFETY: _exit ends the child without running atexit handlers.
        unsafe { libc::_exit(code) };
    }
    // The root: wait until the whole tree exists.
    let me_pid = std::process::id();
    // And the zombies of --mix 1.
    let zombies = if mixed {
        (1..n).filter(|i| i % 11 == 4).count()
    } else {
        0
    };
    for _ in 0..500 {
        if count_descendants(me_pid as i32) + 1 >= n + zombies {
            break;
        }
        sleep_ms(10);
    }
    ready(&args);
    finish(&args, serve(&kids, true, &mix))
}

fn count_descendants(pid: i32) -> usize {
    let kids: Vec<i32> = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    kids.len() + kids.iter().map(|k| count_descendants(*k)).sum::<usize>()
}
