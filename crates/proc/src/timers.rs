use std::path::Path;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

/// One POSIX timer from `/proc/PID/timers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i32,
    pub signo: i32,
    /// sigev_value as printed (pointer-sized hex).
    pub sigval: u64,
    /// "signal", "thread" or "none".
    pub notify: String,
    /// The notify target is a thread ("tid") rather than a process ("pid").
    pub notify_thread: bool,
    pub notify_pid: i32,
    pub clock_id: i32,
}

/// Parses the text of a timers file; `path` only names it in errors.
pub fn parse_timers(text: &str, path: &Path) -> Result<Vec<PosixTimer>> {
    let mut out: Vec<PosixTimer> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = || ProcError::parse(path, i + 1, line, "malformed timers line");
        let (k, v) = line.split_once(':').ok_or_else(bad)?;
        let v = v.trim();
        if k == "ID" {
            out.push(PosixTimer {
                id: v.parse().map_err(|_| bad())?,
                ..Default::default()
            });
            continue;
        }
        let t = out.last_mut().ok_or_else(bad)?;
        match k {
            "signal" => {
                let (s, val) = v.split_once('/').ok_or_else(bad)?;
                t.signo = s.parse().map_err(|_| bad())?;
                let val = val.trim_start_matches("0x");
                t.sigval = u64::from_str_radix(val, 16).map_err(|_| bad())?;
            }
            "notify" => {
                let (how, who) = v.split_once('/').ok_or_else(bad)?;
                let (kind, pid) = who.split_once('.').ok_or_else(bad)?;
                t.notify = how.to_string();
                t.notify_thread = kind == "tid";
                t.notify_pid = pid.parse().map_err(|_| bad())?;
            }
            "ClockID" => t.clock_id = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(out)
}

/// `/proc/PID/timers`.
pub fn timers(root: &ProcRoot, pid: i32) -> Result<Vec<PosixTimer>> {
    let path = root.pid_path(pid, "timers");
    parse_timers(&ProcRoot::read_string(&path)?, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_timers() {
        let t = "ID: 0\nsignal: 14/0000000000000000\nnotify: signal/pid.123\nClockID: 1\n\
                 ID: 1\nsignal: 34/00000000deadbeef\nnotify: thread/tid.124\nClockID: 0\n";
        let v = parse_timers(t, Path::new("t")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].signo, 14);
        assert_eq!(v[0].notify, "signal");
        assert!(!v[0].notify_thread);
        assert_eq!(v[0].notify_pid, 123);
        assert_eq!(v[0].clock_id, 1);
        assert_eq!(v[1].sigval, 0xdeadbeef);
        assert!(v[1].notify_thread);
    }
}
