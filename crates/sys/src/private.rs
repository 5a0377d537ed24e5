//! The one way crust creates a file in an images or work directory.
//!
//! A directory another user can write may hold a symlink or a file of
//! theirs under the name of an image or of the log. crust never writes
//! through such a name:
//! - [`create_private`] refuses a name that is a symlink, not a regular
//!   file, or a file not owned by the caller ([`check_target`]); otherwise
//!   it creates a new file, mode 0600, under a temporary name of its own
//!   (`O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing existing is ever opened);
//! - [`PrivateName::commit`] checks the name again and renames the
//!   temporary file over it: the caller's own earlier file (a retried dump,
//!   a second restore's log) is replaced atomically, never written through.
//!   A [`PrivateName`] dropped without a commit removes its temporary file;
//! - every name committed is recorded, so that a failed dump can remove
//!   what it wrote ([`take_written_in`]) and a dump that kills its tree
//!   can make it durable first ([`sync_written_in`]);
//! - [`dir_problem`] says why a directory must not hold images (owned by
//!   someone else, or writable by others).

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// The effective uid of the calling process.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} {why}; crust does not write through it (remove it, or use another directory)",
            path.display()
        ),
    )
}

/// Why a file of type `file_type` (from lstat) and owner `uid` must not
/// be replaced by a file crust writes for `euid`, if it must not.
pub fn target_problem(file_type: libc::mode_t, uid: u32, euid: u32) -> Option<String> {
    match file_type & libc::S_IFMT {
        libc::S_IFLNK => Some("is a symbolic link".into()),
        libc::S_IFREG if uid != euid => Some(format!(
            "is owned by uid {uid}, not by the caller (uid {euid})"
        )),
        libc::S_IFREG => None,
        libc::S_IFDIR => Some("is a directory".into()),
        _ => Some("is not a regular file".into()),
    }
}

/// Refuse `path` as the name of a file crust is to write if something is
/// there that is not the caller's own regular file.
pub fn check_target(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => match target_problem(m.mode() as libc::mode_t, m.uid(), geteuid()) {
            Some(why) => Err(refused(path, &why)),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Why a directory of owner `uid` and mode `mode` must not hold the
/// images or the log of a caller of uid `euid`, if it must not.
pub fn dir_problem(mode: u32, uid: u32, euid: u32) -> Option<String> {
    if mode & libc::S_IFMT != libc::S_IFDIR {
        return Some("is not a directory".into());
    }
    if uid != euid {
        return Some(format!(
            "is owned by uid {uid}, not by the caller (uid {euid})"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "is writable by others (mode {:04o})",
            mode & 0o7777
        ));
    }
    None
}

/// Check that `dir` is owned by the caller and not writable by others;
/// the error says why not (the caller names the directory).
pub fn check_dir(dir: &Path) -> io::Result<()> {
    // The directory the name leads to: a symlink given by the caller is
    // the caller's choice.
    let m = std::fs::metadata(dir)?;
    let (mode, uid) = (m.mode(), m.uid());
    match dir_problem(mode, uid, geteuid()) {
        None => Ok(()),
        Some(why) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("it {why}, so another user could plant files in it"),
        )),
    }
}

static WRITTEN: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static SEQ: AtomicU32 = AtomicU32::new(0);

fn written() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    match WRITTEN.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The files committed in `dir` so far, forgotten from the record.
pub fn take_written_in(dir: &Path) -> Vec<PathBuf> {
    let mut all = written();
    let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|p| p.parent() == Some(dir));
    *all = rest;
    mine
}

/// Whether `path` was committed (since its directory's record was last
/// taken): a name this run of crust already wrote.
pub fn was_written(path: &Path) -> bool {
    written().iter().any(|p| p == path)
}

/// Threads that fsync the files of a dump together.
const SYNC_THREADS: usize = 16;

/// `statfs.f_type` of tmpfs and of ramfs: memory only, where fsync does
/// nothing (a crash of the machine loses their files whatever is done).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Whether `dir` is on a filesystem held in memory only (tmpfs, ramfs):
/// nothing there survives a crash of the machine, and fsync there is a
/// no-op, so [`sync_written_in`] has nothing to wait for. Unknown (statfs
/// fails): not.
pub fn in_memory_only(dir: &Path) -> bool {
    crate::ipc::fs_magic(dir).is_ok_and(|m| m == TMPFS_MAGIC || m == RAMFS_MAGIC)
}

/// fsync every file committed in `dir` so far, then `dir` itself: once
/// this returns, a crash of the machine loses none of them. The files are
/// synced on several threads at once: the filesystem's journal commits
/// their fsyncs together (700 files of a 100-process tree on ext4: 4.6 s
/// one after another, 0.16 s on 16 threads). On tmpfs or ramfs
/// ([`in_memory_only`]) fsync is a no-op: nothing is opened or synced
/// (the 700 opens and fsyncs of a 100-process tree took some 50 ms there).
pub fn sync_written_in(dir: &Path) -> io::Result<()> {
    if in_memory_only(dir) {
        return Ok(());
    }
    let paths: Vec<PathBuf> = written()
        .iter()
        .filter(|p| p.parent() == Some(dir))
        .cloned()
        .collect();
    // A small dump's few files: no threads.
    let per = paths.len().div_ceil(SYNC_THREADS).max(8);
    if paths.len() <= per {
        paths.iter().try_for_each(|p| sync_file(p))?;
        return sync_dir(dir);
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = paths
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().try_for_each(|p| sync_file(p))))
            .collect();
        // Every thread is joined before the first error is returned.
        let results: Vec<io::Result<()>> = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("an fsync thread panicked")))
            })
            .collect();
        results.into_iter().collect::<io::Result<()>>()
    })?;
    sync_dir(dir)
}

/// fsync one file.
fn sync_file(p: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
    f.sync_all()
        .map_err(|e| io::Error::new(e.kind(), format!("fsync {}: {e}", p.display())))
}

/// fsync a directory (its entries: names created, renamed, removed).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    d.sync_all()
        .map_err(|e| io::Error::new(e.kind(), format!("fsync {}: {e}", dir.display())))
}

/// The temporary name of the `seq`th file crust writes for `name`.
pub fn temp_name(name: &std::ffi::OsStr, pid: u32, seq: u32) -> OsString {
    let mut t = OsString::from(".");
    t.push(name);
    t.push(format!(".crust-{pid}-{seq}.tmp"));
    t
}

/// The name a new file of crust's will have once complete: until
/// [`PrivateName::commit`] it has a temporary name, removed on drop.
#[derive(Debug)]
pub struct PrivateName {
    tmp: PathBuf,
    path: PathBuf,
}

/// Create `path`'s file: refuse `path` if it is a symlink or a file not the
/// caller's, then create a new file, mode 0600, beside it under a temporary
/// name. `flags` are added to the open (e.g. `O_APPEND`). Returns the file,
/// to write into, and its pending name.
pub fn create_private(path: &Path, flags: i32) -> io::Result<(File, PrivateName)> {
    check_target(path)?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        ));
    };
    let pid = std::process::id();
    let mut tries = 0;
    loop {
        let tmp = dir.join(temp_name(name, pid, SEQ.fetch_add(1, Ordering::Relaxed)));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(file) => {
                let name = PrivateName {
                    tmp,
                    path: path.to_path_buf(),
                };
                return Ok((file, name));
            }
            // Someone else's name: take the next one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", tmp.display()),
                ))
            }
        }
    }
}

impl PrivateName {
    /// The name it will have.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Give the file its name, replacing the caller's own earlier file of
    /// that name (never one that is a symlink or someone else's), and
    /// record it.
    pub fn commit(mut self) -> io::Result<()> {
        check_target(&self.path)?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot rename {} to {}: {e}",
                    self.tmp.display(),
                    self.path.display()
                ),
            )
        })?;
        // Renamed: nothing left to remove on drop.
        self.tmp = PathBuf::new();
        written().push(self.path.clone());
        Ok(())
    }
}

impl Drop for PrivateName {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: libc::mode_t = libc::S_IFREG | 0o600;

    #[test]
    fn targets() {
        assert_eq!(target_problem(REG, 0, 0), None);
        assert_eq!(target_problem(REG, 1000, 1000), None);
        assert!(target_problem(REG, 65534, 0).unwrap().contains("uid 65534"));
        assert!(target_problem(libc::S_IFLNK | 0o777, 0, 0)
            .unwrap()
            .contains("symbolic link"));
        assert!(target_problem(libc::S_IFDIR | 0o700, 0, 0).is_some());
        assert!(target_problem(libc::S_IFIFO | 0o600, 0, 0).is_some());
    }

    #[test]
    fn dirs() {
        let d = libc::S_IFDIR;
        assert_eq!(dir_problem(d | 0o700, 0, 0), None);
        assert_eq!(dir_problem(d | 0o755, 5, 5), None);
        assert!(dir_problem(d | 0o1777, 0, 0).unwrap().contains("1777"));
        assert!(dir_problem(d | 0o775, 0, 0).is_some());
        assert!(dir_problem(d | 0o700, 1000, 0)
            .unwrap()
            .contains("uid 1000"));
        assert!(dir_problem(libc::S_IFREG | 0o600, 0, 0).is_some());
    }

    #[test]
    fn temp_names_are_hidden_and_distinct() {
        let a = temp_name("pages-1.img".as_ref(), 42, 0);
        let b = temp_name("pages-1.img".as_ref(), 42, 1);
        assert_eq!(a, ".pages-1.img.crust-42-0.tmp");
        assert_ne!(a, b);
    }

    #[test]
    fn create_commit_replace_and_refuse() {
        use std::io::{Read, Write};
        let dir = std::env::temp_dir().join(format!("crust-sys-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.img");
        for text in ["one", "two"] {
            let (mut f, name) = create_private(&p, 0).unwrap();
            f.write_all(text.as_bytes()).unwrap();
            name.commit().unwrap();
            let mut s = String::new();
            File::open(&p).unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, text);
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        }
        // Dropped uncommitted: no temporary file stays.
        drop(create_private(&dir.join("b.img"), 0).unwrap());
        let target = dir.join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.join("c.img");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = create_private(&link, 0).unwrap_err();
        assert!(e.to_string().contains("c.img"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["a.img", "c.img", "target"]);
        assert!(was_written(&p) && !was_written(&link));
        assert_eq!(take_written_in(&dir), [p.clone(), p.clone()]);
        assert!(!was_written(&p));
        sync_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
