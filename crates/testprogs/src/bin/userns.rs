//! `userns`: a container-like tree in a user namespace of its own that
//! owns its pid, UTS and IPC namespaces (as `unshare --user --pid --uts
//! --ipc --fork`, with the maps written from outside).
//!
//! The program (outer) clones the init of the new namespaces (inner) and
//! writes its uid and gid maps from outside (setgroups left allowed), then
//! waits for it. `--map root` (default): root inside is uid/gid 100000
//! outside (65536 ids); `--map nonroot`: inside ids 1000..1009 only (uid
//! 200000.., gid 300000.. outside; root inside is not mapped). `--setgroups
//! deny`: setgroups denied before the gid map is written (crust refuses
//! such a namespace). `--pidns 0`: no pid namespace of its own. `--child
//! 0`: no child. `--extra 1` (with `--map root`): a network namespace of
//! its own too, where the inner lets groups 0..10 make ICMP echo sockets
//! (net/ipv4/ping_group_range) and holds one; a read lease on a file of
//! its own; shared anonymous hugetlb memory (2 MiB, needs a free huge
//! page), all checked after SIGTERM.
//!
//! The inner sets its ids (root: 0 with groups 0 and 10, CAP_NET_RAW
//! dropped from its bounding set; nonroot: 1000 with group 1001), its host
//! name, a System V segment owned by ids 3/4 (nonroot: 1003/1004), and
//! forks a child that takes other ids (root: 1000, which drops its
//! capabilities; nonroot: 1005). It records what /proc shows from inside
//! (ids, groups, capability sets of both, its maps, setgroups), and after
//! SIGTERM checks that all of it is the same.

use crust_testprogs::{die, ensure, finish, ready, start, wait_for_term, Args};

const HOST: &str = "crust-userns";

fn write_file(path: &str, text: &str) {
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("write {text:?} to {path}: {e}");
        std::process::exit(3);
    }
}

/// The lines of /proc/PID/status that make up credentials.
fn creds_of(pid: &str) -> Result<String, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    Ok(s.lines()
        .filter(|l| {
            ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join("; "))
}

/// Ask the child for its credentials (its pid here is one of the new pid
/// namespace, which the host's /proc does not show).
fn ask_child(req: i32, resp: i32) -> Result<String, String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    // SAFETY: one-byte reads and writes from and into live buffers.
    unsafe {
        if libc::write(req, b"?".as_ptr().cast(), 1) != 1 {
            return Err(format!(
                "ask the child: {}",
                std::io::Error::last_os_error()
            ));
        }
        while libc::read(resp, b.as_mut_ptr().cast(), 1) == 1 && b[0] != b'\n' {
            out.push(b[0]);
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The child: answers each byte on `req` with its credentials on `resp`.
fn child_serve(req: i32, resp: i32) -> ! {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: one-byte read into a live buffer.
        if unsafe { libc::read(req, b.as_mut_ptr().cast(), 1) } != 1 {
            // SAFETY: _exit takes an integer.
            unsafe { libc::_exit(0) };
        }
        let line = creds_of("self").unwrap_or_else(|e| e) + "\n";
        // SAFETY: write from a live buffer of that length.
        unsafe { libc::write(resp, line.as_ptr().cast(), line.len()) };
    }
}

/// What the inner sees of itself and its child.
fn snapshot(child: Option<[i32; 2]>, shm: i32) -> Result<String, String> {
    let mut out = Vec::new();
    for f in ["uid_map", "gid_map", "setgroups"] {
        let t = std::fs::read_to_string(format!("/proc/self/{f}"))
            .map_err(|e| format!("read /proc/self/{f}: {e}"))?;
        out.push(format!(
            "{f}: {}",
            t.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    out.push(format!("self: {}", creds_of("self")?));
    if let Some([req, resp]) = child {
        out.push(format!("child: {}", ask_child(req, resp)?));
    }
    // SAFETY: an all-zero shmid_ds is valid; IPC_STAT fills it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a writable shmid_ds.
    if unsafe { libc::shmctl(shm, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(format!("IPC_STAT: {}", std::io::Error::last_os_error()));
    }
    let p = &ds.shm_perm;
    out.push(format!(
        "shm: uid {} gid {} cuid {} cgid {} mode {:o}",
        p.uid, p.gid, p.cuid, p.cgid, p.mode
    ));
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    out.push(format!("host: {}", h.trim()));
    Ok(out.join("\n"))
}

/// What `--extra 1` adds: an ICMP echo socket, a leased file, shared
/// hugetlb memory.
struct Extra {
    icmp: i32,
    leased: i32,
    huge: *mut u8,
}

const HUGE_LEN: usize = 2 << 20;

/// Made by the inner as root of its namespaces, before it takes its ids.
fn extra_setup(args: &Args) -> Extra {
    write_file("/proc/sys/net/ipv4/ping_group_range", "0 10");
    // SAFETY: socket takes integers.
    let icmp = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
    if icmp < 0 {
        die("socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)");
    }
    let path = args.ready.with_file_name("leased");
    write_file(&path.to_string_lossy(), "lease");
    let c = crust_testprogs::cpath(&path);
    // SAFETY: open a NUL-terminated path; fcntl takes integers.
    let leased = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    // SAFETY: fcntl takes integers.
    if leased < 0 || unsafe { libc::fcntl(leased, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
        die("open and lease (F_RDLCK) a file");
    }
    // SAFETY: a new mapping of our own; nothing else refers to it.
    let huge = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            HUGE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    if huge == libc::MAP_FAILED {
        die("mmap shared anonymous hugetlb memory");
    }
    let huge = huge.cast::<u8>();
    // SAFETY: the mapping is HUGE_LEN bytes, writable.
    unsafe {
        for i in (0..HUGE_LEN).step_by(4096) {
            *huge.add(i) = (i / 4096) as u8 ^ 0x5a;
        }
    }
    Extra { icmp, leased, huge }
}

/// What the inner sees of its extras.
fn extra_state(e: &Extra) -> Result<String, String> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map_err(|err| format!("read ping_group_range: {err}"))?;
    let mut proto: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int of that length.
    let r = unsafe {
        libc::getsockopt(
            e.icmp,
            libc::SOL_SOCKET,
            libc::SO_PROTOCOL,
            (&mut proto as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    ensure!(
        r == 0,
        "SO_PROTOCOL of the ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fcntl takes integers.
    let lease = unsafe { libc::fcntl(e.leased, libc::F_GETLEASE) };
    let mut bad = 0;
    for i in (0..HUGE_LEN).step_by(4096) {
        // SAFETY: the mapping is HUGE_LEN bytes, readable.
        if unsafe { *e.huge.add(i) } != (i / 4096) as u8 ^ 0x5a {
            bad += 1;
        }
    }
    Ok(format!(
        "ping_group_range: {}; icmp proto {proto}; lease {lease}; huge pages wrong {bad}",
        range.split_whitespace().collect::<Vec<_>>().join(" ")
    ))
}

/// Set when setgroups is denied in the namespace: groups stay.
static DENY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn set_ids(uid: u32, gid: u32, groups: &[u32]) {
    let deny = DENY.load(std::sync::atomic::Ordering::Relaxed);
    // SAFETY: plain syscalls; `groups` outlives the call.
    unsafe {
        if !deny && libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
            die("setgroups");
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            die("setresgid");
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            die("setresuid");
        }
        // Changing ids made it undumpable (its /proc files root's), which
        // CRIU's dump cannot work with: dumpable again.
        libc::prctl(libc::PR_SET_DUMPABLE, 1);
    }
}

/// The init of the new namespaces, once its maps are written.
fn inner(args: &Args, root: bool) -> ! {
    // SAFETY: sethostname on a string that outlives the call.
    if unsafe { libc::sethostname(HOST.as_ptr().cast(), HOST.len()) } != 0 {
        die("sethostname");
    }
    let base = if root { 0 } else { 1000 };
    if root {
        set_ids(0, 0, &[0, 10]);
        // SAFETY: prctl takes integers.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, 13) } != 0 {
            die("PR_CAPBSET_DROP(CAP_NET_RAW)");
        }
    } else {
        set_ids(1000, 1000, &[1001]);
    }
    // As root of the namespace (its ids taken: the leased file is its).
    let extra = (args.num("extra", 0) == 1).then(|| extra_setup(args));
    // Made with the ids above: its creator is named inside.
    // SAFETY: shmget takes integers.
    let shm = unsafe { libc::shmget(0x7e57, 4096, libc::IPC_CREAT | 0o640) };
    if shm < 0 {
        die("shmget");
    }
    // SAFETY: an all-zero shmid_ds is valid; IPC_STAT fills it, IPC_SET
    // reads it.
    unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        if libc::shmctl(shm, libc::IPC_STAT, &mut ds) != 0 {
            die("IPC_STAT");
        }
        ds.shm_perm.uid = base + 3;
        ds.shm_perm.gid = base + 4;
        if libc::shmctl(shm, libc::IPC_SET, &mut ds) != 0 {
            die("IPC_SET");
        }
    }
    let req = crust_testprogs::make_pipe();
    let resp = crust_testprogs::make_pipe();
    let with_child = args.num("child", 1) == 1;
    let child = if with_child {
        // SAFETY: the child only answers on its pipes until killed.
        unsafe { libc::fork() }
    } else {
        // Without a child: a pid no fork returns, never 0 nor negative.
        i32::MAX
    };
    if child == 0 {
        if root {
            set_ids(1000, 1000, &[1000]);
        } else {
            set_ids(1005, 1005, &[]);
        }
        // (After the ids: changing them clears the death signal.)
        // SAFETY: prctl takes integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        child_serve(req[0], resp[1]);
    }
    if child < 0 {
        die("fork");
    }
    // Let the child take its ids.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let ends = with_child.then_some([req[1], resp[0]]);
    let snapshot = |ends, shm| {
        let mut s = snapshot(ends, shm)?;
        if let Some(e) = &extra {
            s = s + "\n" + &extra_state(e)?;
        }
        Ok::<String, String>(s)
    };
    let before = match snapshot(ends, shm) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3)
        }
    };
    ready(args);
    wait_for_term(10, || {});
    let verdict = snapshot(ends, shm).and_then(|after| {
        ensure!(after == before, "before: [{before}] after: [{after}]");
        Ok(())
    });
    // SAFETY: kill and waitpid on our own child; shmctl takes integers.
    unsafe {
        if with_child {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        libc::shmctl(shm, libc::IPC_RMID, std::ptr::null_mut());
    }
    finish(args, verdict);
}

fn main() {
    let args = start();
    let root = args.opt("map").unwrap_or("root") != "nonroot";
    let deny = args.opt("setgroups") == Some("deny");
    DENY.store(deny, std::sync::atomic::Ordering::Relaxed);
    let pidns = args.num("pidns", 1) == 1;
    let (sync_r, sync_w) = {
        let p = crust_testprogs::make_pipe();
        (p[0], p[1])
    };
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if pidns {
        flags |= libc::CLONE_NEWPID;
    }
    if args.num("extra", 0) == 1 {
        flags |= libc::CLONE_NEWNET;
    }
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
        die("clone with new user, pid, UTS and IPC namespaces");
    }
    if pid == 0 {
        let mut b = [0u8; 1];
        // SAFETY: read into a one-byte buffer; close takes an fd.
        unsafe {
            libc::close(sync_w);
            if libc::read(sync_r, b.as_mut_ptr().cast(), 1) != 1 {
                libc::_exit(3);
            }
            libc::close(sync_r);
        }
        inner(&args, root);
    }
    let (uid_map, gid_map) = if root {
        ("0 100000 65536\n", "0 100000 65536\n")
    } else {
        ("1000 200000 10\n", "1000 300000 10\n")
    };
    write_file(&format!("/proc/{pid}/uid_map"), uid_map);
    if deny {
        write_file(&format!("/proc/{pid}/setgroups"), "deny");
    }
    write_file(&format!("/proc/{pid}/gid_map"), gid_map);
    // SAFETY: write one byte from a live buffer; close and waitpid take
    // integers (and a null status pointer).
    unsafe {
        libc::close(sync_r);
        if libc::write(sync_w, b"g".as_ptr().cast(), 1) != 1 {
            die("write to the inner");
        }
        libc::close(sync_w);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}
