use std::fs;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

/// Open file descriptors of a process: (fd, readlink target), sorted by fd.
pub fn fds(root: &ProcRoot, pid: i32) -> Result<Vec<(i32, String)>> {
    let dir = root.pid_path(pid, "fd");
    let mut out = Vec::new();
    for fd in ProcRoot::numeric_dir(&dir)? {
        let link = dir.join(fd.to_string());
        let target = match fs::read_link(&link) {
            Ok(t) => t.to_string_lossy().into_owned(),
            // Closed between readdir and readlink.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ProcError::io(link, e)),
        };
        out.push((fd, target));
    }
    Ok(out)
}

/// `/proc/PID/fdinfo/FD`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    /// open flags (printed in octal by the kernel)
    pub flags: u32,
    pub mnt_id: i32,
    pub ino: u64,
    /// Every other line as (key, value), in order. For lines such as
    /// "tfd: 5 events: 19 data: ..." the key is "tfd"; for lines whose first
    /// word has no colon ("inotify wd:1 ino:..."), the key is that word
    /// ("inotify") and the value the rest of the line.
    pub other: Vec<(String, String)>,
}

impl FdInfo {
    /// The first "other" value with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.other
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every "other" value with this key (e.g. all "tfd" lines of an epoll).
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.other
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn split_key(line: &str) -> Option<(&str, &str)> {
    // "key: value" (also "settime flags: 01") when the first colon is followed by
    // whitespace or ends the line; otherwise ("inotify wd:1 ino:...") the key is
    // the first word.
    if let Some(c) = line.find(':') {
        let after = &line[c + 1..];
        if after.is_empty() || after.starts_with([' ', '\t']) {
            return Some((&line[..c], after.trim()));
        }
    }
    let s = line.find([' ', '\t'])?;
    Some((&line[..s], line[s..].trim()))
}

/// `/proc/PID/fdinfo/FD`.
pub fn fdinfo(root: &ProcRoot, pid: i32, fd: i32) -> Result<FdInfo> {
    let path = root.pid_path(pid, &format!("fdinfo/{fd}"));
    let text = ProcRoot::read_string(&path)?;
    let mut info = FdInfo::default();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (k, v) = split_key(line)
            .ok_or_else(|| ProcError::parse(&path, i + 1, line, "expected 'key: value'"))?;
        let bad = || ProcError::parse(&path, i + 1, line, format!("bad {k} value"));
        match k {
            "pos" => info.pos = v.parse().map_err(|_| bad())?,
            "flags" => info.flags = u32::from_str_radix(v, 8).map_err(|_| bad())?,
            "mnt_id" => info.mnt_id = v.parse().map_err(|_| bad())?,
            "ino" => info.ino = v.parse().map_err(|_| bad())?,
            _ => info.other.push((k.to_string(), v.to_string())),
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::split_key;

    #[test]
    fn keys() {
        assert_eq!(split_key("pos:\t10"), Some(("pos", "10")));
        assert_eq!(
            split_key("tfd:        5 events:       19 data: 5"),
            Some(("tfd", "5 events:       19 data: 5"))
        );
        assert_eq!(
            split_key("inotify wd:1 ino:2 sdev:3"),
            Some(("inotify", "wd:1 ino:2 sdev:3"))
        );
        assert_eq!(split_key("eventfd-count: 5"), Some(("eventfd-count", "5")));
        assert_eq!(
            split_key("settime flags: 01"),
            Some(("settime flags", "01"))
        );
        assert_eq!(split_key("novalue"), None);
    }
}
