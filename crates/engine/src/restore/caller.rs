//! What a caller that is not root may restore (issue 10, "unprivileged use,
//! safely"): only what it could have created itself.
//!
//! Root trusts the images it is given, as with CRIU. A caller whose
//! effective uid is not 0 gets every credential of every task checked
//! against its own before anything is created: ids it could take with
//! setresuid/setresgid without CAP_SETUID/CAP_SETGID, its own
//! supplementary groups (setgroups needs CAP_SETGID), capability sets
//! within its own, and no namespace it could not create. Files need no
//! check here: crust opens them as the caller, so the kernel's permission
//! checks apply.

use super::ImageSet;
use crate::util::cap_join;
use crate::Error;
use crust_images::proto::creds::CredsEntry;
use crust_proc::Status;

const CAP_SETUID: u32 = 7;
const CAP_SETGID: u32 = 6;
const CAP_SETPCAP: u32 = 8;
const CAP_SYS_ADMIN: u32 = 21;

fn has_cap(set: u64, cap: u32) -> bool {
    set & (1u64 << cap) != 0
}

/// The caller's credentials, as far as the checks need them.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// real, effective, saved, fs
    pub uid: [u32; 4],
    pub gid: [u32; 4],
    pub groups: Vec<u32>,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub cap_amb: u64,
}

impl Caller {
    pub(crate) fn from_status(s: &Status) -> Caller {
        Caller {
            uid: s.uid,
            gid: s.gid,
            groups: s.groups.clone(),
            cap_inh: s.cap_inh,
            cap_prm: s.cap_prm,
            cap_eff: s.cap_eff,
            cap_bnd: s.cap_bnd,
            cap_amb: s.cap_amb,
        }
    }

    fn is_root(&self) -> bool {
        self.uid[1] == 0
    }
}

/// Why the credentials `c` of a task are more than `me` could give it,
/// `None` when they are within reach.
pub(crate) fn creds_beyond(me: &Caller, c: &CredsEntry) -> Option<String> {
    if !has_cap(me.cap_eff, CAP_SETUID) {
        let mine = &me.uid[..3];
        for (name, v) in [("uid", c.uid), ("euid", c.euid), ("suid", c.suid)] {
            if !mine.contains(&v) {
                return Some(format!(
                    "{name} {v} is none of yours ({mine:?}) and you lack CAP_SETUID"
                ));
            }
        }
    }
    if !has_cap(me.cap_eff, CAP_SETGID) {
        let mine = &me.gid[..3];
        for (name, v) in [("gid", c.gid), ("egid", c.egid), ("sgid", c.sgid)] {
            if !mine.contains(&v) {
                return Some(format!(
                    "{name} {v} is none of yours ({mine:?}) and you lack CAP_SETGID"
                ));
            }
        }
        let mut want = c.groups.clone();
        let mut have = me.groups.clone();
        want.sort_unstable();
        have.sort_unstable();
        if want != have {
            return Some(format!(
                "supplementary groups {:?} are not yours ({:?}) and you lack CAP_SETGID",
                c.groups, me.groups
            ));
        }
    }
    let sets = [
        ("permitted", cap_join(&c.cap_prm), me.cap_prm),
        ("effective", cap_join(&c.cap_eff), me.cap_prm),
        ("ambient", cap_join(&c.cap_amb), me.cap_amb | me.cap_prm),
        ("bounding", cap_join(&c.cap_bnd), me.cap_bnd),
    ];
    for (name, want, have) in sets {
        let extra = want & !have;
        if extra != 0 {
            return Some(format!(
                "its {name} capabilities {want:#x} hold {extra:#x}, which yours ({have:#x}) do not"
            ));
        }
    }
    let inh = cap_join(&c.cap_inh);
    let inh_limit = if has_cap(me.cap_eff, CAP_SETPCAP) {
        me.cap_inh | me.cap_bnd
    } else {
        me.cap_inh | me.cap_prm
    };
    if inh & !inh_limit != 0 {
        return Some(format!(
            "its inheritable capabilities {inh:#x} hold {:#x}, beyond yours",
            inh & !inh_limit
        ));
    }
    None
}

/// Refuse, naming the image entry, anything in `img` that a caller who is
/// not root could not have created itself. Root passes without checks.
pub(super) fn check_caller(img: &ImageSet, me: &Caller) -> Result<(), Error> {
    if me.is_root() {
        return Ok(());
    }
    let refuse = |what: String| {
        Error::refused(
            crate::ErrorKind::Permission,
            format!("{what}: a caller that is not root restores only what it could have created itself (run as root to restore it)"),
        )
    };
    if (img.new_pidns || img.ipcns.is_some() || img.ns.any()) && !has_cap(me.cap_eff, CAP_SYS_ADMIN)
    {
        return Err(refuse(format!(
            "the image set in {} has namespaces of its own (pid, IPC, UTS...) and you lack CAP_SYS_ADMIN",
            img.dir.display()
        )));
    }
    for p in &img.procs {
        let Some(live) = &p.live else { continue };
        for t in &live.threads {
            let creds = t.core.thread_core.as_ref().and_then(|tc| tc.creds.as_ref());
            if let Some(c) = creds {
                if let Some(why) = creds_beyond(me, c) {
                    return Err(refuse(format!(
                        "core-{}.img (task {}) asks for credentials you do not have: {why}",
                        t.tid, t.tid
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(uid: u32, caps: u64) -> Caller {
        Caller {
            uid: [uid; 4],
            gid: [uid; 4],
            groups: vec![uid],
            cap_inh: 0,
            cap_prm: caps,
            cap_eff: caps,
            cap_bnd: !0 >> 23,
            cap_amb: 0,
        }
    }

    fn creds(uid: u32) -> CredsEntry {
        CredsEntry {
            uid,
            gid: uid,
            euid: uid,
            egid: uid,
            suid: uid,
            sgid: uid,
            fsuid: uid,
            fsgid: uid,
            cap_inh: vec![0, 0],
            cap_prm: vec![0, 0],
            cap_eff: vec![0, 0],
            cap_bnd: vec![(!0u64 >> 23) as u32, ((!0u64 >> 23) >> 32) as u32],
            groups: vec![uid],
            ..Default::default()
        }
    }

    #[test]
    fn own_credentials_pass() {
        assert_eq!(creds_beyond(&user(1000, 0), &creds(1000)), None);
    }

    #[test]
    fn another_uid_is_refused_without_cap_setuid() {
        let why = creds_beyond(&user(1000, 0), &creds(0)).unwrap();
        assert!(why.contains("uid 0") && why.contains("CAP_SETUID"), "{why}");
        // With CAP_SETUID and CAP_SETGID the ids are fine.
        let caps = (1 << CAP_SETUID) | (1 << CAP_SETGID);
        assert_eq!(creds_beyond(&user(1000, caps), &creds(0)), None);
    }

    #[test]
    fn capabilities_beyond_the_callers_are_refused() {
        let mut c = creds(1000);
        c.cap_prm = vec![1 << CAP_SYS_ADMIN, 0];
        c.cap_eff = c.cap_prm.clone();
        let why = creds_beyond(&user(1000, 0), &c).unwrap();
        assert!(why.contains("permitted"), "{why}");
        let mine = user(1000, 1 << CAP_SYS_ADMIN);
        assert_eq!(creds_beyond(&mine, &c), None);
    }

    #[test]
    fn other_groups_are_refused() {
        let mut c = creds(1000);
        c.groups = vec![0, 1000];
        let why = creds_beyond(&user(1000, 0), &c).unwrap();
        assert!(why.contains("supplementary groups"), "{why}");
    }

    #[test]
    fn a_wider_bounding_set_is_refused() {
        let mut me = user(1000, 0);
        me.cap_bnd = 0xff;
        let why = creds_beyond(&me, &creds(1000)).unwrap();
        assert!(why.contains("bounding"), "{why}");
    }
}
