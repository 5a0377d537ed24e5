//! binfmt_misc mounts. The kernel keeps one binfmt_misc instance per user
//! namespace (one for all before Linux 6.7), the one of the user namespace
//! the mounting process is in.
//!
//! - A tree in crust's user namespace shares crust's instance, whose
//!   entries outlive the tree: its mount is only mounted afresh at
//!   restore, as CRIU does for an instance that is not virtualized.
//! - A tree with a user namespace of its own that mounts that namespace's
//!   own instance (its device is not crust's instance's): the entries are
//!   dumped to CRIU's `binfmt-misc.img` ([`dump`]); at restore the mount
//!   is made by a child that joined the restored user namespace (so it is
//!   that namespace's new instance, [`mount_fresh`]) and the entries are
//!   registered again once the tree stands ([`register`], after the
//!   pivot, so that an interpreter the kernel opens at once, flag F, is
//!   the tree's file). CRIU 4.2's code does the same with the same image,
//!   but only when built with CONFIG_BINFMT_MISC_VIRTUALIZED, which its
//!   build never defines: a CRIU 4.2 as built dumps no entries (the mount
//!   comes back empty) and ignores crust's binfmt-misc.img.
//! - Refused: crust's instance seen from a tree with a user namespace of
//!   its own (a restore mounts the namespace's own instance, as CRIU's
//!   does), a second instance with entries, an instance whose mount other
//!   mounts cover; at restore CRIU's older per-device image
//!   (`binfmt-misc-DEV.img`), entries without a binfmt_misc mount to
//!   register them in or for a tree in crust's user namespace.
//!
//! An instance of the tree's user namespace that the tree does not mount
//! is not seen (CRIU mounts one to look).

use super::info::MountLine;
use super::refuse;
use crate::util::{read_image, sys_err, write_image};
use crate::{Error, ErrorKind};
use crust_images::image::ImageType;
use crust_images::proto::binfmt_misc::BinfmtMiscEntry;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// CRIU's fs type number of binfmt_misc.
pub(crate) const FS_BINFMT_MISC: u32 = 4;

/// The files of a binfmt_misc mount that are not entries.
const NOT_ENTRIES: [&str; 2] = ["register", "status"];

/// The longest line the kernel takes on `register` (CRIU's limit too).
const MAX_LINE: usize = 1920;

fn userns_ino(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/user"))
        .ok()
        .map(|m| m.ino())
}

/// Whether process `pid` is in a user namespace other than crust's.
pub(crate) fn own_userns(pid: i32) -> bool {
    let tree = userns_ino(&pid.to_string());
    tree.is_some() && tree != userns_ino("self")
}

/// The device (kernel encoding, major << 20 | minor, as mountinfo's) of
/// crust's user namespace's binfmt_misc instance: mounted by a crust thread
/// on its /proc in a private copy of crust's mount namespace (gone with
/// the thread).
fn crust_instance_dev(pid: i32) -> Result<u32, Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            use crust_sys::mount::{mount, MountCall};
            crust_sys::ns::unshare(libc::CLONE_FS | libc::CLONE_NEWNS)
                .map_err(sys_err(pid, "unshare a copy of crust's mount namespace"))?;
            let private = MountCall {
                source: None,
                target: c"/",
                fstype: None,
                flags: libc::MS_REC | libc::MS_PRIVATE,
                data: None,
            };
            mount(&private).map_err(sys_err(pid, "make the copy private"))?;
            mount(&MountCall {
                source: Some(c"binfmt_misc"),
                target: c"/proc",
                fstype: Some(c"binfmt_misc"),
                flags: 0,
                data: None,
            })
            .map_err(sys_err(pid, "mount crust's binfmt_misc in a copy"))?;
            let dev = std::fs::metadata("/proc")
                .map_err(sys_err(pid, "stat crust's binfmt_misc"))?
                .dev();
            let (major, minor) = (libc::major(dev), libc::minor(dev));
            Ok((major << 20) | minor)
        })
        .join()
        .unwrap_or_else(|_| Err(Error::unsupported("a crust thread panicked")))
    })
}

/// One entry file's text (`/proc/sys/fs/binfmt_misc/NAME`) in CRIU's
/// fields.
fn parse_entry(name: &str, text: &str) -> Result<BinfmtMiscEntry, String> {
    let mut e = BinfmtMiscEntry {
        name: name.to_string(),
        ..Default::default()
    };
    for line in text.lines() {
        let field = |key: &str| line.strip_prefix(key).map(str::to_string);
        if line == "enabled" {
            e.enabled = true;
        } else if line == "disabled" {
        } else if let Some(v) = field("interpreter ") {
            e.interpreter = v;
        } else if let Some(v) = field("flags: ") {
            e.flags = Some(v);
        } else if line == "flags:" {
            e.flags = Some(String::new());
        } else if let Some(v) = field("extension .") {
            e.extension = Some(v);
        } else if let Some(v) = field("magic ") {
            e.magic = Some(v);
        } else if let Some(v) = field("mask ") {
            e.mask = Some(v);
        } else if let Some(v) = field("offset ") {
            e.offset = Some(v.trim().parse().map_err(|_| format!("offset {v:?}"))?);
        } else {
            return Err(format!("an unknown line {line:?}"));
        }
    }
    Ok(e)
}

/// Dump the entries of binfmt_misc mount `m` of process `pid` (`done`:
/// the instance dumped already, if any).
pub(crate) fn dump(
    dir: &Path,
    pid: i32,
    m: &MountLine,
    done: &mut Option<u32>,
) -> Result<(), Error> {
    if !own_userns(pid) || *done == Some(m.dev) {
        return Ok(());
    }
    if m.dev == crust_instance_dev(pid)? {
        return Err(refuse(
            pid,
            m,
            "is the binfmt_misc instance of crust's user namespace, in a tree with a user namespace of its own: a restore mounts that namespace's own instance (as CRIU does), not this one",
        ));
    }
    if done.is_some() {
        return Err(refuse(
            pid,
            m,
            "is a second binfmt_misc instance (CRIU's binfmt-misc.img holds one)",
        ));
    }
    let path = format!("/proc/{pid}/root{}", m.mountpoint);
    if crate::util::overmount::mnt_id_of(&path) != Some(u64::from(m.mnt_id)) {
        return Err(refuse(pid, m, "is a binfmt_misc instance of the tree's user namespace that other mounts cover: crust cannot read its entries"));
    }
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .map_err(sys_err(pid, format!("read the directory {path}")))?
        .filter_map(|d| d.ok().map(|d| d.file_name().to_string_lossy().into_owned()))
        .filter(|n| !NOT_ENTRIES.contains(&n.as_str()))
        .collect();
    names.sort();
    let mut entries = Vec::with_capacity(names.len());
    for n in names {
        let text = std::fs::read_to_string(format!("{path}/{n}")).map_err(sys_err(
            pid,
            format!("read the binfmt_misc entry {path}/{n}"),
        ))?;
        let e = parse_entry(&n, &text).map_err(|why| {
            refuse(
                pid,
                m,
                &format!("has an entry {n} crust cannot read: {why}"),
            )
        })?;
        log::debug!("binfmt_misc entry {n}: {e:?}");
        entries.push(e);
    }
    *done = Some(m.dev);
    if !entries.is_empty() {
        write_image(dir, ImageType::BinfmtMisc, 0, &entries)?;
    }
    Ok(())
}

/// An entry to register again: the line for `register`, and whether to
/// disable it after.
#[derive(Debug, Clone)]
pub(crate) struct Register {
    name: String,
    line: String,
    enabled: bool,
}

/// Each byte of a hex string as `\xHH` (what `register` takes).
fn escaped(hex: &str) -> Option<String> {
    (hex.len().is_multiple_of(2) && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
        hex.as_bytes()
            .chunks(2)
            .map(|p| format!("\\x{}", String::from_utf8_lossy(p)))
            .collect()
    })
}

/// The `register` line of entry `e` (CRIU's: `:name:M:offset:magic:mask:
/// interpreter:flags` or `:name:E::extension::interpreter:flags`), its
/// fields checked.
fn register_line(e: &BinfmtMiscEntry) -> Result<Register, String> {
    let plain = |s: &str| !s.is_empty() && !s.contains([':', '\n', '\0']);
    let name_ok = plain(&e.name)
        && !e.name.contains('/')
        && !matches!(e.name.as_str(), "." | "..")
        && !NOT_ENTRIES.contains(&e.name.as_str());
    if !name_ok {
        return Err(format!("a bad entry name {:?}", e.name));
    }
    if !plain(&e.interpreter) {
        return Err(format!(
            "entry {}: a bad interpreter {:?}",
            e.name, e.interpreter
        ));
    }
    let flags = e.flags.clone().unwrap_or_default();
    if !flags.chars().all(|c| "POCF".contains(c)) {
        return Err(format!("entry {}: bad flags {flags:?}", e.name));
    }
    let line = match (&e.magic, &e.extension) {
        (Some(magic), _) => {
            let offset = e.offset.unwrap_or(0);
            let magic = escaped(magic).filter(|m| !m.is_empty());
            let mask = match &e.mask {
                Some(k) => escaped(k),
                None => Some(String::new()),
            };
            match (magic, mask) {
                (Some(magic), Some(mask)) if (0..=128).contains(&offset) => format!(
                    ":{}:M:{offset}:{magic}:{mask}:{}:{flags}",
                    e.name, e.interpreter
                ),
                _ => return Err(format!("entry {}: a bad magic, mask or offset", e.name)),
            }
        }
        (None, Some(ext)) if plain(ext) && !ext.contains('/') => {
            format!(":{}:E::{ext}::{}:{flags}", e.name, e.interpreter)
        }
        _ => {
            return Err(format!(
                "entry {}: neither a magic nor an extension",
                e.name
            ))
        }
    };
    if line.len() > MAX_LINE {
        return Err(format!("entry {}: longer than the kernel takes", e.name));
    }
    Ok(Register {
        name: e.name.clone(),
        line,
        enabled: e.enabled,
    })
}

/// The entries to register again, from the images in `dir`, in the mount
/// (the first binfmt_misc one of `mounts`: id, mountpoint, device) they go
/// to. Refuses CRIU's older per-device image and entries with no mount.
pub(crate) fn load(
    dir: &Path,
    mounts: &[(u32, &str, u32)],
) -> Result<Option<(u32, Vec<Register>)>, Error> {
    let has = |name: String| std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() > 0);
    if let Some((_, mp, _)) = mounts
        .iter()
        .find(|(_, _, dev)| has(format!("binfmt-misc-{dev}.img")))
    {
        return Err(Error::refused(
            ErrorKind::Unsupported,
            format!(
                "the binfmt_misc mount at {mp} comes with entries in CRIU's older per-device image (binfmt-misc-DEV.img), which crust does not restore; dump it with CRIU 4.2 or crust (binfmt-misc.img)"
            ),
        ));
    }
    if !has("binfmt-misc.img".into()) {
        return Ok(None);
    }
    let entries: Vec<BinfmtMiscEntry> = read_image(dir, ImageType::BinfmtMisc, 0)?;
    if entries.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| Error::BadImage {
        dir: dir.to_path_buf(),
        why: format!("binfmt-misc.img: {why}"),
    };
    let Some(&(id, _, _)) = mounts.first() else {
        return Err(bad(
            "it holds entries but the tree mounts no binfmt_misc to register them in".into(),
        ));
    };
    let regs = entries
        .iter()
        .map(register_line)
        .collect::<Result<Vec<_>, String>>()
        .map_err(bad)?;
    Ok(Some((id, regs)))
}

/// The user namespace of the restored root `pid` when it is its own
/// (opened from crust's namespaces, before the tree is built).
pub(crate) fn restored_userns(pid: i32) -> Result<Option<std::fs::File>, Error> {
    if !own_userns(pid) {
        return Ok(None);
    }
    let path = format!("/proc/{pid}/ns/user");
    std::fs::File::open(&path)
        .map(Some)
        .map_err(sys_err(pid, format!("open {path}")))
}

/// Mount binfmt_misc as `call` says, from the mount namespace the calling
/// thread is in: with `user` (the restored tree's own user namespace), by
/// a child that joined it, so that the mount is that namespace's own
/// instance.
pub(crate) fn mount_fresh(
    user: Option<&std::fs::File>,
    call: &crust_sys::mount::MountCall<'_>,
) -> std::io::Result<()> {
    match user {
        None => crust_sys::mount::mount(call),
        Some(u) => crust_sys::mount::mount_in_child_as(Some(u.as_fd()), call),
    }
}

/// Register the entries `regs` in the binfmt_misc mount whose own fd is
/// `mnt` (in the restored tree of root `pid`, after its pivot; `own`: the
/// tree has a user namespace of its own).
pub(crate) fn register(pid: i32, own: bool, mnt: &OwnedFd, regs: &[Register]) -> Result<(), Error> {
    use std::io::Write;
    if !regs.is_empty() && !own {
        return Err(Error::refused(
            ErrorKind::Unsupported,
            "binfmt-misc.img holds entries, but the restored tree has no user namespace of its own: they would go to crust's binfmt_misc instance, shared with the host".to_string(),
        ));
    }
    let open = |name: &str| {
        let c = std::ffi::CString::new(name).unwrap_or_default();
        crust_sys::mountfd::open_at(mnt.as_fd(), &c, libc::O_WRONLY).map(std::fs::File::from)
    };
    for r in regs {
        log::debug!("binfmt_misc: register {:?}", r.line);
        open("register")
            .and_then(|mut f| f.write_all(r.line.as_bytes()))
            .map_err(sys_err(
                pid,
                format!("register the binfmt_misc entry {}", r.name),
            ))?;
        if !r.enabled {
            open(&r.name)
                .and_then(|mut f| f.write_all(b"0"))
                .map_err(sys_err(
                    pid,
                    format!("disable the binfmt_misc entry {}", r.name),
                ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_and_registered_as_criu_does() {
        let m = parse_entry(
            "qemu",
            "enabled\ninterpreter /usr/bin/q\nflags: OCF\noffset 2\nmagic 7f45\nmask fffe\n",
        )
        .unwrap();
        assert!(m.enabled);
        assert_eq!(m.offset, Some(2));
        let r = register_line(&m).unwrap();
        assert_eq!(r.line, ":qemu:M:2:\\x7f\\x45:\\xff\\xfe:/usr/bin/q:OCF");
        let e = parse_entry(
            "t",
            "disabled\ninterpreter /bin/sh\nflags: \nextension .xyz\n",
        )
        .unwrap();
        assert!(!e.enabled);
        let r = register_line(&e).unwrap();
        assert_eq!(r.line, ":t:E::xyz::/bin/sh:");
        assert!(!r.enabled);
        assert!(parse_entry("x", "enabled\nsomething new\n").is_err());
        let bad = BinfmtMiscEntry {
            interpreter: "/a:b".into(),
            ..e.clone()
        };
        assert!(register_line(&bad).is_err());
        let bad = BinfmtMiscEntry {
            name: "register".into(),
            ..e
        };
        assert!(register_line(&bad).is_err());
    }

    #[test]
    fn older_images_and_entries_without_a_mount_are_refused() {
        let d = std::env::temp_dir().join(format!("crust-binfmt-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(load(&d, &[(3, "/b", 7)]).unwrap().is_none());
        std::fs::write(d.join("binfmt-misc-7.img"), b"").unwrap();
        assert!(load(&d, &[(3, "/b", 7)]).unwrap().is_none());
        std::fs::write(d.join("binfmt-misc-7.img"), b"\x23\x33\x34\x67").unwrap();
        let e = load(&d, &[(3, "/b", 7)]).unwrap_err().to_string();
        assert!(e.contains("binfmt_misc mount at /b"), "{e}");
        std::fs::remove_file(d.join("binfmt-misc-7.img")).unwrap();
        let entry =
            parse_entry("t", "enabled\ninterpreter /bin/sh\nflags: \nextension .x\n").unwrap();
        write_image(&d, ImageType::BinfmtMisc, 0, &[entry]).unwrap();
        let e = load(&d, &[]).unwrap_err().to_string();
        assert!(e.contains("mounts no binfmt_misc"), "{e}");
        let got = load(&d, &[(3, "/b", 7)]).unwrap();
        let _ = std::fs::remove_dir_all(&d);
        assert_eq!(got.map(|(id, r)| (id, r.len())), Some((3, 1)));
    }
}
