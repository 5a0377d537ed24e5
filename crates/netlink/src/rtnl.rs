//! rtnetlink (NETLINK_ROUTE) links: RTM_GETLINK dumps parsed into
//! [`Link`]s, and the RTM_NEWLINK / RTM_SETLINK / RTM_DELLINK requests
//! that make, change and remove them (linux/rtnetlink.h, linux/if_link.h).

use crate::msg::{
    messages, push_attr, request, u16_at, u32_at, NLA_HDRLEN, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use crate::transport::Transport;
use std::io;

pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_SETLINK: u16 = 19;
/// Make the object if it does not exist.
pub const NLM_F_CREATE: u16 = 0x400;
/// Fail if the object exists.
pub const NLM_F_EXCL: u16 = 0x200;

pub const IFLA_ADDRESS: u16 = 1;
pub const IFLA_IFNAME: u16 = 3;
pub const IFLA_MTU: u16 = 4;
pub const IFLA_LINK: u16 = 5;
pub const IFLA_MASTER: u16 = 10;
pub const IFLA_LINKINFO: u16 = 18;
pub const IFLA_NET_NS_FD: u16 = 28;
pub const IFLA_LINK_NETNSID: u16 = 37;
pub const IFLA_NEW_IFINDEX: u16 = 49;
pub const IFLA_INFO_KIND: u16 = 1;
pub const IFLA_INFO_DATA: u16 = 2;
/// In the IFLA_INFO_DATA of a veth: the peer's ifinfomsg and attributes.
pub const VETH_INFO_PEER: u16 = 1;

pub const ARPHRD_ETHER: u16 = 1;
pub const ARPHRD_LOOPBACK: u16 = 772;
pub const AF_UNSPEC: u8 = 0;
pub const AF_PACKET: u8 = 17;

/// Size of `struct ifinfomsg`.
pub const IFINFOMSG_LEN: usize = 16;
const RECV_BUF: usize = 64 << 10;

/// A `struct ifinfomsg`: family, device type, index, flags and the mask
/// of flags to change (0: all of them, the kernel's old rule).
pub fn ifinfomsg(family: u8, index: i32, flags: u32, change: u32) -> [u8; IFINFOMSG_LEN] {
    let mut b = [0u8; IFINFOMSG_LEN];
    b[0] = family;
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// One attribute as bytes (header, data, padding), to nest in another.
pub fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(NLA_HDRLEN + data.len() + 3);
    b.extend_from_slice(&((NLA_HDRLEN + data.len()) as u16).to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().next_multiple_of(4), 0);
    b
}

/// One link of an RTM_GETLINK answer, with the attributes crust reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: i32,
    /// The device type (ARPHRD_*).
    pub hw_type: u16,
    pub flags: u32,
    pub name: String,
    pub mtu: Option<u32>,
    /// The link-layer (MAC) address.
    pub address: Option<Vec<u8>>,
    /// The ifindex of the bridge (or bond) it is plugged in.
    pub master: Option<u32>,
    /// IFLA_LINK: the peer's ifindex (veth), or the lower device's.
    pub link: Option<u32>,
    /// IFLA_LINK_NETNSID: the netns id, in this netns, of the peer's netns.
    pub link_netnsid: Option<i32>,
    /// IFLA_INFO_KIND: "veth", "bridge", "tun"...
    pub kind: Option<String>,
    /// IFLA_INFO_DATA, raw.
    pub info_data: Option<Vec<u8>>,
}

fn cstr(d: &[u8]) -> String {
    let end = d.iter().position(|&c| c == 0).unwrap_or(d.len());
    String::from_utf8_lossy(d.get(..end).unwrap_or(d)).into_owned()
}

/// Parse the body of an RTM_NEWLINK message (ifinfomsg, attributes).
pub fn parse_link(body: &[u8]) -> Result<Link, String> {
    if body.len() < IFINFOMSG_LEN {
        return Err(format!("a link message of {} bytes", body.len()));
    }
    let mut l = Link {
        hw_type: u16_at(body, 2).unwrap_or(0),
        index: u32_at(body, 4).unwrap_or(0) as i32,
        flags: u32_at(body, 8).unwrap_or(0),
        ..Link::default()
    };
    for (ty, d) in crate::msg::attrs(body, IFINFOMSG_LEN)? {
        match ty {
            IFLA_IFNAME => l.name = cstr(d),
            IFLA_MTU => l.mtu = u32_at(d, 0),
            IFLA_ADDRESS => l.address = Some(d.to_vec()),
            IFLA_MASTER => l.master = u32_at(d, 0),
            IFLA_LINK => l.link = u32_at(d, 0),
            IFLA_LINK_NETNSID => l.link_netnsid = u32_at(d, 0).map(|v| v as i32),
            IFLA_LINKINFO => {
                for (ity, idata) in crate::msg::attrs(d, 0)? {
                    match ity {
                        IFLA_INFO_KIND => l.kind = Some(cstr(idata)),
                        IFLA_INFO_DATA => l.info_data = Some(idata.to_vec()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if l.name.is_empty() {
        return Err(format!("link {} has no name", l.index));
    }
    Ok(l)
}

/// Errors of an rtnetlink exchange.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    #[error("cannot send the request")]
    Send {
        #[source]
        source: io::Error,
    },
    #[error("cannot receive the answer")]
    Recv {
        #[source]
        source: io::Error,
    },
    #[error("the kernel refused the request")]
    Refused {
        #[source]
        source: io::Error,
    },
    #[error("bad answer: {why}")]
    Answer { why: String },
}

impl RtnlError {
    /// The errno the kernel answered with, if it refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Refused { source } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn nl_errno(body: &[u8]) -> i32 {
    -(u32_at(body, 0).unwrap_or(0) as i32)
}

/// Dump every link: an RTM_GETLINK request with NLM_F_DUMP, answered in
/// parts until NLMSG_DONE.
pub fn dump_links<T: Transport + ?Sized>(t: &mut T) -> Result<Vec<Link>, RtnlError> {
    let seq = 1;
    let req = request(
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &ifinfomsg(AF_PACKET, 0, 0, 0),
    );
    t.send(&req).map_err(|source| RtnlError::Send { source })?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = t
            .recv(&mut buf)
            .map_err(|source| RtnlError::Recv { source })?;
        if n == 0 {
            return Ok(out);
        }
        for m in messages(buf.get(..n).unwrap_or(&buf)) {
            match m.ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    return Err(RtnlError::Refused {
                        source: io::Error::from_raw_os_error(nl_errno(m.body)),
                    })
                }
                RTM_NEWLINK => {
                    out.push(parse_link(m.body).map_err(|why| RtnlError::Answer { why })?)
                }
                _ => {}
            }
        }
    }
}

/// Send request `msg` (made with NLM_F_ACK and sequence `seq`) and wait
/// for its ack.
pub fn transact<T: Transport + ?Sized>(t: &mut T, msg: &[u8], seq: u32) -> Result<(), RtnlError> {
    t.send(msg).map_err(|source| RtnlError::Send { source })?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = t
            .recv(&mut buf)
            .map_err(|source| RtnlError::Recv { source })?;
        if n == 0 {
            return Err(RtnlError::Answer {
                why: "the kernel closed the answer without an ack".into(),
            });
        }
        if let Some(r) = crate::msg::ack_of(buf.get(..n).unwrap_or(&buf), seq) {
            return r.map_err(|source| RtnlError::Refused { source });
        }
    }
}

/// A link request of type `ty` (RTM_NEWLINK, RTM_SETLINK, RTM_DELLINK)
/// asking for an ack: the header and `ifi`, attributes to be pushed.
pub fn link_request(ty: u16, extra_flags: u16, seq: u32, ifi: &[u8; IFINFOMSG_LEN]) -> Vec<u8> {
    request(ty, NLM_F_REQUEST | NLM_F_ACK | extra_flags, seq, ifi)
}

/// Push an IFLA_IFNAME attribute (NUL-terminated, as iproute2 sends it).
pub fn push_name(m: &mut Vec<u8>, ty: u16, name: &str) {
    let mut d = name.as_bytes().to_vec();
    d.push(0);
    push_attr(m, ty, &d);
}

/// Whether the kernel takes IFLA_NEW_IFINDEX (a link moved to another
/// namespace keeps a chosen index): a SETLINK of a link that does not
/// exist with a negative new index is refused with ERANGE when it does,
/// ENODEV when it does not know the attribute (CRIU's probe).
pub fn has_new_ifindex<T: Transport + ?Sized>(t: &mut T) -> Result<bool, RtnlError> {
    let mut m = link_request(RTM_SETLINK, NLM_F_CREATE, 9, &ifinfomsg(AF_UNSPEC, 0, 0, 0));
    push_attr(&mut m, IFLA_NEW_IFINDEX, &(-1i32).to_ne_bytes());
    push_name(&mut m, IFLA_IFNAME, "crust-kdat");
    match transact(t, &m, 9) {
        Err(e) if e.errno() == Some(libc::ERANGE) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
        Err(e) => Err(e),
        Ok(()) => Err(RtnlError::Answer {
            why: "the kernel accepted a link request for a link that does not exist".into(),
        }),
    }
}

/// RTM_NEWNSID: set (request) or tell (answer) a namespace id.
pub const RTM_NEWNSID: u16 = 88;
/// RTM_GETNSID: ask the id a namespace has in the asker's.
pub const RTM_GETNSID: u16 = 90;
const NETNSA_NSID: u16 = 1;
const NETNSA_PID: u16 = 2;
const NETNSA_FD: u16 = 3;

/// The rtgenmsg header of a namespace-id request (one family byte, padded).
fn rtgenmsg() -> [u8; 4] {
    [AF_UNSPEC, 0, 0, 0]
}

/// The id (IFLA_LINK_NETNSID value) the network namespace of process `pid`
/// has in the namespace of `t`, if it was given one (CRIU's
/// `net_get_nsid`: RTM_GETNSID with NETNSA_PID; -1 means none).
pub fn get_nsid<T: Transport + ?Sized>(t: &mut T, pid: u32) -> Result<Option<i32>, RtnlError> {
    let seq = 11;
    let mut req = request(RTM_GETNSID, NLM_F_REQUEST, seq, &rtgenmsg());
    push_attr(&mut req, NETNSA_PID, &pid.to_ne_bytes());
    t.send(&req).map_err(|source| RtnlError::Send { source })?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = t
            .recv(&mut buf)
            .map_err(|source| RtnlError::Recv { source })?;
        if n == 0 {
            return Err(RtnlError::Answer {
                why: "the kernel closed the answer to RTM_GETNSID".into(),
            });
        }
        for m in messages(buf.get(..n).unwrap_or(&buf)) {
            match m.ty {
                NLMSG_ERROR => {
                    return Err(RtnlError::Refused {
                        source: io::Error::from_raw_os_error(nl_errno(m.body)),
                    })
                }
                RTM_NEWNSID => {
                    let id = crate::msg::attr_iter(m.body, 4)
                        .find(|(ty, _)| *ty == NETNSA_NSID)
                        .and_then(|(_, d)| d.get(..4)?.try_into().ok())
                        .map(i32::from_ne_bytes);
                    return Ok(id.filter(|i| *i >= 0));
                }
                _ => {}
            }
        }
    }
}

/// Give the network namespace open as `fd` the id `nsid` in the namespace
/// of `t` (CRIU's `net_set_nsid`: RTM_NEWNSID with NETNSA_FD).
pub fn set_nsid<T: Transport + ?Sized>(t: &mut T, fd: i32, nsid: i32) -> Result<(), RtnlError> {
    let seq = 12;
    let mut req = request(RTM_NEWNSID, NLM_F_REQUEST | NLM_F_ACK, seq, &rtgenmsg());
    push_attr(&mut req, NETNSA_FD, &fd.to_ne_bytes());
    push_attr(&mut req, NETNSA_NSID, &nsid.to_ne_bytes());
    transact(t, &req, seq)
}

/// Whether links report the namespace of a peer in another namespace
/// (IFLA_LINK_NETNSID), CRIU's `link_nsid` probe: a veth is made in the
/// namespace of `t` with its peer in the namespace open as `peer_ns`, then
/// the links are listed. The caller's namespaces are throw-away ones.
pub fn probe_link_nsid<T: Transport + ?Sized>(t: &mut T, peer_ns: i32) -> Result<bool, RtnlError> {
    let mut m = link_request(
        RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        13,
        &ifinfomsg(AF_UNSPEC, 0, 0, 0),
    );
    push_name(&mut m, IFLA_IFNAME, "crust-kdat0");
    let mut peer = ifinfomsg(AF_UNSPEC, 0, 0, 0).to_vec();
    peer.extend(attr(IFLA_IFNAME, b"crust-kdat1\0"));
    peer.extend(attr(IFLA_NET_NS_FD, &peer_ns.to_ne_bytes()));
    let mut info = attr(IFLA_INFO_KIND, b"veth");
    info.extend(attr(IFLA_INFO_DATA, &attr(VETH_INFO_PEER, &peer)));
    push_attr(&mut m, IFLA_LINKINFO, &info);
    transact(t, &m, 13)?;
    Ok(dump_links(t)?.iter().any(|l| l.link_netnsid.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::Fake;

    fn link_msg(index: i32, name: &str, kind: Option<&str>) -> Vec<u8> {
        let mut m = request(RTM_NEWLINK, 2, 1, &ifinfomsg(0, index, 0x1043, 0));
        push_name(&mut m, IFLA_IFNAME, name);
        push_attr(&mut m, IFLA_MTU, &1500u32.to_ne_bytes());
        push_attr(&mut m, IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
        if let Some(k) = kind {
            push_attr(&mut m, IFLA_LINKINFO, &attr(IFLA_INFO_KIND, k.as_bytes()));
        }
        push_attr(&mut m, IFLA_LINK_NETNSID, &0i32.to_ne_bytes());
        m
    }

    #[test]
    fn parses_links_of_a_dump() {
        let mut d = link_msg(2, "veth0", Some("veth"));
        d.extend(link_msg(1, "lo", None));
        d.extend(request(NLMSG_DONE, 2, 1, &0u32.to_ne_bytes()));
        let mut t = Fake::new();
        t.reply(d);
        let links = dump_links(&mut t).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].name, "veth0");
        assert_eq!(links[0].kind.as_deref(), Some("veth"));
        assert_eq!(links[0].mtu, Some(1500));
        assert_eq!(links[0].flags, 0x1043);
        assert_eq!(links[0].link_netnsid, Some(0));
        assert_eq!(links[0].address.as_deref(), Some(&[2, 0, 0, 0, 0, 1][..]));
        assert_eq!(links[1].kind, None);
        // the request: RTM_GETLINK, dump, AF_PACKET
        assert_eq!(u16_at(&t.sent[0], 4), Some(RTM_GETLINK));
        assert_eq!(t.sent[0][16], AF_PACKET);
    }

    #[test]
    fn a_refused_request_carries_its_errno() {
        let mut t = Fake::new();
        let mut ack = (-libc::EEXIST).to_ne_bytes().to_vec();
        ack.extend([0u8; 16]);
        t.reply(request(NLMSG_ERROR, 0, 7, &ack));
        let req = link_request(RTM_NEWLINK, NLM_F_CREATE, 7, &ifinfomsg(0, 0, 0, 0));
        let e = transact(&mut t, &req, 7).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EEXIST));
    }

    #[test]
    fn a_nameless_link_is_an_error() {
        let m = request(RTM_NEWLINK, 2, 1, &ifinfomsg(0, 3, 0, 0));
        assert!(parse_link(&m[16..]).is_err());
        assert!(parse_link(&[0u8; 4]).is_err());
    }

    #[test]
    fn namespace_ids() {
        // The answer to RTM_GETNSID: NETNSA_NSID 3.
        let mut body = rtgenmsg().to_vec();
        push_attr(&mut body, NETNSA_NSID, &3i32.to_ne_bytes());
        let mut t = Fake::new();
        t.reply(request(RTM_NEWNSID, 0, 11, &body));
        assert_eq!(get_nsid(&mut t, 42).unwrap(), Some(3));
        // The request: RTM_GETNSID naming the process.
        assert_eq!(u16_at(&t.sent[0], 4), Some(RTM_GETNSID));
        assert_eq!(u32_at(&t.sent[0], 24), Some(42));
        // No id given yet: -1.
        let mut body = rtgenmsg().to_vec();
        push_attr(&mut body, NETNSA_NSID, &(-1i32).to_ne_bytes());
        let mut t = Fake::new();
        t.reply(request(RTM_NEWNSID, 0, 11, &body));
        assert_eq!(get_nsid(&mut t, 42).unwrap(), None);
        // Setting one sends the fd and the id, and waits for the ack.
        let mut t = Fake::new();
        let mut ack = 0i32.to_ne_bytes().to_vec();
        ack.extend([0u8; 16]);
        t.reply(request(NLMSG_ERROR, 0, 12, &ack));
        set_nsid(&mut t, 5, 7).unwrap();
        assert_eq!(u16_at(&t.sent[0], 4), Some(RTM_NEWNSID));
        assert_eq!(u32_at(&t.sent[0], 24), Some(5));
        assert_eq!(u32_at(&t.sent[0], 32), Some(7));
    }
}
