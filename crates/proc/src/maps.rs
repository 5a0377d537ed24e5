use std::path::Path;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

const DELETED_SUFFIX: &str = " (deleted)";

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// `s` in the fourth permission column (MAP_SHARED); `p` otherwise.
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path or special name, with any " (deleted)" suffix removed.
    /// `None` for anonymous mappings without a name.
    pub path: Option<String>,
    /// The path had the " (deleted)" suffix.
    pub deleted: bool,
}

/// What a mapping's name column says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapKind {
    /// A mapping with a path (a regular file, device, memfd, SysV shm...).
    File,
    /// Anonymous, unnamed.
    Anon,
    Heap,
    Stack,
    Vdso,
    Vvar,
    VvarVclock,
    Vsyscall,
    Uprobes,
    /// `[anon:NAME]` (prctl PR_SET_VMA_ANON_NAME); holds NAME.
    AnonNamed(String),
    /// `[anon_shmem:NAME]`; holds NAME.
    AnonShmemNamed(String),
    /// Any other bracketed name; holds the whole name.
    OtherSpecial(String),
}

impl MapEntry {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted
    }

    pub fn is_private(&self) -> bool {
        !self.shared
    }

    /// The "rwxp" permission string as the kernel prints it.
    pub fn perms(&self) -> String {
        let mut s = String::with_capacity(4);
        s.push(if self.read { 'r' } else { '-' });
        s.push(if self.write { 'w' } else { '-' });
        s.push(if self.exec { 'x' } else { '-' });
        s.push(if self.shared { 's' } else { 'p' });
        s
    }

    pub fn kind(&self) -> MapKind {
        let Some(name) = self.path.as_deref() else {
            return MapKind::Anon;
        };
        if !(name.starts_with('[') && name.ends_with(']')) {
            return MapKind::File;
        }
        match name {
            "[heap]" => MapKind::Heap,
            "[stack]" => MapKind::Stack,
            "[vdso]" => MapKind::Vdso,
            "[vvar]" => MapKind::Vvar,
            "[vvar_vclock]" => MapKind::VvarVclock,
            "[vsyscall]" => MapKind::Vsyscall,
            "[uprobes]" => MapKind::Uprobes,
            _ => {
                let inner = &name[1..name.len() - 1];
                if let Some(n) = inner.strip_prefix("anon:") {
                    MapKind::AnonNamed(n.to_string())
                } else if let Some(n) = inner.strip_prefix("anon_shmem:") {
                    MapKind::AnonShmemNamed(n.to_string())
                } else {
                    MapKind::OtherSpecial(name.to_string())
                }
            }
        }
    }

    /// The mapping is backed by a file (has a path that is not a bracketed special name).
    pub fn is_file(&self) -> bool {
        self.kind() == MapKind::File
    }

    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }
}

/// A hexadecimal number of 1 to 16 digits, nothing else.
fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut n = 0u64;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | u64::from(d);
    }
    Some(n)
}

/// A decimal number of at least one digit, nothing else.
pub(crate) fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n = 0u64;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(n)
}

/// Splits off the first space-delimited token.
fn token(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let from = s.iter().position(|&c| c != b' ')?;
    let s = s.get(from..)?;
    match s.iter().position(|&c| c == b' ') {
        Some(i) => Some(s.split_at(i)),
        None => Some((s, &[])),
    }
}

fn split_at_byte(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&c| c == sep)?;
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// One line of a maps file (or the header of an smaps entry, the same
/// text), without its newline.
pub(crate) fn parse_map_line(line: &[u8]) -> Option<MapEntry> {
    let (range, rest) = token(line)?;
    let (perms, rest) = token(rest)?;
    let (offset, rest) = token(rest)?;
    let (dev, rest) = token(rest)?;
    let (inode, rest) = token(rest)?;
    let (start, end) = split_at_byte(range, b'-')?;
    let (maj, min) = split_at_byte(dev, b':')?;
    let &[r, w, x, s] = perms else {
        return None;
    };
    let flag = |c: u8, yes: u8| -> Option<bool> {
        if c == yes {
            Some(true)
        } else if c == b'-' {
            Some(false)
        } else {
            None
        }
    };
    let shared = match s {
        b's' => true,
        b'p' => false,
        _ => return None,
    };
    let name = rest.get(rest.iter().position(|&c| c != b' ').unwrap_or(rest.len())..)?;
    let name = std::str::from_utf8(name).ok()?;
    let (path, deleted) = if name.is_empty() {
        (None, false)
    } else if let Some(stripped) = name.strip_suffix(DELETED_SUFFIX) {
        (Some(stripped.to_string()), true)
    } else {
        (Some(name.to_string()), false)
    };
    Some(MapEntry {
        start: hex(start)?,
        end: hex(end)?,
        read: flag(r, b'r')?,
        write: flag(w, b'w')?,
        exec: flag(x, b'x')?,
        shared,
        offset: hex(offset)?,
        dev_major: u32::try_from(hex(maj)?).ok()?,
        dev_minor: u32::try_from(hex(min)?).ok()?,
        inode: decimal(inode)?,
        path,
        deleted,
    })
}

/// Parses the text of a maps file; `path` only names it in errors.
pub fn parse_maps(text: &str, path: &Path) -> Result<Vec<MapEntry>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let e = parse_map_line(line.as_bytes())
            .ok_or_else(|| ProcError::parse(path, i + 1, line, "malformed maps line"))?;
        out.push(e);
    }
    Ok(out)
}

/// `/proc/PID/maps`.
pub fn maps(root: &ProcRoot, pid: i32) -> Result<Vec<MapEntry>> {
    let path = root.pid_path(pid, "maps");
    let text = ProcRoot::read_string(&path)?;
    parse_maps(&text, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_kinds() {
        let p = Path::new("x");
        let text = "\
00400000-00401000 r--p 00000000 fe:00 123                                /tmp/my prog (deleted)
7ffd1000-7ffd2000 rw-s 00001000 00:01 42                                 /dev/zero (deleted)
01000000-02000000 rw-p 00000000 00:00 0                                  [heap]
7f0000000000-7f0000001000 ---p 00000000 00:00 0 
7f0000001000-7f0000002000 rw-p 00000000 00:00 0                          [anon:my name]
7ffff7fc0000-7ffff7fc4000 r--p 00000000 00:00 0                          [vvar]
7ffff7fc4000-7ffff7fc5000 r--p 00000000 00:00 0                          [vvar_vclock]
7ffff7fc5000-7ffff7fc7000 r-xp 00000000 00:00 0                          [vdso]
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
7ffff7ff0000-7ffff7ff1000 r-xp 00000000 00:00 0                          [uprobes]
7ffff7ff1000-7ffff7ff2000 rw-s 00000000 00:01 7                          [anon_shmem:shm]
";
        let m = parse_maps(text, p).unwrap();
        assert_eq!(m.len(), 12);
        assert_eq!(m[0].path.as_deref(), Some("/tmp/my prog"));
        assert!(m[0].deleted && m[0].read && !m[0].write && !m[0].shared);
        assert_eq!(m[0].dev_major, 0xfe);
        assert_eq!(m[0].inode, 123);
        assert_eq!(m[0].kind(), MapKind::File);
        assert!(m[1].shared && m[1].is_deleted());
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[2].kind(), MapKind::Heap);
        assert_eq!(m[3].path, None);
        assert_eq!(m[3].kind(), MapKind::Anon);
        assert_eq!(m[3].perms(), "---p");
        assert_eq!(m[4].kind(), MapKind::AnonNamed("my name".into()));
        assert_eq!(m[5].kind(), MapKind::Vvar);
        assert_eq!(m[6].kind(), MapKind::VvarVclock);
        assert_eq!(m[7].kind(), MapKind::Vdso);
        assert_eq!(m[8].kind(), MapKind::Stack);
        assert_eq!(m[9].kind(), MapKind::Vsyscall);
        assert_eq!(m[9].start, 0xffffffffff600000);
        assert_eq!(m[10].kind(), MapKind::Uprobes);
        assert_eq!(m[11].kind(), MapKind::AnonShmemNamed("shm".into()));
    }

    #[test]
    fn bad_line() {
        let err = parse_maps("zz-1 rw-p 0 0:0 0\n", Path::new("f")).unwrap_err();
        assert!(matches!(err, ProcError::Parse { line: 1, .. }));
        assert!(parse_maps("0-1 rwqp 0 0:0 0\n", Path::new("f")).is_err());
    }
}
