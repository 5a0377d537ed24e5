//! Crafted TCP segments, sent through a raw socket "from the peer" to a
//! socket being rebuilt: how a FIN the peer had sent is put back.

use crate::consts::{IPV6_HDRINCL, SO_MARK};
use crate::error::{Conn, Error};
use crust_sys::net;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;

/// The packet mark (SO_MARK) of crafted segments, the same as CRIU's, so
/// that a network lock that lets marked packets through (as CRIU's
/// iptables/nftables rules do) lets them reach the socket being rebuilt.
pub const SOCCR_MARK: u32 = 0xC114;

/// The address as it is on the wire: an IPv4-mapped IPv6 address
/// (`[::ffff:a.b.c.d]:p`) becomes the IPv4 `a.b.c.d:p`; others are
/// unchanged.
pub fn wire_addr(a: &SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => *a,
        },
        SocketAddr::V4(_) => *a,
    }
}

/// Internet checksum (RFC 1071) over `parts`, one after the other (each
/// part but the last of even length), e.g. a pseudo-header then a
/// segment or datagram.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for p in parts {
        let mut it = p.chunks(2);
        for c in &mut it {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], 0])
            };
            sum += w as u32;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A 20-byte TCP header without options, its checksum left zero.
fn tcp_header(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, window: u16) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = 5 << 4; // data offset: 5 words
    t[13] = flags;
    t[14..16].copy_from_slice(&window.to_be_bytes());
    t
}

/// A whole IP packet carrying one TCP segment without payload or options
/// from `src` to `dst`: an IPv4 header (20 bytes, checksum and id left for
/// the kernel to fill) or an IPv6 one (40 bytes), then the TCP header with
/// its checksum. IPv4-mapped addresses make an IPv4 packet. `flags` are
/// TCP header flags ([`crate::consts::TH_FIN`] | [`crate::consts::TH_ACK`]
/// ...), `window` the raw (scaled) window field.
pub fn build_segment(
    src: &SocketAddr,
    dst: &SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
) -> Result<Vec<u8>, Error> {
    let (s, d) = (wire_addr(src), wire_addr(dst));
    let mut tcp = tcp_header(s.port(), d.port(), seq, ack, flags, window);
    let tcp_len = (tcp.len() as u16).to_be_bytes();
    match (s.ip(), d.ip()) {
        (IpAddr::V4(si), IpAddr::V4(di)) => {
            let pseudo = [&si.octets()[..], &di.octets()[..], &[0, 6], &tcp_len].concat();
            let c = checksum(&[&pseudo, &tcp]);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45; // version 4, 5 words
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[6] = 0x40; // don't fragment
            ip[8] = 64; // TTL
            ip[9] = libc::IPPROTO_TCP as u8;
            ip[12..16].copy_from_slice(&si.octets());
            ip[16..20].copy_from_slice(&di.octets());
            let c = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            Ok([&ip[..], &tcp[..]].concat())
        }
        (IpAddr::V6(si), IpAddr::V6(di)) => {
            let pseudo = [
                &si.octets()[..],
                &di.octets()[..],
                &[0, 0],
                &tcp_len,
                &[0, 0, 0, 6],
            ]
            .concat();
            let c = checksum(&[&pseudo, &tcp]);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60; // version 6
            ip[4..6].copy_from_slice(&tcp_len);
            ip[6] = libc::IPPROTO_TCP as u8;
            ip[7] = 64; // hop limit
            ip[8..24].copy_from_slice(&si.octets());
            ip[24..40].copy_from_slice(&di.octets());
            Ok([&ip[..], &tcp[..]].concat())
        }
        _ => Err(Error::Inconsistent {
            conn: Conn::new(*dst, *src),
            why: "a segment between an IPv4 and an IPv6 address".into(),
        }),
    }
}

/// Send one crafted TCP segment from `src` (the peer) to `dst` (a local
/// socket) through a raw socket marked with [`SOCCR_MARK`]; see
/// [`build_segment`] for the arguments. Needs CAP_NET_RAW and
/// CAP_NET_ADMIN. Used to replay the peer's FIN into a socket being
/// rebuilt, and the ACK of our own FIN.
pub fn send_segment(
    src: &SocketAddr,
    dst: &SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
) -> Result<(), Error> {
    let conn = Conn::new(*dst, *src);
    let pkt = build_segment(src, dst, seq, ack, flags, window)?;
    let to = wire_addr(dst);
    let (domain, to) = match to {
        SocketAddr::V4(a) => (libc::AF_INET, SocketAddr::new(IpAddr::V4(*a.ip()), 0)),
        // Port 0 (the protocol is in the header); a link-local address
        // keeps its scope.
        SocketAddr::V6(a) => (
            libc::AF_INET6,
            SocketAddr::V6(SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id())),
        ),
    };
    let raw = net::socket(domain, libc::SOCK_RAW, libc::IPPROTO_RAW)
        .map_err(|e| Error::io("raw socket for a crafted segment", conn, e))?;
    if domain == libc::AF_INET6 {
        // IPPROTO_RAW implies a header included; say so anyway.
        if let Err(e) = net::setsockopt_int(raw.as_fd(), libc::IPPROTO_IPV6, IPV6_HDRINCL, 1) {
            log::debug!("{conn}: IPV6_HDRINCL: {e}");
        }
    }
    net::setsockopt_int(raw.as_fd(), libc::SOL_SOCKET, SO_MARK, SOCCR_MARK as i32)
        .map_err(|e| Error::io("SO_MARK on the raw socket", conn, e))?;
    let n = net::sendto(raw.as_fd(), &pkt, 0, &to)
        .map_err(|e| Error::io("sending a crafted segment", conn, e))?;
    if n != pkt.len() {
        return Err(Error::Inconsistent {
            conn,
            why: format!("crafted segment sent short: {n} of {} bytes", pkt.len()),
        });
    }
    log::debug!("{conn}: crafted segment seq {seq} ack {ack} flags {flags:#x} window {window}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consts::{TH_ACK, TH_FIN};

    #[test]
    fn mapped_addresses_are_v4_on_the_wire() {
        let m: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        assert_eq!(wire_addr(&m), "10.1.2.3:80".parse().unwrap());
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(wire_addr(&v6), v6);
        let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
        assert_eq!(wire_addr(&v4), v4);
    }

    #[test]
    fn checksum_of_known_header() {
        // The classic example IPv4 header (checksum 0xb861).
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&[&h]), 0xb861);
        assert_eq!(checksum(&[&[0x01]]), !0x0100);
    }

    #[test]
    fn v4_segment_layout_and_checksums() {
        let src: SocketAddr = "[::ffff:127.0.0.2]:4000".parse().unwrap();
        let dst: SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let p = build_segment(&src, &dst, 0x01020304, 0x0a0b0c0d, TH_FIN | TH_ACK, 512).unwrap();
        assert_eq!(p.len(), 40);
        assert_eq!(p[0], 0x45);
        assert_eq!(&p[12..16], &[127, 0, 0, 2]);
        assert_eq!(&p[16..20], &[127, 0, 0, 1]);
        assert_eq!(checksum(&[&p[..20]]), 0, "IP header checksum");
        let tcp = &p[20..];
        assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), 4000);
        assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), 5000);
        assert_eq!(&tcp[4..8], &[1, 2, 3, 4]);
        assert_eq!(&tcp[8..12], &[10, 11, 12, 13]);
        assert_eq!(tcp[13], 0x11);
        assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), 512);
        let pseudo = [&p[12..20], &[0u8, 6, 0, 20][..]].concat();
        assert_eq!(checksum(&[&pseudo, tcp]), 0, "TCP checksum");
    }

    #[test]
    fn v6_segment_layout_and_checksum() {
        let src: SocketAddr = "[fd00::2]:4000".parse().unwrap();
        let dst: SocketAddr = "[fd00::1]:5000".parse().unwrap();
        let p = build_segment(&src, &dst, 7, 8, TH_ACK, 1).unwrap();
        assert_eq!(p.len(), 60);
        assert_eq!(p[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([p[4], p[5]]), 20);
        assert_eq!(p[6], 6);
        let tcp = &p[40..];
        let pseudo = [&p[8..40], &[0u8, 0, 0, 20, 0, 0, 0, 6][..]].concat();
        assert_eq!(checksum(&[&pseudo, tcp]), 0, "TCP checksum");
        let v4: SocketAddr = "1.2.3.4:5".parse().unwrap();
        assert!(build_segment(&src, &v4, 0, 0, 0, 0).is_err());
    }
}
