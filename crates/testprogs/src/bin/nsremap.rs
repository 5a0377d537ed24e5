//! `nsremap --dir DIR`: a file deleted while open, still linked under
//! another name, on a file system that the tree's own user namespace owns
//! (what `--link-remap` must link back as that namespace's root: the
//! kernel refuses a name made there by an id the namespace cannot map).
//!
//! The program (outer) clones the init of new user and pid namespaces
//! (inner; root inside is uid/gid 100000 outside, 65536 ids) and writes its
//! maps. A helper forked by the outer joins that user namespace, makes a
//! mount namespace of its own there (so it may mount) and makes a tmpfs
//! with fsopen/fsmount: a detached mount whose superblock the tree's user
//! namespace owns; the outer attaches it at DIR in its own mount namespace,
//! which the inner shares. The inner (root of its namespace) writes
//! `DIR/f`, keeps an fd on it, links it as `DIR/g` and removes `DIR/f`.
//! After SIGTERM it checks that the fd still reads the file, which has one
//! link (`DIR/g`, the same inode) and whose fd link reads `DIR/f
//! (deleted)`. DIR stays mounted: the test unmounts it.

use crust_testprogs::{cpath, die, ensure, finish, make_pipe, ready, start, wait_for_term};
use std::io::{Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

const DATA: &str = "linked elsewhere, deleted here";

fn write_file(path: &str, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("write {text:?} to {path}: {e}");
        std::process::exit(3);
    }
}

fn read_byte(fd: i32) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: read into a live one-byte buffer.
    unsafe { libc::read(fd, b.as_mut_ptr().cast(), 1) == 1 }
}

fn write_byte(fd: i32) {
    // SAFETY: write one byte from a live buffer.
    if unsafe { libc::write(fd, b"g".as_ptr().cast(), 1) } != 1 {
        die("write to a pipe");
    }
}

/// In the helper: join `inner`'s user namespace, make a mount namespace
/// there and a detached tmpfs; its mount fd is left at fd 100.
fn helper(inner: i32, done: i32, told: i32) -> ! {
    let ns = cpath(Path::new(&format!("/proc/{inner}/ns/user")));
    let tmpfs = cpath(Path::new("tmpfs"));
    // SAFETY: plain system calls on NUL-terminated strings that outlive
    // them, and on fds of our own.
    unsafe {
        let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 || libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
            libc::_exit(10);
        }
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            libc::_exit(11);
        }
        let fs = libc::syscall(libc::SYS_fsopen, tmpfs.as_ptr(), 1u32) as i32;
        if fs < 0 {
            libc::_exit(12);
        }
        // FSCONFIG_CMD_CREATE
        if libc::syscall(
            libc::SYS_fsconfig,
            fs,
            6u32,
            std::ptr::null::<u8>(),
            std::ptr::null::<u8>(),
            0,
        ) != 0
        {
            libc::_exit(13);
        }
        let m = libc::syscall(libc::SYS_fsmount, fs, 0u32, 0u32) as i32;
        if m < 0 || libc::dup2(m, 100) != 100 {
            libc::_exit(14);
        }
        write_byte(told);
        // Until the outer took the mount.
        read_byte(done);
        libc::_exit(0)
    }
}

/// In the outer: a tmpfs owned by `inner`'s user namespace, attached at
/// `dir`.
fn attach_tmpfs(inner: i32, dir: &Path) {
    let told = make_pipe();
    let done = make_pipe();
    // SAFETY: fork of this single-threaded program; the child only makes
    // system calls before it exits.
    let h = unsafe { libc::fork() };
    if h < 0 {
        die("fork the helper");
    }
    if h == 0 {
        helper(inner, done[0], told[1]);
    }
    if !read_byte(told[0]) {
        die("the helper made no tmpfs");
    }
    let at = cpath(Path::new(&format!("/proc/{h}/fd/100")));
    let target = cpath(dir);
    let empty = cpath(Path::new(""));
    // SAFETY: system calls on NUL-terminated strings that outlive them;
    // waitpid on our own child.
    unsafe {
        let m = libc::open(at.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        // MOVE_MOUNT_F_EMPTY_PATH
        if m < 0
            || libc::syscall(
                libc::SYS_move_mount,
                m,
                empty.as_ptr(),
                libc::AT_FDCWD,
                target.as_ptr(),
                4u32,
            ) != 0
        {
            die("attach the helper's tmpfs");
        }
        libc::close(m);
        write_byte(done[1]);
        libc::waitpid(h, std::ptr::null_mut(), 0);
    }
}

fn check(dir: &Path, fd: &mut std::fs::File, raw: i32) -> Result<(), String> {
    let md = fd.metadata().map_err(|e| format!("fstat: {e}"))?;
    let g = std::fs::metadata(dir.join("g")).map_err(|e| format!("stat g: {e}"))?;
    ensure!(
        md.ino() == g.ino() && md.dev() == g.dev(),
        "the fd is on {}:{}, not on g ({}:{})",
        md.dev(),
        md.ino(),
        g.dev(),
        g.ino()
    );
    ensure!(md.nlink() == 1, "the file has {} links, not 1", md.nlink());
    let mut s = String::new();
    fd.rewind().map_err(|e| format!("seek: {e}"))?;
    fd.read_to_string(&mut s)
        .map_err(|e| format!("read: {e}"))?;
    ensure!(s == DATA, "the fd reads {s:?}");
    let link = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map_err(|e| format!("readlink of the fd: {e}"))?;
    let want = format!("{} (deleted)", dir.join("f").display());
    ensure!(
        link.to_string_lossy() == want,
        "the fd's link reads {}, not {want}",
        link.display()
    );
    Ok(())
}

fn inner(args: &crust_testprogs::Args, dir: &Path) -> ! {
    // SAFETY: plain system calls.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0 || libc::setresuid(0, 0, 0) != 0 {
            die("take root's ids in the namespace");
        }
        libc::prctl(libc::PR_SET_DUMPABLE, 1);
    }
    let f = dir.join("f");
    std::fs::write(&f, DATA).unwrap_or_else(|_| die("write DIR/f"));
    let mut fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap_or_else(|_| die("open DIR/f"));
    std::fs::hard_link(&f, dir.join("g")).unwrap_or_else(|_| die("link DIR/f to DIR/g"));
    std::fs::remove_file(&f).unwrap_or_else(|_| die("remove DIR/f"));
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    ready(args);
    wait_for_term(10, || {});
    let verdict = check(dir, &mut fd, raw);
    finish(args, verdict);
}

fn main() {
    let args = start();
    let dir = args.path("dir");
    let sync = make_pipe();
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID;
    // SAFETY: a fork-like clone (no new stack) of this single-threaded
    // program; the child only reads a pipe before going on.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as u64,
            0u64,
            0u64,
            0u64,
            0u64,
        )
    } as i32;
    if pid < 0 {
        die("clone with new user and pid namespaces");
    }
    if pid == 0 {
        // SAFETY: close takes an fd.
        unsafe { libc::close(sync[1]) };
        if !read_byte(sync[0]) {
            // SAFETY: _exit takes a status.
            unsafe { libc::_exit(3) };
        }
        // SAFETY: close takes an fd.
        unsafe { libc::close(sync[0]) };
        inner(&args, &dir);
    }
    write_file(&format!("/proc/{pid}/uid_map"), "0 100000 65536\n");
    write_file(&format!("/proc/{pid}/gid_map"), "0 100000 65536\n");
    attach_tmpfs(pid, &dir);
    write_byte(sync[1]);
    // SAFETY: close and waitpid take integers (and a null status pointer).
    unsafe {
        libc::close(sync[0]);
        libc::close(sync[1]);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}
