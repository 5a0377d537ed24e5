use std::path::Path;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

/// One line of `/proc/PID/mountinfo`. Octal escapes (`\040` etc.) are decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mnt_id: i32,
    pub parent_id: i32,
    pub major: u32,
    pub minor: u32,
    pub root: String,
    pub mount_point: String,
    /// Per-mount options, e.g. "rw,relatime".
    pub options: String,
    /// Optional fields such as "shared:1", "master:2", "propagate_from:3", "unbindable".
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

impl MountInfo {
    /// The peer group of a "shared:N" optional field.
    pub fn shared(&self) -> Option<i32> {
        self.opt_num("shared:")
    }

    /// The peer group of a "master:N" optional field.
    pub fn master(&self) -> Option<i32> {
        self.opt_num("master:")
    }

    fn opt_num(&self, prefix: &str) -> Option<i32> {
        self.optional
            .iter()
            .find_map(|o| o.strip_prefix(prefix).and_then(|n| n.parse().ok()))
    }
}

/// Decodes the kernel's `\ooo` octal escapes.
pub(crate) fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if v <= 255 {
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountInfo> {
    let mut w = line.split(' ');
    let mnt_id = w.next()?.parse().ok()?;
    let parent_id = w.next()?.parse().ok()?;
    let (maj, min) = w.next()?.split_once(':')?;
    let root = unescape(w.next()?);
    let mount_point = unescape(w.next()?);
    let options = w.next()?.to_string();
    let mut optional = Vec::new();
    loop {
        let f = w.next()?;
        if f == "-" {
            break;
        }
        if !f.is_empty() {
            optional.push(f.to_string());
        }
    }
    let fstype = unescape(w.next()?);
    let source = unescape(w.next()?);
    let super_options = w.next()?.to_string();
    Some(MountInfo {
        mnt_id,
        parent_id,
        major: maj.parse().ok()?,
        minor: min.parse().ok()?,
        root,
        mount_point,
        options,
        optional,
        fstype,
        source,
        super_options,
    })
}

/// Parses the text of a mountinfo file; `path` only names it in errors.
pub fn parse_mountinfo(text: &str, path: &Path) -> Result<Vec<MountInfo>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| {
            parse_line(l)
                .ok_or_else(|| ProcError::parse(path, i + 1, l, "malformed mountinfo line"))
        })
        .collect()
}

/// `/proc/PID/mountinfo`.
pub fn mountinfo(root: &ProcRoot, pid: i32) -> Result<Vec<MountInfo>> {
    let path = root.pid_path(pid, "mountinfo");
    parse_mountinfo(&ProcRoot::read_string(&path)?, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line() {
        let t = "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 shared:7 - ext3 /dev/r\\134oot rw,errors=continue\n\
                 25 1 0:22 / /sys rw - sysfs sysfs rw\n";
        let m = parse_mountinfo(t, Path::new("m")).unwrap();
        assert_eq!(m[0].mnt_id, 36);
        assert_eq!(m[0].parent_id, 35);
        assert_eq!((m[0].major, m[0].minor), (98, 0));
        assert_eq!(m[0].mount_point, "/mnt 2");
        assert_eq!(m[0].source, "/dev/r\\oot");
        assert_eq!(m[0].master(), Some(1));
        assert_eq!(m[0].shared(), Some(7));
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[0].super_options, "rw,errors=continue");
        assert!(m[1].optional.is_empty());
        assert!(parse_mountinfo("1 2 3\n", Path::new("m")).is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\011b\\012c\\"), "a\tb\nc\\");
        assert_eq!(unescape("\\04"), "\\04");
    }
}
