//! Give open files of crust to a task under construction, at chosen fd
//! numbers, keeping the open file descriptions (one pipe end held by three
//! processes stays one description).
//!
//! The task makes an AF_UNIX datagram socket bound to an abstract name
//! (remote socket + bind); crust sends it the fds with SCM_RIGHTS; the task
//! receives them (remote recvmsg), moves each to its number with dup3 and
//! closes the rest. For any kind of file crust opens itself (pipes, FIFOs,
//! sockets, and what a task in a user namespace may not open: its own
//! /proc/self/map_files).

use crate::task::remote::{Batch, Remote};
use crate::util::sys_err;
use crate::Error;
use crust_sys::fdpass::{self, abi, MAX_FDS_PER_MSG};
use log::debug;
use std::collections::HashSet;
use std::os::fd::{BorrowedFd, OwnedFd};

/// One fd to give: crust's `fd` becomes `target` in the task.
#[derive(Debug, Clone, Copy)]
pub struct Gift<'a> {
    pub fd: BorrowedFd<'a>,
    pub target: i32,
    pub cloexec: bool,
}

// Scratch layout of the remote recvmsg.
const OFF_MSGHDR: u64 = 0;
const OFF_IOV: u64 = 64;
const OFF_DATA: u64 = 96;
const OFF_ADDR: u64 = 128;
const OFF_CONTROL: u64 = 256;
/// The table of batched calls, after the control buffer.
const OFF_TABLE: u64 = 2048;
/// CMSG_SPACE(MAX_FDS_PER_MSG * 4), rounded up to 8.
const CONTROL_LEN: u64 = (abi::CMSGHDR_SIZE + (MAX_FDS_PER_MSG * 4).div_ceil(8) * 8) as u64;

/// Install every gift in the task. Fds that the task already has at the
/// targets are replaced; nothing else of its fd table is touched, except
/// that the kernel may pick free fd numbers for a moment.
pub fn give_fds(r: &mut Remote<'_>, gifts: &[Gift<'_>]) -> Result<(), Error> {
    if gifts.is_empty() {
        return Ok(());
    }
    let pid = r.pid();
    let targets: HashSet<i32> = gifts.iter().map(|g| g.target).collect();
    if targets.len() != gifts.len() {
        return Err(Error::Restore {
            pid,
            what: "two files to give at the same fd number".into(),
        });
    }
    // Spare numbers above every target, where temporaries can wait.
    let spare = targets.iter().copied().max().unwrap_or(0) as u64 + 1;
    if r.batch_code.is_some() {
        return give_fds_foreseen(r, gifts, &targets, spare);
    }
    let sock = r.call(
        "socket(AF_UNIX, SOCK_DGRAM) to receive fds",
        libc::SYS_socket,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    let mut sock_at = sock;
    let result = (|| {
        let name = format!("crust-fdpass-{}-{}", crust_sys::process::getpid(), r.pid());
        let (addr, addr_len) =
            fdpass::abstract_addr(name.as_bytes()).map_err(sys_err(pid, "abstract socket name"))?;
        let a = r.put(OFF_ADDR, &addr)?;
        // Spare numbers are free ones: above every fd the task has.
        let spare = spare.max(free_from(pid)?);
        // Out of the targets' way (to the first spare number) and bound,
        // in one stop.
        let mut calls = Batch::with_table_at(r.batch_code, OFF_TABLE);
        sock_at =
            push_aside_and_bind(r, &mut calls, (sock, spare, &targets), (&name, a, addr_len))?;
        calls.flush(r)?;
        let tx = sender(pid)?;
        use std::os::fd::AsFd;
        for batch in gifts.chunks(MAX_FDS_PER_MSG) {
            let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|g| g.fd).collect();
            fdpass::send_fds(tx.as_fd(), name.as_bytes(), b"F", &fds).map_err(sys_err(
                pid,
                format!("sendmsg of {} fds to @{name}", fds.len()),
            ))?;
            let got = receive(r, sock_at, batch.len())?;
            // Above the fds received too.
            let spare = spare.max(sock_at + 1).max(free_from(pid)?);
            place(r, batch, &got, &targets, spare)?;
        }
        Ok(())
    })();
    let closed = r.call("close", libc::SYS_close, [sock_at, 0, 0, 0, 0, 0]);
    result?;
    closed?;
    debug!("{pid}: gave {} fds", gifts.len());
    Ok(())
}

/// [`give_fds`] for a task on restore's trampoline, whose whole tree is
/// stopped: its fd table changes only by what crust asks, and the kernel
/// gives each new fd the lowest free number, so the numbers of the socket
/// and of the fds received are known beforehand (from /proc) and no stop
/// waits for them. Socket and bind run in one stop; each message's
/// receipt, the moves to the targets and (after the last) the socket's
/// close in one more. The numbers foreseen are checked against those the
/// kernel gave (a mismatch fails the restore, which kills the task).
fn give_fds_foreseen(
    r: &mut Remote<'_>,
    gifts: &[Gift<'_>],
    targets: &HashSet<i32>,
    spare: u64,
) -> Result<(), Error> {
    let pid = r.pid();
    let mut table = open_fds(pid)?;
    let sock = lowest_free(&table);
    let spare = spare.max(table.last().map_or(0, |&m| m + 1));
    let name = format!("crust-fdpass-{}-{}", crust_sys::process::getpid(), pid);
    let (addr, addr_len) =
        fdpass::abstract_addr(name.as_bytes()).map_err(sys_err(pid, "abstract socket name"))?;
    let a = r.put(OFF_ADDR, &addr)?;
    let mut calls = Batch::with_table_at(r.batch_code, OFF_TABLE);
    calls.push(
        r,
        format!("socket(AF_UNIX, SOCK_DGRAM) to receive fds, foreseen as fd {sock}"),
        libc::SYS_socket,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
        Some(sock),
    )?;
    let sock_at = push_aside_and_bind(r, &mut calls, (sock, spare, targets), (&name, a, addr_len))?;
    table.insert(sock_at);
    let result = calls
        .flush(r)
        .and_then(|_| send_and_place(r, gifts, targets, (&name, sock_at, spare), table));
    if result.is_err() {
        // The task is killed on this path; closed anyway, as give_fds does.
        let _ = r.call("close", libc::SYS_close, [sock_at, 0, 0, 0, 0, 0]);
    }
    result?;
    debug!("{pid}: gave {} fds", gifts.len());
    Ok(())
}

/// Into `calls`: the receiving socket `sock` moved out of the targets'
/// way (to the first spare number) if it sits on one, then bound to the
/// abstract name `name` (its sockaddr at `a` in the task). Returns the
/// number the socket then has.
fn push_aside_and_bind(
    r: &mut Remote<'_>,
    calls: &mut Batch,
    (sock, spare, targets): (u64, u64, &HashSet<i32>),
    (name, a, addr_len): (&str, crust_sys::RemoteAddr, u32),
) -> Result<u64, Error> {
    let sock_at = if targets.contains(&(sock as i32)) {
        let what = format!("dup3 of fd {sock} to the spare {spare}");
        push_move(r, calls, sock, spare, libc::O_CLOEXEC as u64, what)?;
        spare
    } else {
        sock
    };
    calls.push(
        r,
        format!("bind to @{name}"),
        libc::SYS_bind,
        [sock_at, a.get(), addr_len as u64, 0, 0, 0],
        None,
    )?;
    Ok(sock_at)
}

/// The sends of [`give_fds_foreseen`], each received in the task with
/// the moves to the targets in the same stop, the socket closed in the
/// last; `table`: the task's fds, the socket included.
fn send_and_place(
    r: &mut Remote<'_>,
    gifts: &[Gift<'_>],
    targets: &HashSet<i32>,
    (name, sock_at, spare): (&str, u64, u64),
    mut table: std::collections::BTreeSet<u64>,
) -> Result<(), Error> {
    use std::os::fd::AsFd;
    let pid = r.pid();
    let tx = sender(pid)?;
    let chunks: Vec<&[Gift<'_>]> = gifts.chunks(MAX_FDS_PER_MSG).collect();
    for (k, batch) in chunks.iter().enumerate() {
        let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|g| g.fd).collect();
        fdpass::send_fds(tx.as_fd(), name.as_bytes(), b"F", &fds).map_err(sys_err(
            pid,
            format!("sendmsg of {} fds to @{name}", fds.len()),
        ))?;
        // The numbers the kernel will give them, lowest free first.
        let mut foreseen = Vec::with_capacity(batch.len());
        for _ in 0..batch.len() {
            let fd = lowest_free(&table);
            table.insert(fd);
            foreseen.push(fd as i32);
        }
        let spare = spare.max(table.last().map_or(0, |&m| m + 1));
        let mut calls = Batch::with_table_at(r.batch_code, OFF_TABLE);
        push_receive(r, &mut calls, sock_at)?;
        push_place(r, &mut calls, batch, &foreseen, targets, spare)?;
        if k + 1 == chunks.len() {
            calls.push(
                r,
                "close".into(),
                libc::SYS_close,
                [sock_at, 0, 0, 0, 0, 0],
                None,
            )?;
        }
        calls.flush(r)?;
        let got = received(r, batch.len())?;
        if got != foreseen {
            return Err(Error::Restore {
                pid,
                what: format!("the fds passed to it came as {got:?}, not {foreseen:?}"),
            });
        }
        // The received fds were moved to their targets (or closed).
        for fd in &got {
            table.remove(&(*fd as u64));
        }
        table.extend(batch.iter().map(|g| g.target as u64));
    }
    Ok(())
}

/// The fds task `pid` has open (its fd table, from /proc).
fn open_fds(pid: i32) -> Result<std::collections::BTreeSet<u64>, Error> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).map_err(sys_err(pid, format!("read {dir}")))?;
    let mut out = std::collections::BTreeSet::new();
    for e in entries {
        let e = e.map_err(sys_err(pid, format!("read {dir}")))?;
        if let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
            out.insert(n);
        }
    }
    Ok(out)
}

/// The lowest number not in `table`: the one the kernel gives a new fd.
fn lowest_free(table: &std::collections::BTreeSet<u64>) -> u64 {
    let mut n = 0;
    for &fd in table {
        if fd != n {
            break;
        }
        n += 1;
    }
    n
}

/// Give one file of crust to the task at a number the kernel picks
/// (close-on-exec); returns that number. For files the task cannot open by
/// a path of its own: its /proc may be another pid namespace's, where
/// crust's /proc/CRUST/fd/N and /proc/HOST/map_files do not exist.
pub fn give_fd(r: &mut Remote<'_>, fd: BorrowedFd<'_>) -> Result<u64, Error> {
    let pid = r.pid();
    let sock = r.call(
        "socket(AF_UNIX, SOCK_DGRAM) to receive an fd",
        libc::SYS_socket,
        [
            libc::AF_UNIX as u64,
            (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as u64,
            0,
            0,
            0,
            0,
        ],
    )?;
    let result = (|| {
        let name = format!("crust-fdpass-{}-{}", crust_sys::process::getpid(), pid);
        let (addr, addr_len) =
            fdpass::abstract_addr(name.as_bytes()).map_err(sys_err(pid, "abstract socket name"))?;
        let a = r.put(OFF_ADDR, &addr)?;
        r.call(
            &format!("bind to @{name}"),
            libc::SYS_bind,
            [sock, a.get(), addr_len as u64, 0, 0, 0],
        )?;
        let tx = sender(pid)?;
        use std::os::fd::AsFd;
        fdpass::send_fds(tx.as_fd(), name.as_bytes(), b"F", &[fd])
            .map_err(sys_err(pid, format!("sendmsg of an fd to @{name}")))?;
        let got = receive(r, sock, 1)?;
        got.first()
            .map(|&f| f as u64)
            .ok_or_else(|| Error::Restore {
                pid,
                what: "the fd passed to it did not arrive".into(),
            })
    })();
    let closed = r.call("close", libc::SYS_close, [sock, 0, 0, 0, 0, 0]);
    let got = result?;
    closed?;
    Ok(got)
}

/// crust's socket to send fds to task `pid`'s abstract name: made in the
/// task's network namespace (abstract names belong to one), which a
/// restored tree may have of its own.
fn sender(pid: i32) -> Result<OwnedFd, Error> {
    use std::os::unix::fs::MetadataExt;
    let make = || fdpass::dgram_socket().map_err(sys_err(pid, "socket for passing fds"));
    let path = format!("/proc/{pid}/ns/net");
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino());
    match (ino("/proc/thread-self/ns/net"), ino(&path)) {
        (Ok(a), Ok(b)) if a != b => {}
        _ => return make(),
    }
    let ns = std::fs::File::open(&path).map_err(sys_err(pid, format!("open {path}")))?;
    // A thread of its own joins the namespace, makes the socket, ends.
    std::thread::scope(|s| {
        s.spawn(|| {
            use std::os::fd::AsFd;
            crust_sys::ns::setns(ns.as_fd(), libc::CLONE_NEWNET)
                .map_err(sys_err(pid, "setns into its network namespace"))?;
            make()
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Restore {
                pid,
                what: "the thread making the fd-passing socket panicked".into(),
            })
        })
    })
}

/// One above the highest fd task `pid` has open (its fd table, from
/// /proc): every number from there is free, and the task, stopped, opens
/// nothing meanwhile.
fn free_from(pid: i32) -> Result<u64, Error> {
    Ok(open_fds(pid)?.last().map_or(0, |&n| n + 1))
}

/// Write the msghdr, iovec and an empty control buffer of a recvmsg of
/// passed fds into the scratch area.
fn prepare_receive(r: &mut Remote<'_>) -> Result<(), Error> {
    let mut hdr = vec![0u8; abi::MSGHDR_SIZE];
    let put_u64 = |b: &mut [u8], off: usize, v: u64| {
        if let Some(d) = b.get_mut(off..off + 8) {
            d.copy_from_slice(&v.to_le_bytes());
        }
    };
    put_u64(&mut hdr, abi::MSG_NAME, 0);
    put_u64(&mut hdr, abi::MSG_NAMELEN, 0);
    put_u64(&mut hdr, abi::MSG_IOV, r.at(OFF_IOV).get());
    put_u64(&mut hdr, abi::MSG_IOVLEN, 1);
    put_u64(&mut hdr, abi::MSG_CONTROL, r.at(OFF_CONTROL).get());
    put_u64(&mut hdr, abi::MSG_CONTROLLEN, CONTROL_LEN);
    put_u64(&mut hdr, abi::MSG_FLAGS, 0);
    let mut iov = vec![0u8; abi::IOVEC_SIZE];
    put_u64(&mut iov, 0, r.at(OFF_DATA).get());
    put_u64(&mut iov, 8, 16);
    r.put(OFF_MSGHDR, &hdr)?;
    r.put(OFF_IOV, &iov)?;
    r.put(OFF_CONTROL, &vec![0u8; CONTROL_LEN as usize])?;
    Ok(())
}

/// The arguments of the recvmsg of passed fds on `sock`.
fn recvmsg_args(r: &Remote<'_>, sock: u64) -> [u64; 6] {
    [
        sock,
        r.at(OFF_MSGHDR).get(),
        (libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) as u64,
        0,
        0,
        0,
    ]
}

/// recvmsg one datagram with `n` fds inside the task; returns the fd
/// numbers the task got.
fn receive(r: &mut Remote<'_>, sock: u64, n: usize) -> Result<Vec<i32>, Error> {
    prepare_receive(r)?;
    let args = recvmsg_args(r, sock);
    let got = r.call("recvmsg of passed fds", libc::SYS_recvmsg, args)?;
    if got != 1 {
        return Err(Error::Restore {
            pid: r.pid(),
            what: format!("expected the passed fds in a 1-byte message, got {got} bytes"),
        });
    }
    received(r, n)
}

/// Queue the recvmsg of one datagram (its 1 byte, checked) on `sock`.
fn push_receive(r: &mut Remote<'_>, calls: &mut Batch, sock: u64) -> Result<(), Error> {
    prepare_receive(r)?;
    let args = recvmsg_args(r, sock);
    calls.push(
        r,
        "recvmsg of passed fds".into(),
        libc::SYS_recvmsg,
        args,
        Some(1),
    )
}

/// The fds a recvmsg of [`prepare_receive`] got, checked: `n` of them.
fn received(r: &Remote<'_>, n: usize) -> Result<Vec<i32>, Error> {
    let pid = r.pid();
    let hdr = r.get(OFF_MSGHDR, abi::MSGHDR_SIZE)?;
    let controllen = le_u64(&hdr, abi::MSG_CONTROLLEN)
        .unwrap_or(0)
        .min(CONTROL_LEN);
    let flags = le_i32(&hdr, abi::MSG_FLAGS).unwrap_or(0) as u32;
    let control = r.get(OFF_CONTROL, controllen as usize)?;
    let fds = parse_rights(&control);
    let bad = |what: String| Error::Restore { pid, what };
    if flags & libc::MSG_CTRUNC as u32 != 0 {
        // Whatever did arrive is closed by the caller's failure path (the
        // task is killed).
        return Err(bad(format!(
            "the fds passed to it were truncated (got {} of {n}; RLIMIT_NOFILE?)",
            fds.len()
        )));
    }
    if fds.len() != n {
        return Err(bad(format!("expected {n} passed fds, got {}", fds.len())));
    }
    Ok(fds)
}

/// The fds of every SCM_RIGHTS message in a received control buffer
/// (x86_64 layout: u64 length, i32 level, i32 type, data, padded to 8).
fn parse_rights(control: &[u8]) -> Vec<i32> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + abi::CMSGHDR_SIZE <= control.len() {
        let (Some(len), Some(level), Some(ty)) = (
            le_u64(control, off),
            le_i32(control, off + 8),
            le_i32(control, off + 12),
        ) else {
            break;
        };
        let len = len as usize;
        let Some(data) = control.get(off + abi::CMSGHDR_SIZE..off.saturating_add(len)) else {
            break;
        };
        if len < abi::CMSGHDR_SIZE {
            break;
        }
        if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
            out.extend(
                data.chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(i32::from_le_bytes)),
            );
        }
        off += len.div_ceil(8) * 8;
    }
    out
}

/// The little-endian u64 at `off` of `b`, if `b` holds it.
fn le_u64(b: &[u8], off: usize) -> Option<u64> {
    let bytes = b.get(off..off.checked_add(8)?)?;
    bytes.try_into().ok().map(u64::from_le_bytes)
}

/// The little-endian i32 at `off` of `b`, if `b` holds it.
fn le_i32(b: &[u8], off: usize) -> Option<i32> {
    let bytes = b.get(off..off.checked_add(4)?)?;
    bytes.try_into().ok().map(i32::from_le_bytes)
}

/// Queue the move of `fd` (in the task) to number `to` with fd flags
/// `flags` (0 or O_CLOEXEC): a dup3, then the close of `fd`.
fn push_move(
    r: &mut Remote<'_>,
    calls: &mut Batch,
    fd: u64,
    to: u64,
    flags: u64,
    what: String,
) -> Result<(), Error> {
    calls.push(r, what, libc::SYS_dup3, [fd, to, flags, 0, 0, 0], None)?;
    calls.push(
        r,
        "close".into(),
        libc::SYS_close,
        [fd, 0, 0, 0, 0, 0],
        None,
    )
}

/// Move the received fds `got` (same order as `batch`) to their targets,
/// all in one stop where the task has the syscall-table loop (restore's
/// trampoline): first each received fd that sits on a target to a spare
/// number (from `spare`: free, above every target, the receiving socket
/// and every fd of the task), then each to its target.
fn place(
    r: &mut Remote<'_>,
    batch: &[Gift<'_>],
    got: &[i32],
    targets: &HashSet<i32>,
    spare: u64,
) -> Result<(), Error> {
    let mut calls = Batch::with_table_at(r.batch_code, OFF_TABLE);
    push_place(r, &mut calls, batch, got, targets, spare)?;
    calls.flush(r).map(drop)
}

/// Queue the moves of [`place`].
fn push_place(
    r: &mut Remote<'_>,
    calls: &mut Batch,
    batch: &[Gift<'_>],
    got: &[i32],
    targets: &HashSet<i32>,
    spare: u64,
) -> Result<(), Error> {
    let mut next = got
        .iter()
        .map(|&fd| fd as u64 + 1)
        .max()
        .unwrap_or(0)
        .max(spare);
    let mut now = Vec::with_capacity(got.len());
    for &fd in got {
        let fd = fd as u64;
        if targets.contains(&(fd as i32)) {
            let what = format!("dup3 of fd {fd} to the spare {next}");
            push_move(r, calls, fd, next, libc::O_CLOEXEC as u64, what)?;
            now.push(next);
            next += 1;
        } else {
            now.push(fd);
        }
    }
    for (g, fd) in batch.iter().zip(now) {
        let flags = if g.cloexec { libc::O_CLOEXEC as u64 } else { 0 };
        let what = format!("dup3 of a passed fd to {}", g.target);
        push_move(r, calls, fd, g.target as u64, flags, what)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_number() {
        let set = |v: &[u64]| {
            v.iter()
                .copied()
                .collect::<std::collections::BTreeSet<u64>>()
        };
        assert_eq!(lowest_free(&set(&[])), 0);
        assert_eq!(lowest_free(&set(&[0, 1, 2])), 3);
        assert_eq!(lowest_free(&set(&[0, 2, 3])), 1);
        assert_eq!(lowest_free(&set(&[1, 7])), 0);
    }

    #[test]
    fn rights_parsing() {
        let mut c = Vec::new();
        c.extend_from_slice(&(16u64 + 12).to_le_bytes());
        c.extend_from_slice(&libc::SOL_SOCKET.to_le_bytes());
        c.extend_from_slice(&libc::SCM_RIGHTS.to_le_bytes());
        for fd in [5i32, 6, 9] {
            c.extend_from_slice(&fd.to_le_bytes());
        }
        c.extend_from_slice(&[0; 4]);
        assert_eq!(parse_rights(&c), vec![5, 6, 9]);
        assert_eq!(parse_rights(&c[..10]), Vec::<i32>::new());
        // A length running past the buffer stops the walk.
        let mut bad = c.clone();
        bad[0] = 200;
        assert!(parse_rights(&bad).is_empty());
    }
}
