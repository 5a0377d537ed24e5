//! Kernel tests: seize a real child process, run syscalls inside it, and
//! let it go unharmed. They need root (ptrace of a child works without it,
//! but the sandbox may restrict it): without it they skip, saying why, or
//! fail when CRUST_REQUIRE_PRIVILEGED=1 (as in CI).

use crust_compel::Task;
use crust_sys::RemoteAddr;
use std::process::{Child, Command};
use std::time::Duration;

struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_sleeper() -> Kid {
    Kid(Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep"))
}

/// A sleeper, its pid, and the sleeper seized (it dies with the `Kid`).
fn seized_sleeper() -> (Kid, i32, Task) {
    let kid = spawn_sleeper();
    let pid = kid.0.id() as i32;
    std::thread::sleep(Duration::from_millis(50));
    let t = Task::seize(pid, Duration::from_secs(5)).expect("seize");
    (kid, pid, t)
}

/// First executable mapping of `pid` that is not the vDSO.
fn exec_vma(pid: i32) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f[1].contains('x') && !l.contains('[') {
            let start = f[0].split('-').next().unwrap();
            return u64::from_str_radix(start, 16).unwrap();
        }
    }
    panic!("no executable mapping in {pid}");
}

/// Root, or skip (a failure under CRUST_REQUIRE_PRIVILEGED=1).
fn can_ptrace() -> bool {
    crust_sys::testing::require_root(&crust_sys::testing::current_test())
}

#[test]
fn seize_remote_syscalls_and_release() {
    if !can_ptrace() {
        return;
    }
    let (_kid, pid, mut t) = seized_sleeper();
    assert_eq!(t.pid(), pid);
    assert_ne!(t.regs().rip, 0);
    let xs = t.xstate().expect("xstate");
    assert!(xs.len() >= 512, "XSAVE area of {} bytes", xs.len());
    let ip = RemoteAddr(exec_vma(pid));
    let before = crust_sys::ptrace::peek(pid, ip).unwrap();
    t.infect(ip).expect("infect");
    // getpid inside the task returns the task's pid.
    let got = t.syscall(libc::SYS_getpid, [0; 6]).expect("remote getpid");
    assert_eq!(got as i32, pid);
    // A scratch mapping in the task, written and read back from outside.
    let addr = t
        .syscall(
            libc::SYS_mmap,
            [
                0,
                4096,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .expect("remote mmap");
    crust_sys::mem::write(pid, RemoteAddr(addr), b"crust").unwrap();
    let mut back = [0u8; 5];
    crust_sys::mem::read(pid, RemoteAddr(addr), &mut back).unwrap();
    assert_eq!(&back, b"crust");
    // Errors come back as errors.
    let e = t.syscall(libc::SYS_close, [9999, 0, 0, 0, 0, 0]);
    assert!(e.is_err(), "close(9999) should fail with EBADF");
    t.syscall(libc::SYS_munmap, [addr, 4096, 0, 0, 0, 0])
        .expect("remote munmap");
    t.cure().expect("cure");
    assert_eq!(crust_sys::ptrace::peek(pid, ip).unwrap(), before);
    t.release(false).expect("release");
    std::thread::sleep(Duration::from_millis(50));
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let st = state
        .rsplit(')')
        .next()
        .unwrap()
        .trim()
        .chars()
        .next()
        .unwrap();
    assert!(st == 'S' || st == 'R', "child state after release: {st}");
}

#[test]
fn a_remote_syscall_that_blocks_is_bounded_by_the_timeout() {
    if !can_ptrace() {
        return;
    }
    let (_kid, pid, mut t) = seized_sleeper();
    t.set_timeout(Some(Duration::from_millis(300)));
    let ip = RemoteAddr(exec_vma(pid));
    let before = crust_sys::ptrace::peek(pid, ip).unwrap();
    t.infect(ip).expect("infect");
    // pause() never returns by itself.
    let t0 = std::time::Instant::now();
    let e = t.syscall(libc::SYS_pause, [0; 6]);
    let took = t0.elapsed();
    assert!(
        matches!(e, Err(crust_compel::Error::Timeout { .. })),
        "remote pause: {e:?}"
    );
    assert!(took < Duration::from_secs(2), "the timeout took {took:?}");
    // The task stopped again: it is put back and runs on.
    t.cure().expect("cure after the timeout");
    assert_eq!(crust_sys::ptrace::peek(pid, ip).unwrap(), before);
    t.release(false).expect("release after the timeout");
    std::thread::sleep(Duration::from_millis(50));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0"), "still traced: {status}");
    let state = status
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        state.contains('S') || state.contains('R'),
        "child after release: {state}"
    );
}

#[test]
fn interrupted_sleep_is_restarted_after_release() {
    if !can_ptrace() {
        return;
    }
    // `sleep 1` must still take about a second although it was interrupted
    // and ran foreign syscalls meanwhile.
    let mut kid = Kid(Command::new("sleep").arg("1").spawn().unwrap());
    let pid = kid.0.id() as i32;
    let t0 = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    let mut t = Task::seize(pid, Duration::from_secs(5)).expect("seize");
    t.infect(RemoteAddr(exec_vma(pid))).unwrap();
    t.syscall(libc::SYS_getppid, [0; 6]).unwrap();
    t.release(false).unwrap();
    let st = kid.0.wait().unwrap();
    assert!(st.success(), "sleep failed after release: {st:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "sleep ended early ({took:?}): the interrupted syscall was not restarted"
    );
}

/// A task handed from one tracer thread to another and back
/// (`park_and_detach`, `seize_parked`), as a restore that builds two
/// subtrees at once does: remote syscalls work on each side, the parked
/// task arms a parent-death SIGKILL, and its parent sees no stop.
#[test]
fn a_parked_task_changes_tracer_threads() {
    if !can_ptrace() {
        return;
    }
    let (_kid, pid, mut t) = seized_sleeper();
    t.infect(RemoteAddr(exec_vma(pid))).expect("infect");
    // A trampoline page like restore's.
    let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
    let page = t
        .syscall(
            libc::SYS_mmap,
            [
                0,
                4096,
                rwx,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )
        .expect("remote mmap");
    let code = crust_compel::TRAMPOLINE_CODE;
    assert_eq!(
        crust_sys::mem::write(pid, RemoteAddr(page), &code).unwrap(),
        code.len()
    );
    let park = RemoteAddr(page + crust_compel::PARK_OFFSET);
    let parent = std::process::id() as i32;
    let opts = crust_sys::ptrace::options::EXITKILL | crust_sys::ptrace::options::TRACESYSGOOD;
    assert_eq!(t.park_and_detach(park, parent).expect("park"), pid);
    // In the loop's pause (a seize before it ran the prctl would stop it
    // at the loop's start, which is fine, but then nothing is armed yet).
    let in_pause = || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|s| s.split_whitespace().next() == Some("34"))
    };
    for _ in 0..2000 {
        if in_pause() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(in_pause(), "the parked task is not in the loop's pause");
    let other = std::thread::spawn(move || {
        let mut t = Task::seize_parked(pid, opts).expect("seize the parked task");
        t.use_trapping_syscall_ip(RemoteAddr(page));
        let got = t.syscall(libc::SYS_getpid, [0; 6]).expect("remote getpid");
        assert_eq!(got as i32, pid);
        // The loop armed a parent-death SIGKILL.
        let at = page + 2048;
        t.syscall(
            libc::SYS_prctl,
            [libc::PR_GET_PDEATHSIG as u64, at, 0, 0, 0, 0],
        )
        .expect("remote prctl");
        let mut sig = [0u8; 4];
        crust_sys::mem::read(pid, RemoteAddr(at), &mut sig).unwrap();
        assert_eq!(i32::from_ne_bytes(sig), libc::SIGKILL);
        t.park_and_detach(park, parent).expect("park again")
    });
    assert_eq!(other.join().expect("the other tracer thread"), pid);
    // Parked and untraced: its parent (this test) was told of no stop.
    let r = crust_sys::process::waitpid(pid, libc::WNOHANG | libc::WUNTRACED).unwrap();
    assert!(r.is_none(), "the parent saw a change of its child: {r:?}");
    let mut t = Task::seize_parked(pid, opts).expect("seize it back");
    t.use_trapping_syscall_ip(RemoteAddr(page));
    let ppid = t
        .syscall(libc::SYS_getppid, [0; 6])
        .expect("remote getppid");
    assert_eq!(ppid as u32, std::process::id());
    t.kill();
}

#[test]
fn restart_adjustment_rules() {
    let mut r: libc::user_regs_struct = zero_regs();
    r.orig_rax = 35;
    r.rip = 0x1000;
    r.rax = crust_compel::ERESTARTSYS as u64;
    let a = crust_compel::restart_adjusted(&r, false);
    assert_eq!((a.rax, a.rip), (35, 0x0ffe));
    r.rax = crust_compel::ERESTART_RESTARTBLOCK as u64;
    let b = crust_compel::restart_adjusted(&r, false);
    assert_eq!(b.rax as i64, -(libc::EINTR as i64));
    let c = crust_compel::restart_adjusted(&r, true);
    assert_eq!((c.rax, c.rip), (libc::SYS_restart_syscall as u64, 0x0ffe));
    // poll(2) without a timeout is simply run again.
    r.orig_rax = libc::SYS_poll as u64;
    r.rdx = u64::MAX;
    let e = crust_compel::restart_adjusted(&r, false);
    assert_eq!((e.rax, e.rip), (libc::SYS_poll as u64, 0x0ffe));
    r.rdx = 1000;
    let f = crust_compel::restart_adjusted(&r, false);
    assert_eq!(f.rax as i64, -(libc::EINTR as i64));
    r.orig_rax = u64::MAX;
    let d = crust_compel::restart_adjusted(&r, false);
    assert_eq!(d.rax, r.rax);
}

fn zero_regs() -> libc::user_regs_struct {
    libc::user_regs_struct {
        r15: 0,
        r14: 0,
        r13: 0,
        r12: 0,
        rbp: 0,
        rbx: 0,
        r11: 0,
        r10: 0,
        r9: 0,
        r8: 0,
        rax: 0,
        rcx: 0,
        rdx: 0,
        rsi: 0,
        rdi: 0,
        orig_rax: 0,
        rip: 0,
        cs: 0,
        eflags: 0,
        rsp: 0,
        ss: 0,
        fs_base: 0,
        gs_base: 0,
        ds: 0,
        es: 0,
        fs: 0,
        gs: 0,
    }
}
