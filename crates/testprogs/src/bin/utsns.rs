//! `utsns`: a tree in a UTS namespace of its own (the program unshares
//! CLONE_NEWUTS and names it), with a forked child in the same namespace.
//! With `--child-ns 1` the child moves to a UTS namespace of its own (a
//! tree in two UTS namespaces, which crust refuses).
//!
//! After SIGTERM it checks the host and domain names (the test script
//! checks that the namespace is not the host's).

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};

const HOST: &str = "crust-uts-test";
const DOMAIN: &str = "crust.example";

fn names() -> Result<(String, String), String> {
    // SAFETY: an all-zero utsname is valid; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(format!("uname: {}", std::io::Error::last_os_error()));
    }
    let s = |f: &[libc::c_char]| {
        f.iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8 as char)
            .collect::<String>()
    };
    Ok((s(&u.nodename), s(&u.domainname)))
}

fn check() -> Result<(), String> {
    let (h, d) = names()?;
    ensure!(h == HOST, "host name is {h:?}, not {HOST:?}");
    ensure!(d == DOMAIN, "domain name is {d:?}, not {DOMAIN:?}");
    Ok(())
}

fn main() {
    let args = start();
    let child_ns = args.num("child-ns", 0) == 1;
    // SAFETY: plain syscalls on byte strings that outlive the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWUTS) != 0 {
            die("unshare(CLONE_NEWUTS)");
        }
        if libc::sethostname(HOST.as_ptr().cast(), HOST.len()) != 0 {
            die("sethostname");
        }
        if libc::setdomainname(DOMAIN.as_ptr().cast(), DOMAIN.len()) != 0 {
            die("setdomainname");
        }
    }
    // SAFETY: the child only sleeps (and maybe unshares) until killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: prctl and unshare take integers.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if child_ns && libc::unshare(libc::CLONE_NEWUTS) != 0 {
                libc::_exit(3);
            }
        }
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    if child < 0 {
        die("fork");
    }
    ready(&args);
    wait_for_term(10, || {});
    let verdict = check();
    // SAFETY: kill and waitpid on our own child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    finish(&args, verdict);
}
