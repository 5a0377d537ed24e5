//! The links of a network namespace (`netdev-ID.img`, one NetDeviceEntry
//! each): read with an RTM_GETLINK dump, made again with RTM_NEWLINK /
//! RTM_SETLINK, as CRIU 4.2 does. Kinds: loopback, veth (the peer outside
//! the namespace is made in crust's, named by `--external
//! veth[IN]:OUT[@BRIDGE]`), bridge, macvlan (made on a link of crust's
//! namespace: [`super::extlinks`]), tun/tap ([`super::tun`]). Others are
//! refused at dump, by name.

use super::conf;
use crust_images::proto::netdev::{nd_type, NetDeviceEntry, NetnsId};
use crust_netlink::rtnl::{self, Link, RtnlError};
use crust_netlink::{push_attr, Socket};
use std::os::fd::{AsRawFd, BorrowedFd};

/// The fallback devices some tunnel modules add to every namespace; CRIU
/// skips them (the module makes them again).
const FALLBACK: [(&str, &str); 3] = [("gre", "gre0"), ("gretap", "gretap0"), ("sit", "sit0")];

/// What the dump makes of one link.
pub(super) enum Dumped {
    Entry(Box<NetDeviceEntry>),
    Skipped,
}

/// The NetDeviceEntry of link `l` of the namespace of id `ns_id`, or why
/// crust cannot restore it; `nsids`: the ids this namespace gives the
/// tree's other network namespaces (a veth's peer in one of them gets its
/// id as `peer_nsid`, CRIU's rule).
pub(super) fn entry_of(
    l: &Link,
    ns_id: u32,
    nsids: &[NetnsId],
    tuns: &[super::TunSeen],
) -> Result<Dumped, String> {
    let kind = l.kind.as_deref().unwrap_or("");
    let ty = if l.hw_type == rtnl::ARPHRD_LOOPBACK {
        nd_type::LOOPBACK
    } else if FALLBACK.contains(&(kind, l.name.as_str())) {
        return Ok(Dumped::Skipped);
    } else {
        match (l.hw_type, kind) {
            (rtnl::ARPHRD_ETHER, "veth") => nd_type::VETH,
            (rtnl::ARPHRD_ETHER, "bridge") => nd_type::BRIDGE,
            (rtnl::ARPHRD_ETHER, "macvlan") => nd_type::MACVLAN,
            (_, "tun") => nd_type::TUN,
            _ => {
                return Err(format!(
                    "link {} (index {}) is of kind {:?} (device type {}), which crust cannot restore (it restores loopback, veth, bridge, macvlan and tun/tap links)",
                    l.name,
                    l.index,
                    if kind.is_empty() { "none" } else { kind },
                    l.hw_type
                ))
            }
        }
    };
    let mtu = l.mtu.ok_or_else(|| format!("link {} has no MTU", l.name))?;
    // The peer's namespace: this one, one of the tree's other ones, or
    // one outside the tree (no id: CRIU's "external netns").
    let peer_nsid = match l.link_netnsid {
        None => Some(ns_id),
        Some(v) => nsids
            .iter()
            .find(|n| n.netnsid_value == v)
            .map(|n| n.target_ns_id),
    };
    let macvlan = if ty == nd_type::MACVLAN {
        Some(super::extlinks::macvlan_of(l)?)
    } else {
        None
    };
    let tun = if ty == nd_type::TUN {
        Some(super::tun::entry_of(l, ns_id, tuns)?)
    } else {
        None
    };
    let e = NetDeviceEntry {
        r#type: ty,
        tun,
        ifindex: l.index as u32,
        mtu,
        flags: l.flags,
        name: l.name.clone(),
        address: if ty == nd_type::LOOPBACK {
            None
        } else {
            l.address.clone()
        },
        conf4: conf::read_conf("ipv4", &l.name),
        conf6: conf::read_conf("ipv6", &l.name),
        peer_ifindex: Some(l.link.unwrap_or(l.index as u32)),
        peer_nsid,
        master: l.master,
        macvlan,
        ..Default::default()
    };
    Ok(Dumped::Entry(Box::new(e)))
}

/// Why link entry `e` of the image cannot be made.
pub(super) fn check(e: &NetDeviceEntry) -> Result<(), String> {
    let n = &e.name;
    if n.is_empty() || n.len() >= 16 || n.contains(['/', '\0']) || n.trim() != n {
        return Err(format!("bad link name {n:?}"));
    }
    if !matches!(
        e.r#type,
        t if t == nd_type::LOOPBACK || t == nd_type::VETH || t == nd_type::BRIDGE || t == nd_type::MACVLAN || t == nd_type::TUN
    ) {
        return Err(format!(
            "link {n} is of type {} ({}), which crust cannot restore",
            e.r#type,
            nd_type::name(e.r#type).unwrap_or("unknown")
        ));
    }
    if e.ifindex == 0 || e.ifindex > i32::MAX as u32 {
        return Err(format!("link {n} has index {}", e.ifindex));
    }
    if e.address.as_ref().is_some_and(|a| a.len() > 32) {
        return Err(format!(
            "link {n} has a link address of {} bytes",
            e.address.as_ref().map_or(0, Vec::len)
        ));
    }
    if e.r#type == nd_type::MACVLAN && e.macvlan.is_none() {
        return Err(format!("macvlan {n} has no macvlan entry (mode)"));
    }
    if e.r#type == nd_type::TUN {
        super::tun::check(e)?;
    }
    conf::check_conf("ipv4", &e.conf4).map_err(|w| format!("link {n}: {w}"))?;
    conf::check_conf("ipv6", &e.conf6).map_err(|w| format!("link {n}: {w}"))
}

/// A veth's outer end, from `--external veth[IN]:OUT[@BRIDGE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outer {
    pub name: String,
    pub bridge: Option<String>,
}

/// The veth externals of `--external` (and `--veth-pair`, which the CLI
/// gives as `veth[IN]:OUT`), by inner name.
pub(crate) fn outers(external: &[String]) -> Result<Vec<(String, Outer)>, String> {
    let mut out = Vec::new();
    for x in external {
        let Some(rest) = x.strip_prefix("veth[") else {
            continue;
        };
        // `veth[IN]` alone (CRIU takes it, at dump too) names no outer end.
        if rest.find(']').is_some_and(|i| i + 1 == rest.len()) {
            log::debug!("--external {x}: no outer end named, nothing to plug");
            continue;
        }
        let (inner, val) = rest
            .split_once("]:")
            .ok_or_else(|| format!("--external {x}: expected veth[IN]:OUT[@BRIDGE]"))?;
        let (name, bridge) = match val.split_once('@') {
            Some((n, b)) => (n, Some(b.to_string())),
            None => (val, None),
        };
        for n in [inner, name].into_iter().chain(bridge.as_deref()) {
            if n.is_empty() || n.len() >= 16 || n.contains(['/', '\0', ' ', '@', ':']) {
                return Err(format!("--external {x}: bad link name {n:?}"));
            }
        }
        out.push((
            inner.to_string(),
            Outer {
                name: name.to_string(),
                bridge,
            },
        ));
    }
    Ok(out)
}

/// A failed link request: which link, what was asked.
#[derive(Debug)]
pub(super) struct LinkFailed {
    pub link: String,
    pub what: String,
    pub source: Option<RtnlError>,
}

fn failed(link: &str, what: impl Into<String>) -> impl FnOnce(RtnlError) -> LinkFailed + '_ {
    let what = what.into();
    move |source| LinkFailed {
        link: link.to_string(),
        what,
        source: Some(source),
    }
}

/// The common part of a NEWLINK/SETLINK request for `e`: name, MTU and
/// link address.
fn base(ty: u16, flags: u16, seq: u32, index: i32, e: &NetDeviceEntry) -> Vec<u8> {
    let mut m = rtnl::link_request(
        ty,
        flags,
        seq,
        &rtnl::ifinfomsg(rtnl::AF_PACKET, index, e.flags, 0),
    );
    rtnl::push_name(&mut m, rtnl::IFLA_IFNAME, &e.name);
    push_attr(&mut m, rtnl::IFLA_MTU, &e.mtu.to_ne_bytes());
    if let Some(a) = &e.address {
        push_attr(&mut m, rtnl::IFLA_ADDRESS, a);
    }
    m
}

/// Set loopback `e` (made with the namespace): flags, MTU, by name.
pub(super) fn set_loopback(sk: &mut Socket, e: &NetDeviceEntry) -> Result<(), LinkFailed> {
    let m = base(rtnl::RTM_SETLINK, 0, 1, 0, e);
    rtnl::transact(sk, &m, 1).map_err(failed(&e.name, "set up the loopback link"))
}

/// Set link `e`, made already at its index: flags, name, MTU, address.
pub(super) fn set_link(sk: &mut Socket, e: &NetDeviceEntry) -> Result<(), LinkFailed> {
    let m = base(rtnl::RTM_SETLINK, 0, 7, e.ifindex as i32, e);
    rtnl::transact(sk, &m, 7).map_err(failed(&e.name, "set its flags, MTU and address"))
}

/// Make bridge `e` with its index.
pub(super) fn make_bridge(sk: &mut Socket, e: &NetDeviceEntry) -> Result<(), LinkFailed> {
    let mut m = base(
        rtnl::RTM_NEWLINK,
        rtnl::NLM_F_CREATE | rtnl::NLM_F_EXCL,
        2,
        e.ifindex as i32,
        e,
    );
    push_attr(
        &mut m,
        rtnl::IFLA_LINKINFO,
        &rtnl::attr(rtnl::IFLA_INFO_KIND, b"bridge\0"),
    );
    rtnl::transact(sk, &m, 2).map_err(failed(&e.name, "make the bridge"))
}

/// The other end of a veth to make.
pub(super) enum Peer<'a> {
    /// Its entry, in the same namespace.
    Inner(&'a NetDeviceEntry),
    /// Its entry in another namespace of the tree, open as the fd (made
    /// there at its index, with its name).
    Across(&'a NetDeviceEntry, BorrowedFd<'a>),
    /// An end outside the tree, named `--external veth[...]`, made in the
    /// namespace of the fd (crust's).
    Outer(&'a Outer, BorrowedFd<'a>),
}

/// Make veth `e` with its index, and its other end `peer`.
pub(super) fn make_veth(
    sk: &mut Socket,
    e: &NetDeviceEntry,
    peer: Peer<'_>,
) -> Result<(), LinkFailed> {
    let mut m = base(
        rtnl::RTM_NEWLINK,
        rtnl::NLM_F_CREATE | rtnl::NLM_F_EXCL,
        3,
        e.ifindex as i32,
        e,
    );
    // No flags for the peer: it cannot be brought up before its other end
    // exists (ENOTCONN); [`set_link`] does it after.
    let (index, name, ns) = match peer {
        Peer::Inner(pe) => (pe.ifindex as i32, pe.name.as_str(), None),
        Peer::Across(pe, fd) => (pe.ifindex as i32, pe.name.as_str(), Some(fd)),
        Peer::Outer(o, fd) => (0, o.name.as_str(), Some(fd)),
    };
    let mut p = rtnl::ifinfomsg(0, index, 0, 0).to_vec();
    p.extend(rtnl::attr(
        rtnl::IFLA_IFNAME,
        &[name.as_bytes(), b"\0"].concat(),
    ));
    if let Some(fd) = ns {
        p.extend(rtnl::attr(
            rtnl::IFLA_NET_NS_FD,
            &fd.as_raw_fd().to_ne_bytes(),
        ));
    }
    let mut info = rtnl::attr(rtnl::IFLA_INFO_KIND, b"veth");
    p = rtnl::attr(rtnl::VETH_INFO_PEER, &p);
    info.extend(rtnl::attr(rtnl::IFLA_INFO_DATA, &p));
    push_attr(&mut m, rtnl::IFLA_LINKINFO, &info);
    rtnl::transact(sk, &m, 3).map_err(failed(&e.name, "make the veth pair"))
}

/// Plug link `e` into its bridge `master` (an index of its namespace).
pub(super) fn set_master(
    sk: &mut Socket,
    e: &NetDeviceEntry,
    master: u32,
) -> Result<(), LinkFailed> {
    let mut m = rtnl::link_request(
        rtnl::RTM_SETLINK,
        0,
        4,
        &rtnl::ifinfomsg(rtnl::AF_PACKET, e.ifindex as i32, e.flags, 0),
    );
    push_attr(&mut m, rtnl::IFLA_MASTER, &master.to_ne_bytes());
    rtnl::transact(sk, &m, 4).map_err(failed(&e.name, format!("plug it into bridge {master}")))
}

/// The index of link `name` in the namespace of `sk`.
fn index_of(sk: &mut Socket, name: &str) -> Result<Option<i32>, RtnlError> {
    Ok(rtnl::dump_links(sk)?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index))
}

/// Whether a link named `name` exists in the namespace of `sk`.
pub(super) fn exists(sk: &mut Socket, name: &str) -> Result<bool, LinkFailed> {
    index_of(sk, name)
        .map(|i| i.is_some())
        .map_err(failed(name, "list the links"))
}

/// Plug outer end `o` (in the namespace of `sk`) into its bridge, if it
/// has one, and bring it up (CRIU's `veth[IN]:OUT@BRIDGE`).
pub(super) fn plug_outer(sk: &mut Socket, o: &Outer) -> Result<(), LinkFailed> {
    let Some(br) = &o.bridge else { return Ok(()) };
    let idx = index_of(sk, br)
        .map_err(failed(&o.name, "list the links"))?
        .ok_or_else(|| LinkFailed {
            link: o.name.clone(),
            what: format!("plug it into bridge {br}, which does not exist"),
            source: None,
        })?;
    let up = libc::IFF_UP as u32;
    let mut m = rtnl::link_request(
        rtnl::RTM_SETLINK,
        0,
        5,
        &rtnl::ifinfomsg(rtnl::AF_UNSPEC, 0, up, up),
    );
    rtnl::push_name(&mut m, rtnl::IFLA_IFNAME, &o.name);
    push_attr(&mut m, rtnl::IFLA_MASTER, &(idx as u32).to_ne_bytes());
    rtnl::transact(sk, &m, 5).map_err(failed(
        &o.name,
        format!("plug it into bridge {br} and bring it up"),
    ))
}

/// Remove link `name` from the namespace of `sk` (a roll-back).
pub(super) fn remove(sk: &mut Socket, name: &str) -> Result<(), RtnlError> {
    let mut m = rtnl::link_request(
        rtnl::RTM_DELLINK,
        0,
        6,
        &rtnl::ifinfomsg(rtnl::AF_UNSPEC, 0, 0, 0),
    );
    rtnl::push_name(&mut m, rtnl::IFLA_IFNAME, name);
    rtnl::transact(sk, &m, 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_veth_externals() {
        let x = vec![
            "mnt[/a]:b".to_string(),
            "veth[eth0]:host0@br0".to_string(),
            "veth[eth1]:host1".to_string(),
        ];
        let o = outers(&x).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].0, "eth0");
        assert_eq!(o[0].1.name, "host0");
        assert_eq!(o[0].1.bridge.as_deref(), Some("br0"));
        assert_eq!(o[1].1.bridge, None);
        assert!(outers(&["veth[eth0]host0".to_string()]).is_err());
        // CRIU's dump takes veth[IN] alone: it names no outer end.
        assert!(outers(&["veth[eth0]".to_string()]).unwrap().is_empty());
        assert!(outers(&["veth[eth0]:".to_string()]).is_err());
        assert!(outers(&["veth[eth0]:a/b".to_string()]).is_err());
    }

    fn link(kind: Option<&str>, hw: u16, name: &str) -> Link {
        Link {
            index: 3,
            hw_type: hw,
            name: name.into(),
            mtu: Some(1500),
            kind: kind.map(Into::into),
            ..Link::default()
        }
    }

    #[test]
    fn kinds_at_dump() {
        let e = |l: &Link| match entry_of(l, 9, &[], &[]) {
            Ok(Dumped::Entry(e)) => Ok(Some(e.r#type)),
            Ok(Dumped::Skipped) => Ok(None),
            Err(w) => Err(w),
        };
        assert_eq!(e(&link(Some("veth"), 1, "v")), Ok(Some(nd_type::VETH)));
        assert_eq!(e(&link(None, 772, "lo")), Ok(Some(nd_type::LOOPBACK)));
        assert_eq!(e(&link(Some("sit"), 776, "sit0")), Ok(None));
        let w = e(&link(Some("vxlan"), 1, "vx0")).unwrap_err();
        assert!(w.contains("vx0") && w.contains("vxlan"), "{w}");
        assert!(e(&link(Some("tun"), 0xfffe, "tun0")).is_err());
    }

    #[test]
    fn veth_peer_namespace() {
        // Namespace 9 gives the tree's namespace 11 the id 0.
        let nsids = [NetnsId {
            target_ns_id: 11,
            netnsid_value: 0,
            ..Default::default()
        }];
        let peer = |netnsid: Option<i32>| {
            let mut l = link(Some("veth"), 1, "v");
            l.link = Some(7);
            l.link_netnsid = netnsid;
            match entry_of(&l, 9, &nsids, &[]) {
                Ok(Dumped::Entry(e)) => (e.peer_ifindex, e.peer_nsid),
                _ => panic!("veth not dumped"),
            }
        };
        // Its peer here, in the tree's other namespace, outside the tree.
        assert_eq!(peer(None), (Some(7), Some(9)));
        assert_eq!(peer(Some(0)), (Some(7), Some(11)));
        assert_eq!(peer(Some(3)), (Some(7), None));
    }
}
