//! The network namespace's own state, in CRIU 4.2's images: `netns-ID.img`
//! (NetnsEntry: the ipv4/ipv6 `all` and `default` conf sysctls, unix and
//! ipv4 sysctls), `netdev-ID.img` (a NetDeviceEntry per link, see
//! [`links`]), and the tool dumps of [`tools`] (`ifaddr`, `route`,
//! `route6`, `rule`, `iptables`, `ip6tables`, `nftables`). Its sockets are
//! not here (crate::net).
//!
//! Dump: a crust thread joins the namespace, lists its links over
//! rtnetlink, reads the sysctls and runs the tools. Restore ([`NetNs`]):
//! the root is cloned with CLONE_NEWNET; a crust thread that joined it
//! writes the sysctls, makes the links (a veth's outer end in crust's own
//! namespace, removed again if the restore fails here), plugs them into
//! their bridges, then gives the tools their dumps.

mod conf;
mod extlinks;
mod links;
mod routes;
mod tools;
mod tun;

pub(crate) use tun::TunSeen;

use super::ids::NsKind;
use super::in_ns;
use crate::util::{read_image, read_one, sys_err, write_image};
use crate::Error;
use crust_images::image::{ImageType, ImageWriter};
use crust_images::proto::netdev::{nd_type, NetDeviceEntry, NetnsEntry, NetnsId};
use crust_netlink::Socket;
use links::{Dumped, Outer};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use tools::Part;

fn image_of(p: Part) -> ImageType {
    match p {
        Part::Addr => ImageType::Ifaddr,
        Part::Route => ImageType::Route,
        Part::Route6 => ImageType::Route6,
        Part::Rule => ImageType::Rule,
        Part::Iptables => ImageType::Iptables,
        Part::Ip6tables => ImageType::Ip6tables,
        Part::Nftables => ImageType::Nftables,
    }
}

fn rtnl_socket(pid: i32) -> Result<Socket, Error> {
    Socket::open(libc::NETLINK_ROUTE).map_err(sys_err(pid, "open an rtnetlink socket"))
}

/// What the dump read in the namespace.
struct Read {
    netns: NetnsEntry,
    links: Vec<NetDeviceEntry>,
    parts: Vec<(Part, Option<Vec<u8>>)>,
}

/// Dump the network namespace process `pid` is in, as id `id`; `tree`:
/// every network namespace of the tree (id, a process in it), whose ids in
/// this one are recorded (`nsids`, CRIU's); `tuns`: what the tree's tun
/// files told of the links they are attached to.
pub(crate) fn dump(
    dir: &Path,
    pid: i32,
    id: u32,
    tree: &[(u32, i32)],
    tuns: &[TunSeen],
) -> Result<(), Error> {
    let refuse = |what: String| Error::Refused {
        what: format!("cannot dump the network namespace of process {pid}: {what}"),
        kind: crate::error::ErrorKind::Unsupported,
    };
    let read = in_ns(pid, &[NsKind::Net], || {
        let mut sk = rtnl_socket(pid)?;
        // Listing the links gives the namespaces of veth peers their ids
        // here (the kernel does it then), so they are read after.
        let all = crust_netlink::rtnl::dump_links(&mut sk)
            .map_err(|e| refuse(format!("cannot list its links: {e}")))?;
        let nsids = nsids_of(&mut sk, id, tree).map_err(&refuse)?;
        let mut links = Vec::new();
        for l in &all {
            match links::entry_of(l, id, &nsids, tuns).map_err(&refuse)? {
                Dumped::Entry(e) => links.push(*e),
                Dumped::Skipped => log::debug!("skipping fallback device {}", l.name),
            }
        }
        let netns = NetnsEntry {
            def_conf4: conf::read_conf("ipv4", "default"),
            all_conf4: conf::read_conf("ipv4", "all"),
            def_conf6: conf::read_conf("ipv6", "default"),
            all_conf6: conf::read_conf("ipv6", "all"),
            unix_conf: conf::read_unix(),
            ipv4_sysctl: conf::read_ipv4_sysctls(),
            nsids,
            ..Default::default()
        };
        let mut parts = Vec::new();
        for p in Part::ALL {
            let d = tools::save(p).map_err(|f| refuse(format!("{} failed: {}", f.what, f.why)))?;
            parts.push((p, d));
        }
        Ok(Read {
            netns,
            links,
            parts,
        })
    })?;
    for l in &read.links {
        log::debug!(
            "net {id}: link {} index {} type {} flags {:#x}",
            l.name,
            l.ifindex,
            nd_type::name(l.r#type).unwrap_or("?"),
            l.flags
        );
    }
    write_image(dir, ImageType::Netns, id as u64, &[read.netns])?;
    write_image(dir, ImageType::Netdev, id as u64, &read.links)?;
    for (p, data) in read.parts {
        let Some(data) = data else { continue };
        let ty = image_of(p);
        let name = ty.file_name(id as u64);
        let err = |source| Error::Image {
            what: format!("cannot write {name}"),
            source,
        };
        let mut w = ImageWriter::create(dir, ty, &name).map_err(err)?;
        w.write_raw(&data).map_err(err)?;
        w.finish().map_err(err)?;
    }
    Ok(())
}

/// The key `--external net[INO]:KEY` gives the network namespace process
/// `pid` is in (CRIU's form; INO is the namespace's inode number, as
/// runc sends it for a namespace its config names by path), if any.
pub(crate) fn external_key(external: &[String], pid: i32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(NsKind::Net.proc_path(&pid.to_string()))
        .ok()?
        .ino();
    external_key_of(external, ino)
}

/// The key of `net[INO]:KEY` among `external` for inode `ino`.
fn external_key_of(external: &[String], ino: u64) -> Option<String> {
    external.iter().find_map(|e| {
        let (name, key) = e.strip_prefix("net[")?.split_once("]:")?;
        (name.parse::<u64>().ok()? == ino && !key.is_empty()).then(|| key.to_string())
    })
}

/// Dump network namespace `id` as external (CRIU's meaning: the restore
/// is given a namespace to join under `key`, with `--inherit-fd
/// fd[N]:KEY`): its netns image holds the key and nothing else; its links,
/// addresses, routes and rules are not the tree's to restore.
pub(crate) fn dump_external(dir: &Path, id: u32, key: &str) -> Result<(), Error> {
    log::info!("network namespace {id} is external ({key}): only its key is dumped");
    let netns = NetnsEntry {
        ext_key: Some(key.to_string()),
        ..Default::default()
    };
    write_image(dir, ImageType::Netns, id as u64, &[netns])
}

/// The external key of network namespace `id` of the images, if its
/// netns image names one (none without the image, as after `--empty-ns
/// net`, or without an entry).
pub(crate) fn load_external_key(dir: &Path, id: u32) -> Result<Option<String>, Error> {
    if !dir.join(ImageType::Netns.file_name(id as u64)).exists() {
        return Ok(None);
    }
    let v: Vec<NetnsEntry> = read_image(dir, ImageType::Netns, id as u64)?;
    Ok(v.into_iter().next().and_then(|n| n.ext_key))
}

/// The ids the namespace of `sk` (id `id`) gives the tree's other network
/// namespaces (`tree`: id, a process in it), those that have one.
fn nsids_of(sk: &mut Socket, id: u32, tree: &[(u32, i32)]) -> Result<Vec<NetnsId>, String> {
    let mut out = Vec::new();
    for &(other, pid) in tree.iter().filter(|(o, _)| *o != id) {
        let v = crust_netlink::rtnl::get_nsid(sk, pid as u32).map_err(|e| {
            format!("cannot read the id it gives network namespace {other} (process {pid}): {e}")
        })?;
        if let Some(v) = v {
            log::debug!("net {id}: namespace {other} has id {v} here");
            out.push(NetnsId {
                target_ns_id: other,
                netnsid_value: v,
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// Read the images of the tree's network namespaces other than its root's
/// (`root`): every `netns-ID.img` of the directory but the root's.
pub(crate) fn load_others(dir: &Path, root: u32, external: &[String]) -> Result<Vec<NetNs>, Error> {
    let list = std::fs::read_dir(dir).map_err(|source| Error::Io {
        op: "list the images directory",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut ids: Vec<u32> = list
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_prefix("netns-")?.strip_suffix(".img")?.parse().ok()
        })
        .filter(|id| *id != root)
        .collect();
    ids.sort_unstable();
    ids.into_iter()
        .map(|id| NetNs::load(dir, id, external))
        .collect()
}

/// Whether `--empty-ns net` was given: the dump leaves the namespace out,
/// the restore makes it empty (CRIU's user configures it from an action
/// script). CRIU takes no other kind there.
pub(crate) fn empty(opts: &crate::Options) -> Result<bool, Error> {
    Ok(crate::ns::join::empty_ns_flags(opts)? & libc::CLONE_NEWNET as u64 != 0)
}

/// A network namespace to make: its images, checked.
#[derive(Debug)]
pub(crate) struct NetNs {
    id: u32,
    netns: NetnsEntry,
    links: Vec<NetDeviceEntry>,
    parts: Vec<(Part, Vec<u8>)>,
    /// The outer ends of veths, by inner name (`--external veth[...]`).
    outers: Vec<(String, Outer)>,
    /// `--external macvlan[...]`, `netdev[...]`.
    ext: extlinks::ExtLinks,
    /// `--empty-ns net`: made, left empty.
    empty: bool,
}

impl NetNs {
    /// Namespace `id` left empty (`--empty-ns net`): nothing read.
    pub(crate) fn empty(id: u32) -> NetNs {
        NetNs {
            id,
            netns: NetnsEntry::default(),
            links: Vec::new(),
            parts: Vec::new(),
            outers: Vec::new(),
            ext: extlinks::ExtLinks::default(),
            empty: true,
        }
    }

    /// Read the images of namespace `id`, and check them against the
    /// options (every veth whose peer was outside needs its outer name).
    pub(crate) fn load(dir: &Path, id: u32, external: &[String]) -> Result<NetNs, Error> {
        let bad = |why: String| Error::BadImage {
            dir: dir.to_path_buf(),
            why,
        };
        let netns: NetnsEntry = read_one(dir, ImageType::Netns, id as u64)?;
        if netns.ext_key.is_some() {
            return Err(Error::unsupported(format!(
                "netns-{id}.img names an external network namespace (--external net[...]) for a namespace other than the root's: crust joins an external namespace for the root only"
            )));
        }
        for (proto, list) in [
            ("ipv4", &netns.def_conf4),
            ("ipv4", &netns.all_conf4),
            ("ipv6", &netns.def_conf6),
            ("ipv6", &netns.all_conf6),
        ] {
            conf::check_conf(proto, list).map_err(|w| bad(format!("netns-{id}.img: {w}")))?;
        }
        let links: Vec<NetDeviceEntry> = read_image(dir, ImageType::Netdev, id as u64)?;
        for l in &links {
            links::check(l).map_err(|w| bad(format!("netdev-{id}.img: {w}")))?;
        }
        let outers = links::outers(external).map_err(Error::unsupported)?;
        let ext = extlinks::ExtLinks::parse(external).map_err(Error::unsupported)?;
        let mut parts = Vec::new();
        for p in Part::ALL {
            let name = image_of(p).file_name(id as u64);
            let data = match std::fs::read(dir.join(&name)) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(Error::Io {
                        op: "cannot read",
                        path: dir.join(&name),
                        source,
                    })
                }
            };
            tools::check(p, &data).map_err(|w| bad(format!("{name}: {w}")))?;
            if !data.is_empty() {
                parts.push((p, data));
            }
        }
        Ok(NetNs {
            id,
            netns,
            links,
            parts,
            outers,
            ext,
            empty: false,
        })
    }

    /// Its id in the images.
    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    /// Refuse a veth whose peer was outside the tree's namespaces (`tree`:
    /// their ids) when `--external veth[NAME]:...` does not name its outer
    /// end (checked at restore, before anything is made: the dump's own
    /// check of its images has no such option), and an id given to a
    /// namespace the images do not hold.
    fn check_outers(&self, tree: &[u32]) -> Result<(), Error> {
        let id = self.id;
        let refuse = |what: String| Error::Refused {
            what,
            kind: crate::error::ErrorKind::Unsupported,
        };
        for n in &self.netns.nsids {
            if !tree.contains(&n.target_ns_id) || n.target_ns_id == id {
                return Err(refuse(format!(
                    "netns-{id}.img gives id {} to network namespace {}, which is not another of the tree's",
                    n.netnsid_value, n.target_ns_id
                )));
            }
        }
        for l in &self.links {
            self.ext.check(l, id, &self.links).map_err(refuse)?;
        }
        for l in self.links.iter().filter(|l| l.r#type == nd_type::VETH) {
            let in_tree = l.peer_nsid.is_some_and(|p| tree.contains(&p));
            if !in_tree && self.outer_of(&l.name).is_none() && self.ext.netdev(&l.name).is_none() {
                return Err(refuse(format!(
                    "veth {} of the network namespace had its peer outside it: give the name of the outer end with --external veth[{}]:OUTER_NAME[@BRIDGE] (or --veth-pair {}=OUTER_NAME), or a link to move in with --external netdev[{}]:LINK",
                    l.name, l.name, l.name, l.name
                )));
            }
        }
        Ok(())
    }

    /// Give the tree's other network namespaces the ids this one gave them
    /// (CRIU does it before the links: a veth made across then finds its
    /// peer's namespace named as before).
    fn set_nsids(&self, pid: i32, sk: &mut Socket, all: &[(&NetNs, &File)]) -> Result<(), Error> {
        use std::os::fd::AsRawFd;
        for n in &self.netns.nsids {
            let Some((_, f)) = all.iter().find(|(o, _)| o.id == n.target_ns_id) else {
                continue;
            };
            crust_netlink::rtnl::set_nsid(sk, f.as_raw_fd(), n.netnsid_value).map_err(|e| {
                Error::Restore {
                    pid,
                    what: format!(
                        "network namespace {}: cannot give namespace {} the id {}: {e}",
                        self.id, n.target_ns_id, n.netnsid_value
                    ),
                }
            })?;
        }
        Ok(())
    }

    fn link_err(&self, pid: i32) -> impl Fn(links::LinkFailed) -> Error + '_ {
        move |f: links::LinkFailed| Error::Restore {
            pid,
            what: format!(
                "network namespace {}: link {}: cannot {}{}",
                self.id,
                f.link,
                f.what,
                f.source
                    .map(|e| format!(
                        ": {e} ({})",
                        std::error::Error::source(&e)
                            .map(|s| s.to_string())
                            .unwrap_or_default()
                    ))
                    .unwrap_or_default()
            ),
        }
    }

    fn conf_err(&self, pid: i32) -> impl Fn(conf::WriteFailed) -> Error + '_ {
        move |f: conf::WriteFailed| Error::Sys {
            pid,
            op: format!("network namespace {}: write {}", self.id, f.path),
            source: f.source,
        }
    }

    /// Fill this namespace, joined by the calling thread: sysctls, ids of
    /// the others, links, tools. `all`: every namespace being filled;
    /// `across`: (namespace id, index) of the veth ends made already from
    /// another namespace of the tree.
    fn fill(&self, pid: i32, cx: &mut FillCtx<'_>) -> Result<(), Error> {
        let (link_err, conf_err) = (self.link_err(pid), self.conf_err(pid));
        let n = &self.netns;
        conf::write_conf("ipv4", "all", &n.all_conf4, None).map_err(&conf_err)?;
        conf::write_conf("ipv4", "default", &n.def_conf4, None).map_err(&conf_err)?;
        conf::write_conf("ipv6", "all", &n.all_conf6, None).map_err(&conf_err)?;
        conf::write_conf("ipv6", "default", &n.def_conf6, None).map_err(&conf_err)?;
        conf::write_misc(&n.unix_conf, &n.ipv4_sysctl).map_err(&conf_err)?;

        let mut sk = rtnl_socket(pid)?;
        self.set_nsids(pid, &mut sk, cx.all)?;
        let of = |t: i32| self.links.iter().filter(move |l| l.r#type == t);
        for l in of(nd_type::LOOPBACK) {
            links::set_loopback(&mut sk, l).map_err(&link_err)?;
        }
        for l in of(nd_type::BRIDGE) {
            links::make_bridge(&mut sk, l).map_err(&link_err)?;
        }
        for l in of(nd_type::TUN) {
            tun::make(&mut sk, l).map_err(&link_err)?;
        }
        let target = File::open("/proc/thread-self/ns/net")
            .map_err(sys_err(pid, "open the network namespace being restored"))?;
        self.make_veths(pid, &mut sk, &target, cx)?;
        for l in of(nd_type::MACVLAN) {
            if self.ext.has_macvlan(&l.name) || l.peer_nsid != Some(self.id) {
                self.ext.make_macvlan(cx.outer_sk, l, target.as_fd())
            } else {
                extlinks::make_inner_macvlan(&mut sk, l)
            }
            .map_err(&link_err)?;
        }
        for l in &self.links {
            if let Some(m) = l.master {
                links::set_master(&mut sk, l, m).map_err(&link_err)?;
            }
        }
        for l in &self.links {
            let lo = l.r#type == nd_type::LOOPBACK;
            let d4 = (!lo).then_some(n.def_conf4.as_slice());
            let d6 = (!lo).then_some(n.def_conf6.as_slice());
            conf::write_conf("ipv4", &l.name, &l.conf4, d4).map_err(&conf_err)?;
            conf::write_conf("ipv6", &l.name, &l.conf6, d6).map_err(&conf_err)?;
        }
        self.run_tools(pid)
    }

    /// Make the veths of this namespace (joined by the calling thread,
    /// open as `target`): pairs inside it, pairs across to another of the
    /// tree's namespaces (made once, from the first one filled), ends
    /// whose peer is outside (made in crust's namespace), links moved in.
    fn make_veths(
        &self,
        pid: i32,
        sk: &mut Socket,
        target: &File,
        cx: &mut FillCtx<'_>,
    ) -> Result<(), Error> {
        let (id, link_err) = (self.id, self.link_err(pid));
        let mut done: Vec<u32> = Vec::new();
        for l in self.links.iter().filter(|l| l.r#type == nd_type::VETH) {
            if done.contains(&l.ifindex) {
                continue;
            }
            if cx.across.contains(&(id, l.ifindex)) {
                // Made from its peer's namespace: set as recorded.
                links::set_link(sk, l).map_err(&link_err)?;
                continue;
            }
            if let Some(orig) = self.ext.netdev(&l.name) {
                extlinks::ExtLinks::move_in(cx.outer_sk, orig, l, target.as_fd())
                    .map_err(&link_err)?;
                continue;
            }
            let peer_of = |ns| veth_peer_in(ns, l);
            if l.peer_nsid == Some(id) {
                if let Some(p) = peer_of(self).filter(|p| p.ifindex != l.ifindex) {
                    links::make_veth(sk, l, links::Peer::Inner(p)).map_err(&link_err)?;
                    links::set_link(sk, p).map_err(&link_err)?;
                    done.push(p.ifindex);
                    continue;
                }
            }
            let other = cx
                .all
                .iter()
                .find(|(o, _)| Some(o.id) != Some(id) && Some(o.id) == l.peer_nsid);
            if let Some((o, f)) = other {
                let p = peer_of(o).ok_or_else(|| Error::Restore {
                    pid,
                    what: format!(
                        "network namespace {id}: veth {}: its peer (index {:?}) is not among the links of network namespace {}",
                        l.name, l.peer_ifindex, o.id
                    ),
                })?;
                links::make_veth(sk, l, links::Peer::Across(p, f.as_fd())).map_err(&link_err)?;
                cx.across.push((o.id, p.ifindex));
                continue;
            }
            self.make_outer(pid, sk, l, cx)?;
        }
        Ok(())
    }

    /// Make veth `l`, whose peer was outside the tree: its outer end in
    /// crust's namespace, named by `--external veth[...]`, plugged.
    fn make_outer(
        &self,
        pid: i32,
        sk: &mut Socket,
        l: &NetDeviceEntry,
        cx: &mut FillCtx<'_>,
    ) -> Result<(), Error> {
        let (id, link_err) = (self.id, self.link_err(pid));
        let outer = self.outer_of(&l.name).ok_or_else(|| Error::Restore {
            pid,
            what: format!(
                "veth {} has no outer end named by --external veth[{}]:...",
                l.name, l.name
            ),
        })?;
        if links::exists(cx.outer_sk, &outer.name).map_err(&link_err)? {
            return Err(Error::Restore {
                pid,
                what: format!(
                    "network namespace {id}: veth {}: its outer end {} cannot be made: crust's network namespace already has a link of that name (remove it or name another with --external veth[{}]:NAME)",
                    l.name, outer.name, l.name
                ),
            });
        }
        links::make_veth(sk, l, links::Peer::Outer(outer, cx.own.as_fd())).map_err(&link_err)?;
        cx.made.push(outer.name.clone());
        links::plug_outer(cx.outer_sk, outer).map_err(&link_err)
    }

    fn outer_of(&self, inner: &str) -> Option<&Outer> {
        self.outers.iter().find(|(n, _)| n == inner).map(|(_, o)| o)
    }

    /// The rules of CRIU's images may hold CRIU's network lock (a `CRIU`
    /// chain: CRIU dumps them locked); it stays until every connection is
    /// back in place, then the restore's network unlock lifts it
    /// (`netlock::unlock_netns`), as CRIU's restore does. Lifted here, a
    /// peer's retransmission before the connection exists would draw a
    /// reset. So the rules go in first, before the addresses: the other
    /// way round, a peer's retransmission that came between the two (the
    /// links are up) drew a reset (e2e container-from-criu, about one run
    /// in ten).
    fn run_tools(&self, pid: i32) -> Result<(), Error> {
        let firewall = self.parts.iter().filter(|(p, _)| p.is_firewall());
        let rest = self.parts.iter().filter(|(p, _)| !p.is_firewall());
        for (p, data) in firewall.chain(rest) {
            tools::restore(*p, data).map_err(|f| Error::Restore {
                pid,
                what: format!(
                    "network namespace {}: {} failed on {}: {}",
                    self.id,
                    f.what,
                    image_of(*p).file_name(self.id as u64),
                    f.why
                ),
            })?;
        }
        Ok(())
    }
}

/// The entry, among the links of `ns`, of the peer of veth `l`.
fn veth_peer_in<'n>(ns: &'n NetNs, l: &NetDeviceEntry) -> Option<&'n NetDeviceEntry> {
    ns.links
        .iter()
        .find(|p| Some(p.ifindex) == l.peer_ifindex && p.r#type == nd_type::VETH)
}

/// What filling the tree's network namespaces shares.
struct FillCtx<'a> {
    /// crust's own network namespace (where outer veth ends go).
    own: &'a File,
    /// An rtnetlink socket in crust's namespace.
    outer_sk: &'a mut Socket,
    /// The outer ends made in crust's namespace (removed on failure).
    made: &'a mut Vec<String>,
    /// Every namespace being filled, with an fd on it.
    all: &'a [(&'a NetNs, &'a File)],
    /// (namespace id, index) of veth ends made from another namespace.
    across: &'a mut Vec<(u32, u32)>,
}

/// Fill the tree's new network namespaces `nets` (each with an fd on it;
/// the root's first), one after the other, each by a crust thread that
/// joined it; `pid`: the tree's root, for messages. A veth whose ends are
/// in two of them is made once, from the first. The outer ends of veths
/// made in crust's namespace are removed again if this fails (the
/// namespaces themselves go with their last fd and process).
pub(crate) fn prepare_all(pid: i32, nets: &[(&NetNs, &File)]) -> Result<(), Error> {
    let ids: Vec<u32> = nets.iter().map(|(n, _)| n.id).collect();
    for (n, _) in nets.iter().filter(|(n, _)| !n.empty) {
        n.check_outers(&ids)?;
    }
    let own =
        File::open("/proc/self/ns/net").map_err(sys_err(pid, "open crust's network namespace"))?;
    let mut outer_sk = rtnl_socket(pid)?;
    let mut made: Vec<String> = Vec::new();
    let mut across = Vec::new();
    let mut r = Ok(());
    for (n, f) in nets {
        if n.empty {
            log::debug!("network namespace {}: left empty (--empty-ns net)", n.id);
            continue;
        }
        let file = f
            .try_clone()
            .map_err(sys_err(pid, "dup of a network namespace fd"))?;
        let mut cx = FillCtx {
            own: &own,
            outer_sk: &mut outer_sk,
            made: &mut made,
            all: nets,
            across: &mut across,
        };
        r = crate::ns::in_ns_files(pid, vec![(NsKind::Net, file)], || n.fill(pid, &mut cx));
        if r.is_err() {
            break;
        }
    }
    if r.is_err() {
        for name in &made {
            if let Err(e) = links::remove(&mut outer_sk, name) {
                log::warn!("cannot remove veth end {name} after the failed restore: {e}");
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_keys_by_inode() {
        let ext = vec![
            "mnt[/a]:b".to_string(),
            "net[4026532174]:extRootNetNS".to_string(),
            "net[77]:".to_string(),
            "net[x]:y".to_string(),
        ];
        assert_eq!(
            external_key_of(&ext, 4026532174).as_deref(),
            Some("extRootNetNS")
        );
        assert_eq!(external_key_of(&ext, 77), None);
        assert_eq!(external_key_of(&ext, 1), None);
    }

    #[test]
    fn external_netns_image_round_trip() {
        let d = std::env::temp_dir().join(format!("crust-extnet-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        dump_external(&d, 3, "extRootNetNS").unwrap();
        let key = load_external_key(&d, 3).unwrap();
        let none = load_external_key(&d, 4).unwrap();
        let e = NetNs::load(&d, 3, &[]).unwrap_err();
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(key.as_deref(), Some("extRootNetNS"));
        assert_eq!(none, None);
        assert!(e.to_string().contains("external network namespace"), "{e}");
    }
}
