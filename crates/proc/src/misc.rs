use std::path::{Path, PathBuf};

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

/// Number of resource limits (RLIMIT_CPU = 0 .. RLIMIT_RTTIME = 15).
pub const RLIMIT_NLIMITS: usize = 16;
/// The value "unlimited" stands for.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// Row names of /proc/PID/limits, in RLIMIT_* order.
const LIMIT_NAMES: [&str; RLIMIT_NLIMITS] = [
    "Max cpu time",
    "Max file size",
    "Max data size",
    "Max stack size",
    "Max core file size",
    "Max resident set",
    "Max processes",
    "Max open files",
    "Max locked memory",
    "Max address space",
    "Max file locks",
    "Max pending signals",
    "Max msgqueue size",
    "Max nice priority",
    "Max realtime priority",
    "Max realtime timeout",
];

/// `/proc/PID/limits`: (soft, hard) per RLIMIT_* index; "unlimited" is [`RLIM_INFINITY`].
pub fn limits(root: &ProcRoot, pid: i32) -> Result<[(u64, u64); RLIMIT_NLIMITS]> {
    let path = root.pid_path(pid, "limits");
    let text = ProcRoot::read_string(&path)?;
    parse_limits(&text, &path)
}

pub(crate) fn parse_limits(text: &str, path: &Path) -> Result<[(u64, u64); RLIMIT_NLIMITS]> {
    let mut out = [(0u64, 0u64); RLIMIT_NLIMITS];
    let mut seen = [false; RLIMIT_NLIMITS];
    for (i, line) in text.lines().enumerate() {
        let Some(idx) = LIMIT_NAMES.iter().position(|n| {
            line.strip_prefix(n)
                .is_some_and(|r| r.starts_with(' ') || r.is_empty())
        }) else {
            continue;
        };
        let mut words = line[LIMIT_NAMES[idx].len()..].split_whitespace();
        let mut val = || -> Result<u64> {
            match words.next() {
                Some("unlimited") => Ok(RLIM_INFINITY),
                Some(w) => w
                    .parse()
                    .map_err(|_| ProcError::parse(path, i + 1, line, "bad limit value")),
                None => Err(ProcError::parse(path, i + 1, line, "missing limit value")),
            }
        };
        out[idx] = (val()?, val()?);
        seen[idx] = true;
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(ProcError::Missing {
            path: path.to_path_buf(),
            field: LIMIT_NAMES[missing],
        });
    }
    Ok(out)
}

/// `/proc/PID/auxv` as raw native-endian u64 words (type, value, type, value, ..., 0, 0).
pub fn auxv(root: &ProcRoot, pid: i32) -> Result<Vec<u64>> {
    let path = root.pid_path(pid, "auxv");
    let bytes = ProcRoot::read_bytes(&path)?;
    if bytes.len() % 8 != 0 {
        return Err(ProcError::parse(
            &path,
            0,
            "",
            format!("length {} is not a multiple of 8", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8-byte chunk")))
        .collect())
}

fn read_trimmed(path: &Path) -> Result<String> {
    Ok(ProcRoot::read_string(path)?.trim_end().to_string())
}

fn parse_one<T: std::str::FromStr>(path: &Path, what: &str) -> Result<T> {
    let s = read_trimmed(path)?;
    s.parse()
        .map_err(|_| ProcError::parse(path, 1, &s, format!("bad {what}")))
}

/// `/proc/PID/personality` (hex).
pub fn personality(root: &ProcRoot, pid: i32) -> Result<u32> {
    let path = root.pid_path(pid, "personality");
    let s = read_trimmed(&path)?;
    u32::from_str_radix(&s, 16).map_err(|_| ProcError::parse(&path, 1, &s, "bad personality"))
}

/// Thread ids from `/proc/PID/task`, sorted.
pub fn tasks(root: &ProcRoot, pid: i32) -> Result<Vec<i32>> {
    ProcRoot::numeric_dir(&root.pid_path(pid, "task"))
}

/// `/proc/PID/task/TID/children`: pids of the thread's children.
pub fn children(root: &ProcRoot, pid: i32, tid: i32) -> Result<Vec<i32>> {
    let path = root.task_path(pid, tid, "children");
    let s = ProcRoot::read_string(&path)?;
    s.split_whitespace()
        .map(|w| {
            w.parse()
                .map_err(|_| ProcError::parse(&path, 1, &s, "bad child pid"))
        })
        .collect()
}

/// `/proc/PID/loginuid` (u32::MAX when unset).
pub fn loginuid(root: &ProcRoot, pid: i32) -> Result<u32> {
    parse_one(&root.pid_path(pid, "loginuid"), "loginuid")
}

/// `/proc/PID/oom_score_adj`.
pub fn oom_score_adj(root: &ProcRoot, pid: i32) -> Result<i32> {
    parse_one(&root.pid_path(pid, "oom_score_adj"), "oom_score_adj")
}

/// `/proc/PID/timerslack_ns`.
pub fn timerslack_ns(root: &ProcRoot, pid: i32) -> Result<u64> {
    parse_one(&root.pid_path(pid, "timerslack_ns"), "timerslack_ns")
}

/// `/proc/PID/cmdline`, raw (NUL-separated). See [`split_nul`].
pub fn cmdline(root: &ProcRoot, pid: i32) -> Result<Vec<u8>> {
    ProcRoot::read_bytes(&root.pid_path(pid, "cmdline"))
}

/// `/proc/PID/environ`, raw (NUL-separated). See [`split_nul`].
pub fn environ(root: &ProcRoot, pid: i32) -> Result<Vec<u8>> {
    ProcRoot::read_bytes(&root.pid_path(pid, "environ"))
}

/// Splits NUL-terminated strings; a final unterminated piece is kept.
pub fn split_nul(data: &[u8]) -> Vec<Vec<u8>> {
    let data = data.strip_suffix(&[0]).unwrap_or(data);
    if data.is_empty() {
        return Vec::new();
    }
    data.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

/// The `/proc/PID/exe` link target.
pub fn exe(root: &ProcRoot, pid: i32) -> Result<PathBuf> {
    ProcRoot::read_link(&root.pid_path(pid, "exe"))
}

/// The `/proc/PID/cwd` link target.
pub fn cwd(root: &ProcRoot, pid: i32) -> Result<PathBuf> {
    ProcRoot::read_link(&root.pid_path(pid, "cwd"))
}

/// The `/proc/PID/root` link target.
pub fn root_link(root: &ProcRoot, pid: i32) -> Result<PathBuf> {
    ProcRoot::read_link(&root.pid_path(pid, "root"))
}

/// `/proc/PID/comm` without the newline.
pub fn comm(root: &ProcRoot, pid: i32) -> Result<String> {
    let s = ProcRoot::read_string(&root.pid_path(pid, "comm"))?;
    Ok(s.strip_suffix('\n').unwrap_or(&s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_split() {
        assert_eq!(split_nul(b"a\0bc\0"), vec![b"a".to_vec(), b"bc".to_vec()]);
        assert_eq!(split_nul(b"a\0b"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(split_nul(b"").is_empty());
        assert_eq!(split_nul(b"\0"), Vec::<Vec<u8>>::new());
    }
}
