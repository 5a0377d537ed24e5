//! Credentials of a restored task (ids, groups, capabilities, securebits,
//! no_new_privs), set last.

use super::*;

/// Credentials last: after them the task may no longer be allowed to do
/// the rest. Skipped when they equal ours.
pub fn apply_creds(r: &mut Remote<'_>, core: &CoreEntry) -> Result<(), Error> {
    let Some(c) = core.thread_core.as_ref().and_then(|t| t.creds.as_ref()) else {
        return Ok(());
    };
    let me = crust_proc::status(&ProcRoot::default(), crust_sys::process::getpid())
        .map_err(proc_err(crust_sys::process::getpid()))?;
    let same_ids = [c.uid, c.euid, c.suid, c.fsuid] == me.uid
        && [c.gid, c.egid, c.sgid, c.fsgid] == me.gid
        && c.groups == me.groups;
    let same_caps = cap_join(&c.cap_eff) == me.cap_eff
        && cap_join(&c.cap_prm) == me.cap_prm
        && cap_join(&c.cap_inh) == me.cap_inh
        && cap_join(&c.cap_bnd) == me.cap_bnd
        && cap_join(&c.cap_amb) == me.cap_amb;
    if !same_ids {
        let groups: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
        let a = if groups.is_empty() {
            r.at(0)
        } else {
            r.put(0, &groups)?
        };
        r.call(
            "setgroups",
            libc::SYS_setgroups,
            [c.groups.len() as u64, a.get(), 0, 0, 0, 0],
        )?;
        // Keep capabilities across the uid change; the final capset sets them.
        r.call(
            "prctl(PR_SET_KEEPCAPS)",
            libc::SYS_prctl,
            [libc::PR_SET_KEEPCAPS as u64, 1, 0, 0, 0, 0],
        )?;
        r.call(
            "setresgid",
            libc::SYS_setresgid,
            [c.gid as u64, c.egid as u64, c.sgid as u64, 0, 0, 0],
        )?;
        r.call(
            "setfsgid",
            libc::SYS_setfsgid,
            [c.fsgid as u64, 0, 0, 0, 0, 0],
        )?;
        r.call(
            "setresuid",
            libc::SYS_setresuid,
            [c.uid as u64, c.euid as u64, c.suid as u64, 0, 0, 0],
        )?;
        r.call(
            "setfsuid",
            libc::SYS_setfsuid,
            [c.fsuid as u64, 0, 0, 0, 0, 0],
        )?;
    }
    if !same_ids || !same_caps {
        let bnd = cap_join(&c.cap_bnd);
        for cap in 0..64u64 {
            if bnd & (1 << cap) == 0 && me.cap_bnd & (1 << cap) != 0 {
                r.call(
                    "prctl(PR_CAPBSET_DROP)",
                    libc::SYS_prctl,
                    [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
                )?;
            }
        }
        // struct __user_cap_header_struct {u32 version; i32 pid} + 2 data
        // {effective, permitted, inheritable} words.
        let mut b = Vec::new();
        b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
        let (e, p, i) = (
            cap_join(&c.cap_eff),
            cap_join(&c.cap_prm),
            cap_join(&c.cap_inh),
        );
        for half in 0..2 {
            let sh = 32 * half;
            for v in [e, p, i] {
                b.extend_from_slice(&((v >> sh) as u32).to_le_bytes());
            }
        }
        let a = r.put(0, &b)?;
        r.call(
            "capset",
            libc::SYS_capset,
            [a.get(), a.get() + 8, 0, 0, 0, 0],
        )?;
        let amb = cap_join(&c.cap_amb);
        for cap in 0..64u64 {
            if amb & (1 << cap) != 0 {
                r.call(
                    "prctl(PR_CAP_AMBIENT_RAISE)",
                    libc::SYS_prctl,
                    [
                        libc::PR_CAP_AMBIENT as u64,
                        libc::PR_CAP_AMBIENT_RAISE as u64,
                        cap,
                        0,
                        0,
                        0,
                    ],
                )?;
            }
        }
    }
    if c.secbits != 0 {
        r.call(
            "prctl(PR_SET_SECUREBITS)",
            libc::SYS_prctl,
            [libc::PR_SET_SECUREBITS as u64, c.secbits as u64, 0, 0, 0, 0],
        )?;
    }
    if c.no_new_privs.unwrap_or(0) != 0 {
        r.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}
