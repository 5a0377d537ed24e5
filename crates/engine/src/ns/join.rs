//! `--join-ns NS:{PID|PATH}[,OPTS]` (restore): the root is made in an
//! existing namespace instead of a new one, and `--empty-ns net`.
//!
//! CRIU's syntax: NS is one of `net`, `uts`, `ipc`, `time`, `user`, `mnt`
//! (`pid` is refused, as CRIU refuses it); PID names `/proc/PID/ns/NS`,
//! anything else is the path of a namespace file (`/run/netns/NAME`,
//! `/proc/PID/ns/uts`...). OPTS are for `user` only: `UID[,GID]` the root
//! takes in it. Each file is opened and checked to be a namespace of its
//! kind before anything is made.
//!
//! The root joins them itself, right after it is cloned (it is then
//! single-threaded, which joining a time, mount or user namespace needs),
//! before it is traced: [`Joined::enter`]. A joined namespace is taken as
//! it is: the one the tree had of its own (if any) is neither made nor
//! filled from the images.

use super::ids::NsKind;
use crate::{Error, Options};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// One `--join-ns` option, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JoinSpec {
    pub kind: NsKind,
    /// The namespace file to open.
    pub path: PathBuf,
    /// `user`: the uid and gid the root takes in it.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

fn bad(arg: &str, why: &str) -> Error {
    Error::unsupported(format!(
        "--join-ns {arg:?}: {why} (the form is NS:PID or NS:PATH, NS one of net, uts, ipc, time, user, mnt; user takes ,UID[,GID] after)"
    ))
}

/// Parse one `--join-ns` value.
pub(crate) fn parse(arg: &str) -> Result<JoinSpec, Error> {
    let (name, rest) = arg.split_once(':').ok_or_else(|| bad(arg, "no ':'"))?;
    let kind = match name {
        "net" => NsKind::Net,
        "uts" => NsKind::Uts,
        "ipc" => NsKind::Ipc,
        "time" => NsKind::Time,
        "user" => NsKind::User,
        "mnt" => NsKind::Mnt,
        "pid" => {
            return Err(bad(
                arg,
                "joining a pid namespace is not supported (nor by CRIU)",
            ))
        }
        _ => return Err(bad(arg, &format!("unknown namespace kind {name:?}"))),
    };
    let (target, opts) = match rest.split_once(',') {
        Some((t, o)) => (t, Some(o)),
        None => (rest, None),
    };
    if target.is_empty() {
        return Err(bad(arg, "no PID or namespace file"));
    }
    let path = if !target.is_empty() && target.bytes().all(|b| b.is_ascii_digit()) {
        match target.parse::<i32>() {
            Ok(pid) if pid > 0 => PathBuf::from(kind.proc_path(&pid.to_string())),
            _ => return Err(bad(arg, &format!("{target:?} is not a valid pid"))),
        }
    } else {
        PathBuf::from(target)
    };
    let (mut uid, mut gid) = (None, None);
    if let Some(o) = opts {
        if kind != NsKind::User {
            return Err(bad(arg, "only a user namespace takes options"));
        }
        let id = |s: &str| -> Result<Option<u32>, Error> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<u16>()
                .map(|v| Some(u32::from(v)))
                .map_err(|_| bad(arg, &format!("{s:?} is not a uid or gid from 0 to 65535")))
        };
        let (u, g) = match o.split_once(',') {
            Some((u, g)) => (u, g),
            None => (o, ""),
        };
        uid = id(u)?;
        gid = id(g)?;
    }
    Ok(JoinSpec {
        kind,
        path,
        uid,
        gid,
    })
}

/// The CLONE_NEW* flags of `--empty-ns` (CRIU takes `net` only).
pub(crate) fn empty_ns_flags(opts: &Options) -> Result<u64, Error> {
    opts.empty_ns
        .iter()
        .try_fold(0u64, |f, v| match v.as_str() {
            "net" => Ok(f | libc::CLONE_NEWNET as u64),
            _ => Err(Error::unsupported(format!(
                "--empty-ns {v:?}: only net is accepted"
            ))),
        })
}

/// The namespaces given with `--join-ns`, open and checked.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    ns: Vec<(JoinSpec, File)>,
}

impl Joined {
    /// Parse every `--join-ns` of `opts`, open the files and check each is
    /// a namespace of its kind; refuse what crust does not join (yet).
    pub(crate) fn open(opts: &Options) -> Result<Joined, Error> {
        let mut j = Joined::default();
        let empty = empty_ns_flags(opts)?;
        for arg in &opts.join_ns {
            let spec = parse(arg)?;
            if j.ns.iter().any(|(s, _)| s.kind == spec.kind) {
                return Err(bad(
                    arg,
                    &format!("a {} namespace is joined twice", spec.kind),
                ));
            }
            if empty & spec.kind.clone_flag() != 0 {
                return Err(bad(arg, "conflicts with --empty-ns of the same kind"));
            }
            if spec.kind == NsKind::User {
                log::warn!(
                    "--join-ns {arg:?}: the tree's credentials are set in that user namespace as the images give them (as CRIU, joining a user namespace is for trees dumped in one like it)"
                );
            }
            let file = open_checked(&spec)?;
            log::info!(
                "the root joins the {} namespace {}",
                spec.kind.name(),
                spec.path.display()
            );
            j.ns.push((spec, file));
        }
        Ok(j)
    }

    /// The root joins the namespace file `path` (crust's inherited fd
    /// `/proc/self/fd/N`), of kind `kind`, given by the caller under `key`
    /// (an external namespace of the images, `--inherit-fd fd[N]:KEY`),
    /// checked as a `--join-ns` file is.
    pub(crate) fn add_external(
        &mut self,
        kind: NsKind,
        path: PathBuf,
        key: &str,
    ) -> Result<(), Error> {
        if self.joins(kind) {
            return Err(Error::unsupported(format!(
                "the images name an external {kind} namespace ({key}) and --join-ns {} gives one too: give only one",
                kind.name()
            )));
        }
        let spec = JoinSpec {
            kind,
            path,
            uid: None,
            gid: None,
        };
        let file = open_checked(&spec)?;
        self.ns.push((spec, file));
        Ok(())
    }

    /// The file of the namespace of kind `kind` the root joins, if any.
    pub(crate) fn file(&self, kind: NsKind) -> Option<&File> {
        self.ns.iter().find(|(s, _)| s.kind == kind).map(|(_, f)| f)
    }

    /// Whether the root joins a namespace of kind `kind`.
    pub(crate) fn joins(&self, kind: NsKind) -> bool {
        self.ns.iter().any(|(s, _)| s.kind == kind)
    }

    /// The CLONE_NEW* flags of the kinds joined.
    pub(crate) fn flags(&self) -> u64 {
        self.ns.iter().fold(0, |f, (s, _)| f | s.kind.clone_flag())
    }

    /// In the newly cloned root (single-threaded, before it is traced):
    /// join every namespace. Async-signal-safe: system calls only. On
    /// failure, the kind that could not be joined.
    pub(crate) fn enter(&self) -> Result<(), NsKind> {
        // The user namespace last (as CRIU): joining it first would leave
        // no capability over the others' owners.
        let user = self.ns.iter().find(|(s, _)| s.kind == NsKind::User);
        for (s, f) in self.ns.iter().filter(|(s, _)| s.kind != NsKind::User) {
            if crust_sys::ns::setns(f.as_fd(), s.kind.clone_flag() as i32).is_err() {
                return Err(s.kind);
            }
        }
        if let Some((s, f)) = user {
            // The ids it takes there: the ones given, else its own (CRIU).
            let (ruid, rgid) = crust_sys::userns::real_ids();
            let (uid, gid) = (s.uid.unwrap_or(ruid), s.gid.unwrap_or(rgid));
            if crust_sys::ns::setns(f.as_fd(), libc::CLONE_NEWUSER).is_err()
                || crust_sys::userns::set_all_ids(uid, gid).is_err()
            {
                return Err(NsKind::User);
            }
        }
        Ok(())
    }

    /// The namespaces joined, for an error message.
    pub(crate) fn describe(&self) -> String {
        self.ns
            .iter()
            .map(|(s, _)| format!("{}:{}", s.kind, s.path.display()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Open the namespace file of `spec` and check that it is a namespace of
/// its kind (ioctl NS_GET_NSTYPE).
fn open_checked(spec: &JoinSpec) -> Result<File, Error> {
    let what = format!("--join-ns {}:{}", spec.kind.name(), spec.path.display());
    let file = File::open(&spec.path).map_err(|source| Error::Io {
        op: "open the namespace file",
        path: spec.path.clone(),
        source,
    })?;
    // NS_GET_NSTYPE answers for /proc/PID/ns/KIND and for bind mounts of
    // one (/run/netns/NAME) alike.
    use std::os::fd::AsFd;
    let ty = crust_sys::ns::ns_type(file.as_fd()).ok();
    if ty != Some(spec.kind.clone_flag() as i32) {
        let is = match ty.and_then(|t| NsKind::ALL.into_iter().find(|k| k.clone_flag() as i32 == t))
        {
            Some(k) => format!("a namespace of kind {}", k.name()),
            None => "not a namespace file".to_string(),
        };
        return Err(Error::unsupported(format!(
            "{what}: {} is {is}, not a {} namespace (give /proc/PID/ns/{} or a bind mount of one)",
            spec.path.display(),
            spec.kind,
            spec.kind.name()
        )));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_ns_forms() {
        let s = parse("uts:1234").unwrap();
        assert_eq!(s.kind, NsKind::Uts);
        assert_eq!(s.path, PathBuf::from("/proc/1234/ns/uts"));
        let s = parse("net:/run/netns/x").unwrap();
        assert_eq!(
            (s.kind, s.path),
            (NsKind::Net, PathBuf::from("/run/netns/x"))
        );
        let s = parse("user:/proc/1/ns/user,1000,100").unwrap();
        assert_eq!((s.uid, s.gid), (Some(1000), Some(100)));
        let s = parse("user:7,5").unwrap();
        assert_eq!((s.uid, s.gid), (Some(5), None));
        assert_eq!(parse("time:1").unwrap().kind, NsKind::Time);
        assert_eq!(parse("mnt:1").unwrap().kind, NsKind::Mnt);
        assert_eq!(parse("ipc:1").unwrap().kind, NsKind::Ipc);
        for bad in [
            "uts",
            "uts:",
            "pid:1",
            "cgroup:1",
            "foo:1",
            "uts:0",
            "uts:1,5",
            "user:1,x",
            "user:1,70000",
        ] {
            assert!(parse(bad).is_err(), "{bad} is accepted");
        }
    }

    #[test]
    fn empty_ns_takes_net_only() {
        let mut o = Options {
            empty_ns: vec!["net".into()],
            ..Default::default()
        };
        assert_eq!(empty_ns_flags(&o).unwrap(), libc::CLONE_NEWNET as u64);
        o.empty_ns = vec!["uts".into()];
        assert!(empty_ns_flags(&o).is_err());
    }

    #[test]
    fn namespace_files_are_checked() {
        let spec = |kind, path: &str| JoinSpec {
            kind,
            path: path.into(),
            uid: None,
            gid: None,
        };
        assert!(open_checked(&spec(NsKind::Uts, "/proc/self/ns/uts")).is_ok());
        let e = open_checked(&spec(NsKind::Uts, "/proc/self/ns/ipc")).unwrap_err();
        assert!(e.to_string().contains("is a namespace of kind ipc"), "{e}");
        let e = open_checked(&spec(NsKind::Uts, "/proc/self/status")).unwrap_err();
        assert!(e.to_string().contains("not a namespace file"), "{e}");
        assert!(open_checked(&spec(NsKind::Uts, "/nonexistent/ns")).is_err());
    }
}
