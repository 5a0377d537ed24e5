//! `taskstate`: per-task state a restore must give back exactly, or that a
//! dump must refuse, by `--mode`:
//!
//! - `state` (default): two seccomp filters (getppid fails with EAGAIN,
//!   getpgid with ENOMEM), the second installed with
//!   SECCOMP_FILTER_FLAG_TSYNC once a second thread exists; a membarrier
//!   registration (PRIVATE_EXPEDITED); SCHED_BATCH with
//!   SCHED_RESET_ON_FORK. Every 20 ms both threads check all of it. And a
//!   child that became uid 65534 and then set dumpable 1 and a
//!   parent-death signal (SIGUSR2), which a change of credentials clears:
//!   asked through a pipe, it checks them and answers through another.
//!   THP disabled (`PR_SET_THP_DISABLE`) in the process, cleared in the
//!   child, which inherited it.
//! - `stopped`: a child in a process group of its own stopped by SIGTSTP;
//!   after SIGTERM the child must still be stopped, and a stop reported
//!   since must be SIGTSTP's.
//! - `zombies`: a child killed by SIGKILL and not reaped; a zombie child
//!   (exit code 7) whose process group's leader (the child that cloned it
//!   with CLONE_PARENT) is gone. After SIGTERM: their statuses, and the
//!   second's group.
//! - `sigtrap`: a SIGTRAP pending (blocked): a dump must refuse it.
//! - `timens`: children would be born in a new time namespace
//!   (unshare(CLONE_NEWTIME)): a dump must refuse it.

use crust_testprogs::{die, ensure, finish, ready, sleep_ms, start, term_requested};
use std::sync::Mutex;

const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;
const MEMBARRIER_CMD_GET_REGISTRATIONS: i32 = 1 << 9;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: i32 = 1 << 4;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
const SECCOMP_FILTER_FLAG_TSYNC: u64 = 1;

/// The first thing found wrong by either thread.
static WRONG: Mutex<Option<String>> = Mutex::new(None);

fn note(r: Result<(), String>) {
    if let Err(e) = r {
        let mut w = WRONG.lock().unwrap_or_else(|p| p.into_inner());
        w.get_or_insert(e);
    }
}

/// A filter: syscall `nr` fails with `errno`, everything else is allowed.
fn install_filter(nr: i64, errno: u32, flags: u64) {
    // struct sock_filter {code u16, jt u8, jf u8, k u32}.
    let prog: [(u16, u8, u8, u32); 4] = [
        (0x20, 0, 0, 0),                   // ld [0] (the syscall number)
        (0x15, 0, 1, nr as u32),           // jeq #nr, 0, 1
        (0x06, 0, 0, 0x0005_0000 | errno), // ret ERRNO(errno)
        (0x06, 0, 0, 0x7fff_0000),         // ret ALLOW
    ];
    let mut raw = Vec::new();
    for (code, jt, jf, k) in prog {
        raw.extend_from_slice(&code.to_ne_bytes());
        raw.push(jt);
        raw.push(jf);
        raw.extend_from_slice(&k.to_ne_bytes());
    }
    let fprog: (u64, u64) = (4, raw.as_ptr() as u64);
    // SAFETY: a struct sock_fprog (len, then the filter's address) pointing
    // at 4 instructions that live until the call returns.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const (u64, u64),
        )
    };
    if r != 0 {
        die("seccomp(SECCOMP_SET_MODE_FILTER)");
    }
}

fn errno_of(nr: i64, arg: i64) -> i32 {
    // SAFETY: getppid/getpgid take integers only.
    let r = unsafe { libc::syscall(nr, arg) };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

/// What both threads check: the filters hold for them.
fn check_filters(who: &str) -> Result<(), String> {
    let e = errno_of(libc::SYS_getppid, 0);
    ensure!(
        e == libc::EAGAIN,
        "{who}: getppid gave errno {e}, not EAGAIN (the first filter)"
    );
    let e = errno_of(libc::SYS_getpgid, 0);
    ensure!(
        e == libc::ENOMEM,
        "{who}: getpgid gave errno {e}, not ENOMEM (the second filter)"
    );
    Ok(())
}

/// What the main thread checks besides.
fn check_process() -> Result<(), String> {
    check_filters("main thread")?;
    // SAFETY: membarrier and prctl with integer arguments; PR_GET_PDEATHSIG
    // writes one c_int to `pd`.
    let (mb, dumpable, pd, policy) = unsafe {
        let mut pd: libc::c_int = 0;
        let mb = libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0);
        let dumpable = libc::prctl(libc::PR_GET_DUMPABLE, 0u64, 0u64, 0u64, 0u64);
        libc::prctl(libc::PR_GET_PDEATHSIG, &mut pd as *mut libc::c_int);
        (mb, dumpable, pd, libc::sched_getscheduler(0))
    };
    // SAFETY: prctl with integer arguments.
    let thp_off = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0u64, 0u64, 0u64, 0u64) };
    ensure!(thp_off == 1, "THP disabled is {thp_off}, not 1");
    ensure!(
        mb >= 0 && mb as i32 & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED != 0,
        "membarrier registrations are {mb:#x}, without PRIVATE_EXPEDITED"
    );
    ensure!(dumpable == 1, "dumpable is {dumpable}, not 1");
    ensure!(pd == 0, "parent-death signal is {pd}, not 0");
    ensure!(
        policy == libc::SCHED_BATCH | SCHED_RESET_ON_FORK,
        "scheduling policy is {policy:#x}, not SCHED_BATCH|SCHED_RESET_ON_FORK"
    );
    let st = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
    ensure!(
        st.lines()
            .any(|l| l.split_whitespace().eq(["Seccomp_filters:", "2"])),
        "not 2 seccomp filters in /proc/self/status"
    );
    Ok(())
}

/// The child of `state`: nobody, dumpable, SIGUSR2 on its parent's death;
/// answers each byte read from `req` with its verdict on `resp`.
fn nobody_child(req: i32, resp: i32) -> ! {
    // SAFETY: integer arguments.
    unsafe {
        if libc::setresgid(65534, 65534, 65534) != 0 || libc::setresuid(65534, 65534, 65534) != 0 {
            libc::_exit(1);
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 1u64, 0u64, 0u64, 0u64);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGUSR2 as u64,
            0u64,
            0u64,
            0u64,
        );
        libc::prctl(libc::PR_SET_THP_DISABLE, 0u64, 0u64, 0u64, 0u64);
    }
    loop {
        let mut b = [0u8; 1];
        // SAFETY: `b` is a writable byte; `msg` is readable for its length.
        unsafe {
            if libc::read(req, b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(0);
            }
            let mut pd: libc::c_int = 0;
            libc::prctl(libc::PR_GET_PDEATHSIG, &mut pd as *mut libc::c_int);
            let d = libc::prctl(libc::PR_GET_DUMPABLE, 0u64, 0u64, 0u64, 0u64);
            let thp = libc::prctl(libc::PR_GET_THP_DISABLE, 0u64, 0u64, 0u64, 0u64);
            let msg = format!("{d} {pd} {thp}\n");
            libc::write(resp, msg.as_ptr().cast(), msg.len());
        }
    }
}

/// Ask the child of `state` for its dumpable flag and parent-death signal.
fn ask_child(req: i32, resp: i32) -> Result<(), String> {
    let mut buf = [0u8; 64];
    // SAFETY: one byte written from a readable array; `buf` is writable.
    let n = unsafe {
        libc::write(req, b"?".as_ptr().cast(), 1);
        libc::read(resp, buf.as_mut_ptr().cast(), buf.len())
    };
    let got = String::from_utf8_lossy(buf.get(..n.max(0) as usize).unwrap_or_default());
    let want = format!("1 {} 0\n", libc::SIGUSR2);
    ensure!(
        got == want,
        "the uid 65534 child says dumpable, parent-death signal, THP disabled = {:?}, not {:?}",
        got.trim(),
        want.trim()
    );
    Ok(())
}

fn mode_state(args: &crust_testprogs::Args) -> ! {
    // --no-nobody: without the uid 65534 child (CRIU 4.2 cannot dump a
    // process of another uid without CAP_SYS_RESOURCE: the interop case).
    let with_child = args.opt("no-nobody").is_none();
    // THP disabled for this process; its child (which inherits it) clears
    // it: a restore sets each one's own.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1u64, 0u64, 0u64, 0u64) } != 0 {
        die("prctl(PR_SET_THP_DISABLE)");
    }
    let (req, resp) = (crust_testprogs::make_pipe(), crust_testprogs::make_pipe());
    let child = if with_child { fork() } else { -1 };
    if child == 0 {
        nobody_child(req[0], resp[1]);
    }
    install_filter(libc::SYS_getppid, libc::EAGAIN as u32, 0);
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
        while !term_requested() {
            note(check_filters("second thread"));
            sleep_ms(20);
        }
    });
    install_filter(
        libc::SYS_getpgid,
        libc::ENOMEM as u32,
        SECCOMP_FILTER_FLAG_TSYNC,
    );
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: integer arguments; `param` is a valid sched_param.
    unsafe {
        if libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0,
            0,
        ) != 0
        {
            die("membarrier(REGISTER_PRIVATE_EXPEDITED)");
        }
        if libc::sched_setscheduler(0, libc::SCHED_BATCH | SCHED_RESET_ON_FORK, &param) != 0 {
            die("sched_setscheduler");
        }
    }
    note(check_process());
    if with_child {
        note(ask_child(req[1], resp[0]));
    }
    let _ = tx.send(());
    ready(args);
    while !term_requested() {
        note(check_process());
        sleep_ms(20);
    }
    if with_child {
        note(ask_child(req[1], resp[0]));
    }
    let _ = t.join();
    if with_child {
        // SAFETY: integer arguments.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
    }
    let wrong = WRONG.lock().unwrap_or_else(|p| p.into_inner()).take();
    finish(args, wrong.map_or(Ok(()), Err))
}

fn fork() -> i32 {
    // SAFETY: the children only call async-signal-safe functions.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        die("fork");
    }
    pid
}

fn mode_stopped(args: &crust_testprogs::Args) -> ! {
    let child = fork();
    if child == 0 {
        // SAFETY: integer arguments (a group of its own: not orphaned, so
        // SIGTSTP stops it).
        unsafe {
            libc::setpgid(0, 0);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: integer arguments; `si` is a writable siginfo_t.
    let stopped = unsafe {
        libc::setpgid(child, child);
        libc::kill(child, libc::SIGTSTP);
        let mut si: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_PID, child as u32, &mut si, libc::WSTOPPED) == 0
            && si.si_code == libc::CLD_STOPPED
            && si.si_status() == libc::SIGTSTP
    };
    if !stopped {
        die("the child did not stop by SIGTSTP");
    }
    ready(args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| {
        let st =
            std::fs::read_to_string(format!("/proc/{child}/stat")).map_err(|e| e.to_string())?;
        let state = st.rsplit(") ").next().and_then(|s| s.chars().next());
        ensure!(
            state == Some('T'),
            "the child is in state {state:?}, not stopped"
        );
        // SAFETY: `si` is a writable siginfo_t.
        let (r, code, status) = unsafe {
            let mut si: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                child as u32,
                &mut si,
                libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT,
            );
            (r, si.si_code, si.si_status())
        };
        ensure!(r == 0, "waitid of the child failed");
        ensure!(
            code == 0 || (code == libc::CLD_STOPPED && status == libc::SIGTSTP),
            "the child's stop is reported with code {code}, signal {status} (SIGTSTP expected)"
        );
        Ok(())
    })();
    // SAFETY: integer arguments.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(args, verdict)
}

fn mode_zombies(args: &crust_testprogs::Args) -> ! {
    let killed = fork();
    if killed == 0 {
        loop {
            // SAFETY: no arguments.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: integer arguments; `si` is a writable siginfo_t.
    unsafe {
        libc::kill(killed, libc::SIGKILL);
        let mut si: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            killed as u32,
            &mut si,
            libc::WEXITED | libc::WNOWAIT,
        );
    }
    let leader = fork();
    if leader == 0 {
        // SAFETY: integer arguments; the raw clone's child only exits.
        unsafe {
            libc::setpgid(0, 0);
            let c = libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_PARENT | libc::SIGCHLD) as u64,
                0u64,
                0u64,
                0u64,
                0u64,
            );
            if c == 0 {
                libc::_exit(7);
            }
            libc::_exit(if c > 0 { 0 } else { 1 });
        }
    }
    let mut status = 0;
    // SAFETY: `status` is a writable c_int.
    unsafe { libc::waitpid(leader, &mut status, 0) };
    if status != 0 {
        die("the group leader failed");
    }
    // The grandchild, now a child of ours: wait until it is a zombie.
    // SAFETY: siginfo_t is plain data (all zeroes is valid); `si` is
    // writable for waitid.
    let r = unsafe {
        let mut si: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(libc::P_ALL, 0, &mut si, libc::WEXITED | libc::WNOWAIT)
    };
    if r != 0 {
        die("waitid");
    }
    ready(args);
    while !term_requested() {
        sleep_ms(20);
    }
    let verdict = (|| {
        // SAFETY: integer arguments and writable c_ints / siginfo_t.
        unsafe {
            let mut st = 0;
            ensure!(
                libc::waitpid(killed, &mut st, 0) == killed,
                "the killed child is gone"
            );
            ensure!(
                libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
                "the killed child's status is {st:#x}, not a SIGKILL death"
            );
            let mut si: libc::siginfo_t = std::mem::zeroed();
            ensure!(
                libc::waitid(libc::P_ALL, 0, &mut si, libc::WEXITED | libc::WNOWAIT) == 0,
                "the zombie grandchild is not our child any more"
            );
            let z = si.si_pid();
            let g = libc::getpgid(z);
            ensure!(g == leader, "the zombie {z} is in group {g}, not {leader}");
            ensure!(
                libc::waitpid(z, &mut st, 0) == z,
                "cannot reap the zombie {z}"
            );
            ensure!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 7,
                "the zombie's status is {st:#x}, not exit 7"
            );
        }
        Ok(())
    })();
    finish(args, verdict)
}

fn mode_sigtrap(args: &crust_testprogs::Args) -> ! {
    // SAFETY: `set` is a valid sigset_t; integer arguments otherwise.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTRAP);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), libc::SIGTRAP);
    }
    ready(args);
    while !term_requested() {
        sleep_ms(20);
    }
    // SAFETY: `set` is a writable sigset_t.
    let pending = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGTRAP) == 1
    };
    finish(
        args,
        if pending {
            Ok(())
        } else {
            Err("SIGTRAP is no longer pending".into())
        },
    )
}

fn mode_timens(args: &crust_testprogs::Args) -> ! {
    // SAFETY: an integer argument.
    if unsafe { libc::unshare(libc::CLONE_NEWTIME) } != 0 {
        die("unshare(CLONE_NEWTIME)");
    }
    ready(args);
    while !term_requested() {
        sleep_ms(20);
    }
    finish(args, Ok(()))
}

fn main() {
    let args = start();
    match args.opt("mode").unwrap_or("state") {
        "state" => mode_state(&args),
        "stopped" => mode_stopped(&args),
        "zombies" => mode_zombies(&args),
        "sigtrap" => mode_sigtrap(&args),
        "timens" => mode_timens(&args),
        m => die(&format!("unknown --mode {m}")),
    }
}
