use std::path::Path;

use crate::error::{ProcError, Result};
use crate::root::ProcRoot;

/// `/proc/PID/status` (or a thread's), the fields checkpointing needs.
/// `fields` keeps every line as (key, value) for anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    /// `None` if the kernel does not print Umask.
    pub umask: Option<u32>,
    /// The state letter ("S (sleeping)" gives 'S').
    pub state: char,
    pub tgid: i32,
    pub pid: i32,
    pub ppid: i32,
    pub tracer_pid: i32,
    /// real, effective, saved, filesystem
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub ns_tgid: Vec<i32>,
    pub ns_pid: Vec<i32>,
    pub ns_pgid: Vec<i32>,
    pub ns_sid: Vec<i32>,
    /// SigQ: (queued, limit)
    pub sig_q: (u64, u64),
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
    pub no_new_privs: u32,
    pub seccomp: u32,
    pub threads: i32,
    /// Every "Key:\tvalue" line, value trimmed.
    pub fields: Vec<(String, String)>,
}

impl Status {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the text of a status file; `path` only names it in errors.
pub fn parse_status(text: &str, path: &Path) -> Result<Status> {
    let mut st = Status::default();
    let mut lines: Vec<(usize, &str, &str)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| ProcError::parse(path, i + 1, line, "expected 'Key: value'"))?;
        let v = v.trim();
        lines.push((i + 1, k, v));
        st.fields.push((k.to_string(), v.to_string()));
    }
    let find = |key: &'static str| -> Result<(usize, &str)> {
        lines
            .iter()
            .find(|(_, k, _)| *k == key)
            .map(|(n, _, v)| (*n, *v))
            .ok_or(ProcError::Missing {
                path: path.to_path_buf(),
                field: key,
            })
    };
    let bad = |n: usize, key: &str, v: &str| {
        ProcError::parse(path, n, &format!("{key}:\t{v}"), format!("bad {key} value"))
    };
    let dec = |key: &'static str| -> Result<i64> {
        let (n, v) = find(key)?;
        v.parse::<i64>().map_err(|_| bad(n, key, v))
    };
    let hex = |key: &'static str| -> Result<u64> {
        let (n, v) = find(key)?;
        u64::from_str_radix(v, 16).map_err(|_| bad(n, key, v))
    };
    let list = |key: &'static str| -> Result<Vec<i64>> {
        let (n, v) = find(key)?;
        v.split_whitespace()
            .map(|x| x.parse::<i64>().map_err(|_| bad(n, key, v)))
            .collect()
    };
    let ids4 = |key: &'static str| -> Result<[u32; 4]> {
        let (n, v) = find(key)?;
        let l: Vec<u32> = v
            .split_whitespace()
            .map(|x| x.parse::<u32>().map_err(|_| bad(n, key, v)))
            .collect::<Result<_>>()?;
        l.try_into().map_err(|_| bad(n, key, v))
    };
    let to_i32 = |l: Vec<i64>| l.into_iter().map(|x| x as i32).collect::<Vec<i32>>();

    st.name = find("Name")?.1.to_string();
    st.umask = match find("Umask") {
        Ok((n, v)) => Some(u32::from_str_radix(v, 8).map_err(|_| bad(n, "Umask", v))?),
        Err(_) => None,
    };
    let (n, v) = find("State")?;
    st.state = v.chars().next().ok_or_else(|| bad(n, "State", v))?;
    st.tgid = dec("Tgid")? as i32;
    st.pid = dec("Pid")? as i32;
    st.ppid = dec("PPid")? as i32;
    st.tracer_pid = dec("TracerPid")? as i32;
    st.uid = ids4("Uid")?;
    st.gid = ids4("Gid")?;
    st.groups = list("Groups")?.into_iter().map(|x| x as u32).collect();
    st.ns_tgid = to_i32(list("NStgid")?);
    st.ns_pid = to_i32(list("NSpid")?);
    st.ns_pgid = to_i32(list("NSpgid")?);
    st.ns_sid = to_i32(list("NSsid")?);
    let (n, v) = find("SigQ")?;
    let (a, b) = v.split_once('/').ok_or_else(|| bad(n, "SigQ", v))?;
    st.sig_q = (
        a.parse().map_err(|_| bad(n, "SigQ", v))?,
        b.parse().map_err(|_| bad(n, "SigQ", v))?,
    );
    st.sig_pnd = hex("SigPnd")?;
    st.shd_pnd = hex("ShdPnd")?;
    st.sig_blk = hex("SigBlk")?;
    st.sig_ign = hex("SigIgn")?;
    st.sig_cgt = hex("SigCgt")?;
    st.cap_inh = hex("CapInh")?;
    st.cap_prm = hex("CapPrm")?;
    st.cap_eff = hex("CapEff")?;
    st.cap_bnd = hex("CapBnd")?;
    st.cap_amb = hex("CapAmb")?;
    st.no_new_privs = dec("NoNewPrivs")? as u32;
    st.seccomp = dec("Seccomp")? as u32;
    st.threads = dec("Threads")? as i32;
    Ok(st)
}

/// `/proc/PID/status`.
pub fn status(root: &ProcRoot, pid: i32) -> Result<Status> {
    let path = root.pid_path(pid, "status");
    parse_status(&ProcRoot::read_string(&path)?, &path)
}

/// `/proc/PID/task/TID/status`.
pub fn task_status(root: &ProcRoot, pid: i32, tid: i32) -> Result<Status> {
    let path = root.task_path(pid, tid, "status");
    parse_status(&ProcRoot::read_string(&path)?, &path)
}
