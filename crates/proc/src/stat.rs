use std::path::Path;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

/// `flags` bit of a kernel thread (kthreadd and its children), PF_KTHREAD.
pub const PF_KTHREAD: u32 = 0x0020_0000;
/// `flags` bit of a kernel worker thread that belongs to a user process
/// (io_uring's `iou-wrk-N` and `iou-sqp-N`), PF_IO_WORKER. Such a thread
/// shows in /proc/PID/task like any other, but it never returns to user
/// space: ptrace cannot stop it, nor can it run a remote syscall.
pub const PF_IO_WORKER: u32 = 0x10;

/// `/proc/PID/stat` (or `/proc/PID/task/TID/stat`), every field, named as in proc(5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    /// 1
    pub pid: i32,
    /// 2, without the parentheses. May itself contain ')' or spaces.
    pub comm: String,
    /// 3
    pub state: char,
    /// 4
    pub ppid: i32,
    /// 5
    pub pgrp: i32,
    /// 6
    pub session: i32,
    /// 7
    pub tty_nr: i32,
    /// 8
    pub tpgid: i32,
    /// 9
    pub flags: u32,
    /// 10..13
    pub minflt: u64,
    pub cminflt: u64,
    pub majflt: u64,
    pub cmajflt: u64,
    /// 14..17 (clock ticks)
    pub utime: u64,
    pub stime: u64,
    pub cutime: i64,
    pub cstime: i64,
    /// 18
    pub priority: i64,
    /// 19
    pub nice: i64,
    /// 20
    pub num_threads: i64,
    /// 21
    pub itrealvalue: i64,
    /// 22 (clock ticks since boot)
    pub start_time: u64,
    /// 23 (bytes)
    pub vsize: u64,
    /// 24 (pages)
    pub rss: i64,
    /// 25
    pub rsslim: u64,
    /// 26..30
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub kstkesp: u64,
    pub kstkeip: u64,
    /// 31..34 (obsolete decimal signal masks)
    pub signal: u64,
    pub blocked: u64,
    pub sigignore: u64,
    pub sigcatch: u64,
    /// 35..37
    pub wchan: u64,
    pub nswap: u64,
    pub cnswap: u64,
    /// 38
    pub exit_signal: i32,
    /// 39
    pub processor: i32,
    /// 40
    pub rt_priority: u32,
    /// 41
    pub policy: u32,
    /// 42
    pub delayacct_blkio_ticks: u64,
    /// 43
    pub guest_time: u64,
    /// 44
    pub cguest_time: i64,
    /// 45..51
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    /// 52
    pub exit_code: i32,
}

impl Stat {
    /// A kernel thread: PF_KTHREAD, or kthreadd (pid 2) and its children.
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0 || self.pid == 2 || self.ppid == 2
    }

    /// A kernel worker of a user process (io_uring), see [`PF_IO_WORKER`].
    pub fn is_io_worker(&self) -> bool {
        self.flags & PF_IO_WORKER != 0
    }
}

/// Parses the text of a stat file; `path` only names it in errors.
pub fn parse_stat(text: &str, path: &Path) -> Result<Stat> {
    let line = text.trim_end_matches('\n');
    let bad = |reason: &str| ProcError::parse(path, 1, line, reason);
    let open = line.find(" (").ok_or_else(|| bad("no '(' before comm"))?;
    let close = line.rfind(')').ok_or_else(|| bad("no ')' after comm"))?;
    if close < open {
        return Err(bad("')' before '('"));
    }
    let mut st = Stat {
        pid: line[..open].trim().parse().map_err(|_| bad("bad pid"))?,
        comm: line[open + 2..close].to_string(),
        ..Stat::default()
    };
    let rest: Vec<&str> = line[close + 1..].split_whitespace().collect();
    // rest[0] is field 3.
    if rest.len() < 50 {
        return Err(bad("fewer than 52 fields"));
    }
    let f = |n: usize| rest[n - 3];
    macro_rules! num {
        ($n:expr) => {
            f($n)
                .parse()
                .map_err(|_| bad(concat!("bad number in field ", stringify!($n))))?
        };
    }
    let mut chars = f(3).chars();
    st.state = match (chars.next(), chars.next()) {
        (Some(c), None) => c,
        _ => return Err(bad("bad state")),
    };
    st.ppid = num!(4);
    st.pgrp = num!(5);
    st.session = num!(6);
    st.tty_nr = num!(7);
    st.tpgid = num!(8);
    st.flags = num!(9);
    st.minflt = num!(10);
    st.cminflt = num!(11);
    st.majflt = num!(12);
    st.cmajflt = num!(13);
    st.utime = num!(14);
    st.stime = num!(15);
    st.cutime = num!(16);
    st.cstime = num!(17);
    st.priority = num!(18);
    st.nice = num!(19);
    st.num_threads = num!(20);
    st.itrealvalue = num!(21);
    st.start_time = num!(22);
    st.vsize = num!(23);
    st.rss = num!(24);
    st.rsslim = num!(25);
    st.start_code = num!(26);
    st.end_code = num!(27);
    st.start_stack = num!(28);
    st.kstkesp = num!(29);
    st.kstkeip = num!(30);
    st.signal = num!(31);
    st.blocked = num!(32);
    st.sigignore = num!(33);
    st.sigcatch = num!(34);
    st.wchan = num!(35);
    st.nswap = num!(36);
    st.cnswap = num!(37);
    st.exit_signal = num!(38);
    st.processor = num!(39);
    st.rt_priority = num!(40);
    st.policy = num!(41);
    st.delayacct_blkio_ticks = num!(42);
    st.guest_time = num!(43);
    st.cguest_time = num!(44);
    st.start_data = num!(45);
    st.end_data = num!(46);
    st.start_brk = num!(47);
    st.arg_start = num!(48);
    st.arg_end = num!(49);
    st.env_start = num!(50);
    st.env_end = num!(51);
    st.exit_code = num!(52);
    Ok(st)
}

/// `/proc/PID/stat`.
pub fn stat(root: &ProcRoot, pid: i32) -> Result<Stat> {
    let path = root.pid_path(pid, "stat");
    parse_stat(&ProcRoot::read_string(&path)?, &path)
}

/// `/proc/PID/task/TID/stat`.
pub fn task_stat(root: &ProcRoot, pid: i32, tid: i32) -> Result<Stat> {
    let path = root.task_path(pid, tid, "stat");
    parse_stat(&ProcRoot::read_string(&path)?, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_with_parens() {
        let mut line = String::from("42 (a) b) (c) S 1 42 42 0 -1 4194560");
        for i in 10..=52 {
            line.push_str(&format!(" {i}"));
        }
        line.push('\n');
        let st = parse_stat(&line, Path::new("s")).unwrap();
        assert_eq!(st.pid, 42);
        assert_eq!(st.comm, "a) b) (c");
        assert_eq!(st.state, 'S');
        assert_eq!(st.tty_nr, 0);
        assert_eq!(st.tpgid, -1);
        assert_eq!(st.flags, 4194560);
        assert_eq!(st.nice, 19);
        assert_eq!(st.start_time, 22);
        assert_eq!(st.start_code, 26);
        assert_eq!(st.start_data, 45);
        assert_eq!(st.env_end, 51);
        assert_eq!(st.exit_code, 52);
    }

    #[test]
    fn kernel_threads_and_io_workers_by_flags() {
        let st = |pid: i32, ppid: i32, flags: u32| Stat {
            pid,
            ppid,
            flags,
            ..Stat::default()
        };
        assert!(st(2, 0, 0x0020_8040).is_kernel_thread());
        assert!(st(17, 2, 0x0420_8060).is_kernel_thread());
        assert!(st(99, 1, PF_KTHREAD).is_kernel_thread());
        assert!(!st(99, 1, 0x0040_0100).is_kernel_thread());
        // An iou-wrk thread of a user process: PF_IO_WORKER, not a kthread.
        let wrk = st(120, 1, 0x0040_0050);
        assert!(wrk.is_io_worker() && !wrk.is_kernel_thread());
        assert!(!st(100, 1, 0x0040_0100).is_io_worker());
    }

    #[test]
    fn short_line() {
        assert!(parse_stat("1 (x) S 0 1 1", Path::new("s")).is_err());
    }
}
