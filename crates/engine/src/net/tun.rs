//! Files of the tun/tap clone device (`/dev/net/tun`), CRIU 4.2's TUNF
//! kind: a REG entry for the path and a TunfileEntry of the same id (the
//! link the file is attached to, whether its queue is detached, the
//! network namespace). The links themselves are `ns::net`'s.
//!
//! Dump: on crust's copy of the file (pidfd_getfd), TUNGETIFF names the
//! link and says whether the queue is detached; the vnet header size and
//! send buffer read there go to the link's entry ([`TunSeen`]). As CRIU,
//! a tun file is dumped only with the tree's own network namespace (its
//! links are made again only there).
//! Restore: crust, in the tree's network namespace, opens the clone
//! device, attaches it to its link (TUNSETIFF with the link's flags: the
//! link was made persistent by the namespace's restore), detaches the
//! queue if it was, and drops the link's persistence when it had none.

use crate::files::classify::Target;
use crate::files::fdpass::MadeFds;
use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, OpenKind, RestoreKind};
use crate::net::SkNetns;
use crate::ns::net::TunSeen;
use crate::util::{read_image, sys_err};
use crate::Error;
use crust_images::image::ImageType;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::netdev::{nd_type, NetDeviceEntry};
use crust_images::proto::tun::TunfileEntry;
use crust_sys::tun as t;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The dump's tun files: ids by (pid, fd), and the links they are on.
#[derive(Default)]
pub(crate) struct TunDump {
    /// The tree's network namespaces (its root's and the others).
    pub(crate) netns: SkNetns,
    fds: Vec<(i32, i32, u32)>,
    seen: Vec<TunSeen>,
}

impl TunDump {
    /// The id of the tree's network namespace of inode `ino`.
    fn ns_id_of(&self, ino: u64) -> Option<u32> {
        let root = self
            .netns
            .pid
            .and_then(|p| ns_inode(&format!("/proc/{p}/ns/net")));
        if root == Some(ino) {
            return Some(self.netns.id);
        }
        self.netns.others.iter().find(|o| o.0 == ino).map(|o| o.2)
    }

    /// The links the tree's files are attached to.
    pub(crate) fn seen(&self) -> &[TunSeen] {
        &self.seen
    }

    fn known(&self, pid: i32, fd: i32) -> Option<u32> {
        self.fds.iter().find_map(|&(opid, ofd, id)| {
            crust_sys::process::kcmp_file(pid, opid, fd, ofd)
                .unwrap_or(false)
                .then_some(id)
        })
    }

    /// The TunfileEntry of crust's copy `copy` of fd `fd` of `pid`.
    fn entry(&mut self, pid: i32, fd: i32, copy: &OwnedFd, id: u32) -> Result<TunfileEntry, Error> {
        let err = |what: &str| sys_err(pid, format!("{what} of its tun file (fd {fd})"));
        let ns = crust_sys::ns::socket_netns(copy.as_fd()).map_err(err("SIOCGSKNS"))?;
        let ns_id = ns_inode(&format!("/proc/self/fd/{}", ns.as_raw_fd()))
            .and_then(|ino| self.ns_id_of(ino))
            .ok_or_else(|| {
                Error::unsupported(format!(
                    "process {pid} has fd {fd} on a tun file made in a network namespace that is not the tree's: crust cannot dump it"
                ))
            })?;
        let mut e = TunfileEntry {
            id,
            ns_id: Some(ns_id),
            ..Default::default()
        };
        let Some((name, flags)) = t::get_iff(copy.as_fd()).map_err(err("TUNGETIFF"))? else {
            return Ok(e);
        };
        log::debug!("{pid}: fd {fd} is a tun file on {name} (flags {flags:#x})");
        if flags & t::IFF_DETACH_QUEUE != 0 {
            e.detached = Some(true);
        }
        if !self.seen.iter().any(|s| s.name == name && s.ns == ns_id) {
            if flags & t::IFF_TAP != 0
                && t::filter_len(copy.as_fd()).map_err(err("TUNGETFILTER"))? != 0
            {
                return Err(Error::unsupported(format!(
                    "process {pid} has fd {fd} on tap link {name}, which has a socket filter (TUNATTACHFILTER): crust cannot dump it"
                )));
            }
            let vnethdr = t::vnet_hdr_size(copy.as_fd()).map_err(err("TUNGETVNETHDRSZ"))?;
            let sndbuf = t::sndbuf(copy.as_fd()).map_err(err("TUNGETSNDBUF"))?;
            self.seen.push(TunSeen {
                ns: ns_id,
                name: name.clone(),
                vnethdr: vnethdr as u32,
                sndbuf: sndbuf as u32,
            });
        }
        e.netdev = Some(name);
        Ok(e)
    }
}

impl DumpKind for TunDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        if f.class != Target::Path || f.target != t::PATH || f.carried.is_some() {
            return Ok(None);
        }
        let (pid, fd) = (f.pid, f.fd);
        if self.netns.pid.is_none() {
            return Err(Error::unsupported(format!(
                "process {pid} has fd {fd} on /dev/net/tun, but the tree shares crust's network namespace: tun/tap files are dumped only with a network namespace of the tree's own (as CRIU does), whose links are made again"
            )));
        }
        let known = self.known(pid, fd);
        let id = ids.id_for(known, |ids, id| {
            let copy = crate::files::fdpass::take_fd(pid, fd)?;
            let e = self.entry(pid, fd, &copy, id)?;
            let mut reg = crate::files::reg_entry(id, Path::new(t::PATH), f.flags(), 0, false)?;
            reg.mnt_id = crate::files::classify::mnt_id_of(pid, f.info.mnt_id);
            ids.files.push(crate::files::reg_file(reg));
            self.fds.push((pid, fd, id));
            Ok(Some(FileEntry {
                r#type: fd_types::TUNF,
                id,
                tunf: Some(Box::new(e)),
                ..Default::default()
            }))
        })?;
        Ok(Some((id, fd_types::TUNF)))
    }
}

/// The inode of the namespace file at `path` (nsfs: one device).
fn ns_inode(path: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// One tun file to make.
#[derive(Debug)]
struct TunFile {
    e: TunfileEntry,
    /// The path and open flags of its REG entry.
    path: PathBuf,
    flags: u32,
    /// The flags of the link it attaches to (TUNSETIFF's).
    link_flags: u32,
}

/// The tun files of an image set, with the process (pid of the images)
/// that holds each first: it is made in that one's network namespace.
pub(crate) struct TunFiles {
    files: BTreeMap<u32, (TunFile, i32)>,
}

fn check_entry(e: &TunfileEntry) -> Result<(), String> {
    if let Some(n) = &e.netdev {
        if n.is_empty() || n.len() >= 16 || n.contains(['/', '\0']) {
            return Err(format!("bad link name {n:?}"));
        }
    }
    Ok(())
}

/// The flags of the tun links of network namespace `ns`, by name.
fn link_flags(dir: &Path, ns: u32) -> Result<BTreeMap<String, u32>, Error> {
    let links: Vec<NetDeviceEntry> = read_image(dir, ImageType::Netdev, ns as u64)?;
    Ok(links
        .into_iter()
        .filter(|l| l.r#type == nd_type::TUN)
        .filter_map(|l| Some((l.name, l.tun?.flags)))
        .collect())
}

pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    let dir = ctx.dir;
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why,
    };
    let entries = crate::util::load_kind(
        dir,
        ctx.files.entries()?,
        fd_types::TUNF,
        "tun file",
        |f| f.tunf.map(|e| (e.id, *e)),
        check_entry,
    )?;
    let root_ns = ctx.procs.first().and_then(|p| p.ids?.net_ns_id);
    // A joined network namespace is taken as it is: the tree's links are
    // not made in it, so a file attached to one cannot be (CRIU refuses it
    // too: it finds no such link).
    let joined = ctx.opts.join_ns.iter().find(|j| j.starts_with("net:"));
    if let (Some(j), Some((id, e))) = (joined, entries.iter().find(|(_, e)| e.netdev.is_some())) {
        return Err(Error::unsupported(format!(
            "tun file {id} is attached to link {}, but --join-ns {j} takes the tree's network namespace as it is: its tun/tap links are not made there, so the file cannot be restored (restore without --join-ns net)",
            e.netdev.as_deref().unwrap_or("")
        )));
    }
    let index = if entries.is_empty() {
        None
    } else {
        Some(ctx.files.index()?)
    };
    let mut flags_of: BTreeMap<u32, BTreeMap<String, u32>> = BTreeMap::new();
    let mut files = BTreeMap::new();
    for (id, e) in entries {
        let reg = index.and_then(|i| i.regs.get(&id)).ok_or_else(|| {
            bad(format!(
                "files.img: tun file {id} has no REG entry (its path)"
            ))
        })?;
        let mut lf = 0;
        if let Some(name) = &e.netdev {
            let ns = e.ns_id.or(root_ns).ok_or_else(|| {
                bad(format!(
                    "tun file {id} names no network namespace, nor does the root"
                ))
            })?;
            if let std::collections::btree_map::Entry::Vacant(v) = flags_of.entry(ns) {
                v.insert(link_flags(dir, ns)?);
            }
            lf = flags_of
                .get(&ns)
                .and_then(|m| m.get(name))
                .copied()
                .ok_or_else(|| {
                    bad(format!(
                        "tun file {id} is attached to link {name}, which netdev-{ns}.img does not have as a tun/tap link"
                    ))
                })?;
        }
        let holder = ctx
            .live()
            .find(|(_, fds)| fds.iter().any(|f| f.r#type == fd_types::TUNF && f.id == id))
            .map(|(pid, _)| pid)
            .ok_or_else(|| bad(format!("tun file {id} is held by no process of the tree")))?;
        let f = TunFile {
            e,
            path: PathBuf::from(&reg.name),
            flags: reg.flags,
            link_flags: lf,
        };
        files.insert(id, (f, holder));
    }
    if let Some(id) = ctx
        .ids_of_type(fd_types::TUNF)
        .into_iter()
        .find(|id| !files.contains_key(id))
    {
        return Err(bad(format!(
            "an fd refers to tun file {id}, which files.img does not have"
        )));
    }
    Ok(Box::new(TunFiles { files }))
}

/// Open tun file `f` and attach it as it was (this thread is in the
/// tree's network namespace).
fn open_one(f: &TunFile) -> Result<OwnedFd, Error> {
    let me = crust_sys::process::getpid();
    let id = f.e.id;
    let path = crate::util::view::host_path(&f.path).unwrap_or_else(|| f.path.clone());
    let access = f.flags & libc::O_ACCMODE as u32;
    let file = std::fs::OpenOptions::new()
        .read(access != libc::O_WRONLY as u32)
        .write(access != libc::O_RDONLY as u32)
        .custom_flags((f.flags & !(libc::O_ACCMODE | libc::O_CREAT | libc::O_TRUNC) as u32) as i32)
        .open(&path)
        .map_err(sys_err(
            me,
            format!("open {} for tun file {id}", path.display()),
        ))?;
    let fd: OwnedFd = file.into();
    let Some(name) = &f.e.netdev else {
        return Ok(fd);
    };
    let err = |what: String| sys_err(me, format!("tun file {id}: {what} link {name}"));
    t::set_iff(fd.as_fd(), name, f.link_flags).map_err(err("attach it (TUNSETIFF) to".into()))?;
    if f.e.detached == Some(true) {
        t::set_queue(fd.as_fd(), t::IFF_DETACH_QUEUE).map_err(err("detach its queue of".into()))?;
    }
    if f.link_flags & t::IFF_PERSIST == 0 {
        t::set_persist(fd.as_fd(), false).map_err(err("drop the persistence of".into()))?;
    }
    Ok(fd)
}

impl RestoreKind for TunFiles {
    fn name(&self) -> &'static str {
        "tun files"
    }

    /// Nothing is made yet: each file is made once its holder exists, in
    /// its network namespace ([`OpenTun::make_late`]).
    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(OpenTun {
            files: std::mem::take(&mut self.files),
            fds: MadeFds::default(),
        }))
    }
}

/// The tun files, made late.
pub(crate) struct OpenTun {
    files: BTreeMap<u32, (TunFile, i32)>,
    fds: MadeFds,
}

impl OpenKind for OpenTun {
    fn fd(&self, id: u32) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fds.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == fd_types::TUNF).then_some("tun file")
    }

    fn late(&self, id: u32) -> bool {
        self.files.contains_key(&id)
    }

    fn make_late(&mut self, host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        for (&id, (f, holder)) in &self.files {
            let host = host_pid(*holder as u32).ok_or_else(|| Error::Restore {
                pid: *holder,
                what: format!("it holds tun file {id}, but it was not restored"),
            })?;
            let ns = std::fs::File::open(format!("/proc/{host}/ns/net"))
                .map_err(sys_err(host, "open its network namespace"))?;
            let fd = crate::net::in_netns_file(&ns, || open_one(f))?;
            self.fds.insert(id, fd);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_link_names_are_refused() {
        let e = |n: &str| TunfileEntry {
            id: 1,
            netdev: Some(n.into()),
            ..Default::default()
        };
        assert!(check_entry(&e("tun0")).is_ok());
        assert!(check_entry(&e("")).is_err());
        assert!(check_entry(&e("a/b")).is_err());
        assert!(check_entry(&e("0123456789abcdefg")).is_err());
        assert!(check_entry(&TunfileEntry::default()).is_ok());
    }
}
