//! `/proc/PID/mountinfo` read into CRIU's `MntEntry` meanings: the
//! per-mount flags (`ro`, `nosuid`... plus the propagation bits
//! MS_SHARED/MS_SLAVE/MS_UNBINDABLE) go to `flags`, the superblock's
//! `ro`/`sync`/`dirsync` to `sb_flags`, its other options to `options`;
//! fs types are numbered as CRIU's `fstype` enum; devices in the kernel's
//! encoding (major << 20 | minor).

/// mount(2) flags (linux/mount.h).
pub(crate) mod ms {
    pub const RDONLY: u32 = 1;
    pub const NOSUID: u32 = 2;
    pub const NODEV: u32 = 4;
    pub const NOEXEC: u32 = 8;
    pub const SYNCHRONOUS: u32 = 16;
    pub const MANDLOCK: u32 = 64;
    pub const DIRSYNC: u32 = 128;
    pub const NOATIME: u32 = 1 << 10;
    pub const NODIRATIME: u32 = 1 << 11;
    pub const BIND: u32 = 1 << 12;
    pub const REC: u32 = 1 << 14;
    pub const UNBINDABLE: u32 = 1 << 17;
    pub const PRIVATE: u32 = 1 << 18;
    pub const SLAVE: u32 = 1 << 19;
    pub const SHARED: u32 = 1 << 20;
    pub const RELATIME: u32 = 1 << 21;
    pub const STRICTATIME: u32 = 1 << 24;
    pub const REMOUNT: u32 = 32;
    /// The per-mount flags a bind remount sets.
    pub const MNT_MASK: u32 =
        RDONLY | NOSUID | NODEV | NOEXEC | NOATIME | NODIRATIME | RELATIME | STRICTATIME;
}

/// CRIU's `fstype` numbers by kernel fs name (other names: 0,
/// unsupported).
const FSTYPES: &[(&str, u32)] = &[
    ("proc", 1),
    ("sysfs", 2),
    ("devtmpfs", 3),
    ("binfmt_misc", 4),
    ("tmpfs", 5),
    ("devpts", 6),
    ("simfs", 7),
    ("pstore", 8),
    ("securityfs", 9),
    ("fusectl", 10),
    ("debugfs", 11),
    ("cgroup", 12),
    ("aufs", 13),
    ("mqueue", 14),
    ("fuse", 15),
    ("overlay", 17),
    ("autofs", 18),
    ("tracefs", 19),
    ("cgroup2", 23),
];

pub(crate) const FS_TMPFS: u32 = 5;
pub(crate) const FS_PROC: u32 = 1;
pub(crate) const FS_DEVPTS: u32 = 6;

/// CRIU's number of fs type `name` (a `type.subtype` counts as `type`).
pub(crate) fn fstype_code(name: &str) -> u32 {
    let base = name.split('.').next().unwrap_or(name);
    FSTYPES
        .iter()
        .find(|(n, _)| *n == base)
        .map_or(0, |(_, c)| *c)
}

/// The kernel name of CRIU's fs type `code`.
pub(crate) fn fstype_name(code: u32) -> Option<&'static str> {
    FSTYPES.iter().find(|(_, c)| *c == code).map(|(n, _)| *n)
}

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MountLine {
    pub mnt_id: u32,
    pub parent: u32,
    /// Kernel encoding: major << 20 | minor.
    pub dev: u32,
    pub root: String,
    pub mountpoint: String,
    /// Per-mount flags and propagation bits.
    pub flags: u32,
    pub shared_id: u32,
    pub master_id: u32,
    pub fsname: String,
    pub source: String,
    pub sb_flags: u32,
    /// Superblock options but ro/rw/sync/dirsync/mand.
    pub options: String,
    /// The root was a deleted file or directory.
    pub deleted: bool,
}

/// Undo mountinfo's octal escapes (`\040` for a space...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b.get(i) == Some(&b'\\') && o.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(o) = oct {
            let v = o.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.extend(b.get(i));
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mnt_flags(opts: &str) -> Option<u32> {
    let mut f = 0;
    for o in opts.split(',') {
        f |= match o {
            "rw" => 0,
            "ro" => ms::RDONLY,
            "nosuid" => ms::NOSUID,
            "nodev" => ms::NODEV,
            "noexec" => ms::NOEXEC,
            "noatime" => ms::NOATIME,
            "nodiratime" => ms::NODIRATIME,
            "relatime" => ms::RELATIME,
            _ => return None,
        };
    }
    // Without relatime or noatime the kernel's default is strictatime.
    if f & (ms::RELATIME | ms::NOATIME) == 0 {
        f |= ms::STRICTATIME;
    }
    Some(f)
}

fn sb_flags(opts: &str) -> (u32, String) {
    let mut f = 0;
    let mut rest = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "rw" => {}
            "ro" => f |= ms::RDONLY,
            "sync" => f |= ms::SYNCHRONOUS,
            "dirsync" => f |= ms::DIRSYNC,
            "mand" => f |= ms::MANDLOCK,
            _ => rest.push(o),
        }
    }
    (f, rest.join(","))
}

/// Parse one mountinfo line; `None` when it is not of the kernel's form.
pub(crate) fn parse_line(line: &str) -> Option<MountLine> {
    let (head, tail) = line.split_once(" - ")?;
    let mut h = head.split(' ');
    let mnt_id = h.next()?.parse().ok()?;
    let parent = h.next()?.parse().ok()?;
    let (maj, min) = h.next()?.split_once(':')?;
    let (maj, min): (u32, u32) = (maj.parse().ok()?, min.parse().ok()?);
    let mut root = unescape(h.next()?);
    let mountpoint = unescape(h.next()?);
    let mut flags = mnt_flags(h.next()?)?;
    let (mut shared_id, mut master_id) = (0, 0);
    for opt in h {
        if let Some(v) = opt.strip_prefix("shared:") {
            flags |= ms::SHARED;
            shared_id = v.parse().ok()?;
        } else if let Some(v) = opt.strip_prefix("master:") {
            flags |= ms::SLAVE;
            master_id = v.parse().ok()?;
        } else if opt == "unbindable" {
            flags |= ms::UNBINDABLE;
        } else if !opt.starts_with("propagate_from:") && !opt.is_empty() {
            return None;
        }
    }
    let mut t = tail.split(' ');
    let fsname = unescape(t.next()?);
    let source = unescape(t.next()?);
    let (sb_flags, options) = sb_flags(t.next()?);
    // The kernel marks a deleted root "//deleted" (older ones " (deleted)").
    let gone = root
        .strip_suffix("//deleted")
        .or_else(|| root.strip_suffix(" (deleted)"));
    let deleted = match gone {
        Some(r) => {
            root = r.to_string();
            true
        }
        None => false,
    };
    Some(MountLine {
        mnt_id,
        parent,
        dev: (maj << 20) | (min & 0xfffff),
        root,
        mountpoint,
        flags,
        shared_id,
        master_id,
        fsname,
        source,
        sb_flags,
        options,
        deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_shared_tmpfs_and_a_slave_proc() {
        let l = parse_line(
            "68 47 0:40 / /mnt\\040x rw,nosuid,relatime shared:5 - tmpfs x rw,size=1024k,mode=700",
        )
        .unwrap();
        assert_eq!(l.mnt_id, 68);
        assert_eq!(l.parent, 47);
        assert_eq!(l.dev, 40);
        assert_eq!(l.mountpoint, "/mnt x");
        assert_eq!(l.flags, ms::NOSUID | ms::RELATIME | ms::SHARED);
        assert_eq!(l.shared_id, 5);
        assert_eq!(l.options, "size=1024k,mode=700");
        assert_eq!(fstype_code(&l.fsname), FS_TMPFS);
        let p =
            parse_line("71 47 8:3 /a /b ro master:2 - ext4 /dev/sda3 ro,errors=continue").unwrap();
        assert_eq!(l.sb_flags, 0);
        assert_eq!(p.dev, (8 << 20) | 3);
        assert_eq!(p.flags, ms::RDONLY | ms::STRICTATIME | ms::SLAVE);
        assert_eq!(p.sb_flags, ms::RDONLY);
        assert_eq!(p.master_id, 2);
        assert_eq!(fstype_code("ext4"), 0);
        assert_eq!(fstype_code("fuse.sshfs"), 15);
        assert!(parse_line("garbage").is_none());
    }
}
