//! Credentials of a restored task (ids, groups, capabilities, securebits,
//! no_new_privs), set last.
//!
//! The task starts with crust's credentials (root, crust's capabilities,
//! crust's securebits) and ends with exactly the recorded ones. The order
//! matters, because each step needs privileges a later one takes away:
//!
//! 1. supplementary groups (needs CAP_SETGID);
//! 2. gids then uids, with SECBIT_NO_SETUID_FIXUP set for the time being
//!    so that leaving uid 0 drops no capability (the kernel's fix-up would
//!    clear the permitted, effective and ambient sets);
//! 3. the inheritable set, while crust's permitted and effective sets are
//!    still there (a new inheritable capability must be in the bounding set
//!    at that moment: the recorded inheritable set may hold capabilities
//!    the recorded bounding set no longer has);
//! 4. the bounding set (needs CAP_SETPCAP);
//! 5. the ambient set (each one must be permitted and inheritable, and
//!    SECBIT_NO_CAP_AMBIENT_RAISE not set yet);
//! 6. the exact securebits (needs CAP_SETPCAP, so before the last capset):
//!    nothing of crust's (NO_SETUID_FIXUP, or KEEP_CAPS as an earlier crust
//!    left) stays behind;
//! 7. effective, permitted and inheritable as recorded (lowering the
//!    permitted set keeps the ambient caps that are permitted and
//!    inheritable, which the recorded ones are);
//! 8. no_new_privs, which cannot be undone.

use super::*;
use crate::task::remote::Batch;

const SECBIT_NO_SETUID_FIXUP: u64 = 1 << 2;
/// _LINUX_CAPABILITY_VERSION_3.
const CAP_V3: u32 = 0x2008_0522;

/// Credentials last: after them the task may no longer be allowed to do
/// the rest. Each step is skipped when the task (a copy of crust) already
/// has what the image says. `after`: what the change of credentials
/// resets (see [`crate::task::misc::after_creds`]), run once they are set.
pub fn apply_creds(r: &mut Remote<'_>, core: &CoreEntry, mut after: Batch) -> Result<(), Error> {
    let Some(c) = core.thread_core.as_ref().and_then(|t| t.creds.as_ref()) else {
        return after.flush(r).map(drop);
    };
    // What the task has now (crust's, or, in a new user namespace, what
    // it was given there), its ids as its namespace sees them.
    let pid = r.pid();
    let me = crust_proc::status(&ProcRoot::default(), pid).map_err(proc_err(pid))?;
    let (uid, gid) = (crate::util::idmap::to_ns_uid, crate::util::idmap::to_ns_gid);
    let same_ids = [c.uid, c.euid, c.suid, c.fsuid] == me.uid.map(uid)
        && [c.gid, c.egid, c.sgid, c.fsgid] == me.gid.map(gid)
        && c.groups
            .iter()
            .copied()
            .eq(me.groups.iter().map(|g| gid(*g)));
    let want = Caps {
        eff: cap_join(&c.cap_eff),
        prm: cap_join(&c.cap_prm),
        inh: cap_join(&c.cap_inh),
    };
    let same_caps = want.eff == me.cap_eff
        && want.prm == me.cap_prm
        && want.inh == me.cap_inh
        && cap_join(&c.cap_bnd) == me.cap_bnd
        && cap_join(&c.cap_amb) == me.cap_amb;
    let get_secbits = |r: &mut Remote<'_>, b: &mut Batch| {
        b.push(
            r,
            "prctl(PR_GET_SECUREBITS)".into(),
            libc::SYS_prctl,
            [libc::PR_GET_SECUREBITS as u64, 0, 0, 0, 0, 0],
            None,
        )
    };
    if same_ids && same_caps {
        // Only the securebits may change, which resets nothing: they are
        // read in the same stop as `after` runs (most tasks need no other).
        let mut b = Batch::new(r.batch_code);
        get_secbits(r, &mut b)?;
        b.append(r, after)?;
        let secbits = b.flush(r)?.first().copied().ok_or_else(|| Error::Restore {
            pid,
            what: "prctl(PR_GET_SECUREBITS) gave no result".into(),
        })?;
        if secbits != c.secbits as u64 {
            set_secbits(r, c.secbits)?;
        }
        return no_new_privs(r, c);
    }
    let mut b = Batch::new(r.batch_code);
    get_secbits(r, &mut b)?;
    let secbits = b.flush(r)?.first().copied().ok_or_else(|| Error::Restore {
        pid,
        what: "prctl(PR_GET_SECUREBITS) gave no result".into(),
    })?;
    if !same_ids {
        set_ids(r, c, secbits)?;
    }
    if !same_caps {
        // crust's effective and permitted sets stay until step 7.
        let mine = Caps {
            eff: me.cap_eff,
            prm: me.cap_prm,
            inh: want.inh,
        };
        capset(r, &mine)?;
        drop_bounding(r, cap_join(&c.cap_bnd), me.cap_bnd)?;
        raise_ambient(r, cap_join(&c.cap_amb), me.cap_amb)?;
    }
    let now = if same_ids {
        secbits
    } else {
        secbits | SECBIT_NO_SETUID_FIXUP
    };
    if now != c.secbits as u64 {
        set_secbits(r, c.secbits)?;
    }
    if !same_caps {
        capset(r, &want)?;
    }
    after.flush(r)?;
    no_new_privs(r, c)
}

/// The recorded securebits.
fn set_secbits(r: &mut Remote<'_>, secbits: u32) -> Result<(), Error> {
    r.call(
        "prctl(PR_SET_SECUREBITS)",
        libc::SYS_prctl,
        [libc::PR_SET_SECUREBITS as u64, secbits as u64, 0, 0, 0, 0],
    )
    .map(drop)
}

/// no_new_privs, last: it cannot be undone.
fn no_new_privs(r: &mut Remote<'_>, c: &CredsEntry) -> Result<(), Error> {
    if c.no_new_privs.unwrap_or(0) != 0 {
        r.call(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            libc::SYS_prctl,
            [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Capability sets of one thread, as 64-bit masks.
struct Caps {
    eff: u64,
    prm: u64,
    inh: u64,
}

/// Groups, gids and uids, leaving every capability in place
/// (SECBIT_NO_SETUID_FIXUP, added to the task's `secbits`; the exact
/// securebits are set afterwards).
fn set_ids(r: &mut Remote<'_>, c: &CredsEntry, secbits: u64) -> Result<(), Error> {
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
    if secbits & SECBIT_NO_SETUID_FIXUP == 0 {
        r.call(
            "prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP)",
            libc::SYS_prctl,
            [
                libc::PR_SET_SECUREBITS as u64,
                secbits | SECBIT_NO_SETUID_FIXUP,
                0,
                0,
                0,
                0,
            ],
        )?;
    }
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
    Ok(())
}

/// capset(2) of the calling thread: struct __user_cap_header_struct
/// {u32 version; i32 pid} then two {effective, permitted, inheritable}
/// words, low half first.
fn capset(r: &mut Remote<'_>, caps: &Caps) -> Result<(), Error> {
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&CAP_V3.to_le_bytes());
    b.extend_from_slice(&0i32.to_le_bytes());
    for sh in [0, 32] {
        for v in [caps.eff, caps.prm, caps.inh] {
            b.extend_from_slice(&((v >> sh) as u32).to_le_bytes());
        }
    }
    let a = r.put(0, &b)?;
    r.call(
        "capset",
        libc::SYS_capset,
        [a.get(), a.get() + 8, 0, 0, 0, 0],
    )?;
    Ok(())
}

/// Drop from the bounding set (`have`) what `want` does not hold.
fn drop_bounding(r: &mut Remote<'_>, want: u64, have: u64) -> Result<(), Error> {
    for cap in (0..64u64).filter(|c| want & (1 << c) == 0 && have & (1 << c) != 0) {
        r.call(
            &format!("prctl(PR_CAPBSET_DROP, {cap})"),
            libc::SYS_prctl,
            [libc::PR_CAPBSET_DROP as u64, cap, 0, 0, 0, 0],
        )?;
    }
    Ok(())
}

/// Make the ambient set `want` (the task has crust's, `have`).
fn raise_ambient(r: &mut Remote<'_>, want: u64, have: u64) -> Result<(), Error> {
    if have != 0 {
        r.call(
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            libc::SYS_prctl,
            [
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                0,
                0,
                0,
                0,
            ],
        )?;
    }
    for cap in (0..64u64).filter(|c| want & (1 << c) != 0) {
        r.call(
            &format!("prctl(PR_CAP_AMBIENT_RAISE, {cap})"),
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
    Ok(())
}
