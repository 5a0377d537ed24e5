//! `netns`: a process in a network namespace of its own (it unshares
//! CLONE_NEWNET before it is ready); the test script fills the namespace
//! from outside (links, addresses, routes, rules, sysctls).
//!
//! After SIGTERM it checks, from inside, that it is still in a namespace
//! with the link `--link NAME` and that `net.unix.max_dgram_qlen` is
//! `--qlen N` (the script checks the rest with `ip` and `nft`).

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term};

fn check(link: &str, qlen: u64) -> Result<(), String> {
    let dev = std::fs::read_to_string("/proc/self/net/dev")
        .map_err(|e| format!("/proc/self/net/dev: {e}"))?;
    let has = |n: &str| {
        dev.lines()
            .any(|l| l.trim_start().starts_with(&format!("{n}:")))
    };
    ensure!(has("lo"), "no lo in /proc/self/net/dev");
    ensure!(has(link), "no link {link} in /proc/self/net/dev: {dev}");
    let q = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .map_err(|e| format!("max_dgram_qlen: {e}"))?;
    ensure!(
        q.trim() == qlen.to_string(),
        "net.unix.max_dgram_qlen is {}, not {qlen}",
        q.trim()
    );
    Ok(())
}

fn main() {
    let args = start();
    let link = args.opt("link").unwrap_or("lo").to_string();
    let qlen = args.num("qlen", 10);
    // SAFETY: unshare takes an integer.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        die("unshare(CLONE_NEWNET)");
    }
    ready(&args);
    wait_for_term(10, || {});
    finish(&args, check(&link, qlen));
}
