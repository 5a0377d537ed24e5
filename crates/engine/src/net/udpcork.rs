//! The datagram pending on a corked UDP socket, taken at dump time.
//!
//! A UDP socket with `UDP_CORK` set (or written with `MSG_MORE`) gathers
//! what is written into one pending datagram in its send queue; no syscall
//! reads it back. [`take_corked`] gets it out through netfilter:
//!
//! 1. crust binds an NFLOG group over netlink (`NETLINK_NETFILTER`,
//!    nfnetlink_log config messages: bind, copy whole packets);
//! 2. two rules go at the top of the OUTPUT chain (iptables for IPv4
//!    packets, ip6tables for IPv6), matching the socket's packets by source
//!    port (and source address when the socket is bound to one):
//!    `-p udp --sport P [-s A] -m comment --comment crust-udpcork-PID-P
//!    -j NFLOG --nflog-group G --nflog-size 65535`, then the same match
//!    with `-j DROP`;
//! 3. `UDP_CORK` is turned off on crust's copy of the socket: the kernel
//!    pushes the pending datagram, the NFLOG rule hands a copy of the IP
//!    packet to crust (synchronously, in the setsockopt call), the DROP rule
//!    keeps it off the network;
//! 4. `UDP_CORK` gets its former value back, the rules are deleted and the
//!    group unbound, whatever happened before.
//!
//! The IP and UDP headers of the logged packet give the payload and the
//! destination.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::BorrowedFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crust_netlink::{
    ack_of, attr_iter, messages, push_attr, request, Socket, Transport, NLM_F_ACK, NLM_F_REQUEST,
};
use crust_sys::net::{ioctl_int, SIOCOUTQ};
use crust_sys::unix::{getsockopt_int, setsockopt_int};
use log::{debug, warn};

// nfnetlink_log facts (linux/netfilter/nfnetlink.h,
// linux/netfilter/nfnetlink_log.h); the netlink codec is crust-netlink's.
const NFGENMSG_LEN: usize = 4;
const NFNETLINK_V0: u8 = libc::NFNETLINK_V0 as u8;
const NFNL_SUBSYS_ULOG: u16 = libc::NFNL_SUBSYS_ULOG as u16;
/// nfnetlink message type: subsystem in the high byte.
const MSG_PACKET: u16 = (NFNL_SUBSYS_ULOG << 8) | libc::NFULNL_MSG_PACKET as u16;
const MSG_CONFIG: u16 = (NFNL_SUBSYS_ULOG << 8) | libc::NFULNL_MSG_CONFIG as u16;
const NFULA_PAYLOAD: u16 = libc::NFULA_PAYLOAD as u16;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_CFG_CMD: u16 = libc::NFULA_CFG_CMD as u16;
const NFULA_CFG_MODE: u16 = libc::NFULA_CFG_MODE as u16;
/// Flush timeout in 1/100 s (be32) and queue threshold in packets (be32).
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const CFG_CMD_BIND: u8 = libc::NFULNL_CFG_CMD_BIND as u8;
const CFG_CMD_UNBIND: u8 = libc::NFULNL_CFG_CMD_UNBIND as u8;
const COPY_PACKET: u8 = libc::NFULNL_COPY_PACKET as u8;
/// Bytes of each packet to copy (the kernel caps it to what fits in one
/// netlink attribute, 65531).
const COPY_RANGE: u32 = 0xFFFF;

/// How long to wait for the logged datagram.
const WAIT: Duration = Duration::from_secs(1);
/// NFLOG groups tried, from one derived from the port on.
const GROUP_TRIES: u16 = 32;

/// The datagram pending on corked UDP socket `sock` (crust's copy of a
/// task's socket, bound at `local`), taken without letting it reach the
/// network: returns (payload, destination) or None if nothing is pending.
/// The socket is left empty, with `UDP_CORK` as it was (set, for a socket
/// corked with it; a datagram pending through `MSG_MORE` alone leaves it
/// unset). The destination is in the family of `local` (an IPv4
/// destination of an IPv6 socket comes back IPv4-mapped).
pub fn take_corked(
    sock: BorrowedFd<'_>,
    local: SocketAddr,
) -> Result<Option<(Vec<u8>, SocketAddr)>, crate::Error> {
    let queued = ioctl_int(sock, SIOCOUTQ).map_err(|e| sys(local, "ioctl SIOCOUTQ", e))?;
    if queued <= 0 {
        return Ok(None);
    }
    if local.port() == 0 {
        return Err(crate::Error::unsupported(format!(
            "UDP socket with {queued} bytes pending in its send queue but no local port ({local})"
        )));
    }
    let corked = getsockopt_int(sock, libc::IPPROTO_UDP, libc::UDP_CORK)
        .map_err(|e| sys(local, "getsockopt UDP_CORK", e))?;
    debug!("udp socket {local}: {queued} bytes pending (UDP_CORK {corked})");

    let (mut nl, group) = bind_group(local)?;
    let rules = Rules::new(local, group);
    let res = rules.insert().and_then(|()| {
        let pushed = setsockopt_int(sock, libc::IPPROTO_UDP, libc::UDP_CORK, 0).map_err(|e| {
            sys(
                local,
                "setsockopt UDP_CORK 0 (to push the pending datagram)",
                e,
            )
        });
        let got = pushed.and_then(|()| wait_packet(&mut nl, group, local));
        let recork = setsockopt_int(sock, libc::IPPROTO_UDP, libc::UDP_CORK, corked)
            .map_err(|e| sys(local, "setsockopt UDP_CORK back", e));
        let got = got?;
        recork?;
        Ok(got)
    });
    let removed = rules.remove();
    if let Err(e) = send_config(&mut nl, 3, group, &[(NFULA_CFG_CMD, &[CFG_CMD_UNBIND])]) {
        warn!("unbinding NFLOG group {group} (socket {local}): {e}");
    }
    let (payload, dst) = res?;
    if let Err(e) = removed {
        // The dump fails: the datagram stays the task's.
        if let Err(e) = put_back(sock, local, &payload, dst) {
            warn!("{e}");
        }
        return Err(e);
    }
    let dst = match (local, dst) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
        }
        (_, d) => d,
    };
    debug!(
        "udp socket {local}: took the pending datagram of {} bytes to {dst}",
        payload.len()
    );
    Ok(Some((payload, dst)))
}

/// Queue `payload` for `dst` on `sock` again as its pending datagram (a
/// `sendto` with `MSG_MORE`): undoes [`take_corked`] (a failed or
/// `--leave-running` dump) or rebuilds the datagram on a restored socket,
/// corked beforehand if it was (with `UDP_CORK` unset, `MSG_MORE` keeps it
/// pending until the next write without it). Per-message options the task
/// gave with the first write (ancillary data: IP_PKTINFO, TTL...) are not
/// kept.
pub fn put_back(
    sock: BorrowedFd<'_>,
    local: SocketAddr,
    payload: &[u8],
    dst: SocketAddr,
) -> Result<(), crate::Error> {
    let n = crust_sys::net::sendto(sock, payload, libc::MSG_MORE | libc::MSG_DONTWAIT, &dst)
        .map_err(|e| {
            sys(
                local,
                &format!(
                    "queueing the {} pending bytes to {dst} again",
                    payload.len()
                ),
                e,
            )
        })?;
    if n != payload.len() {
        return Err(sys(
            local,
            &format!(
                "queueing the {} pending bytes to {dst} again (only {n} taken)",
                payload.len()
            ),
            std::io::Error::from_raw_os_error(libc::EMSGSIZE),
        ));
    }
    Ok(())
}

fn sys(local: SocketAddr, what: &str, source: std::io::Error) -> crate::Error {
    crate::Error::Sys {
        pid: std::process::id() as i32,
        op: format!("{what} on the corked UDP socket bound at {local}"),
        source,
    }
}

/// A netlink socket bound to a free NFLOG group in copy-packet mode.
fn bind_group(local: SocketAddr) -> Result<(Socket, u16), crate::Error> {
    let mut nl = Socket::netfilter().map_err(|e| sys(local, "socket(NETLINK_NETFILTER)", e))?;
    nl.set_recv_timeout(Duration::from_millis(100))
        .map_err(|e| sys(local, "SO_RCVTIMEO on the NFLOG netlink socket", e))?;
    let base = 0x8000 | (local.port() & 0x7FFF);
    let mut last = None;
    for i in 0..GROUP_TRIES {
        let group = 0x8000 | (base.wrapping_add(i) & 0x7FFF);
        match send_config(&mut nl, 1, group, &[(NFULA_CFG_CMD, &[CFG_CMD_BIND])]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(sys(local, &format!("binding NFLOG group {group}"), e)),
        }
        let mode = mode_attr(COPY_RANGE, COPY_PACKET);
        // Flush each packet at once (the default waits up to a second
        // to batch them).
        let timeout = 0u32.to_be_bytes();
        let qthresh = 1u32.to_be_bytes();
        if let Err(e) = send_config(
            &mut nl,
            2,
            group,
            &[
                (NFULA_CFG_MODE, &mode),
                (NFULA_CFG_TIMEOUT, &timeout),
                (NFULA_CFG_QTHRESH, &qthresh),
            ],
        ) {
            let _ = send_config(&mut nl, 3, group, &[(NFULA_CFG_CMD, &[CFG_CMD_UNBIND])]);
            return Err(sys(
                local,
                &format!("setting copy-packet mode on NFLOG group {group}"),
                e,
            ));
        }
        return Ok((nl, group));
    }
    Err(sys(
        local,
        &format!("binding an NFLOG group: groups {base}.. are all taken"),
        last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
    ))
}

/// Send one nfnetlink_log config message and wait for its ack.
fn send_config(
    nl: &mut impl Transport,
    seq: u32,
    group: u16,
    attrs: &[(u16, &[u8])],
) -> std::io::Result<()> {
    nl.send(&config_msg(seq, group, attrs))?;
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + WAIT;
    loop {
        let n = match nl.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                continue
            }
            Err(e) => return Err(e),
        };
        if let Some(r) = ack_of(buf.get(..n).unwrap_or_default(), seq) {
            return r;
        }
    }
}

/// nfulnl_msg_config_mode: be32 copy_range, u8 copy_mode, u8 pad (packed).
fn mode_attr(range: u32, mode: u8) -> [u8; 6] {
    let [r0, r1, r2, r3] = range.to_be_bytes();
    [r0, r1, r2, r3, mode, 0]
}

/// One NFULNL_MSG_CONFIG request for `group` carrying `attrs`, ack asked.
fn config_msg(seq: u32, group: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    // nfgenmsg: family AF_UNSPEC, version, res_id = group (big-endian).
    let [g0, g1] = group.to_be_bytes();
    let nfgen = [libc::AF_UNSPEC as u8, NFNETLINK_V0, g0, g1];
    let mut m = request(MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, &nfgen);
    for (ty, data) in attrs {
        push_attr(&mut m, *ty, data);
    }
    m
}

/// A packet NFLOG logged to `group`: (IP packet, output interface index).
#[derive(Debug, PartialEq)]
struct Logged<'a> {
    packet: &'a [u8],
    outdev: u32,
}

/// The packets logged to `group` in netlink datagram `buf`.
fn logged_packets(buf: &[u8], group: u16) -> Vec<Logged<'_>> {
    let mut out = Vec::new();
    for m in messages(buf) {
        let body = m.body;
        // nfgenmsg: res_id (big-endian) is the group.
        if m.ty != MSG_PACKET || body.len() < NFGENMSG_LEN || be16(body, 2) != Some(group) {
            continue;
        }
        let mut packet = None;
        let mut outdev = 0;
        for (aty, data) in attr_iter(body, NFGENMSG_LEN) {
            match aty {
                NFULA_PAYLOAD => packet = Some(data),
                NFULA_IFINDEX_OUTDEV => {
                    if let Ok(b) = <[u8; 4]>::try_from(data) {
                        outdev = u32::from_be_bytes(b);
                    }
                }
                _ => {}
            }
        }
        if let Some(packet) = packet {
            out.push(Logged { packet, outdev });
        }
    }
    out
}

/// A UDP datagram read out of an IP packet.
#[derive(Debug, PartialEq)]
struct Datagram {
    src_port: u16,
    dst: SocketAddr,
    payload: Vec<u8>,
}

/// The big-endian u16 at byte `o` of `b`.
fn be16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The `N` bytes at byte `o` of `b`.
fn bytes_at<const N: usize>(b: &[u8], o: usize) -> Option<[u8; N]> {
    b.get(o..o.checked_add(N)?)?.try_into().ok()
}

/// The destination, the IP payload as copied and the IP payload's length
/// (from the header) of an IPv4 packet.
fn parse_ipv4(packet: &[u8]) -> Result<(IpAddr, &[u8], usize), String> {
    let short = || format!("IPv4 packet of {} bytes", packet.len());
    if packet.len() < 20 {
        return Err(short());
    }
    let ihl = (packet.first().ok_or_else(short)? & 0xF) as usize * 4;
    let total = be16(packet, 2).ok_or_else(short)? as usize;
    let frag = be16(packet, 6).ok_or_else(short)?;
    if frag & 0x3FFF != 0 {
        return Err("IPv4 fragment".into());
    }
    let proto = packet.get(9).copied().ok_or_else(short)?;
    if proto != libc::IPPROTO_UDP as u8 {
        return Err(format!("IPv4 protocol {proto} is not UDP"));
    }
    let bad = || format!("bad IPv4 header (ihl {ihl}, length {total})");
    if ihl < 20 || total < ihl {
        return Err(bad());
    }
    let dst = Ipv4Addr::from(bytes_at::<4>(packet, 16).ok_or_else(short)?);
    let l4 = packet.get(ihl..).ok_or_else(bad)?;
    Ok((IpAddr::V4(dst), l4, total - ihl))
}

/// [`parse_ipv4`] for IPv6, past the extension headers a UDP packet may
/// carry.
fn parse_ipv6(packet: &[u8]) -> Result<(IpAddr, &[u8], usize), String> {
    let short = || format!("IPv6 packet of {} bytes", packet.len());
    if packet.len() < 40 {
        return Err(short());
    }
    let plen = be16(packet, 4).ok_or_else(short)? as usize;
    let dst = Ipv6Addr::from(bytes_at::<16>(packet, 24).ok_or_else(short)?);
    let mut next = packet.get(6).copied().ok_or_else(short)?;
    let mut off = 40usize;
    // Hop-by-hop, routing and destination options headers.
    while matches!(next, 0 | 43 | 60) {
        let [n, len] = bytes_at::<2>(packet, off).ok_or("IPv6 extension header cut short")?;
        next = n;
        off += (len as usize + 1) * 8;
    }
    if next != libc::IPPROTO_UDP as u8 {
        return Err(format!("IPv6 next header {next} is not UDP"));
    }
    let too_long = || String::from("IPv6 extension headers longer than the packet");
    if off - 40 > plen {
        return Err(too_long());
    }
    let l4 = packet.get(off..).ok_or_else(too_long)?;
    Ok((IpAddr::V6(dst), l4, plen - (off - 40)))
}

/// Parse an IPv4 or IPv6 packet holding one whole UDP datagram; `outdev`
/// becomes the scope of a link-local IPv6 destination.
fn parse_udp(packet: &[u8], outdev: u32) -> Result<Datagram, String> {
    let version = packet.first().ok_or("empty packet")? >> 4;
    let (dst_ip, l4, ip_len) = match version {
        4 => parse_ipv4(packet)?,
        6 => parse_ipv6(packet)?,
        v => return Err(format!("IP version {v}")),
    };
    let short = || format!("UDP header cut short ({} bytes)", l4.len());
    if l4.len() < 8 {
        return Err(short());
    }
    let src_port = be16(l4, 0).ok_or_else(short)?;
    let dst_port = be16(l4, 2).ok_or_else(short)?;
    let ulen = be16(l4, 4).ok_or_else(short)? as usize;
    if ulen < 8 || ulen > ip_len {
        return Err(format!(
            "UDP length {ulen} against {ip_len} bytes of IP payload"
        ));
    }
    let payload = l4.get(8..ulen).ok_or_else(|| {
        format!(
            "datagram of {} bytes cut to {} by the netlink copy",
            ulen - 8,
            l4.len().saturating_sub(8)
        )
    })?;
    let dst = match dst_ip {
        IpAddr::V6(a) if a.segments()[0] & 0xFFC0 == 0xFE80 => {
            SocketAddr::V6(SocketAddrV6::new(a, dst_port, 0, outdev))
        }
        a => SocketAddr::new(a, dst_port),
    };
    Ok(Datagram {
        src_port,
        dst,
        payload: payload.to_vec(),
    })
}

/// Wait for the datagram of port `local.port()` logged to `group`.
fn wait_packet(
    nl: &mut impl Transport,
    group: u16,
    local: SocketAddr,
) -> Result<(Vec<u8>, SocketAddr), crate::Error> {
    let mut buf = vec![0u8; 1 << 17];
    let deadline = Instant::now() + WAIT;
    loop {
        let n = match nl.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() < deadline {
                    continue;
                }
                return Err(sys(
                    local,
                    &format!(
                        "waiting {WAIT:?} for the pushed datagram on NFLOG group {group} (none came: \
                         the rules did not match it)"
                    ),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
            Err(e) => {
                return Err(sys(
                    local,
                    &format!("receiving from NFLOG group {group}"),
                    e,
                ))
            }
        };
        for logged in logged_packets(&buf[..n], group) {
            match parse_udp(logged.packet, logged.outdev) {
                Ok(d) if d.src_port == local.port() => return Ok((d.payload, d.dst)),
                Ok(d) => debug!("NFLOG group {group}: datagram of port {}", d.src_port),
                Err(why) => {
                    return Err(sys(
                        local,
                        &format!("reading the datagram logged to NFLOG group {group}: {why}"),
                        std::io::Error::from(std::io::ErrorKind::InvalidData),
                    ))
                }
            }
        }
    }
}

/// The temporary NFLOG + DROP rules of one socket.
struct Rules {
    local: SocketAddr,
    group: u16,
    /// (tool, match arguments) per family.
    sets: Vec<(&'static str, Vec<String>)>,
}

impl Rules {
    fn new(local: SocketAddr, group: u16) -> Rules {
        let tag = format!("crust-udpcork-{}-{}", std::process::id(), local.port());
        let matches = |src: Option<IpAddr>| {
            let mut m = vec!["-p".into(), "udp".into()];
            if let Some(a) = src {
                m.extend(["-s".into(), a.to_string()]);
            }
            m.extend([
                "--sport".into(),
                local.port().to_string(),
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                tag.clone(),
            ]);
            m
        };
        let v4 = |a: Ipv4Addr| {
            (
                "iptables",
                matches((!a.is_unspecified()).then_some(a.into())),
            )
        };
        let sets = match local.ip() {
            IpAddr::V4(a) => vec![v4(a)],
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(m) => vec![v4(m)],
                // An IPv6 socket bound to any address may send IPv4 too.
                None if a.is_unspecified() => {
                    vec![v4(Ipv4Addr::UNSPECIFIED), ("ip6tables", matches(None))]
                }
                None => vec![("ip6tables", matches(Some(a.into())))],
            },
        };
        Rules { local, group, sets }
    }

    fn nflog(&self) -> Vec<String> {
        vec![
            "-j".into(),
            "NFLOG".into(),
            "--nflog-group".into(),
            self.group.to_string(),
            "--nflog-size".into(),
            COPY_RANGE.to_string(),
        ]
    }

    fn drop(&self) -> Vec<String> {
        vec!["-j".into(), "DROP".into()]
    }

    /// DROP then NFLOG above it, at the top of OUTPUT; undone on failure.
    fn insert(&self) -> Result<(), crate::Error> {
        let mut done: Vec<(&str, Vec<String>)> = Vec::new();
        for (tool, m) in &self.sets {
            for target in [self.drop(), self.nflog()] {
                let mut args: Vec<String> = ["-w", "-I", "OUTPUT", "1"].map(String::from).into();
                args.extend(m.iter().cloned());
                args.extend(target.iter().cloned());
                if let Err(e) = run(tool, &args) {
                    for (t, a) in done.iter().rev() {
                        if let Err((what, why)) = run(t, &delete_args(a)) {
                            warn!("{what}: {why}");
                        }
                    }
                    return Err(self.err(e));
                }
                done.push((tool, args));
            }
        }
        Ok(())
    }

    /// Delete every rule (all tried); the first failure is returned.
    fn remove(&self) -> Result<(), crate::Error> {
        let mut first = None;
        for (tool, m) in &self.sets {
            for target in [self.nflog(), self.drop()] {
                let mut args: Vec<String> = ["-w", "-D", "OUTPUT"].map(String::from).into();
                args.extend(m.iter().cloned());
                args.extend(target.iter().cloned());
                if let Err((what, why)) = run(tool, &args) {
                    warn!("{what}: {why}");
                    first.get_or_insert((what, why));
                }
            }
        }
        match first {
            Some(e) => Err(self.err(e)),
            None => Ok(()),
        }
    }

    fn err(&self, (what, source): (String, std::io::Error)) -> crate::Error {
        sys(self.local, &what, source)
    }
}

/// `-I OUTPUT 1 ...` made `-D OUTPUT ...`.
fn delete_args(insert: &[String]) -> Vec<String> {
    let mut a: Vec<String> = ["-w", "-D", "OUTPUT"].map(String::from).into();
    a.extend(insert.iter().skip(4).cloned());
    a
}

use crate::net::netlock::find_tool;

/// Run `tool args`; a failure says which command and why (its stderr).
fn run(tool: &str, args: &[String]) -> Result<(), (String, std::io::Error)> {
    let shown = format!("{tool} {}", args.join(" "));
    debug!("\tRunning [{shown}]");
    let path = find_tool(tool).ok_or_else(|| {
        (
            format!("finding {tool} (needed to take the datagram)"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    let out = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| (format!("running [{shown}]"), e))?;
    if out.status.success() {
        return Ok(());
    }
    Err((
        format!("[{shown}] ({})", out.status),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_netlink::{ack_of as find_ack, NLMSG_ERROR, NLMSG_HDRLEN};
    use crust_sys::net::{bind, connect, getsockname, recv, send, socket};
    use std::os::fd::AsFd;

    /// A netlink message of `ty` with an nfgenmsg for `group` and `attrs`.
    fn nl_msg(ty: u16, seq: u32, group: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut m = config_msg(seq, group, attrs);
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m
    }

    fn ipv4_udp(dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = (28 + payload.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1]);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn config_message_bytes() {
        let m = config_msg(7, 0x8123, &[(NFULA_CFG_CMD, &[CFG_CMD_BIND])]);
        assert_eq!(m.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0401);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 5);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[0, 0, 0x81, 0x23]);
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 5);
        assert_eq!(u16::from_ne_bytes(m[22..24].try_into().unwrap()), 1);
        assert_eq!(&m[24..28], &[1, 0, 0, 0]);
        let mode = mode_attr(0xFFFF, COPY_PACKET);
        assert_eq!(mode, [0, 0, 0xFF, 0xFF, 2, 0]);
        let m = config_msg(8, 1, &[(NFULA_CFG_MODE, &mode)]);
        assert_eq!(m.len(), 16 + 4 + 12);
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 10);
    }

    #[test]
    fn acks_found() {
        let mut ack = nl_msg(NLMSG_ERROR, 3, 0, &[]);
        ack.truncate(NLMSG_HDRLEN);
        ack.extend_from_slice(&(-libc::EBUSY).to_ne_bytes());
        ack.extend_from_slice(&[0; 16]);
        let len = ack.len() as u32;
        ack[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(find_ack(&ack, 4).is_none());
        let e = find_ack(&ack, 3).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(find_ack(&ack, 3).unwrap().is_ok());
        assert!(find_ack(&ack[..10], 3).is_none());
    }

    #[test]
    fn logged_packet_parsed() {
        let ip = ipv4_udp([10, 1, 2, 3], 4000, 53, b"abcdef");
        let hdr = [0x08, 0x00, 3, 0];
        let out = 2u32.to_be_bytes();
        let mut buf = nl_msg(
            MSG_PACKET,
            0,
            0x8001,
            &[
                (1, &hdr),
                (NFULA_IFINDEX_OUTDEV, &out),
                (NFULA_PAYLOAD, &ip),
            ],
        );
        // A second message for another group is ignored.
        buf.extend(nl_msg(MSG_PACKET, 0, 0x8002, &[(NFULA_PAYLOAD, &ip)]));
        let got = logged_packets(&buf, 0x8001);
        assert_eq!(
            got,
            vec![Logged {
                packet: &ip,
                outdev: 2
            }]
        );
        let d = parse_udp(got[0].packet, 2).unwrap();
        assert_eq!(d.src_port, 4000);
        assert_eq!(d.dst, "10.1.2.3:53".parse().unwrap());
        assert_eq!(d.payload, b"abcdef");
        // Cut by the copy range: named as such.
        let e = parse_udp(&ip[..30], 0).unwrap_err();
        assert!(e.contains("cut"), "{e}");
        let mut tcp = ip.clone();
        tcp[9] = 6;
        assert!(parse_udp(&tcp, 0).is_err());
    }

    #[test]
    fn ipv6_packet_parsed() {
        let payload = b"xyz";
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(8 + 8 + payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[60, 64]); // destination options, then UDP
        p.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let dst: Ipv6Addr = "fe80::1".parse().unwrap();
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&5000u16.to_be_bytes());
        p.extend_from_slice(&6000u16.to_be_bytes());
        p.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        let d = parse_udp(&p, 3).unwrap();
        assert_eq!(d.src_port, 5000);
        assert_eq!(d.dst, SocketAddr::V6(SocketAddrV6::new(dst, 6000, 0, 3)));
        assert_eq!(d.payload, payload);
        // Every shorter copy is an error, never a panic.
        for n in 0..p.len() {
            assert!(parse_udp(&p[..n], 3).is_err(), "{n} bytes");
        }
        // So are headers claiming more than there is.
        let mut long = p.clone();
        long[41] = 200; // extension header length
        assert!(parse_udp(&long, 3).is_err());
    }

    #[test]
    fn cut_ipv4_packets_are_errors() {
        let ip = ipv4_udp([10, 1, 2, 3], 4000, 53, b"abcdef");
        assert!(parse_udp(&ip, 0).is_ok());
        for n in 0..ip.len() {
            assert!(parse_udp(&ip[..n], 0).is_err(), "{n} bytes");
        }
        let mut bad = ip.clone();
        bad[0] = 0x4F; // ihl 60 bytes, more than the packet
        assert!(parse_udp(&bad, 0).unwrap_err().contains("bad IPv4 header"));
        let mut bad = ip.clone();
        bad[24..26].copy_from_slice(&100u16.to_be_bytes()); // UDP length
        assert!(parse_udp(&bad, 0).unwrap_err().contains("UDP length 100"));
        let mut logged = nl_msg(MSG_PACKET, 0, 0x8001, &[(NFULA_PAYLOAD, &ip)]);
        // An outdev attribute of the wrong size is ignored.
        push_attr(&mut logged, NFULA_IFINDEX_OUTDEV, &[1, 2]);
        let got = logged_packets(&logged, 0x8001);
        assert_eq!(
            got,
            vec![Logged {
                packet: &ip,
                outdev: 0
            }]
        );
    }

    #[test]
    fn rule_shapes() {
        let r = Rules::new("10.0.0.1:53".parse().unwrap(), 0x8035);
        assert_eq!(r.sets.len(), 1);
        assert_eq!(r.sets[0].0, "iptables");
        let m = r.sets[0].1.join(" ");
        assert!(m.starts_with("-p udp -s 10.0.0.1 --sport 53 -m comment --comment crust-udpcork-"));
        assert_eq!(
            r.nflog().join(" "),
            "-j NFLOG --nflog-group 32821 --nflog-size 65535"
        );
        let r = Rules::new("[::ffff:0.0.0.0]:9".parse().unwrap(), 1);
        assert_eq!(r.sets.len(), 1);
        assert!(r.sets[0].1.join(" ").starts_with("-p udp --sport 9 "));
        let r = Rules::new("[::]:9".parse().unwrap(), 1);
        let tools: Vec<_> = r.sets.iter().map(|s| s.0).collect();
        assert_eq!(tools, ["iptables", "ip6tables"]);
        let r = Rules::new("[::1]:9".parse().unwrap(), 1);
        assert_eq!(r.sets[0].0, "ip6tables");
        assert!(r.sets[0].1.join(" ").contains("-s ::1 "));
        let a: Vec<String> = ["-w", "-I", "OUTPUT", "1", "-p", "udp"]
            .map(String::from)
            .into();
        assert_eq!(delete_args(&a).join(" "), "-w -D OUTPUT -p udp");
    }

    fn root_with_iptables() -> bool {
        use crust_sys::testing::{current_test, require_root, skip};
        if !require_root(&current_test()) {
            return false;
        }
        if find_tool("iptables").is_none() || find_tool("ip6tables").is_none() {
            return skip(&current_test(), "it needs iptables and ip6tables");
        }
        true
    }

    fn listing(tool: &str) -> String {
        let out = Command::new(find_tool(tool).unwrap())
            .args(["-w", "-S", "OUTPUT"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn take_from_loopback(ip: IpAddr) {
        let (domain, tool) = match ip {
            IpAddr::V4(_) => (libc::AF_INET, "iptables"),
            IpAddr::V6(_) => (libc::AF_INET6, "ip6tables"),
        };
        let r = socket(domain, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0).unwrap();
        bind(r.as_fd(), &SocketAddr::new(ip, 0)).unwrap();
        let r_addr = getsockname(r.as_fd()).unwrap();
        let s = socket(domain, libc::SOCK_DGRAM, 0).unwrap();
        bind(s.as_fd(), &SocketAddr::new(ip, 0)).unwrap();
        connect(s.as_fd(), &r_addr).unwrap();
        let s_addr = getsockname(s.as_fd()).unwrap();
        setsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 1).unwrap();
        send(s.as_fd(), b"abc", 0).unwrap();
        send(s.as_fd(), b"def", 0).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            recv(r.as_fd(), &mut buf, 0).is_err(),
            "received while corked"
        );
        assert!(ioctl_int(s.as_fd(), SIOCOUTQ).unwrap() > 0);

        let got = take_corked(s.as_fd(), s_addr).unwrap();
        assert_eq!(got, Some((b"abcdef".to_vec(), r_addr)));

        let e = recv(r.as_fd(), &mut buf, 0).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "the DROP let it out"
        );
        let tag = format!("crust-udpcork-{}-{}", std::process::id(), s_addr.port());
        assert!(
            !listing(tool).contains(&tag),
            "rules left: {}",
            listing(tool)
        );
        assert_eq!(
            getsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK).unwrap(),
            1
        );
        assert_eq!(ioctl_int(s.as_fd(), SIOCOUTQ).unwrap(), 0);
        // Nothing pending any more.
        assert_eq!(take_corked(s.as_fd(), s_addr).unwrap(), None);

        setsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 0).unwrap();
        send(s.as_fd(), b"later", 0).unwrap();
        let n = recv(r.as_fd(), &mut buf, 0).unwrap();
        assert_eq!(&buf[..n], b"later");
    }

    #[test]
    fn big_datagram_taken_and_put_back() {
        if !root_with_iptables() {
            return;
        }
        let r = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0).unwrap();
        bind(r.as_fd(), &"127.0.0.1:0".parse().unwrap()).unwrap();
        setsockopt_int(r.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20).unwrap();
        let r_addr = getsockname(r.as_fd()).unwrap();
        let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        bind(s.as_fd(), &"0.0.0.0:0".parse().unwrap()).unwrap();
        let s_addr = getsockname(s.as_fd()).unwrap();
        setsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 1).unwrap();
        let data: Vec<u8> = (0..60000u32).map(|i| (i % 251) as u8).collect();
        crust_sys::net::sendto(s.as_fd(), &data[..30000], 0, &r_addr).unwrap();
        // Not connected: appends to the pending datagram's destination.
        send(s.as_fd(), &data[30000..], 0).unwrap();
        let (got, dst) = take_corked(s.as_fd(), s_addr).unwrap().unwrap();
        assert_eq!(dst, r_addr);
        assert!(got == data, "{} bytes taken", got.len());
        let mut buf = vec![0u8; 70000];
        assert!(recv(r.as_fd(), &mut buf, 0).is_err());

        // Put back, taken again the same, put back and sent for real.
        put_back(s.as_fd(), s_addr, &got, dst).unwrap();
        assert!(recv(r.as_fd(), &mut buf, 0).is_err());
        let again = take_corked(s.as_fd(), s_addr).unwrap().unwrap();
        assert!(again == (data.clone(), r_addr));
        put_back(s.as_fd(), s_addr, &again.0, again.1).unwrap();
        setsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 0).unwrap();
        let n = recv(r.as_fd(), &mut buf, 0).unwrap();
        assert!(buf[..n] == data[..]);
    }

    #[test]
    fn rules_gone_after_a_failure() {
        if !root_with_iptables() {
            return;
        }
        // A wrong local port: the rules miss the datagram, which goes out;
        // take_corked says so and leaves no rule behind.
        let r = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0).unwrap();
        bind(r.as_fd(), &"127.0.0.1:0".parse().unwrap()).unwrap();
        let r_addr = getsockname(r.as_fd()).unwrap();
        let s = socket(libc::AF_INET, libc::SOCK_DGRAM, 0).unwrap();
        connect(s.as_fd(), &r_addr).unwrap();
        setsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK, 1).unwrap();
        send(s.as_fd(), b"x", 0).unwrap();
        let wrong: SocketAddr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), r_addr.port());
        let e = take_corked(s.as_fd(), wrong).unwrap_err().to_string();
        assert!(e.contains(&wrong.to_string()) && e.contains("NFLOG"), "{e}");
        let tag = format!("crust-udpcork-{}-{}", std::process::id(), wrong.port());
        assert!(!listing("iptables").contains(&tag));
        assert_eq!(
            getsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK).unwrap(),
            1
        );
        let mut buf = [0u8; 8];
        assert_eq!(recv(r.as_fd(), &mut buf, 0).unwrap(), 1);
    }

    #[test]
    fn corked_ipv4_taken() {
        if root_with_iptables() {
            take_from_loopback(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    }

    #[test]
    fn corked_ipv6_taken() {
        if root_with_iptables() {
            take_from_loopback(IpAddr::V6(Ipv6Addr::LOCALHOST));
        }
    }

    #[test]
    fn msg_more_on_dual_stack_socket_taken() {
        if !root_with_iptables() {
            return;
        }
        // An IPv6 socket bound to [::] sending to an IPv4 address with
        // MSG_MORE (UDP_CORK unset, and left so).
        let r = socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK, 0).unwrap();
        bind(r.as_fd(), &"127.0.0.1:0".parse().unwrap()).unwrap();
        let r_addr = getsockname(r.as_fd()).unwrap();
        let s = socket(libc::AF_INET6, libc::SOCK_DGRAM, 0).unwrap();
        bind(s.as_fd(), &"[::]:0".parse().unwrap()).unwrap();
        let s_addr = getsockname(s.as_fd()).unwrap();
        let mapped = SocketAddr::V6(SocketAddrV6::new(
            Ipv4Addr::LOCALHOST.to_ipv6_mapped(),
            r_addr.port(),
            0,
            0,
        ));
        crust_sys::net::sendto(s.as_fd(), b"more", libc::MSG_MORE, &mapped).unwrap();
        let got = take_corked(s.as_fd(), s_addr).unwrap();
        assert_eq!(got, Some((b"more".to_vec(), mapped)));
        let mut buf = [0u8; 16];
        assert!(recv(r.as_fd(), &mut buf, 0).is_err());
        assert_eq!(
            getsockopt_int(s.as_fd(), libc::IPPROTO_UDP, libc::UDP_CORK).unwrap(),
            0
        );
        let tag = format!("crust-udpcork-{}-{}", std::process::id(), s_addr.port());
        assert!(!listing("iptables").contains(&tag));
        assert!(!listing("ip6tables").contains(&tag));
    }
}
