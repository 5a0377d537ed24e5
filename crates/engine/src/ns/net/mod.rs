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

use super::ids::NsKind;
use super::in_ns;
use crate::util::{read_image, read_one, sys_err, write_image};
use crate::Error;
use crust_images::image::{ImageType, ImageWriter};
use crust_images::proto::netdev::{nd_type, NetDeviceEntry, NetnsEntry};
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

/// Dump the network namespace process `pid` is in, as id `id`.
pub(crate) fn dump(dir: &Path, pid: i32, id: u32) -> Result<(), Error> {
    let refuse = |what: String| Error::Refused {
        what: format!("cannot dump the network namespace of process {pid}: {what}"),
        kind: crate::error::ErrorKind::Unsupported,
    };
    let read = in_ns(pid, &[NsKind::Net], || {
        let mut sk = rtnl_socket(pid)?;
        let all = crust_netlink::rtnl::dump_links(&mut sk)
            .map_err(|e| refuse(format!("cannot list its links: {e}")))?;
        let mut links = Vec::new();
        for l in &all {
            match links::entry_of(l, id).map_err(&refuse)? {
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
                "netns-{id}.img names an external network namespace (--external net[...]), which crust cannot join yet"
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

    /// Refuse a veth whose peer was outside the namespace when
    /// `--external veth[NAME]:...` does not name its outer end (checked at
    /// restore, before anything is made: the dump's own check of its images
    /// has no such option).
    fn check_outers(&self) -> Result<(), Error> {
        let id = self.id;
        for l in &self.links {
            self.ext
                .check(l, id, &self.links)
                .map_err(|what| Error::Refused {
                    what,
                    kind: crate::error::ErrorKind::Unsupported,
                })?;
        }
        for l in self.links.iter().filter(|l| l.r#type == nd_type::VETH) {
            if l.peer_nsid != Some(id)
                && self.outer_of(&l.name).is_none()
                && self.ext.netdev(&l.name).is_none()
            {
                return Err(Error::Refused {
                    what: format!(
                        "veth {} of the network namespace had its peer outside it: give the name of the outer end with --external veth[{}]:OUTER_NAME[@BRIDGE] (or --veth-pair {}=OUTER_NAME), or a link to move in with --external netdev[{}]:LINK",
                        l.name, l.name, l.name, l.name
                    ),
                    kind: crate::error::ErrorKind::Unsupported,
                });
            }
        }
        Ok(())
    }

    /// Fill the new network namespace process `pid` is in. A veth's outer
    /// end made in crust's namespace is removed again if this fails.
    pub(crate) fn prepare(&self, pid: i32) -> Result<(), Error> {
        if self.empty {
            log::debug!("network namespace {}: left empty (--empty-ns net)", self.id);
            return Ok(());
        }
        self.check_outers()?;
        let own = File::open("/proc/self/ns/net")
            .map_err(sys_err(pid, "open crust's network namespace"))?;
        let mut outer_sk = rtnl_socket(pid)?;
        let mut made: Vec<String> = Vec::new();
        let r = in_ns(pid, &[NsKind::Net], || {
            self.fill(pid, &own, &mut outer_sk, &mut made)
        });
        if r.is_err() {
            for name in &made {
                if let Err(e) = links::remove(&mut outer_sk, name) {
                    log::warn!("cannot remove veth end {name} after the failed restore: {e}");
                }
            }
        }
        r
    }

    fn fill(
        &self,
        pid: i32,
        own: &File,
        outer_sk: &mut Socket,
        made: &mut Vec<String>,
    ) -> Result<(), Error> {
        let id = self.id;
        let link_err = |f: links::LinkFailed| Error::Restore {
            pid,
            what: format!(
                "network namespace {id}: link {}: cannot {}{}",
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
        };
        let conf_err = |f: conf::WriteFailed| Error::Sys {
            pid,
            op: format!("network namespace {id}: write {}", f.path),
            source: f.source,
        };
        let n = &self.netns;
        conf::write_conf("ipv4", "all", &n.all_conf4, None).map_err(conf_err)?;
        conf::write_conf("ipv4", "default", &n.def_conf4, None).map_err(conf_err)?;
        conf::write_conf("ipv6", "all", &n.all_conf6, None).map_err(conf_err)?;
        conf::write_conf("ipv6", "default", &n.def_conf6, None).map_err(conf_err)?;
        conf::write_misc(&n.unix_conf, &n.ipv4_sysctl).map_err(conf_err)?;

        let mut sk = rtnl_socket(pid)?;
        let of = |t: i32| self.links.iter().filter(move |l| l.r#type == t);
        for l in of(nd_type::LOOPBACK) {
            links::set_loopback(&mut sk, l).map_err(link_err)?;
        }
        for l in of(nd_type::BRIDGE) {
            links::make_bridge(&mut sk, l).map_err(link_err)?;
        }
        let target = File::open("/proc/thread-self/ns/net")
            .map_err(sys_err(pid, "open the network namespace being restored"))?;
        let mut done: Vec<u32> = Vec::new();
        for l in of(nd_type::VETH) {
            if done.contains(&l.ifindex) {
                continue;
            }
            if let Some(orig) = self.ext.netdev(&l.name) {
                extlinks::ExtLinks::move_in(outer_sk, orig, l, target.as_fd()).map_err(link_err)?;
                continue;
            }
            let inner_peer = (l.peer_nsid == Some(id))
                .then(|| {
                    self.links
                        .iter()
                        .find(|p| Some(p.ifindex) == l.peer_ifindex && p.ifindex != l.ifindex)
                })
                .flatten();
            if let Some(p) = inner_peer {
                links::make_veth(&mut sk, l, Ok(p)).map_err(link_err)?;
                links::set_link(&mut sk, p).map_err(link_err)?;
                done.push(p.ifindex);
                continue;
            }
            let outer = self.outer_of(&l.name).ok_or_else(|| Error::Restore {
                pid,
                what: format!(
                    "veth {} has no outer end named by --external veth[{}]:...",
                    l.name, l.name
                ),
            })?;
            if links::exists(outer_sk, &outer.name).map_err(link_err)? {
                return Err(Error::Restore {
                    pid,
                    what: format!(
                        "network namespace {id}: veth {}: its outer end {} cannot be made: crust's network namespace already has a link of that name (remove it or name another with --external veth[{}]:NAME)",
                        l.name, outer.name, l.name
                    ),
                });
            }
            links::make_veth(&mut sk, l, Err((outer, own.as_fd()))).map_err(link_err)?;
            made.push(outer.name.clone());
            links::plug_outer(outer_sk, outer).map_err(link_err)?;
        }
        for l in of(nd_type::MACVLAN) {
            if self.ext.has_macvlan(&l.name) || l.peer_nsid != Some(id) {
                self.ext.make_macvlan(outer_sk, l, target.as_fd())
            } else {
                extlinks::make_inner_macvlan(&mut sk, l)
            }
            .map_err(link_err)?;
        }
        for l in &self.links {
            if let Some(m) = l.master {
                links::set_master(&mut sk, l, m).map_err(link_err)?;
            }
        }
        for l in &self.links {
            let lo = l.r#type == nd_type::LOOPBACK;
            let d4 = (!lo).then_some(n.def_conf4.as_slice());
            let d6 = (!lo).then_some(n.def_conf6.as_slice());
            conf::write_conf("ipv4", &l.name, &l.conf4, d4).map_err(conf_err)?;
            conf::write_conf("ipv6", &l.name, &l.conf6, d6).map_err(conf_err)?;
        }
        self.run_tools(pid)
    }

    fn outer_of(&self, inner: &str) -> Option<&Outer> {
        self.outers.iter().find(|(n, _)| n == inner).map(|(_, o)| o)
    }

    /// The rules of CRIU's images may hold CRIU's network lock (a `CRIU`
    /// chain: CRIU dumps them locked); it stays until every connection is
    /// back in place, then the restore's network unlock lifts it
    /// (`netlock::unlock_netns`), as CRIU's restore does. Lifted here, a
    /// peer's retransmission before the connection exists would draw a
    /// reset.
    fn run_tools(&self, pid: i32) -> Result<(), Error> {
        for (p, data) in &self.parts {
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
