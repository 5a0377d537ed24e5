//! Image files: magics, framing, readers and writers.
//!
//! An image file is a header (the common or service magic, then the type's
//! own magic; `inventory.img` has only its own magic; `pages-N.img` has none)
//! followed by entries, each a little-endian `u32` length and one protobuf
//! message, sometimes followed by raw payload bytes (see [`Payload`]).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::proto::*;
use crate::wire::{DecodeError, Message, Reader};

/// Prefix magic of ordinary images.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Prefix magic of service images (stats, irmap-cache).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// Magic of raw images (no header at all).
pub const RAW_IMAGE_MAGIC: u32 = 0;

/// What precedes the entries of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// Only the type's own magic (inventory).
    Own,
    /// IMG_COMMON_MAGIC then the type's magic.
    Common,
    /// IMG_SERVICE_MAGIC then the type's magic.
    Service,
    /// No header: raw data (pages, tarballs, ip tool dumps).
    Raw,
}

/// Raw bytes that follow some entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Entries only.
    None,
    /// `pipe_data_entry.bytes` bytes after each entry (pipes-data, fifo-data).
    PipeData,
    /// `sk_packet_entry.length` bytes after each entry (sk-queues).
    SkQueue,
    /// `inq_len` then `outq_len` bytes after the entry (tcp-stream).
    TcpStream,
    /// A `ghost_file_entry`; then either the whole file content, or (when
    /// `chunks` is set) `ghost_chunk_entry`s each followed by `len` bytes.
    GhostFile,
    /// A `pagemap_head`, then `pagemap_entry`s.
    Pagemap,
    /// `ipc_shm_entry.size` bytes padded to 4 (unless `in_pagemaps`).
    IpcShm,
    /// `nsems` u16 values padded to 8 bytes.
    IpcSem,
    /// `qnum` times: u32 length, `ipc_msg`, `msize` bytes padded to 8.
    IpcMsg,
    /// `keys_bytes + values_bytes` bytes.
    BpfmapData,
    /// The whole file is raw data.
    Raw,
}

macro_rules! image_types {
    ($( $var:ident, $name:literal, $pat:literal, $magic:literal, $hdr:ident, $payload:ident, $msg:ty; )*) => {
        /// Every kind of image file CRIU writes.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ImageType { $( $var, )* }

        impl ImageType {
            /// All image types, in table order.
            pub const ALL: &'static [ImageType] = &[$( ImageType::$var, )*];

            /// The name crit shows as `magic` (e.g. `CORE`).
            pub fn name(self) -> &'static str {
                match self { $( ImageType::$var => $name, )* }
            }

            /// File name pattern as CRIU formats it (`core-%u.img`).
            pub fn file_pattern(self) -> &'static str {
                match self { $( ImageType::$var => $pat, )* }
            }

            /// The type's own magic (0 for raw images).
            pub fn magic(self) -> u32 {
                match self { $( ImageType::$var => $magic, )* }
            }

            pub fn header(self) -> Header {
                match self { $( ImageType::$var => Header::$hdr, )* }
            }

            pub fn payload(self) -> Payload {
                match self { $( ImageType::$var => Payload::$payload, )* }
            }

            /// Name of the main entry message (`core_entry`), or "" for raw images.
            pub fn message_name(self) -> &'static str {
                match self { $( ImageType::$var => <$msg as Message>::NAME, )* }
            }

            /// Call `v` with the entry message type of this image.
            /// (Pagemap images hold one `PagemapHead` first, ghost-file
            /// images one `GhostFileEntry`: see [`ImageType::visit_entry`].)
            pub fn visit_message<V: MessageVisitor>(self, v: V) -> V::Out {
                match self { $( ImageType::$var => v.visit::<$msg>(), )* }
            }
        }
    };
}

/// A "generic closure" over message types, for code that handles any image.
pub trait MessageVisitor {
    type Out;
    fn visit<M: Message + Clone + std::fmt::Debug + PartialEq>(self) -> Self::Out;
}

/// Stand-in message for raw images: no fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawData;
impl Message for RawData {
    const NAME: &'static str = "";
    fn encode(&self, _out: &mut Vec<u8>) {}
    fn encoded_len(&self) -> usize {
        0
    }
    fn decode_depth(_buf: &[u8], _depth: u32) -> Result<Self, DecodeError> {
        Ok(RawData)
    }
    fn to_json(&self, _cx: crate::wire::Cx, out: &mut String) {
        out.push_str("{}");
    }
    fn from_json(_j: &crate::wire::Json) -> Result<Self, crate::wire::JsonErr> {
        Ok(RawData)
    }
}

image_types! {
    Inventory, "INVENTORY", "inventory.img", 0x58313116, Own, None, InventoryEntry;
    Fdinfo, "FDINFO", "fdinfo-%u.img", 0x56213732, Common, None, FdinfoEntry;
    Pagemap, "PAGEMAP", "pagemap-%u.img", 0x56084025, Common, Pagemap, PagemapEntry;
    ShmemPagemap, "PAGEMAP", "pagemap-shmem-%u.img", 0x56084025, Common, Pagemap, PagemapEntry;
    RegFiles, "REG_FILES", "reg-files.img", 0x50363636, Common, None, RegFileEntry;
    ExtFiles, "EXT_FILES", "ext-files.img", 0x59255641, Common, None, ExtFileEntry;
    NsFiles, "NS_FILES", "ns-files.img", 0x61394011, Common, None, NsFileEntry;
    EventfdFile, "EVENTFD_FILE", "eventfd.img", 0x44523722, Common, None, EventfdFileEntry;
    EventpollFile, "EVENTPOLL_FILE", "eventpoll.img", 0x45023858, Common, None, EventpollFileEntry;
    EventpollTfd, "EVENTPOLL_TFD", "eventpoll-tfd.img", 0x44433746, Common, None, EventpollTfdEntry;
    Signalfd, "SIGNALFD", "signalfd.img", 0x57323820, Common, None, SignalfdEntry;
    InotifyFile, "INOTIFY_FILE", "inotify.img", 0x48424431, Common, None, InotifyFileEntry;
    InotifyWd, "INOTIFY_WD", "inotify-wd.img", 0x54562009, Common, None, InotifyWdEntry;
    FanotifyFile, "FANOTIFY_FILE", "fanotify.img", 0x55096122, Common, None, FanotifyFileEntry;
    FanotifyMark, "FANOTIFY_MARK", "fanotify-mark.img", 0x56506035, Common, None, FanotifyMarkEntry;
    Core, "CORE", "core-%u.img", 0x55053847, Common, None, CoreEntry;
    Ids, "IDS", "ids-%u.img", 0x54432030, Common, None, TaskKobjIdsEntry;
    Mm, "MM", "mm-%u.img", 0x57492820, Common, None, MmEntry;
    Vmas, "VMAS", "vmas-%u.img", 0x54123737, Common, None, VmaEntry;
    Pipes, "PIPES", "pipes.img", 0x56513555, Common, None, PipeEntry;
    PipesData, "PIPES_DATA", "pipes-data.img", 0x56453709, Common, PipeData, PipeDataEntry;
    Fifo, "FIFO", "fifo.img", 0x58364939, Common, None, FifoEntry;
    FifoData, "FIFO_DATA", "fifo-data.img", 0x59333054, Common, PipeData, PipeDataEntry;
    Pstree, "PSTREE", "pstree.img", 0x50273030, Common, None, PstreeEntry;
    Sigact, "SIGACT", "sigacts-%u.img", 0x55344201, Common, None, SaEntry;
    Unixsk, "UNIXSK", "unixsk.img", 0x54373943, Common, None, UnixSkEntry;
    Inetsk, "INETSK", "inetsk.img", 0x56443851, Common, None, InetSkEntry;
    Packetsk, "PACKETSK", "packetsk.img", 0x60454618, Common, None, PacketSockEntry;
    NetlinkSk, "NETLINK_SK", "netlinksk.img", 0x58005614, Common, None, NetlinkSkEntry;
    SkQueues, "SK_QUEUES", "sk-queues.img", 0x56264026, Common, SkQueue, SkPacketEntry;
    Itimers, "ITIMERS", "itimers-%u.img", 0x57464056, Common, None, ItimerEntry;
    PosixTimers, "POSIX_TIMERS", "posix-timers-%u.img", 0x52603957, Common, None, PosixTimerEntry;
    Creds, "CREDS", "creds-%u.img", 0x54023547, Common, None, CredsEntry;
    Utsns, "UTSNS", "utsns-%u.img", 0x54473203, Common, None, UtsnsEntry;
    IpcVar, "IPC_VAR", "ipcns-var-%u.img", 0x53115007, Common, None, IpcVarEntry;
    IpcnsShm, "IPCNS_SHM", "ipcns-shm-%u.img", 0x46283044, Common, IpcShm, IpcShmEntry;
    IpcnsMsg, "IPCNS_MSG", "ipcns-msg-%u.img", 0x55453737, Common, IpcMsg, IpcMsgEntry;
    IpcnsSem, "IPCNS_SEM", "ipcns-sem-%u.img", 0x59573019, Common, IpcSem, IpcSemEntry;
    Fs, "FS", "fs-%u.img", 0x51403912, Common, None, FsEntry;
    RemapFpath, "REMAP_FPATH", "remap-fpath.img", 0x59133954, Common, None, RemapFilePathEntry;
    GhostFile, "GHOST_FILE", "ghost-file-%x.img", 0x52583605, Common, GhostFile, GhostFileEntry;
    MemfdInode, "MEMFD_INODE", "memfd.img", 0x48453499, Common, None, MemfdInodeEntry;
    TcpStream, "TCP_STREAM", "tcp-stream-%x.img", 0x51465506, Common, TcpStream, TcpStreamEntry;
    Mnts, "MNTS", "mountpoints-%u.img", 0x55563928, Common, None, MntEntry;
    Netdev, "NETDEV", "netdev-%u.img", 0x57373951, Common, None, NetDeviceEntry;
    Netns, "NETNS", "netns-%u.img", 0x55933752, Common, None, NetnsEntry;
    Ifaddr, "IFADDR", "ifaddr-%u.img", 0, Raw, Raw, RawData;
    Route, "ROUTE", "route-%u.img", 0, Raw, Raw, RawData;
    Route6, "ROUTE6", "route6-%u.img", 0, Raw, Raw, RawData;
    Rule, "RULE", "rule-%u.img", 0, Raw, Raw, RawData;
    Iptables, "IPTABLES", "iptables-%u.img", 0, Raw, Raw, RawData;
    Ip6tables, "IP6TABLES", "ip6tables-%u.img", 0, Raw, Raw, RawData;
    Nftables, "NFTABLES", "nftables-%u.img", 0, Raw, Raw, RawData;
    TmpfsImg, "TMPFS_IMG", "tmpfs-%u.tar.gz.img", 0, Raw, Raw, RawData;
    TmpfsDev, "TMPFS_DEV", "tmpfs-dev-%u.tar.gz.img", 0, Raw, Raw, RawData;
    Autofs, "AUTOFS", "autofs-%u.img", 0x49353943, Common, None, AutofsEntry;
    BinfmtMisc, "BINFMT_MISC", "binfmt-misc.img", 0x67343323, Common, None, BinfmtMiscEntry;
    TtyFiles, "TTY_FILES", "tty.img", 0x59433025, Common, None, TtyFileEntry;
    TtyInfo, "TTY_INFO", "tty-info.img", 0x59453036, Common, None, TtyInfoEntry;
    TtyData, "TTY_DATA", "tty-data.img", 0x59413026, Common, None, TtyDataEntry;
    FileLocks, "FILE_LOCKS", "filelocks.img", 0x54323616, Common, None, FileLockEntry;
    Rlimit, "RLIMIT", "rlimit-%u.img", 0x57113925, Common, None, RlimitEntry;
    Pages, "PAGES", "pages-%u.img", 0, Raw, Raw, RawData;
    Signal, "SIGNAL", "signal-s-%u.img", 0x59255647, Common, None, SignalQueueEntry;
    Psignal, "PSIGNAL", "signal-p-%u.img", 0x59255647, Common, None, SignalQueueEntry;
    Tunfile, "TUNFILE", "tunfile.img", 0x57143751, Common, None, TunfileEntry;
    Cgroup, "CGROUP", "cgroup.img", 0x59383330, Common, None, CgroupEntry;
    Timerfd, "TIMERFD", "timerfd.img", 0x50493712, Common, None, TimerfdEntry;
    Cpuinfo, "CPUINFO", "cpuinfo.img", 0x61404013, Common, None, CpuinfoEntry;
    Seccomp, "SECCOMP", "seccomp.img", 0x64413049, Common, None, SeccompEntry;
    Userns, "USERNS", "userns-%u.img", 0x55474906, Common, None, UsernsEntry;
    NetnfCt, "NETNF_CT", "netns-ct-%u.img", 0, Raw, Raw, RawData;
    NetnfExp, "NETNF_EXP", "netns-exp-%u.img", 0, Raw, Raw, RawData;
    Files, "FILES", "files.img", 0x56303138, Common, None, FileEntry;
    Timens, "TIMENS", "timens-%u.img", 0x43114433, Common, None, TimensEntry;
    Pidns, "PIDNS", "pidns-%u.img", 0x61157326, Common, None, PidnsEntry;
    BpfmapFile, "BPFMAP_FILE", "bpfmap-file.img", 0x57506142, Common, None, BpfmapFileEntry;
    BpfmapData, "BPFMAP_DATA", "bpfmap-data.img", 0x64324033, Common, BpfmapData, BpfmapDataEntry;
    Apparmor, "APPARMOR", "apparmor.img", 0x59423047, Common, None, ApparmorEntry;
    Pidfd, "PIDFD", "pidfd.img", 0x54435556, Common, None, PidfdEntry;
    // crust's own extension (no CRIU 4.2 image; CRIU never opens it): the
    // POSIX message queues of an IPC namespace. Its magic is none of CRIU's.
    CrustMqueue, "CRUST_MQUEUE", "crust-mqueue-%u.img", 0x43525351, Common, None, CrustMqueueEntry;
    // crust's own extension too: the huge-page ranges of a process's
    // private anonymous memory (`crust_thp`).
    CrustThp, "CRUST_THP", "crust-thp-%u.img", 0x43525448, Common, None, CrustThpEntry;
    Stats, "STATS", "stats-%s", 0x57093306, Service, None, StatsEntry;
    IrmapCache, "IRMAP_CACHE", "irmap-cache", 0x57004059, Service, None, IrmapCacheEntry;
}

impl ImageType {
    /// The type whose own magic is `magic` (the first in table order when
    /// several share one, e.g. PAGEMAP for pagemap-shmem). Raw (0) gives None.
    pub fn from_magic(magic: u32) -> Option<ImageType> {
        if magic == RAW_IMAGE_MAGIC {
            return None;
        }
        Self::ALL.iter().copied().find(|t| t.magic() == magic)
    }

    /// The type of a file named like CRIU names it (`core-1077.img`,
    /// `pagemap-shmem-11665.img`, `stats-dump`).
    pub fn from_file_name(name: &str) -> Option<ImageType> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| pattern_matches(t.file_pattern(), name))
    }

    /// Format the file name for a numeric id (`core` + 1077 -> `core-1077.img`).
    /// `%x` patterns get hex. Patterns without a placeholder ignore `id`.
    pub fn file_name(self, id: u64) -> String {
        let p = self.file_pattern();
        if let Some(i) = p.find('%') {
            let conv = p.as_bytes()[i + 1];
            let num = if conv == b'x' {
                format!("{id:x}")
            } else {
                id.to_string()
            };
            format!("{}{}{}", &p[..i], num, &p[i + 2..])
        } else {
            p.to_string()
        }
    }

    /// The header bytes this type's files start with.
    pub fn header_bytes(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8);
        match self.header() {
            Header::Own => v.extend_from_slice(&self.magic().to_le_bytes()),
            Header::Common => {
                v.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
                v.extend_from_slice(&self.magic().to_le_bytes());
            }
            Header::Service => {
                v.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
                v.extend_from_slice(&self.magic().to_le_bytes());
            }
            Header::Raw => {}
        }
        v
    }
}

fn pattern_matches(pat: &str, name: &str) -> bool {
    let Some(i) = pat.find('%') else {
        return pat == name;
    };
    let (pre, rest) = pat.split_at(i);
    let conv = rest.as_bytes()[1];
    let suf = &rest[2..];
    let Some(mid) = name.strip_prefix(pre).and_then(|n| n.strip_suffix(suf)) else {
        return false;
    };
    if mid.is_empty() {
        return false;
    }
    match conv {
        b's' => true,
        b'x' => mid.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => mid.bytes().all(|b| b.is_ascii_digit() || b == b'-'),
    }
}

/// Errors of image file I/O and framing. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {path} is missing")]
    Missing {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("I/O error on image {path} at offset {offset}")]
    Io {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("image {path}: magic {found:#010x} where {expected:#010x} ({ty}) was expected")]
    BadMagic {
        path: PathBuf,
        ty: &'static str,
        expected: u32,
        found: u32,
    },
    #[error("image {path}: truncated {what} at offset {offset}")]
    Truncated {
        path: PathBuf,
        offset: u64,
        what: &'static str,
    },
    #[error("image {path}: cannot decode {message} at offset {offset}")]
    Decode {
        path: PathBuf,
        offset: u64,
        message: &'static str,
        #[source]
        source: DecodeError,
    },
    #[error("image {path} holds no entry")]
    Empty { path: PathBuf },
    #[error("image {path}")]
    Crit {
        path: PathBuf,
        #[source]
        source: Box<crate::crit::CritError>,
    },
    #[error("image {path} is a symbolic link: crust reads no image through a link (put the file itself in the images directory)")]
    Symlink { path: PathBuf },
    #[error("image {path}: unknown image type for this file name")]
    UnknownType { path: PathBuf },
    #[error("image {path} {why}: another user could have put it there, so crust does not read it (make it the caller's own, mode 0600, or pass --allow-unsafe-images-dir)")]
    Untrusted { path: PathBuf, why: String },
}

impl ImageError {
    /// True when the image file does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, ImageError::Missing { .. })
    }

    pub fn path(&self) -> &Path {
        match self {
            ImageError::Missing { path, .. }
            | ImageError::Io { path, .. }
            | ImageError::BadMagic { path, .. }
            | ImageError::Truncated { path, .. }
            | ImageError::Decode { path, .. }
            | ImageError::Empty { path }
            | ImageError::Crit { path, .. }
            | ImageError::Symlink { path }
            | ImageError::UnknownType { path }
            | ImageError::Untrusted { path, .. } => path,
        }
    }
}

/// Writes one image file, buffered.
pub struct ImageWriter {
    out: BufWriter<File>,
    /// Its final name, given by `finish` (the file has a temporary name
    /// until then, removed if the writer is dropped unfinished).
    name: crust_sys::private::PrivateName,
    path: PathBuf,
    offset: u64,
    ty: ImageType,
    scratch: Vec<u8>,
}

impl ImageWriter {
    /// Start `dir/file_name`, mode 0600, and write the header. The file is
    /// new (`crust_sys::private::create_private`: never a symlink or a file
    /// crust did not create) and takes its name in `finish`, replacing the
    /// caller's own earlier image of that name.
    pub fn create(dir: &Path, ty: ImageType, file_name: &str) -> Result<ImageWriter, ImageError> {
        let path = dir.join(file_name);
        let (f, name) =
            crust_sys::private::create_private(&path, 0).map_err(|source| ImageError::Io {
                path: path.clone(),
                offset: 0,
                source,
            })?;
        let mut w = ImageWriter {
            out: BufWriter::with_capacity(64 * 1024, f),
            name,
            path,
            offset: 0,
            ty,
            scratch: Vec::new(),
        };
        let hdr = ty.header_bytes();
        w.write_raw(&hdr)?;
        Ok(w)
    }

    pub fn image_type(&self) -> ImageType {
        self.ty
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far (header included).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Write one length-framed entry.
    pub fn write_entry<M: Message>(&mut self, m: &M) -> Result<(), ImageError> {
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let len = m.encoded_len();
        buf.reserve(4 + len);
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        m.encode(&mut buf);
        debug_assert_eq!(buf.len(), 4 + len);
        let r = self.write_raw(&buf);
        self.scratch = buf;
        r
    }

    /// Write raw payload bytes (after an entry, or the body of a raw image).
    pub fn write_raw(&mut self, data: &[u8]) -> Result<(), ImageError> {
        self.out.write_all(data).map_err(|source| ImageError::Io {
            path: self.path.clone(),
            offset: self.offset,
            source,
        })?;
        self.offset += data.len() as u64;
        Ok(())
    }

    /// Flush buffers to the file.
    pub fn finish(self) -> Result<(), ImageError> {
        self.finish_inner(false)
    }

    /// Flush and fsync.
    pub fn finish_sync(self) -> Result<(), ImageError> {
        self.finish_inner(true)
    }

    fn finish_inner(self, sync: bool) -> Result<(), ImageError> {
        let ImageWriter {
            out,
            name,
            path,
            offset,
            ..
        } = self;
        let f = out.into_inner().map_err(|e| ImageError::Io {
            path: path.clone(),
            offset,
            source: e.into_error(),
        })?;
        if sync {
            f.sync_all().map_err(|source| ImageError::Io {
                path: path.clone(),
                offset,
                source,
            })?;
        }
        name.commit().map_err(|source| ImageError::Io {
            path,
            offset,
            source,
        })
    }
}

/// Reads one image file, buffered.
pub struct ImageReader {
    inp: BufReader<File>,
    path: PathBuf,
    offset: u64,
    ty: ImageType,
    buf: Vec<u8>,
    raw_done: bool,
}

impl ImageReader {
    /// Open `dir/file_name`, taking the type from the file name, and check
    /// its header.
    pub fn open(dir: &Path, file_name: &str) -> Result<ImageReader, ImageError> {
        let ty = ImageType::from_file_name(file_name).ok_or_else(|| ImageError::UnknownType {
            path: dir.join(file_name),
        })?;
        Self::open_typed(dir, ty, file_name)
    }

    /// Open `dir/file_name` as an image of type `ty` and check its header.
    pub fn open_typed(
        dir: &Path,
        ty: ImageType,
        file_name: &str,
    ) -> Result<ImageReader, ImageError> {
        Self::open_path(&dir.join(file_name), Some(ty))
    }

    /// Open any image file; with `ty` None the type is taken from the magic
    /// (files without a header cannot be opened this way).
    pub fn open_path(path: &Path, ty: Option<ImageType>) -> Result<ImageReader, ImageError> {
        let path = path.to_path_buf();
        let f = open_nofollow(&path)?;
        let mut r = ImageReader {
            inp: BufReader::with_capacity(64 * 1024, f),
            path,
            offset: 0,
            ty: ty.unwrap_or(ImageType::Pages),
            buf: Vec::new(),
            raw_done: false,
        };
        match ty {
            Some(ty) => r.check_header(ty)?,
            None => {
                let first = r
                    .read_u32("image magic")?
                    .ok_or_else(|| ImageError::Truncated {
                        path: r.path.clone(),
                        offset: 0,
                        what: "image magic",
                    })?;
                let m = if first == IMG_COMMON_MAGIC || first == IMG_SERVICE_MAGIC {
                    r.read_u32("image magic")?
                        .ok_or_else(|| ImageError::Truncated {
                            path: r.path.clone(),
                            offset: 4,
                            what: "image magic",
                        })?
                } else {
                    first
                };
                r.ty = ImageType::from_magic(m).ok_or(ImageError::BadMagic {
                    path: r.path.clone(),
                    ty: "any known image",
                    expected: 0,
                    found: m,
                })?;
                // Types sharing a magic (pagemap-shmem) are told apart by name.
                if let Some(t) = r
                    .path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(ImageType::from_file_name)
                {
                    if t.magic() == m {
                        r.ty = t;
                    }
                }
            }
        }
        Ok(r)
    }

    fn check_header(&mut self, ty: ImageType) -> Result<(), ImageError> {
        let (prefix, own) = match ty.header() {
            Header::Raw => return Ok(()),
            Header::Own => (None, ty.magic()),
            Header::Common => (Some(IMG_COMMON_MAGIC), ty.magic()),
            Header::Service => (Some(IMG_SERVICE_MAGIC), ty.magic()),
        };
        for expected in prefix.into_iter().chain(Some(own)) {
            let off = self.offset;
            let found = self
                .read_u32("image magic")?
                .ok_or_else(|| ImageError::Truncated {
                    path: self.path.clone(),
                    offset: off,
                    what: "image magic",
                })?;
            if found != expected {
                return Err(ImageError::BadMagic {
                    path: self.path.clone(),
                    ty: ty.name(),
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    pub fn image_type(&self) -> ImageType {
        self.ty
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Current file offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Fill `buf` completely; returns the number of bytes read (short only at EOF).
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, ImageError> {
        let mut got = 0;
        while got < buf.len() {
            match self.inp.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(ImageError::Io {
                        path: self.path.clone(),
                        offset: self.offset + got as u64,
                        source,
                    })
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    /// A little-endian u32; None at clean EOF.
    fn read_u32(&mut self, what: &'static str) -> Result<Option<u32>, ImageError> {
        let off = self.offset;
        let mut b = [0u8; 4];
        match self.fill(&mut b)? {
            0 => Ok(None),
            4 => Ok(Some(u32::from_le_bytes(b))),
            _ => Err(ImageError::Truncated {
                path: self.path.clone(),
                offset: off,
                what,
            }),
        }
    }

    /// The raw bytes of the next entry (without its length); None at EOF.
    pub fn read_entry_bytes(&mut self) -> Result<Option<&[u8]>, ImageError> {
        let off = self.offset;
        let Some(len) = self.read_u32("entry length")? else {
            return Ok(None);
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let r = (&mut self.inp)
            .take(len as u64)
            .read_to_end(&mut buf)
            .map_err(|source| ImageError::Io {
                path: self.path.clone(),
                offset: self.offset,
                source,
            });
        self.buf = buf;
        r?;
        self.offset += self.buf.len() as u64;
        if self.buf.len() != len as usize {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                offset: off,
                what: "entry",
            });
        }
        Ok(Some(&self.buf))
    }

    /// Decode the next entry as `M`; None at clean EOF.
    pub fn read_entry<M: Message>(&mut self) -> Result<Option<M>, ImageError> {
        let off = self.offset;
        let Some(b) = self.read_entry_bytes()? else {
            return Ok(None);
        };
        match M::decode(b) {
            Ok(m) => Ok(Some(m)),
            Err(source) => Err(ImageError::Decode {
                path: self.path.clone(),
                offset: off,
                message: M::NAME,
                source,
            }),
        }
    }

    /// Read exactly `n` raw bytes (payload after an entry).
    pub fn read_raw(&mut self, n: usize) -> Result<Vec<u8>, ImageError> {
        let off = self.offset;
        let mut v = Vec::new();
        (&mut self.inp)
            .take(n as u64)
            .read_to_end(&mut v)
            .map_err(|source| ImageError::Io {
                path: self.path.clone(),
                offset: off,
                source,
            })?;
        self.offset += v.len() as u64;
        if v.len() != n {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                offset: off,
                what: "payload",
            });
        }
        Ok(v)
    }

    /// Read everything left in the file.
    pub fn read_to_end(&mut self) -> Result<Vec<u8>, ImageError> {
        let off = self.offset;
        let mut v = Vec::new();
        self.inp
            .read_to_end(&mut v)
            .map_err(|source| ImageError::Io {
                path: self.path.clone(),
                offset: off,
                source,
            })?;
        self.offset += v.len() as u64;
        Ok(v)
    }

    /// Decode all remaining entries as `M` (for images without payload).
    pub fn read_remaining<M: Message>(&mut self) -> Result<Vec<M>, ImageError> {
        let mut v = Vec::new();
        while let Some(m) = self.read_entry()? {
            v.push(m);
        }
        Ok(v)
    }

    /// The next entry with the raw payload that follows it, as the image
    /// type's [`Payload`] rules say. `index` is the entry's position in the
    /// file. Pagemap heads and ghost-file headers come back as ordinary
    /// records (index 0).
    pub fn next_record(&mut self) -> Result<Option<Record>, ImageError> {
        let offset = self.offset;
        if self.ty.payload() == Payload::Raw {
            if self.raw_done {
                return Ok(None);
            }
            self.raw_done = true;
            let payload = self.read_to_end()?;
            return Ok(Some(Record {
                offset,
                entry: Vec::new(),
                payload,
            }));
        }
        let Some(entry) = self.read_entry_bytes()?.map(|b| b.to_vec()) else {
            return Ok(None);
        };
        let path = self.path.clone();
        let field = |n: u32| -> Result<u64, ImageError> {
            varint_field(&entry, n).map_err(|source| ImageError::Decode {
                path: path.clone(),
                offset,
                message: "payload length",
                source,
            })
        };
        let payload = match self.ty.payload() {
            Payload::None | Payload::Pagemap | Payload::Raw => Vec::new(),
            Payload::PipeData | Payload::SkQueue => {
                let n = field(2)?;
                self.read_raw(n as usize)?
            }
            Payload::TcpStream => {
                let n = field(1)? + field(3)?;
                self.read_raw(n as usize)?
            }
            Payload::BpfmapData => {
                let n = field(2)? + field(3)?;
                self.read_raw(n as usize)?
            }
            Payload::IpcShm => {
                if field(3)? != 0 {
                    Vec::new()
                } else {
                    let n = field(2)?;
                    self.read_raw(n.div_ceil(4) as usize * 4)?
                }
            }
            Payload::IpcSem => {
                let n = field(2)? * 2;
                self.read_raw(n.div_ceil(8) as usize * 8)?
            }
            Payload::IpcMsg => {
                let mut all = Vec::new();
                for _ in 0..field(3)? {
                    let moff = self.offset;
                    let Some(m) = self.read_entry_bytes()?.map(|b| b.to_vec()) else {
                        return Err(ImageError::Truncated {
                            path: self.path.clone(),
                            offset: moff,
                            what: "ipc message",
                        });
                    };
                    let msize = varint_field(&m, 2).map_err(|source| ImageError::Decode {
                        path: self.path.clone(),
                        offset: moff,
                        message: "ipc_msg",
                        source,
                    })?;
                    all.extend_from_slice(&(m.len() as u32).to_le_bytes());
                    all.extend_from_slice(&m);
                    all.extend(self.read_raw(msize.div_ceil(8) as usize * 8)?);
                }
                all
            }
            Payload::GhostFile => {
                if offset == self.ty.header_bytes().len() as u64 {
                    // The ghost_file_entry itself.
                    if field(9)? != 0 {
                        Vec::new()
                    } else {
                        self.read_to_end()?
                    }
                } else {
                    // A ghost_chunk_entry.
                    let n = field(1)?;
                    self.read_raw(n as usize)?
                }
            }
        };
        Ok(Some(Record {
            offset,
            entry,
            payload,
        }))
    }
}

/// One framed entry and the raw payload that follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// File offset of the entry's length word.
    pub offset: u64,
    /// The encoded message (empty for raw images).
    pub entry: Vec<u8>,
    /// Raw bytes after the entry.
    pub payload: Vec<u8>,
}

/// The value of a varint field `num` in an encoded message (last one wins),
/// 0 when absent.
pub fn varint_field(buf: &[u8], num: u32) -> Result<u64, DecodeError> {
    let mut r = Reader::new(buf, "entry");
    let mut v = 0;
    while !r.is_empty() {
        let (n, wt) = r.tag()?;
        if n == num && wt == 0 {
            v = r.varint()?;
        } else {
            r.skip(wt)?;
        }
    }
    Ok(v)
}

/// All entries of `dir/name` decoded as `M` (no payload handling).
pub fn read_all<M: Message>(dir: &Path, name: &str) -> Result<Vec<M>, ImageError> {
    ImageReader::open(dir, name)?.read_remaining()
}

/// The first entry of `dir/name`; error if the file is missing or empty.
pub fn read_one<M: Message>(dir: &Path, name: &str) -> Result<M, ImageError> {
    let mut r = ImageReader::open(dir, name)?;
    match r.read_entry()? {
        Some(m) => Ok(m),
        None => Err(ImageError::Empty {
            path: dir.join(name),
        }),
    }
}

/// Write an image of type `ty` with exactly one entry.
pub fn write_one<M: Message>(
    dir: &Path,
    ty: ImageType,
    name: &str,
    m: &M,
) -> Result<(), ImageError> {
    let mut w = ImageWriter::create(dir, ty, name)?;
    w.write_entry(m)?;
    w.finish()
}

/// Write an image of type `ty` with the given entries.
pub fn write_all<M: Message>(
    dir: &Path,
    ty: ImageType,
    name: &str,
    entries: &[M],
) -> Result<(), ImageError> {
    let mut w = ImageWriter::create(dir, ty, name)?;
    for m in entries {
        w.write_entry(m)?;
    }
    w.finish()
}

/// Read a pagemap image: its head and its entries.
pub fn read_pagemap(
    dir: &Path,
    name: &str,
) -> Result<(PagemapHead, Vec<PagemapEntry>), ImageError> {
    let mut r = ImageReader::open(dir, name)?;
    let head = r
        .read_entry::<PagemapHead>()?
        .ok_or_else(|| ImageError::Empty {
            path: dir.join(name),
        })?;
    Ok((head, r.read_remaining()?))
}

/// Write a pagemap image (`pagemap-N.img` or `pagemap-shmem-N.img`).
pub fn write_pagemap(
    dir: &Path,
    ty: ImageType,
    name: &str,
    head: &PagemapHead,
    entries: &[PagemapEntry],
) -> Result<(), ImageError> {
    let mut w = ImageWriter::create(dir, ty, name)?;
    w.write_entry(head)?;
    for e in entries {
        w.write_entry(e)?;
    }
    w.finish()
}

/// Whether image files a third party could have written are read anyway
/// (`--allow-unsafe-images-dir`); set once by the command line.
static ALLOW_UNTRUSTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Read image files even when [`file_problem`] finds one (the caller
/// passed `--allow-unsafe-images-dir`).
pub fn allow_untrusted_images(on: bool) {
    ALLOW_UNTRUSTED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Are image files a third party could have written read anyway? (See
/// [`allow_untrusted_images`].)
pub fn untrusted_images_allowed() -> bool {
    ALLOW_UNTRUSTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Why an image file of type `mode` and owner `uid` must not be read by a
/// caller of euid `euid`, if it must not: it is not a regular file, it
/// belongs to a user other than the caller or root, or anyone can write
/// it. A directory others can write (CRIU's test suite makes its images
/// directories 0777) is accepted, because what could be planted in it is
/// refused here, file by file.
pub fn file_problem(mode: u32, uid: u32, euid: u32) -> Option<String> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Some("is not a regular file".into());
    }
    if uid != euid && uid != 0 {
        return Some(format!(
            "is owned by uid {uid}, neither the caller (uid {euid}) nor root"
        ));
    }
    if mode & 0o002 != 0 {
        return Some(format!(
            "is writable by anyone (mode {:04o})",
            mode & 0o7777
        ));
    }
    None
}

/// Open an image file for reading, refusing a symbolic link in its place
/// (O_NOFOLLOW) and a file another user could have planted
/// ([`file_problem`]): an image directory may be writable by others, and a
/// link would make crust read what it points to. O_NONBLOCK keeps a FIFO
/// in its place from blocking the open (it is then refused).
pub fn open_nofollow(path: &Path) -> Result<File, ImageError> {
    use std::os::unix::fs::MetadataExt;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ELOOP) => ImageError::Symlink {
                path: path.to_path_buf(),
            },
            _ if source.kind() == io::ErrorKind::NotFound => ImageError::Missing {
                path: path.to_path_buf(),
                source,
            },
            _ => ImageError::Io {
                path: path.to_path_buf(),
                offset: 0,
                source,
            },
        })?;
    let m = f.metadata().map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        offset: 0,
        source,
    })?;
    if let Some(why) = file_problem(m.mode(), m.uid(), crust_sys::private::geteuid()) {
        if !ALLOW_UNTRUSTED.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ImageError::Untrusted {
                path: path.to_path_buf(),
                why,
            });
        }
    }
    Ok(f)
}
