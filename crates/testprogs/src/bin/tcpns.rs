//! `tcpns`: sockets of a tree in a network namespace of its own, in the
//! states that need the namespace at restore (issue 13).
//!
//! `tcpns --mode states --dir DIR --port P`: the program unshares its
//! network and mount namespaces (every mount private, the host's detached
//! but `/` and `/dev`), brings `lo` up, mounts a tmpfs on DIR (an empty
//! directory: the tmpfs exists only in its namespace) and makes:
//! - a TCP connection on 127.0.0.1:P half closed: the client wrote
//!   `tail` and shut down (FIN_WAIT2), the server (CLOSE_WAIT) has not
//!   read it and wrote `sent`, unread by the client. Restoring these
//!   replays the peer's FIN and the ACK of ours into the namespace;
//! - two unix listeners on the tmpfs: `rel.sock` bound by a relative name
//!   (cwd DIR), `DIR/abs.sock` by an absolute one.
//!
//! After SIGTERM: the server reads `tail` then end of file, writes
//! `more`, shuts down; the client reads `sentmore` then end of file; both
//! unix names take a connection and the listeners keep their names.
//!
//! `tcpns --mode server --port P`: in a network namespace of its own (`lo`
//! up; the test plugs a veth in and gives it an address), a TCP listener
//! on 0.0.0.0:P whose connections are accepted and echoed from the wait
//! loop (a client on the host). After SIGTERM: PASS if it echoed exactly
//! `--want` (default `helloagain`) on one connection still open.

use crust_testprogs::{cpath, die, ensure, finish, ready, start, wait_for_term, Args};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

fn unshare(flags: i32, what: &str) {
    // SAFETY: unshare takes flags.
    if unsafe { libc::unshare(flags) } != 0 {
        die(what);
    }
}

fn mount(src: &str, target: &Path, fstype: &str, flags: libc::c_ulong) {
    let (s, t, f) = (
        cpath(Path::new(src)),
        cpath(target),
        cpath(Path::new(fstype)),
    );
    let ty = if fstype.is_empty() {
        std::ptr::null()
    } else {
        f.as_ptr()
    };
    // SAFETY: NUL-terminated strings that outlive the call; no data.
    let r = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), ty, flags, std::ptr::null()) };
    if r != 0 {
        die(&format!("mount {src} on {}", target.display()));
    }
}

fn lo_up() {
    // SAFETY: a plain socket; the ifreq is zeroed, named and passed by
    // pointer to ioctls that fill or read it.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        if s < 0 {
            die("socket for SIOCSIFFLAGS");
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            die("SIOCGIFFLAGS lo");
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) != 0 {
            die("SIOCSIFFLAGS lo");
        }
        libc::close(s);
    }
}

/// A mount namespace of its own: every mount private, the host's detached
/// (deepest first) but `/` and `/dev`, its own /proc, a tmpfs on `dir`.
fn own_mounts(dir: &Path) {
    mount("none", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE);
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m != "/" && m != "/dev")
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mps {
        let c = cpath(Path::new(&m));
        // SAFETY: a NUL-terminated path; failure (already gone) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    mount("proc", Path::new("/proc"), "proc", 0);
    mount("crust-tcpns", dir, "tmpfs", 0);
}

fn read_all(s: &mut TcpStream, what: &str) -> Result<Vec<u8>, String> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut b = Vec::new();
    s.read_to_end(&mut b)
        .map_err(|e| format!("reading {what} to its end: {e}"))?;
    Ok(b)
}

struct States {
    client: TcpStream,
    server: TcpStream,
    rel: UnixListener,
    abs: UnixListener,
}

fn states(args: &Args) -> States {
    let dir = args.path("dir");
    let port = args.num("port", 47100) as u16;
    unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS, "unshare(NET|NS)");
    lo_up();
    own_mounts(&dir);
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|_| die("tcp bind"));
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|_| die("connect"));
    let (mut server, _) = l.accept().unwrap_or_else(|_| die("accept"));
    drop(l);
    client
        .write_all(b"tail")
        .unwrap_or_else(|_| die("write tail"));
    client
        .shutdown(Shutdown::Write)
        .unwrap_or_else(|_| die("shutdown"));
    server
        .write_all(b"sent")
        .unwrap_or_else(|_| die("write sent"));
    std::env::set_current_dir(&dir).unwrap_or_else(|_| die("chdir DIR"));
    let rel = UnixListener::bind("rel.sock").unwrap_or_else(|_| die("bind rel.sock"));
    let abs = UnixListener::bind(dir.join("abs.sock")).unwrap_or_else(|_| die("bind abs.sock"));
    // The FIN and its ACK cross lo at once; let them.
    std::thread::sleep(Duration::from_millis(100));
    States {
        client,
        server,
        rel,
        abs,
    }
}

fn check_states(mut s: States, dir: &Path) -> Result<(), String> {
    let got = read_all(&mut s.server, "what the client sent")?;
    ensure!(
        got == b"tail",
        "the server read {got:?}, expected \"tail\" then end of file"
    );
    s.server
        .write_all(b"more")
        .map_err(|e| format!("the server's write after restore: {e}"))?;
    s.server
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("the server's shutdown: {e}"))?;
    let got = read_all(&mut s.client, "what the server sent")?;
    ensure!(
        got == b"sentmore",
        "the client read {:?}, expected \"sentmore\" then end of file",
        String::from_utf8_lossy(&got)
    );
    for (l, name, to) in [
        (&s.rel, "rel.sock", Path::new("rel.sock").to_path_buf()),
        (&s.abs, "abs.sock", dir.join("abs.sock")),
    ] {
        let have = l.local_addr().map_err(|e| format!("{name}: {e}"))?;
        ensure!(
            have.as_pathname() == Some(to.as_path()),
            "the listener {name} is bound to {have:?}, expected {}",
            to.display()
        );
        let mut c = UnixStream::connect(&to).map_err(|e| format!("connect {name}: {e}"))?;
        let (mut a, _) = l.accept().map_err(|e| format!("accept on {name}: {e}"))?;
        c.write_all(b"u").map_err(|e| e.to_string())?;
        let mut b = [0u8; 1];
        a.read_exact(&mut b).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// The echo server's state, driven from the wait loop.
struct Echo {
    listener: TcpListener,
    conn: Option<TcpStream>,
    echoed: Vec<u8>,
    error: Option<String>,
    closed: bool,
}

impl Echo {
    fn tick(&mut self) {
        if self.conn.is_none() {
            match self.listener.accept() {
                Ok((c, _)) => {
                    let _ = c.set_nonblocking(true);
                    self.conn = Some(c);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => self.error = Some(format!("accept: {e}")),
            }
        }
        let Some(c) = self.conn.as_mut() else { return };
        let mut b = [0u8; 256];
        match c.read(&mut b) {
            // The client is done (it closes once it has its echo).
            Ok(0) => self.closed = true,
            Ok(n) => {
                let got = b.get(..n).unwrap_or_default();
                self.echoed.extend_from_slice(got);
                let _ = c.set_nonblocking(false);
                if let Err(e) = c.write_all(got) {
                    self.error = Some(format!("echo: {e}"));
                }
                let _ = c.set_nonblocking(true);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => self.error = Some(format!("read: {e}")),
        }
    }
}

fn server(args: &Args) -> ! {
    let port = args.num("port", 47100) as u16;
    let want = args.opt("want").unwrap_or("helloagain").as_bytes().to_vec();
    unshare(libc::CLONE_NEWNET, "unshare(CLONE_NEWNET)");
    lo_up();
    let listener = TcpListener::bind(("0.0.0.0", port)).unwrap_or_else(|_| die("tcp bind"));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|_| die("nonblocking"));
    let mut echo = Echo {
        listener,
        conn: None,
        echoed: Vec::new(),
        error: None,
        closed: false,
    };
    ready(args);
    wait_for_term(10, || {
        if echo.error.is_none() && !echo.closed {
            echo.tick()
        }
    });
    let verdict = match echo.error {
        Some(e) => Err(e),
        None if echo.echoed != want => Err(format!(
            "echoed {:?}, expected {:?}",
            String::from_utf8_lossy(&echo.echoed),
            String::from_utf8_lossy(&want)
        )),
        None => Ok(()),
    };
    finish(args, verdict)
}

fn main() {
    let args = start();
    match args.opt("mode").unwrap_or("states") {
        "server" => server(&args),
        "states" => {
            let s = states(&args);
            ready(&args);
            wait_for_term(10, || {});
            let dir = args.path("dir");
            finish(&args, check_states(s, &dir))
        }
        m => die(&format!("unknown mode {m}")),
    }
}
