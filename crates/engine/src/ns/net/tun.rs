//! tun/tap links (ND_TYPE TUN, with CRIU 4.2's TunLinkEntry: flags, owner,
//! group, vnethdr, sndbuf). Their files (`/dev/net/tun` fds, TUNF) are
//! `crate::net::tun`'s.
//!
//! Dump: the flags, owner and group come from the link's rtnetlink data
//! (IFLA_INFO_DATA of kind "tun"; CRIU reads the same from sysfs); the
//! vnet header size and send buffer from a file attached to the link: one
//! of the tree's ([`TunSeen`], noted by the files' dump), or, for a
//! persistent link no file holds, one crust attaches for the moment.
//! Restore: crust makes the link with a file of its own at its dumped
//! index (TUNSETIFINDEX, TUNSETIFF), sets it up, makes it persistent so it
//! outlives that file, and sets MTU, address and flags; the tree's files
//! attach to it later and drop the persistence it did not have.

use super::links::LinkFailed;
use crust_images::proto::netdev::NetDeviceEntry;
use crust_images::proto::tun::TunLinkEntry;
use crust_netlink::rtnl::Link;
use crust_netlink::Socket;
use crust_sys::tun as t;
use std::fs::File;
use std::os::fd::AsFd;

/// What the files' dump learned of a link from a file of the tree
/// attached to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TunSeen {
    /// The id of the link's network namespace.
    pub ns: u32,
    pub name: String,
    pub vnethdr: u32,
    pub sndbuf: u32,
}

// IFLA_TUN_* of a "tun" link's IFLA_INFO_DATA.
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_PI: u16 = 4;
const IFLA_TUN_VNET_HDR: u16 = 5;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;

/// The flags (TUNSETIFF's, as sysfs `tun_flags` shows them), owner and
/// group of tun link `l`, from its link data.
fn settings_of(l: &Link) -> Result<(u32, i32, i32), String> {
    let data = l
        .info_data
        .as_deref()
        .ok_or_else(|| format!("tun link {} has no link data (IFLA_INFO_DATA)", l.name))?;
    let attrs = crust_netlink::msg::attrs(data, 0)
        .map_err(|w| format!("tun link {}: bad link data: {w}", l.name))?;
    let (mut owner, mut group) = (-1, -1);
    let (mut ty, mut flags) = (None, 0);
    let mut pi = true;
    for (k, d) in attrs {
        let byte = d.first().copied().unwrap_or(0);
        let word = d
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes);
        match k {
            IFLA_TUN_OWNER => owner = word.map_or(-1, |v| v as i32),
            IFLA_TUN_GROUP => group = word.map_or(-1, |v| v as i32),
            IFLA_TUN_TYPE => ty = Some(byte as u32),
            IFLA_TUN_PI => pi = byte != 0,
            IFLA_TUN_VNET_HDR if byte != 0 => flags |= t::IFF_VNET_HDR,
            IFLA_TUN_PERSIST if byte != 0 => flags |= t::IFF_PERSIST,
            IFLA_TUN_MULTI_QUEUE if byte != 0 => flags |= t::IFF_MULTI_QUEUE,
            _ => {}
        }
    }
    match ty {
        Some(v) if v == t::IFF_TUN || v == t::IFF_TAP => flags |= v,
        _ => {
            return Err(format!(
                "tun link {} has no tun or tap type ({ty:?})",
                l.name
            ))
        }
    }
    if !pi {
        flags |= t::IFF_NO_PI;
    }
    Ok((flags, owner, group))
}

/// The TunLinkEntry of tun/tap link `l` (this thread is in its network
/// namespace): `seen` are the links the tree's files are attached to.
pub(super) fn entry_of(l: &Link, ns: u32, seen: &[TunSeen]) -> Result<TunLinkEntry, String> {
    let (flags, owner, group) = settings_of(l)?;
    let (vnethdr, sndbuf) = match seen.iter().find(|s| s.name == l.name && s.ns == ns) {
        Some(s) => (s.vnethdr, s.sndbuf),
        None if flags & t::IFF_PERSIST != 0 => own_look(&l.name, flags)?,
        None => {
            return Err(format!(
                "tun/tap link {} is not persistent and no file of the tree is attached to it (a multiqueue link whose queues are all detached?): crust cannot read its settings",
                l.name
            ))
        }
    };
    Ok(TunLinkEntry {
        flags,
        owner,
        group,
        vnethdr,
        sndbuf,
        ..Default::default()
    })
}

/// The vnet header size and send buffer of persistent link `name`, from a
/// file crust attaches to it for the moment (with the link's own flags, so
/// they stay as they are).
fn own_look(name: &str, flags: u32) -> Result<(u32, u32), String> {
    let why = |what: &'static str| {
        move |e: std::io::Error| format!("tun/tap link {name}: cannot {what}: {e}")
    };
    let f = open_clone().map_err(why("open /dev/net/tun"))?;
    t::set_iff(f.as_fd(), name, flags).map_err(why("attach a file to it (TUNSETIFF)"))?;
    if flags & t::IFF_TAP != 0 && t::filter_len(f.as_fd()).map_err(why("read its filter"))? != 0 {
        return Err(format!(
            "tap link {name} has a socket filter (TUNATTACHFILTER), which crust cannot dump"
        ));
    }
    let v = t::vnet_hdr_size(f.as_fd()).map_err(why("read its vnet header size"))?;
    let s = t::sndbuf(f.as_fd()).map_err(why("read its send buffer"))?;
    Ok((v as u32, s as u32))
}

fn open_clone() -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(t::PATH)
}

/// Why tun link entry `e` cannot be made.
pub(super) fn check(e: &NetDeviceEntry) -> Result<(), String> {
    let tl = e
        .tun
        .as_ref()
        .ok_or_else(|| format!("tun link {} has no tun entry", e.name))?;
    let ty = tl.flags & (t::IFF_TUN | t::IFF_TAP);
    if ty != t::IFF_TUN && ty != t::IFF_TAP {
        return Err(format!(
            "tun link {} has flags {:#x}: neither tun nor tap",
            e.name, tl.flags
        ));
    }
    if tl.sndbuf > i32::MAX as u32 || tl.vnethdr > i32::MAX as u32 {
        return Err(format!("tun link {} has a bad sndbuf or vnethdr", e.name));
    }
    Ok(())
}

/// Make tun/tap link `e` (checked) in this thread's network namespace,
/// persistent until its files attach.
pub(super) fn make(sk: &mut Socket, e: &NetDeviceEntry) -> Result<(), LinkFailed> {
    let fail = |what: &str| {
        let n = e.name.clone();
        let what = what.to_string();
        move |err: std::io::Error| LinkFailed {
            link: n,
            what: format!("{what}: {err}"),
            source: None,
        }
    };
    let tl = e.tun.as_ref().ok_or_else(|| LinkFailed {
        link: e.name.clone(),
        what: "make it: no tun entry".into(),
        source: None,
    })?;
    let f = open_clone().map_err(fail("open /dev/net/tun"))?;
    let fd = f.as_fd();
    t::set_ifindex(fd, e.ifindex).map_err(fail("give it its index (TUNSETIFINDEX)"))?;
    t::set_iff(fd, &e.name, tl.flags).map_err(fail(
        "make it (TUNSETIFF; is a link of that name there already?)",
    ))?;
    if tl.owner != -1 {
        t::set_owner(fd, tl.owner as u32, false).map_err(fail("set its owner"))?;
    }
    if tl.group != -1 {
        t::set_owner(fd, tl.group as u32, true).map_err(fail("set its group"))?;
    }
    t::set_sndbuf(fd, tl.sndbuf as i32).map_err(fail("set its send buffer"))?;
    t::set_vnet_hdr_size(fd, tl.vnethdr as i32).map_err(fail("set its vnet header size"))?;
    t::set_persist(fd, true).map_err(fail("make it persistent"))?;
    super::links::set_link(sk, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(data: &[(u16, Vec<u8>)]) -> Link {
        let mut d = Vec::new();
        for (k, v) in data {
            d.extend(crust_netlink::rtnl::attr(*k, v));
        }
        Link {
            name: "tap0".into(),
            kind: Some("tun".into()),
            info_data: Some(d),
            ..Default::default()
        }
    }

    #[test]
    fn flags_come_from_the_link_data() {
        let l = link(&[
            (IFLA_TUN_TYPE, vec![2]),
            (IFLA_TUN_PI, vec![0]),
            (IFLA_TUN_PERSIST, vec![1]),
            (IFLA_TUN_MULTI_QUEUE, vec![0]),
            (IFLA_TUN_OWNER, 1000u32.to_ne_bytes().to_vec()),
        ]);
        let (f, o, g) = settings_of(&l).unwrap();
        assert_eq!(f, t::IFF_TAP | t::IFF_NO_PI | t::IFF_PERSIST);
        assert_eq!((o, g), (1000, -1));
        let seen = [TunSeen {
            ns: 3,
            name: "tap0".into(),
            vnethdr: 10,
            sndbuf: 77,
        }];
        let e = entry_of(&l, 3, &seen).unwrap();
        assert_eq!((e.vnethdr, e.sndbuf, e.flags), (10, 77, f));
    }

    #[test]
    fn a_link_without_type_or_file_is_refused() {
        assert!(settings_of(&link(&[(IFLA_TUN_PI, vec![1])])).is_err());
        let l = link(&[(IFLA_TUN_TYPE, vec![1]), (IFLA_TUN_PI, vec![1])]);
        assert_eq!(settings_of(&l).unwrap().0, t::IFF_TUN);
        let e = entry_of(&l, 3, &[]).unwrap_err();
        assert!(e.contains("not persistent"), "{e}");
    }
}
