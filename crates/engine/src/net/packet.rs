//! Packet sockets (AF_PACKET), as CRIU's PACKETSK entries of files.img.
//!
//! Dump: type, protocol, bound interface, the packet options (version,
//! reserve, timestamp, copy threshold, auxdata, origdev, vnet_hdr, loss),
//! the memberships (PACKET_ADD_MEMBERSHIP), the fanout group and the rings
//! come from PACKET_DIAG (sock_diag); the socket options (SO_*, the BPF
//! filter) and status flags from a copy of the socket crust takes with
//! pidfd_getfd. A membership added n times is written as n entries (CRIU
//! refuses a count above one), which adding each again restores. The rx
//! and tx rings (PACKET_RX_RING/PACKET_TX_RING) keep their parameters; a
//! mapping of them is a VMA_AREA_SOCKET VMA of mm.img (see [`crate::mem`]),
//! whose frames are not kept: the ring comes back empty, as with CRIU.
//! SOCK_PACKET sockets (the obsolete interface) keep their protocol, the
//! interface they are bound to and their socket options, as CRIU keeps
//! them. Queued packets are not kept (CRIU does not either).
//!
//! Restore: crust makes each socket before any task exists: socket with
//! the recorded protocol, bind to the interface, the packet options,
//! memberships, rings (for CRIU images that have them), fanout, then socket
//! options and status flags. Tasks get them with [`crate::files::fdpass`].

use crate::files::kind::dump::{DumpFd, DumpKind, Ids};
use crate::files::kind::{LoadCtx, Made, MadeOf, OpenKind, RestoreKind};
use crate::net::netlink::{attrs, diag_dump, u16_at, u32_at};
use crate::net::sock::{dump_sk_opts, set_sk_opts};
use crate::net::SkNetns;
use crate::util::sys_err;
use crate::Error;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::fown::FownEntry;
use crust_images::proto::packet_sock::{PacketMclist, PacketRing, PacketSockEntry};
use crust_sys::{net, rawsk};
use log::debug;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

// linux/if_packet.h option numbers.
const PACKET_ADD_MEMBERSHIP: i32 = 1;
const PACKET_RX_RING: i32 = 5;
const PACKET_COPY_THRESH: i32 = 7;
const PACKET_AUXDATA: i32 = 8;
const PACKET_ORIGDEV: i32 = 9;
const PACKET_VERSION: i32 = 10;
const PACKET_RESERVE: i32 = 12;
const PACKET_TX_RING: i32 = 13;
const PACKET_LOSS: i32 = 14;
const PACKET_VNET_HDR: i32 = 15;
const PACKET_TIMESTAMP: i32 = 17;
const PACKET_FANOUT: i32 = 18;

/// SOCK_PACKET: the obsolete packet interface (type 10).
const SOCK_PACKET: i32 = 10;

// Membership types.
const PACKET_MR_MULTICAST: u32 = 0;
const PACKET_MR_PROMISC: u32 = 1;
const PACKET_MR_ALLMULTI: u32 = 2;
const PACKET_MR_UNICAST: u32 = 3;
/// MAX_ADDR_LEN: room for a hardware address in a membership.
const MAX_ADDR_LEN: usize = 32;

// PACKET_DIAG request bits and attributes (linux/packet_diag.h).
/// PACKET_SHOW_INFO | MCLIST | RING_CFG | FANOUT.
const PACKET_SHOW: u32 = 0x1 | 0x2 | 0x4 | 0x8;
const PACKET_DIAG_INFO: u16 = 0;
const PACKET_DIAG_MCLIST: u16 = 1;
const PACKET_DIAG_RX_RING: u16 = 2;
const PACKET_DIAG_TX_RING: u16 = 3;
const PACKET_DIAG_FANOUT: u16 = 4;
// pdi_flags.
const PDI_AUXDATA: u32 = 0x2;
const PDI_ORIGDEV: u32 = 0x4;
const PDI_VNETHDR: u32 = 0x8;
const PDI_LOSS: u32 = 0x10;
/// Sizes of packet_diag_msg, packet_diag_info, packet_diag_mclist and
/// packet_diag_ring.
const DIAG_MSG_LEN: usize = 16;
const DIAG_INFO_LEN: usize = 24;
const DIAG_MC_LEN: usize = 12 + MAX_ADDR_LEN;
const DIAG_RING_LEN: usize = 28;

/// One membership of a packet socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub ifindex: u32,
    pub count: u32,
    pub ty: u32,
    pub addr: Vec<u8>,
}

/// What PACKET_DIAG says of one socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketDiag {
    pub ino: u32,
    pub ty: u32,
    /// Protocol, host byte order (pdiag_num).
    pub num: u16,
    pub ifindex: u32,
    pub version: u32,
    pub reserve: u32,
    pub copy_thresh: u32,
    pub tstamp: u32,
    pub flags: u32,
    pub mclist: Vec<Membership>,
    pub fanout: Option<u32>,
    /// block_size, block_nr, frame_size, frame_nr, retire_tmo,
    /// sizeof_priv, features.
    pub rx_ring: Option<[u32; 7]>,
    pub tx_ring: Option<[u32; 7]>,
}

/// The packet_diag_req of a dump of every packet socket.
fn packet_diag_req() -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.push(libc::AF_PACKET as u8);
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes()); // ino
    b.extend_from_slice(&PACKET_SHOW.to_ne_bytes());
    b.extend_from_slice(&[0xff; 8]); // no cookie
    b
}

fn ring(d: &[u8]) -> Result<[u32; 7], String> {
    if d.len() < DIAG_RING_LEN {
        return Err(format!("short packet_diag_ring ({} bytes)", d.len()));
    }
    let mut r = [0u32; 7];
    for (i, v) in r.iter_mut().enumerate() {
        *v = u32_at(d, i * 4).unwrap_or(0);
    }
    Ok(r)
}

/// Parse one packet_diag_msg and its attributes.
pub fn parse_packet_diag(b: &[u8]) -> Result<PacketDiag, String> {
    if b.len() < DIAG_MSG_LEN {
        return Err(format!("short packet_diag_msg ({} bytes)", b.len()));
    }
    let mut p = PacketDiag {
        ty: b[1] as u32,
        num: u16_at(b, 2).unwrap_or(0),
        ino: u32_at(b, 4).unwrap_or(0),
        ..Default::default()
    };
    let here = |e: String| format!("packet socket {}: {e}", u32_at(b, 4).unwrap_or(0));
    let mut info = false;
    for (ty, d) in attrs(b, DIAG_MSG_LEN).map_err(here)? {
        match ty {
            PACKET_DIAG_INFO => {
                if d.len() < DIAG_INFO_LEN {
                    return Err(here(format!("short packet_diag_info ({} bytes)", d.len())));
                }
                let at = |i: usize| u32_at(d, i * 4).unwrap_or(0);
                p.ifindex = at(0);
                p.version = at(1);
                p.reserve = at(2);
                p.copy_thresh = at(3);
                p.tstamp = at(4);
                p.flags = at(5);
                info = true;
            }
            PACKET_DIAG_MCLIST => {
                if d.len() % DIAG_MC_LEN != 0 {
                    return Err(here(format!("membership list of {} bytes", d.len())));
                }
                for m in d.chunks_exact(DIAG_MC_LEN) {
                    let alen = (u16_at(m, 10).unwrap_or(0) as usize).min(MAX_ADDR_LEN);
                    p.mclist.push(Membership {
                        ifindex: u32_at(m, 0).unwrap_or(0),
                        count: u32_at(m, 4).unwrap_or(0),
                        ty: u16_at(m, 8).unwrap_or(0) as u32,
                        addr: m[12..12 + alen].to_vec(),
                    });
                }
            }
            PACKET_DIAG_RX_RING => p.rx_ring = Some(ring(d).map_err(here)?),
            PACKET_DIAG_TX_RING => p.tx_ring = Some(ring(d).map_err(here)?),
            PACKET_DIAG_FANOUT => p.fanout = u32_at(d, 0),
            _ => {}
        }
    }
    if !info {
        return Err(here("no PACKET_DIAG_INFO".into()));
    }
    Ok(p)
}

/// Every packet socket of network namespace `ns`, by inode.
fn diag_all(ns: &SkNetns) -> Result<HashMap<u32, PacketDiag>, Error> {
    let mut out = HashMap::new();
    diag_dump("PACKET_DIAG", ns, &packet_diag_req(), |m| {
        let d = parse_packet_diag(m)?;
        out.insert(d.ino, d);
        Ok(())
    })?;
    Ok(out)
}

/// The image's memberships for a socket's list: a membership added
/// `count` times is `count` entries.
fn mclist_entries(here: &str, list: &[Membership]) -> Result<Vec<PacketMclist>, Error> {
    let mut out = Vec::new();
    for m in list {
        let addr = match m.ty {
            PACKET_MR_MULTICAST | PACKET_MR_UNICAST => m.addr.clone(),
            PACKET_MR_PROMISC | PACKET_MR_ALLMULTI => Vec::new(),
            t => {
                return Err(Error::unsupported(format!(
                    "{here} has a membership of unknown type {t}"
                )))
            }
        };
        for _ in 0..m.count.clamp(1, 1024) {
            out.push(PacketMclist {
                index: m.ifindex,
                r#type: m.ty,
                addr: addr.clone(),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------- dump

/// Packet sockets of a dumped tree.
#[derive(Default)]
pub struct PacketDump {
    /// files.img id by inode.
    ids: HashMap<u32, u32>,
    /// PACKET_DIAG answer, read when the first socket is met.
    diag: Option<HashMap<u32, PacketDiag>>,
    /// The network namespace of the tree's sockets.
    pub netns: SkNetns,
}

/// The image's packet_ring of a packet_diag_ring.
fn ring_entry(r: [u32; 7]) -> PacketRing {
    let [block_size, block_nr, frame_size, frame_nr, retire_tmo, sizeof_priv, features] = r;
    PacketRing {
        block_size,
        block_nr,
        frame_size,
        frame_nr,
        retire_tmo,
        sizeof_priv,
        features,
        ..Default::default()
    }
}

impl PacketDump {
    /// The files.img id of socket inode `ino` if it was seen already.
    pub fn known(&self, ino: u32) -> Option<u32> {
        self.ids.get(&ino).copied()
    }

    /// Bytes an mmap of the rings of socket `ino` (seen already) spans:
    /// the rx ring's blocks then the tx ring's, as the kernel lays them
    /// out.
    pub fn rings_len(&self, ino: u32) -> Option<u64> {
        let d = self.diag.as_ref()?.get(&ino)?;
        Some(
            [d.rx_ring, d.tx_ring]
                .iter()
                .flatten()
                .map(|r| r[0] as u64 * r[1] as u64)
                .sum(),
        )
    }

    /// Dump the packet socket on fd `fd` of `pid` (`sock`: crust's copy
    /// of it; inode `ino`, status flags `flags`) as files.img entry `id`.
    pub fn add(
        &mut self,
        pid: i32,
        fd: i32,
        sock: OwnedFd,
        ino: u32,
        flags: u32,
        id: u32,
    ) -> Result<FileEntry, Error> {
        let here = format!("process {pid} fd {fd} (packet socket {ino})");
        let ns = self.netns.clone();
        let mine = ns.of_socket(sock.as_fd());
        if mine.is_other(&ns) {
            return Err(Error::unsupported(format!(
                "{here} is in network namespace {} of the tree, not its root's: crust restores packet sockets of the root's network namespace only",
                mine.id
            )));
        }
        let d = crate::net::netlink::diag_of(&mut self.diag, ino, || diag_all(&ns))?.ok_or_else(
            || {
                Error::unsupported(format!(
                    "{here} is not in {} (a tree's processes share one network namespace)",
                    ns.describe()
                ))
            },
        )?;
        let mclist = mclist_entries(&here, &d.mclist)?;
        let opts = dump_sk_opts(sock.as_fd())
            .map_err(sys_err(pid, format!("socket options of fd {fd}")))?;
        debug!(
            "{here}: type {} protocol {:#06x} ifindex {} version {} flags {:#x} fanout {:?}, {} memberships",
            d.ty,
            d.num,
            d.ifindex,
            d.version,
            d.flags,
            d.fanout,
            mclist.len()
        );
        self.ids.insert(ino, id);
        Ok(FileEntry {
            r#type: fd_types::PACKETSK,
            id,
            psk: Some(Box::new(PacketSockEntry {
                id,
                r#type: d.ty,
                // The image keeps the protocol as socket(2) takes it:
                // network byte order.
                protocol: d.num.to_be() as u32,
                flags: flags & !(libc::O_CLOEXEC as u32),
                ifindex: d.ifindex,
                fown: FownEntry::default(),
                opts,
                version: d.version,
                reserve: d.reserve,
                aux_data: d.flags & PDI_AUXDATA != 0,
                orig_dev: d.flags & PDI_ORIGDEV != 0,
                vnet_hdr: d.flags & PDI_VNETHDR != 0,
                loss: d.flags & PDI_LOSS != 0,
                timestamp: d.tstamp,
                copy_thresh: d.copy_thresh,
                mclist,
                fanout: d.fanout,
                rx_ring: d.rx_ring.map(ring_entry),
                tx_ring: d.tx_ring.map(ring_entry),
                ..Default::default()
            })),
            ..Default::default()
        })
    }
}

// ---------------------------------------------------------------- restore

/// The packet sockets of an image set, by files.img id.
#[derive(Debug, Default)]
pub struct PacketFiles {
    socks: BTreeMap<u32, PacketSockEntry>,
}

/// Packet sockets crust made, by files.img id.
pub type OpenPackets = crate::files::fdpass::MadeFds;

/// Whether an image of `e` can be restored; the reason if not.
fn check_entry(e: &PacketSockEntry) -> Result<(), String> {
    let ty = e.r#type as i32;
    if ty != libc::SOCK_RAW && ty != libc::SOCK_DGRAM && ty != SOCK_PACKET {
        return Err(format!("unknown socket type {}", e.r#type));
    }
    if e.protocol > u16::MAX as u32 {
        return Err(format!("protocol {:#x} does not fit 16 bits", e.protocol));
    }
    if e.ifindex > i32::MAX as u32 {
        return Err(format!("interface index {} is out of range", e.ifindex));
    }
    for m in &e.mclist {
        if m.addr.len() > MAX_ADDR_LEN {
            return Err(format!(
                "a membership address of {} bytes (at most {MAX_ADDR_LEN})",
                m.addr.len()
            ));
        }
        if m.r#type > PACKET_MR_UNICAST {
            return Err(format!("a membership of unknown type {}", m.r#type));
        }
    }
    Ok(())
}

impl PacketFiles {
    /// Read and check the PACKETSK entries of files.img.
    pub fn load(
        dir: &Path,
        loaded: &crate::files::loaded::LoadedFiles,
    ) -> Result<PacketFiles, Error> {
        let socks = crate::util::load_kind(
            dir,
            loaded.entries()?,
            fd_types::PACKETSK,
            "packet socket",
            |f| f.psk.map(|e| (e.id, *e)),
            check_entry,
        )?;
        Ok(PacketFiles { socks })
    }

    /// Make every packet socket.
    pub fn open(&self) -> Result<OpenPackets, Error> {
        let me = crust_sys::process::getpid();
        let mut out = OpenPackets::default();
        for (id, e) in &self.socks {
            let s = open_one(e).map_err(|(op, source)| Error::Sys {
                pid: me,
                op: format!(
                    "making packet socket {id} (type {}, protocol {:#06x}): {op}",
                    e.r#type,
                    (e.protocol as u16).swap_bytes(),
                ),
                source,
            })?;
            out.insert(*id, s);
        }
        Ok(out)
    }
}

type OpResult<T> = Result<T, (String, std::io::Error)>;

fn at(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> (String, std::io::Error) {
    let op = op.into();
    move |e| (op, e)
}

/// A packet_mreq_max: ifindex, type, address length, address.
fn mreq_bytes(m: &PacketMclist) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + MAX_ADDR_LEN);
    b.extend_from_slice(&(m.index as i32).to_ne_bytes());
    b.extend_from_slice(&(m.r#type as u16).to_ne_bytes());
    b.extend_from_slice(&(m.addr.len() as u16).to_ne_bytes());
    let mut addr = [0u8; MAX_ADDR_LEN];
    addr[..m.addr.len()].copy_from_slice(&m.addr);
    b.extend_from_slice(&addr);
    b
}

/// A tpacket_req3 of `r`.
fn ring_bytes(r: &PacketRing) -> Vec<u8> {
    [
        r.block_size,
        r.block_nr,
        r.frame_size,
        r.frame_nr,
        r.retire_tmo,
        r.sizeof_priv,
        r.features,
    ]
    .iter()
    .flat_map(|v| v.to_ne_bytes())
    .collect()
}

/// A SOCK_PACKET socket, as CRIU restores one: bound by the name of its
/// interface (if it was bound), its socket options and status flags (it
/// has none of the packet options).
fn open_spkt(e: &PacketSockEntry) -> OpResult<OwnedFd> {
    let s = net::socket(libc::AF_PACKET, SOCK_PACKET, e.protocol as i32).map_err(at("socket"))?;
    let sf = s.as_fd();
    if e.ifindex > 0 {
        let dev = rawsk::if_name(e.ifindex).map_err(at(format!(
            "the name of interface index {}, which may not exist in this network namespace,",
            e.ifindex
        )))?;
        rawsk::spkt_bind(sf, &dev).map_err(at(format!("bind to {dev}")))?;
    }
    set_sk_opts(sf, &e.opts).map_err(at("socket options"))?;
    let keep = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
    crust_sys::pipe::set_status_flags(sf, (e.flags & keep) as i32).map_err(at("F_SETFL"))?;
    Ok(s)
}

fn open_one(e: &PacketSockEntry) -> OpResult<OwnedFd> {
    if e.r#type as i32 == SOCK_PACKET {
        return open_spkt(e);
    }
    let s =
        net::socket(libc::AF_PACKET, e.r#type as i32, e.protocol as i32).map_err(at("socket"))?;
    let sf = s.as_fd();
    // Protocol 0: the one the socket was made with.
    rawsk::packet_bind(sf, 0, e.ifindex as i32).map_err(|err| {
        let why = if err.raw_os_error() == Some(libc::ENODEV) {
            format!(
                "bind to interface index {}, which does not exist in this network namespace,",
                e.ifindex
            )
        } else {
            format!("bind to interface index {}", e.ifindex)
        };
        (why, err)
    })?;
    let set = |opt: i32, v: u32, name: &str| {
        net::setsockopt_int(sf, libc::SOL_PACKET, opt, v as i32).map_err(at(format!("{name} {v}")))
    };
    set(PACKET_VERSION, e.version, "PACKET_VERSION")?;
    if e.reserve != 0 {
        set(PACKET_RESERVE, e.reserve, "PACKET_RESERVE")?;
    }
    if e.timestamp != 0 {
        set(PACKET_TIMESTAMP, e.timestamp, "PACKET_TIMESTAMP")?;
    }
    if e.copy_thresh != 0 {
        set(PACKET_COPY_THRESH, e.copy_thresh, "PACKET_COPY_THRESH")?;
    }
    for (on, opt, name) in [
        (e.aux_data, PACKET_AUXDATA, "PACKET_AUXDATA"),
        (e.orig_dev, PACKET_ORIGDEV, "PACKET_ORIGDEV"),
        (e.vnet_hdr, PACKET_VNET_HDR, "PACKET_VNET_HDR"),
        (e.loss, PACKET_LOSS, "PACKET_LOSS"),
    ] {
        if on {
            set(opt, 1, name)?;
        }
    }
    for m in &e.mclist {
        net::setsockopt(sf, libc::SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq_bytes(m)).map_err(
            at(format!(
                "PACKET_ADD_MEMBERSHIP (type {}, interface index {})",
                m.r#type, m.index
            )),
        )?;
    }
    for (r, opt, name) in [
        (&e.rx_ring, PACKET_RX_RING, "PACKET_RX_RING"),
        (&e.tx_ring, PACKET_TX_RING, "PACKET_TX_RING"),
    ] {
        if let Some(r) = r {
            net::setsockopt(sf, libc::SOL_PACKET, opt, &ring_bytes(r)).map_err(at(name))?;
        }
    }
    if let Some(f) = e.fanout {
        set(PACKET_FANOUT, f, "PACKET_FANOUT")?;
    }
    set_sk_opts(sf, &e.opts).map_err(at("socket options"))?;
    let keep = (libc::O_NONBLOCK | libc::O_ASYNC) as u32;
    crust_sys::pipe::set_status_flags(sf, (e.flags & keep) as i32).map_err(at("F_SETFL"))?;
    Ok(s)
}

// ------------------------------------------------------------ kind of file

/// Packet sockets as a kind of file (see [`crate::files::kind`]).
pub(crate) fn load_kind(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(PacketFiles::load(ctx.dir, ctx.files)?))
}

impl RestoreKind for PacketFiles {
    fn name(&self) -> &'static str {
        "packet sockets"
    }

    fn make(&mut self, _made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        Ok(Box::new(MadeOf {
            fds: self.open()?,
            what: "packet socket",
            types: &[fd_types::PACKETSK],
        }))
    }
}

impl DumpKind for PacketDump {
    fn claim(
        &mut self,
        f: &mut DumpFd<'_>,
        ids: &mut Ids<'_>,
    ) -> Result<Option<(u32, i32)>, Error> {
        let Some((ino, sock)) = f.socket_of(&[libc::AF_PACKET]) else {
            return Ok(None);
        };
        let (pid, fd, flags) = (f.pid, f.fd, f.info.flags);
        let known = self.known(ino);
        let id = ids.id_for(known, |_, id| {
            self.add(pid, fd, sock, ino, flags, id).map(Some)
        })?;
        Ok(Some((id, fd_types::PACKETSK)))
    }

    fn mapped_len(&self, ino: u32) -> Option<(u32, u64)> {
        Some((self.known(ino)?, self.rings_len(ino)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(data);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn words(v: &[u32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_ne_bytes()).collect()
    }

    fn made_up() -> Vec<u8> {
        let mut b = vec![libc::AF_PACKET as u8, libc::SOCK_RAW as u8];
        b.extend_from_slice(&0x0003u16.to_ne_bytes()); // ETH_P_ALL
        b.extend_from_slice(&4242u32.to_ne_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend(attr(
            PACKET_DIAG_INFO,
            &words(&[1, 1, 64, 128, 16, 0x1 | 0x2 | 0x10]),
        ));
        let mut mc = words(&[1, 2]);
        mc.extend_from_slice(&(PACKET_MR_MULTICAST as u16).to_ne_bytes());
        mc.extend_from_slice(&6u16.to_ne_bytes());
        let mut addr = [0u8; MAX_ADDR_LEN];
        addr[..6].copy_from_slice(&[1, 0, 0x5e, 0x7f, 0, 1]);
        mc.extend_from_slice(&addr);
        b.extend(attr(PACKET_DIAG_MCLIST, &mc));
        b.extend(attr(PACKET_DIAG_FANOUT, &0x0001_1234u32.to_ne_bytes()));
        b.extend(attr(
            PACKET_DIAG_RX_RING,
            &words(&[4096, 4, 2048, 8, 0, 0, 0]),
        ));
        b
    }

    #[test]
    fn parses_a_made_up_answer() {
        let p = parse_packet_diag(&made_up()).unwrap();
        assert_eq!(p.ino, 4242);
        assert_eq!((p.ty, p.num, p.ifindex), (libc::SOCK_RAW as u32, 3, 1));
        assert_eq!(
            (p.version, p.reserve, p.copy_thresh, p.tstamp),
            (1, 64, 128, 16)
        );
        assert_eq!(p.flags, 0x13);
        assert_eq!(p.fanout, Some(0x0001_1234));
        assert_eq!(p.rx_ring, Some([4096, 4, 2048, 8, 0, 0, 0]));
        assert_eq!(p.tx_ring, None);
        assert_eq!(
            p.mclist,
            vec![Membership {
                ifindex: 1,
                count: 2,
                ty: PACKET_MR_MULTICAST,
                addr: vec![1, 0, 0x5e, 0x7f, 0, 1],
            }]
        );
        let l = mclist_entries("x", &p.mclist).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(mreq_bytes(&l[0]).len(), 40);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_packet_diag(&[0; 8]).is_err());
        // No PACKET_DIAG_INFO.
        assert!(parse_packet_diag(&made_up()[..DIAG_MSG_LEN]).is_err());
        let mut b = made_up()[..DIAG_MSG_LEN].to_vec();
        b.extend(attr(PACKET_DIAG_INFO, &words(&[1, 2])));
        assert!(parse_packet_diag(&b).unwrap_err().contains("short"));
        let mut b = made_up();
        b.extend(attr(PACKET_DIAG_MCLIST, &[0; 10]));
        assert!(parse_packet_diag(&b).is_err());
        let bad = Membership {
            ty: 9,
            count: 1,
            ..Default::default()
        };
        assert!(mclist_entries("x", &[bad]).is_err());
    }

    #[test]
    fn live_socket_round_trip() {
        // A SOCK_DGRAM packet socket bound to lo with options and a
        // membership, read back through PACKET_DIAG, made again.
        let ty = libc::SOCK_DGRAM as u32;
        let e = PacketSockEntry {
            id: 1,
            r#type: ty,
            protocol: 0x0800u16.to_be() as u32,
            ifindex: 1,
            version: 1,
            reserve: 32,
            aux_data: true,
            timestamp: 16,
            copy_thresh: 0,
            mclist: vec![PacketMclist {
                index: 1,
                r#type: PACKET_MR_ALLMULTI,
                addr: Vec::new(),
                ..Default::default()
            }],
            fanout: Some(0x7a51),
            ..Default::default()
        };
        let s = open_one(&e).unwrap();
        let ino = {
            use std::os::fd::AsRawFd;
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd()))
                .unwrap()
                .ino() as u32
        };
        let all = diag_all(&SkNetns::default()).unwrap();
        let d = &all[&ino];
        assert_eq!((d.ty, d.num, d.ifindex), (ty, 0x0800, 1));
        assert_eq!((d.version, d.reserve, d.tstamp), (1, 32, 16));
        assert_eq!(d.flags & PDI_AUXDATA, PDI_AUXDATA);
        assert_eq!(d.fanout, Some(0x7a51));
        assert_eq!(d.mclist.len(), 1);
        assert_eq!(d.mclist[0].ty, PACKET_MR_ALLMULTI);
        let bad = PacketSockEntry {
            ifindex: 99999,
            ..e
        };
        let (op, err) = open_one(&bad).unwrap_err();
        assert!(op.contains("99999"), "{op}");
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }
}
