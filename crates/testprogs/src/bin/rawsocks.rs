//! `rawsocks`: packet and netlink sockets, checked after restore.
//!
//! Set-up:
//! - fd 3: AF_PACKET SOCK_RAW, protocol ETH_P_ALL, bound to `lo`,
//!   O_NONBLOCK; PACKET_VERSION TPACKET_V2, PACKET_RESERVE 64,
//!   PACKET_AUXDATA, PACKET_ORIGDEV, PACKET_LOSS, PACKET_TIMESTAMP 0x10,
//!   PACKET_COPY_THRESH 1, a multicast membership (01:00:5e:7f:00:01 on
//!   lo), fanout group pid & 0xffff (hash: a group of its own, so it
//!   gets every packet), SO_PRIORITY 3, an accept-all BPF
//!   filter;
//! - fd 4: AF_PACKET SOCK_DGRAM, protocol 0, unbound, close-on-exec,
//!   SO_BINDTODEVICE lo;
//! - fd 5: NETLINK_ROUTE bound to port 0x7e57_0000 | (pid & 0xffff) with
//!   RTMGRP_LINK, and group 33 added with NETLINK_ADD_MEMBERSHIP;
//! - fd 6: NETLINK_GENERIC, unbound;
//! - fd 7: NETLINK_USERSOCK bound to port 0x7e58_0000 | (pid & 0xffff);
//! - fd 8: NETLINK_USERSOCK connected to fd 7's port.
//!
//! After SIGTERM every option and binding is read back (getsockopt,
//! getsockname, getpeername, /proc/net/dev_mcast for the membership); fd 3
//! must see a UDP datagram sent to 127.0.0.1 (found by its payload among
//! whatever else crossed lo), fd 5 must answer an RTM_GETLINK dump that
//! lists `lo`, and a message sent on fd 8 must reach fd 7.
//!
//! `--ring 1`: fd 3 also has a TPACKET_V2 rx ring (PACKET_RX_RING, 4
//! blocks of 4096 bytes, 8 frames of 2048), mapped; fd 9 is another
//! SOCK_RAW ETH_P_ALL packet socket bound to lo, TPACKET_V3, with an rx
//! ring (2 blocks of 8192, retire timeout 10 ms) and a tx ring (1 block of
//! 4096, 2 frames), both mapped in one mapping. After SIGTERM: the
//! mappings are still at their addresses and are the sockets' (maps names
//! `socket:[INO]` of fd 3 and fd 9), the UDP datagram to 127.0.0.1 shows up
//! as a frame of fd 3's ring (TP_STATUS_USER), and a block of fd 9's rx
//! ring is handed to the user.
//!
//! For the tests of refused dumps: `--pending 1` leaves the answer to an
//! RTM_GETLINK request unread on fd 5; `--ring 2` is `--ring 1` plus a
//! packet socket whose rx ring is mapped and whose fd is then closed.

use crust_testprogs::{die, ensure, finish, ready, start, term_requested};
use std::time::{Duration, Instant};

const ETH_P_ALL: u16 = 0x0003;
const SOL_PACKET: i32 = 263;
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_COPY_THRESH: i32 = 7;
const PACKET_AUXDATA: i32 = 8;
const PACKET_ORIGDEV: i32 = 9;
const PACKET_VERSION: i32 = 10;
const PACKET_RESERVE: i32 = 12;
const PACKET_LOSS: i32 = 14;
const PACKET_TIMESTAMP: i32 = 17;
const PACKET_FANOUT: i32 = 18;
const TPACKET_V2: i32 = 1;
const MC_ADDR: [u8; 6] = [0x01, 0x00, 0x5e, 0x7f, 0x00, 0x01];
const NETLINK_ROUTE: i32 = 0;
const NETLINK_USERSOCK: i32 = 2;
const NETLINK_GENERIC: i32 = 16;
const PACKET_RX_RING: i32 = 5;
const PACKET_TX_RING: i32 = 13;
const TPACKET_V3: i32 = 2;
const TP_STATUS_USER: u32 = 1;
/// fd 3's ring: block size, block count, frame size, frame count.
const RING_V2: [u32; 4] = [4096, 4, 2048, 8];
/// fd 9's rings: tpacket_req3 (block size, count, frame size, count,
/// retire timeout, sizeof_priv, features).
const RX_V3: [u32; 7] = [8192, 2, 2048, 8, 10, 0, 0];
const TX_V3: [u32; 7] = [4096, 1, 2048, 2, 0, 0, 0];
/// Where the rings of fd 3 and fd 9 are mapped.
static RING3: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static RING9: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;
const RTMGRP_LINK: u32 = 1;
const BIG_GROUP: i32 = 33;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// BPF_RET | BPF_K, k = 0x40000: accept the whole packet.
const ACCEPT_ALL: u64 = 0x06 | (0x40000u64 << 32);

fn err() -> String {
    std::io::Error::last_os_error().to_string()
}

fn check(r: libc::c_int, what: &str) -> i32 {
    if r < 0 {
        die(what);
    }
    r
}

fn dup_to(fd: i32, to: i32) {
    if fd != to {
        // SAFETY: dup2 and close take only integers.
        unsafe {
            check(libc::dup2(fd, to), "dup2");
            libc::close(fd);
        }
    }
}

fn setopt(fd: i32, level: i32, opt: i32, v: i32, what: &str) {
    // SAFETY: `v` is a readable int of the length passed.
    let r = unsafe { libc::setsockopt(fd, level, opt, &v as *const i32 as *const libc::c_void, 4) };
    check(r, what);
}

fn getopt(fd: i32, level: i32, opt: i32) -> Result<i32, String> {
    let mut v = 0i32;
    let mut len = 4 as libc::socklen_t;
    // SAFETY: `v` and `len` are valid out-pointers of the sizes given.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut v as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(r == 0, "getsockopt({level}, {opt}) on fd {fd}: {}", err());
    Ok(v)
}

fn lo_index() -> i32 {
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if i == 0 {
        die("if_nametoindex(lo)");
    }
    i as i32
}

fn nl_addr(portid: u32, groups: u32) -> libc::sockaddr_nl {
    // SAFETY: sockaddr_nl is plain old data; zeroes are valid.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    sa.nl_pid = portid;
    sa.nl_groups = groups;
    sa
}

/// PACKET_FANOUT value: group id pid & 0xffff, PACKET_FANOUT_HASH (0).
fn fanout() -> i32 {
    (std::process::id() & 0xffff) as i32
}

fn my_portid() -> u32 {
    0x7e57_0000 | (std::process::id() & 0xffff)
}

fn peer_portid() -> u32 {
    0x7e58_0000 | (std::process::id() & 0xffff)
}

fn nl_send(fd: i32, msg: &[u8], to: Option<&libc::sockaddr_nl>) -> Result<(), String> {
    let (p, l) = match to {
        Some(a) => (
            a as *const libc::sockaddr_nl as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        ),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `msg` is readable for its length; `p` is null or a valid
    // sockaddr_nl of `l` bytes.
    let n = unsafe { libc::sendto(fd, msg.as_ptr() as *const libc::c_void, msg.len(), 0, p, l) };
    ensure!(n == msg.len() as isize, "send on fd {fd}: {}", err());
    Ok(())
}

/// An rtnetlink request: nlmsghdr + ifinfomsg (index `ifindex`).
fn getlink(seq: u32, dump: bool, ifindex: i32) -> Vec<u8> {
    let flags: u16 = if dump { 1 | 0x300 } else { 1 };
    let mut req = Vec::new();
    req.extend_from_slice(&32u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETLINK.to_ne_bytes());
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&seq.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    let mut ifi = [0u8; 16];
    ifi[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    req.extend_from_slice(&ifi);
    req
}

/// Give packet socket `s` the rings `reqs` (option, tpacket_req or
/// tpacket_req3) and map them; the address of the mapping.
fn set_ring(s: i32, reqs: &[(i32, &[u32])]) -> usize {
    let mut len = 0usize;
    for (opt, req) in reqs {
        // SAFETY: `req` is readable for the length passed.
        let r = unsafe {
            libc::setsockopt(
                s,
                SOL_PACKET,
                *opt,
                req.as_ptr() as *const libc::c_void,
                (req.len() * 4) as u32,
            )
        };
        check(r, "PACKET_RX_RING/PACKET_TX_RING");
        len += req[0] as usize * req[1] as usize;
    }
    // SAFETY: a new shared mapping of the socket's rings; nothing of ours
    // is at the address the kernel picks.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            s,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        die("mmap packet rings");
    }
    p as usize
}

/// A SOCK_RAW ETH_P_ALL packet socket bound to lo (TPACKET_V3), with
/// mapped rings per `--ring`: at fd 9 for 1; for 2 also one whose fd is
/// closed once its ring is mapped.
fn setup_rings(mode: u64) {
    let open_lo = || {
        // SAFETY: plain syscalls on integers and a local, initialised
        // sockaddr_ll of the size passed.
        unsafe {
            let s = check(
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL.to_be() as i32),
                "socket(AF_PACKET, SOCK_RAW)",
            );
            let mut ll: libc::sockaddr_ll = std::mem::zeroed();
            ll.sll_family = libc::AF_PACKET as u16;
            ll.sll_protocol = ETH_P_ALL.to_be();
            ll.sll_ifindex = lo_index();
            check(
                libc::bind(
                    s,
                    &ll as *const libc::sockaddr_ll as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                ),
                "bind packet socket to lo",
            );
            s
        }
    };
    let s = open_lo();
    setopt(s, SOL_PACKET, PACKET_VERSION, TPACKET_V3, "PACKET_VERSION");
    let at = set_ring(s, &[(PACKET_RX_RING, &RX_V3), (PACKET_TX_RING, &TX_V3)]);
    RING9.store(at, std::sync::atomic::Ordering::Relaxed);
    dup_to(s, 9);
    if mode == 2 {
        let c = open_lo();
        set_ring(c, &[(PACKET_RX_RING, &RING_V2)]);
        // SAFETY: closing our own fd; the mapping stays.
        unsafe { libc::close(c) };
    }
}

fn setup(pending: bool, ring: bool) {
    let lo = lo_index();
    // SAFETY: (whole set-up) plain syscalls on integers and local,
    // initialised structs of the sizes passed.
    unsafe {
        let s = check(
            libc::socket(libc::AF_PACKET, libc::SOCK_RAW, ETH_P_ALL.to_be() as i32),
            "socket(AF_PACKET, SOCK_RAW)",
        );
        let mut ll: libc::sockaddr_ll = std::mem::zeroed();
        ll.sll_family = libc::AF_PACKET as u16;
        ll.sll_protocol = ETH_P_ALL.to_be();
        ll.sll_ifindex = lo;
        check(
            libc::bind(
                s,
                &ll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            ),
            "bind packet socket to lo",
        );
        setopt(s, SOL_PACKET, PACKET_VERSION, TPACKET_V2, "PACKET_VERSION");
        setopt(s, SOL_PACKET, PACKET_RESERVE, 64, "PACKET_RESERVE");
        setopt(s, SOL_PACKET, PACKET_AUXDATA, 1, "PACKET_AUXDATA");
        setopt(s, SOL_PACKET, PACKET_ORIGDEV, 1, "PACKET_ORIGDEV");
        setopt(s, SOL_PACKET, PACKET_LOSS, 1, "PACKET_LOSS");
        setopt(s, SOL_PACKET, PACKET_TIMESTAMP, 0x10, "PACKET_TIMESTAMP");
        setopt(s, SOL_PACKET, PACKET_COPY_THRESH, 1, "PACKET_COPY_THRESH");
        if ring {
            let at = set_ring(s, &[(PACKET_RX_RING, &RING_V2)]);
            RING3.store(at, std::sync::atomic::Ordering::Relaxed);
        }
        // packet_mreq: ifindex, type (PACKET_MR_MULTICAST), alen, address.
        let mut mreq = [0u8; 16];
        mreq[0..4].copy_from_slice(&lo.to_ne_bytes());
        mreq[4..6].copy_from_slice(&0u16.to_ne_bytes());
        mreq[6..8].copy_from_slice(&6u16.to_ne_bytes());
        mreq[8..14].copy_from_slice(&MC_ADDR);
        check(
            libc::setsockopt(
                s,
                SOL_PACKET,
                PACKET_ADD_MEMBERSHIP,
                mreq.as_ptr() as *const libc::c_void,
                16,
            ),
            "PACKET_ADD_MEMBERSHIP",
        );
        setopt(s, SOL_PACKET, PACKET_FANOUT, fanout(), "PACKET_FANOUT");
        setopt(s, libc::SOL_SOCKET, libc::SO_PRIORITY, 3, "SO_PRIORITY");
        let prog = [ACCEPT_ALL];
        let fprog = libc::sock_fprog {
            len: 1,
            filter: prog.as_ptr() as *mut libc::sock_filter,
        };
        check(
            libc::setsockopt(
                s,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                &fprog as *const libc::sock_fprog as *const libc::c_void,
                std::mem::size_of::<libc::sock_fprog>() as u32,
            ),
            "SO_ATTACH_FILTER",
        );
        libc::fcntl(s, libc::F_SETFL, libc::O_NONBLOCK);
        dup_to(s, 3);

        let d = check(
            libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0),
            "socket(AF_PACKET, SOCK_DGRAM)",
        );
        dup_to(d, 4);
        libc::fcntl(4, libc::F_SETFD, libc::FD_CLOEXEC);
        check(
            libc::setsockopt(
                4,
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                c"lo".as_ptr() as *const libc::c_void,
                3,
            ),
            "SO_BINDTODEVICE lo",
        );

        let r = check(
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_ROUTE),
            "socket(NETLINK_ROUTE)",
        );
        let sa = nl_addr(my_portid(), RTMGRP_LINK);
        check(
            libc::bind(
                r,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ),
            "bind NETLINK_ROUTE",
        );
        setopt(
            r,
            libc::SOL_NETLINK,
            NETLINK_ADD_MEMBERSHIP,
            BIG_GROUP,
            "NETLINK_ADD_MEMBERSHIP",
        );
        dup_to(r, 5);

        let g = check(
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_GENERIC),
            "socket(NETLINK_GENERIC)",
        );
        dup_to(g, 6);

        let u = check(
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_USERSOCK),
            "socket(NETLINK_USERSOCK)",
        );
        let sa = nl_addr(peer_portid(), 0);
        check(
            libc::bind(
                u,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ),
            "bind NETLINK_USERSOCK",
        );
        dup_to(u, 7);
        let c = check(
            libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, NETLINK_USERSOCK),
            "socket(NETLINK_USERSOCK)",
        );
        check(
            libc::connect(
                c,
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            ),
            "connect NETLINK_USERSOCK",
        );
        dup_to(c, 8);
    }
    if pending {
        let to = nl_addr(0, 0);
        if let Err(e) = nl_send(5, &getlink(0x1111, false, lo), Some(&to)) {
            die(&e);
        }
        crust_testprogs::sleep_ms(50);
    }
}

fn packet_name(fd: i32) -> Result<(u16, i32), String> {
    // SAFETY: sockaddr_ll is plain old data; zeroes are valid.
    let mut ll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
    // SAFETY: `ll` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockname(
            fd,
            &mut ll as *mut libc::sockaddr_ll as *mut libc::sockaddr,
            &mut len,
        )
    };
    ensure!(r == 0, "getsockname fd {fd}: {}", err());
    Ok((u16::from_be(ll.sll_protocol), ll.sll_ifindex))
}

fn nl_name(fd: i32) -> Result<(u32, u32), String> {
    let mut sa = nl_addr(0, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: `sa` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockname(
            fd,
            &mut sa as *mut libc::sockaddr_nl as *mut libc::sockaddr,
            &mut len,
        )
    };
    ensure!(r == 0, "getsockname fd {fd}: {}", err());
    Ok((sa.nl_pid, sa.nl_groups))
}

fn check_packet_raw(ring: bool) -> Result<(), String> {
    let lo = lo_index();
    ensure!(
        getopt(3, libc::SOL_SOCKET, libc::SO_DOMAIN)? == libc::AF_PACKET,
        "fd 3 is not a packet socket"
    );
    ensure!(
        getopt(3, libc::SOL_SOCKET, libc::SO_TYPE)? == libc::SOCK_RAW,
        "fd 3 is not SOCK_RAW"
    );
    let (proto, ifindex) = packet_name(3)?;
    ensure!(
        proto == ETH_P_ALL && ifindex == lo,
        "fd 3 is bound to protocol {proto:#x} ifindex {ifindex}, not ETH_P_ALL on lo ({lo})"
    );
    for (opt, want, name) in [
        (PACKET_VERSION, TPACKET_V2, "PACKET_VERSION"),
        (PACKET_RESERVE, 64, "PACKET_RESERVE"),
        (PACKET_AUXDATA, 1, "PACKET_AUXDATA"),
        (PACKET_ORIGDEV, 1, "PACKET_ORIGDEV"),
        (PACKET_LOSS, 1, "PACKET_LOSS"),
        (PACKET_TIMESTAMP, 0x10, "PACKET_TIMESTAMP"),
        (PACKET_FANOUT, fanout(), "PACKET_FANOUT"),
    ] {
        let got = getopt(3, SOL_PACKET, opt)?;
        ensure!(got == want, "fd 3 {name} is {got:#x}, not {want:#x}");
    }
    let prio = getopt(3, libc::SOL_SOCKET, libc::SO_PRIORITY)?;
    ensure!(prio == 3, "fd 3 SO_PRIORITY is {prio}, not 3");
    // SAFETY: fcntl on an integer fd.
    let fl = unsafe { libc::fcntl(3, libc::F_GETFL) };
    ensure!(fl & libc::O_NONBLOCK != 0, "fd 3 lost O_NONBLOCK ({fl:#o})");
    let mut prog = [0u64; 4];
    let mut n = 4 as libc::socklen_t;
    // SAFETY: `prog` has room for 4 sock_filter structs, as `n` says.
    let r = unsafe {
        libc::getsockopt(
            3,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            prog.as_mut_ptr() as *mut libc::c_void,
            &mut n,
        )
    };
    ensure!(r == 0, "SO_GET_FILTER on fd 3: {}", err());
    ensure!(
        n == 1 && prog[0] == ACCEPT_ALL,
        "fd 3 filter is {:x?}, not [{ACCEPT_ALL:#x}]",
        &prog[..(n as usize).min(4)]
    );
    let mc: String = MC_ADDR.iter().map(|b| format!("{b:02x}")).collect();
    let dev_mcast = std::fs::read_to_string("/proc/net/dev_mcast").unwrap_or_default();
    ensure!(
        dev_mcast
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some("lo") && l.contains(&mc)),
        "lo has no multicast address {mc} (/proc/net/dev_mcast)"
    );
    if ring {
        return check_rings();
    }
    receives_udp()
}

/// The mapping of `fd`'s rings is still at `at` (`len` bytes): /proc/self/maps
/// names the socket there.
fn ring_mapped(fd: i32, at: usize, len: usize) -> Result<(), String> {
    // SAFETY: `st` is a writable stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of an integer fd into `st`.
    let r = unsafe { libc::fstat(fd, &mut st) };
    ensure!(r == 0, "fstat fd {fd}: {}", err());
    let want = format!("{:x}-{:x} ", at, at + len);
    let name = format!("socket:[{}]", st.st_ino);
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let line = maps.lines().find(|l| l.starts_with(&want));
    ensure!(
        line.is_some_and(|l| l.ends_with(&name) && l.contains(" rw-s ")),
        "fd {fd}'s rings are not mapped at {want}as {name} rw-s: {line:?}"
    );
    Ok(())
}

fn read_u32(addr: usize) -> u32 {
    // SAFETY: `addr` is inside a ring mapping of ours (checked by
    // ring_mapped), 4-aligned; the kernel writes it concurrently, hence
    // the volatile read.
    unsafe { std::ptr::read_volatile(addr as *const u32) }
}

/// The rings of fd 3 and fd 9 came back: mapped where they were, and
/// packets crossing lo land in them.
fn check_rings() -> Result<(), String> {
    use std::sync::atomic::Ordering::Relaxed;
    let (r3, r9) = (RING3.load(Relaxed), RING9.load(Relaxed));
    ring_mapped(3, r3, (RING_V2[0] * RING_V2[1]) as usize)?;
    let len9 = RX_V3[0] * RX_V3[1] + TX_V3[0] * TX_V3[1];
    ring_mapped(9, r9, len9 as usize)?;
    let v = getopt(9, SOL_PACKET, PACKET_VERSION)?;
    ensure!(
        v == TPACKET_V3,
        "fd 9 PACKET_VERSION is {v}, not TPACKET_V3"
    );
    // fd 3 (TPACKET_V2): a frame with the marker.
    let marker = format!("crust-rawsocks-ring-{}", std::process::id());
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp bind: {e}"))?;
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp bind: {e}"))?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let (mut found, mut block9) = (false, false);
    let mut sent = 0;
    while t0.elapsed() < Duration::from_secs(3) && !(found && block9) {
        if sent < 10 {
            tx.send_to(marker.as_bytes(), to)
                .map_err(|e| format!("udp send: {e}"))?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..RING_V2[3] as usize {
            // tpacket2_hdr: tp_status, tp_len, tp_snaplen, tp_mac (u16).
            let f = r3 + i * RING_V2[2] as usize;
            if read_u32(f) & TP_STATUS_USER == 0 {
                continue;
            }
            let snaplen = read_u32(f + 8) as usize;
            let mac = (read_u32(f + 12) & 0xffff) as usize;
            if mac + snaplen <= RING_V2[2] as usize {
                // SAFETY: the frame's data lies inside the frame (checked
                // above), inside the mapping.
                let data = unsafe { std::slice::from_raw_parts((f + mac) as *const u8, snaplen) };
                found |= data.windows(marker.len()).any(|w| w == marker.as_bytes());
            }
            // Hand the frame back (TP_STATUS_KERNEL).
            // SAFETY: tp_status of a frame of the mapping.
            unsafe { std::ptr::write_volatile(f as *mut u32, 0) };
        }
        // fd 9 (TPACKET_V3): tpacket_block_desc's block_status at offset 8.
        for b in 0..RX_V3[1] as usize {
            block9 |= read_u32(r9 + b * RX_V3[0] as usize + 8) & TP_STATUS_USER != 0;
        }
    }
    ensure!(
        found,
        "no frame of fd 3's rx ring holds the UDP datagram to {to}"
    );
    ensure!(block9, "no block of fd 9's rx ring was handed to the user");
    Ok(())
}

/// A UDP datagram to 127.0.0.1 shows up on fd 3.
fn receives_udp() -> Result<(), String> {
    let marker = format!("crust-rawsocks-{}", std::process::id());
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp bind: {e}"))?;
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("udp bind: {e}"))?;
    let to = rx.local_addr().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut sent = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        if sent < 5 {
            tx.send_to(marker.as_bytes(), to)
                .map_err(|e| format!("udp send: {e}"))?;
            sent += 1;
        }
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    3,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                break;
            }
            let got = &buf[..n as usize];
            if got.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "the packet socket on lo did not see the UDP datagram to {to}"
    ))
}

fn check_packet_dgram() -> Result<(), String> {
    ensure!(
        getopt(4, libc::SOL_SOCKET, libc::SO_TYPE)? == libc::SOCK_DGRAM,
        "fd 4 is not SOCK_DGRAM"
    );
    let (proto, ifindex) = packet_name(4)?;
    ensure!(
        proto == 0 && ifindex == 0,
        "fd 4 is bound to protocol {proto:#x} ifindex {ifindex}, not unbound"
    );
    // SAFETY: fcntl on an integer fd.
    let fdfl = unsafe { libc::fcntl(4, libc::F_GETFD) };
    ensure!(fdfl & libc::FD_CLOEXEC != 0, "fd 4 lost FD_CLOEXEC");
    let mut dev = [0u8; 16];
    let mut len = 16 as libc::socklen_t;
    // SAFETY: `dev` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            4,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(r == 0, "SO_BINDTODEVICE of fd 4: {}", err());
    ensure!(
        dev.starts_with(b"lo\0"),
        "fd 4 is bound to device {:?}, not lo",
        String::from_utf8_lossy(&dev[..len as usize])
    );
    Ok(())
}

fn check_rtnetlink() -> Result<(), String> {
    ensure!(
        getopt(5, libc::SOL_SOCKET, libc::SO_PROTOCOL)? == NETLINK_ROUTE,
        "fd 5 is not NETLINK_ROUTE"
    );
    let (portid, groups) = nl_name(5)?;
    ensure!(
        portid == my_portid() && groups == RTMGRP_LINK,
        "fd 5 has port {portid:#x} groups {groups:#x}, not {:#x} / {RTMGRP_LINK:#x}",
        my_portid()
    );
    let mut words = [0u32; 4];
    let mut len = 16 as libc::socklen_t;
    // SAFETY: `words` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            5,
            libc::SOL_NETLINK,
            NETLINK_LIST_MEMBERSHIPS,
            words.as_mut_ptr() as *mut libc::c_void,
            &mut len,
        )
    };
    ensure!(r == 0, "NETLINK_LIST_MEMBERSHIPS on fd 5: {}", err());
    ensure!(
        words[0] == RTMGRP_LINK && words[1] == 1,
        "fd 5 memberships are {words:x?}, not groups 1 and 33"
    );
    // RTM_GETLINK dump: nlmsghdr + ifinfomsg (16 bytes).
    let seq = 0x5151u32;
    nl_send(5, &getlink(seq, true, 0), Some(&nl_addr(0, 0)))?;
    let mut buf = vec![0u8; 65536];
    let mut links = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe {
            libc::recv(
                5,
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let b = &buf[..n as usize];
        let mut off = 0;
        while off + 16 <= b.len() {
            let len = u32::from_ne_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(b[off + 4..off + 6].try_into().unwrap());
            let s = u32::from_ne_bytes(b[off + 8..off + 12].try_into().unwrap());
            if len < 16 {
                break;
            }
            if s == seq {
                match ty {
                    RTM_NEWLINK => links += 1,
                    NLMSG_DONE => {
                        ensure!(links > 0, "the RTM_GETLINK dump listed no link");
                        return Ok(());
                    }
                    NLMSG_ERROR => return Err("RTM_GETLINK answered an error".into()),
                    _ => {}
                }
            }
            off += len.div_ceil(4) * 4;
        }
    }
    Err(format!(
        "no end of the RTM_GETLINK dump on fd 5 ({links} links seen)"
    ))
}

fn check_genl() -> Result<(), String> {
    ensure!(
        getopt(6, libc::SOL_SOCKET, libc::SO_PROTOCOL)? == NETLINK_GENERIC,
        "fd 6 is not NETLINK_GENERIC"
    );
    let (portid, groups) = nl_name(6)?;
    ensure!(
        portid == 0 && groups == 0,
        "fd 6 has port {portid:#x} groups {groups:#x}, not unbound"
    );
    Ok(())
}

fn check_usersock() -> Result<(), String> {
    let (portid, _) = nl_name(7)?;
    ensure!(
        portid == peer_portid(),
        "fd 7 has port {portid:#x}, not {:#x}",
        peer_portid()
    );
    let mut sa = nl_addr(0, 0);
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as u32;
    // SAFETY: `sa` is writable for `len` bytes.
    let r = unsafe {
        libc::getpeername(
            8,
            &mut sa as *mut libc::sockaddr_nl as *mut libc::sockaddr,
            &mut len,
        )
    };
    ensure!(r == 0, "getpeername fd 8: {}", err());
    ensure!(
        sa.nl_pid == peer_portid(),
        "fd 8 is connected to port {:#x}, not {:#x}",
        sa.nl_pid,
        peer_portid()
    );
    let msg = format!("crust-usersock-{}", std::process::id());
    // nlmsghdr (type 0x20) + payload.
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + msg.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&0x20u16.to_ne_bytes());
    m.extend_from_slice(&[0u8; 10]);
    m.extend_from_slice(msg.as_bytes());
    nl_send(8, &m, None)?;
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe {
        libc::recv(
            7,
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    ensure!(
        n > 0,
        "fd 7 did not get the message sent on fd 8: {}",
        err()
    );
    ensure!(
        buf[..n as usize].ends_with(msg.as_bytes()),
        "fd 7 got {:?}",
        String::from_utf8_lossy(&buf[..n as usize])
    );
    Ok(())
}

fn verify(ring: bool) -> Result<(), String> {
    check_packet_dgram()?;
    check_genl()?;
    check_usersock()?;
    check_rtnetlink()?;
    check_packet_raw(ring)
}

fn main() {
    let args = start();
    let ring = args.num("ring", 0);
    setup(args.num("pending", 0) != 0, ring != 0);
    if ring != 0 {
        setup_rings(ring);
    }
    ready(&args);
    while !term_requested() {
        crust_testprogs::sleep_ms(50);
    }
    finish(&args, verify(ring != 0));
}
