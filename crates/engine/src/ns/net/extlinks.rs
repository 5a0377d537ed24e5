//! Links of the namespace that the restore takes from crust's own network
//! namespace, named by CRIU 4.2's `--external` keys:
//!
//! - `macvlan[IN]:OUTER`: a macvlan whose lower device was outside the
//!   namespace (its usual place: the lower device is a host link). The
//!   macvlan is made on link OUTER of crust's namespace and put straight
//!   into the tree's (IFLA_LINK, IFLA_NET_NS_FD) at its dumped index, as
//!   CRIU does. The image keeps its mode and flags (MacvlanLinkEntry).
//!   A macvlan whose lower device was in the namespace itself (its
//!   peer_nsid is the namespace's) is made there on that link when no key
//!   names it ([`make_inner_macvlan`]; CRIU asks for the key anyway).
//! - `netdev[IN]:ORIG`: a veth end made beforehand in crust's namespace
//!   (ORIG) is moved into the tree's, renamed IN and given IN's dumped
//!   index (IFLA_NEW_IFINDEX), instead of a new pair being made.
//!
//! Both are made inside the tree's namespace, so a failed restore (which
//! kills the root, and the namespace with it) takes them away; a moved
//! `netdev[]` link goes with it as it does with CRIU.

use super::links::LinkFailed;
use crust_images::proto::netdev::{nd_type, NetDeviceEntry};
use crust_images::proto::MacvlanLinkEntry;
use crust_netlink::rtnl::{self, Link, RtnlError};
use crust_netlink::{push_attr, Socket};
use std::os::fd::{AsRawFd, BorrowedFd};

/// IFLA_MACVLAN_MODE, IFLA_MACVLAN_FLAGS (in a macvlan's IFLA_INFO_DATA).
const IFLA_MACVLAN_MODE: u16 = 1;
const IFLA_MACVLAN_FLAGS: u16 = 2;

/// The MacvlanLinkEntry of macvlan link `l` (its mode, its flags).
pub(super) fn macvlan_of(l: &Link) -> Result<MacvlanLinkEntry, String> {
    let data = l
        .info_data
        .as_deref()
        .ok_or_else(|| format!("macvlan {} has no link data (IFLA_INFO_DATA)", l.name))?;
    let attrs = crust_netlink::msg::attrs(data, 0)
        .map_err(|w| format!("macvlan {}: bad link data: {w}", l.name))?;
    let u32_of = |d: &[u8]| {
        d.get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
    };
    let u16_of = |d: &[u8]| {
        d.get(..2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes)
    };
    let mut e = MacvlanLinkEntry::default();
    let mut mode = None;
    for (ty, d) in attrs {
        match ty {
            IFLA_MACVLAN_MODE => mode = u32_of(d),
            IFLA_MACVLAN_FLAGS => e.flags = u16_of(d).map(u32::from),
            _ => {}
        }
    }
    e.mode = mode.ok_or_else(|| format!("macvlan {} has no mode", l.name))?;
    Ok(e)
}

/// The `--external` keys of this kind: `KIND[IN]:VALUE`, by IN.
fn keyed(external: &[String], kind: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let prefix = format!("{kind}[");
    for x in external {
        let Some(rest) = x.strip_prefix(&prefix) else {
            continue;
        };
        let (inner, val) = rest
            .split_once("]:")
            .ok_or_else(|| format!("--external {x}: expected {kind}[NAME]:OUTER_NAME"))?;
        for n in [inner, val] {
            if n.is_empty() || n.len() >= 16 || n.contains(['/', '\0', ' ', '@', ':']) {
                return Err(format!("--external {x}: bad link name {n:?}"));
            }
        }
        out.push((inner.to_string(), val.to_string()));
    }
    Ok(out)
}

/// The `macvlan[]` and `netdev[]` externals of a restore.
#[derive(Debug, Default)]
pub(super) struct ExtLinks {
    /// macvlan name in the namespace -> lower link in crust's.
    macvlan: Vec<(String, String)>,
    /// veth name in the namespace -> the link of crust's to move in.
    netdev: Vec<(String, String)>,
}

fn find<'a>(v: &'a [(String, String)], inner: &str) -> Option<&'a str> {
    v.iter().find(|(n, _)| n == inner).map(|(_, o)| o.as_str())
}

impl ExtLinks {
    pub(super) fn parse(external: &[String]) -> Result<ExtLinks, String> {
        Ok(ExtLinks {
            macvlan: keyed(external, "macvlan")?,
            netdev: keyed(external, "netdev")?,
        })
    }

    /// The link of crust's namespace to move in as veth `inner`.
    pub(super) fn netdev(&self, inner: &str) -> Option<&str> {
        find(&self.netdev, inner)
    }

    /// Whether `--external macvlan[inner]:...` was given.
    pub(super) fn has_macvlan(&self, inner: &str) -> bool {
        find(&self.macvlan, inner).is_some()
    }

    /// Why entry `l` of namespace `ns_id` (whose links are `all`) cannot
    /// be made with these externals (checked before anything is made).
    pub(super) fn check(
        &self,
        l: &NetDeviceEntry,
        ns_id: u32,
        all: &[NetDeviceEntry],
    ) -> Result<(), String> {
        if l.r#type != nd_type::MACVLAN || self.has_macvlan(&l.name) {
            return Ok(());
        }
        if l.peer_nsid == Some(ns_id) {
            return match all
                .iter()
                .find(|p| Some(p.ifindex) == l.peer_ifindex && p.ifindex != l.ifindex)
            {
                Some(_) => Ok(()),
                None => Err(format!(
                    "macvlan {} sits on link {} of the namespace, which the image does not have",
                    l.name,
                    l.peer_ifindex.unwrap_or(0)
                )),
            };
        }
        Err(format!(
            "macvlan {} of the network namespace sat on a link outside it: name that link of crust's network namespace with --external macvlan[{}]:LOWER_LINK",
            l.name, l.name
        ))
    }

    /// Make macvlan `e` on its lower link of crust's namespace (`outer_sk`
    /// is there), inside the namespace of `target`.
    pub(super) fn make_macvlan(
        &self,
        outer_sk: &mut Socket,
        e: &NetDeviceEntry,
        target: BorrowedFd<'_>,
    ) -> Result<(), LinkFailed> {
        let fail = |what: String| LinkFailed {
            link: e.name.clone(),
            what,
            source: None,
        };
        let lower = find(&self.macvlan, &e.name)
            .ok_or_else(|| fail("find its lower link: no --external macvlan[NAME]:LINK".into()))?;
        let mv = e
            .macvlan
            .as_ref()
            .ok_or_else(|| fail("read its macvlan entry: the image has none".into()))?;
        let idx = index_in(outer_sk, lower, &e.name)?.ok_or_else(|| {
            fail(format!(
                "make it on link {lower}, which crust's network namespace does not have (--external macvlan[{}]:{lower})",
                e.name
            ))
        })?;
        let m = macvlan_request(e, mv, idx as u32, Some(target));
        rtnl::transact(outer_sk, &m, 11).map_err(|source| LinkFailed {
            link: e.name.clone(),
            what: format!("make the macvlan on link {lower} of crust's network namespace"),
            source: Some(source),
        })
    }

    /// Move link `orig` of crust's namespace (`outer_sk` is there) into
    /// the namespace of `target` as veth `e`: its name, index, MTU,
    /// address and flags.
    pub(super) fn move_in(
        outer_sk: &mut Socket,
        orig: &str,
        e: &NetDeviceEntry,
        target: BorrowedFd<'_>,
    ) -> Result<(), LinkFailed> {
        let idx = index_in(outer_sk, orig, &e.name)?.ok_or_else(|| LinkFailed {
            link: e.name.clone(),
            what: format!(
                "move link {orig} in (--external netdev[{}]:{orig}): crust's network namespace has no such link",
                e.name
            ),
            source: None,
        })?;
        let mut m = rtnl::link_request(
            rtnl::RTM_NEWLINK,
            0,
            12,
            &rtnl::ifinfomsg(rtnl::AF_UNSPEC, idx, e.flags, 0),
        );
        rtnl::push_name(&mut m, rtnl::IFLA_IFNAME, &e.name);
        push_attr(&mut m, rtnl::IFLA_MTU, &e.mtu.to_ne_bytes());
        push_attr(&mut m, rtnl::IFLA_NEW_IFINDEX, &e.ifindex.to_ne_bytes());
        if let Some(a) = &e.address {
            push_attr(&mut m, rtnl::IFLA_ADDRESS, a);
        }
        push_attr(
            &mut m,
            rtnl::IFLA_NET_NS_FD,
            &target.as_raw_fd().to_ne_bytes(),
        );
        rtnl::transact(outer_sk, &m, 12).map_err(|source| LinkFailed {
            link: e.name.clone(),
            what: format!("move link {orig} of crust's network namespace in"),
            source: Some(source),
        })
    }
}

/// The NEWLINK request of macvlan `e` on link `lower` (an index of the
/// namespace the request is sent in), made in the namespace of `target`
/// if given.
fn macvlan_request(
    e: &NetDeviceEntry,
    mv: &MacvlanLinkEntry,
    lower: u32,
    target: Option<BorrowedFd<'_>>,
) -> Vec<u8> {
    let mut m = rtnl::link_request(
        rtnl::RTM_NEWLINK,
        rtnl::NLM_F_CREATE | rtnl::NLM_F_EXCL,
        11,
        &rtnl::ifinfomsg(rtnl::AF_PACKET, e.ifindex as i32, e.flags, 0),
    );
    push_attr(&mut m, rtnl::IFLA_LINK, &lower.to_ne_bytes());
    if let Some(t) = target {
        push_attr(&mut m, rtnl::IFLA_NET_NS_FD, &t.as_raw_fd().to_ne_bytes());
    }
    rtnl::push_name(&mut m, rtnl::IFLA_IFNAME, &e.name);
    push_attr(&mut m, rtnl::IFLA_MTU, &e.mtu.to_ne_bytes());
    if let Some(a) = &e.address {
        push_attr(&mut m, rtnl::IFLA_ADDRESS, a);
    }
    let mut data = rtnl::attr(IFLA_MACVLAN_MODE, &mv.mode.to_ne_bytes());
    if let Some(f) = mv.flags {
        data.extend(rtnl::attr(IFLA_MACVLAN_FLAGS, &(f as u16).to_ne_bytes()));
    }
    let mut info = rtnl::attr(rtnl::IFLA_INFO_KIND, b"macvlan");
    info.extend(rtnl::attr(rtnl::IFLA_INFO_DATA, &data));
    push_attr(&mut m, rtnl::IFLA_LINKINFO, &info);
    m
}

/// Make macvlan `e` on its lower link inside the namespace (`sk` is
/// there; the link is made already).
pub(super) fn make_inner_macvlan(sk: &mut Socket, e: &NetDeviceEntry) -> Result<(), LinkFailed> {
    let fail = |what: &str| LinkFailed {
        link: e.name.clone(),
        what: what.to_string(),
        source: None,
    };
    let mv = e
        .macvlan
        .as_ref()
        .ok_or_else(|| fail("read its macvlan entry: the image has none"))?;
    let lower = e
        .peer_ifindex
        .ok_or_else(|| fail("find its lower link: the image has no peer_ifindex"))?;
    let m = macvlan_request(e, mv, lower, None);
    rtnl::transact(sk, &m, 11).map_err(|source| LinkFailed {
        link: e.name.clone(),
        what: format!("make the macvlan on link {lower} of the namespace"),
        source: Some(source),
    })
}

/// The index of link `name` in the namespace of `sk` (for link `of`).
fn index_in(sk: &mut Socket, name: &str, of: &str) -> Result<Option<i32>, LinkFailed> {
    let all: Result<Vec<Link>, RtnlError> = rtnl::dump_links(sk);
    all.map(|v| v.into_iter().find(|l| l.name == name).map(|l| l.index))
        .map_err(|source| LinkFailed {
            link: of.to_string(),
            what: "list the links of crust's network namespace".into(),
            source: Some(source),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys() {
        let x = vec![
            "veth[a]:b".to_string(),
            "macvlan[mv0]:br0".to_string(),
            "netdev[eth0]:pre0".to_string(),
        ];
        let e = ExtLinks::parse(&x).unwrap();
        assert_eq!(find(&e.macvlan, "mv0"), Some("br0"));
        assert_eq!(e.netdev("eth0"), Some("pre0"));
        assert_eq!(e.netdev("a"), None);
        assert!(ExtLinks::parse(&["macvlan[mv0]br0".to_string()]).is_err());
        assert!(ExtLinks::parse(&["netdev[eth0]:".to_string()]).is_err());
    }

    #[test]
    fn macvlan_lower_inside_or_named() {
        let mv = |peer_nsid| NetDeviceEntry {
            r#type: nd_type::MACVLAN,
            ifindex: 5,
            name: "mv0".into(),
            peer_ifindex: Some(3),
            peer_nsid,
            ..Default::default()
        };
        let br = NetDeviceEntry {
            r#type: nd_type::BRIDGE,
            ifindex: 3,
            name: "br0".into(),
            ..Default::default()
        };
        let none = ExtLinks::default();
        // Lower in the namespace: made there, no key needed.
        assert!(none
            .check(&mv(Some(9)), 9, &[br.clone(), mv(Some(9))])
            .is_ok());
        // ... but the image must hold it.
        assert!(none
            .check(&mv(Some(9)), 9, &[mv(Some(9))])
            .unwrap_err()
            .contains("mv0"));
        // Lower outside: the key is needed.
        let w = none.check(&mv(None), 9, &[mv(None)]).unwrap_err();
        assert!(w.contains("macvlan[mv0]"), "{w}");
        let named = ExtLinks::parse(&["macvlan[mv0]:eth0".to_string()]).unwrap();
        assert!(named.check(&mv(None), 9, &[mv(None)]).is_ok());
    }

    #[test]
    fn macvlan_data() {
        let mut data = rtnl::attr(IFLA_MACVLAN_MODE, &4u32.to_ne_bytes());
        data.extend(rtnl::attr(IFLA_MACVLAN_FLAGS, &2u16.to_ne_bytes()));
        let l = Link {
            name: "mv0".into(),
            info_data: Some(data),
            ..Link::default()
        };
        let e = macvlan_of(&l).unwrap();
        assert_eq!((e.mode, e.flags), (4, Some(2)));
        let l = Link {
            name: "mv1".into(),
            ..Link::default()
        };
        assert!(macvlan_of(&l).unwrap_err().contains("mv1"));
    }
}
