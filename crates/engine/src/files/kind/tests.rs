//! The registry and the phases driven with fake kinds: no image, no task.

use super::*;
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;

type Log = Rc<RefCell<Vec<String>>>;

thread_local! {
    /// What the fake kinds did, in order (loaders are plain fns).
    static LOG: Log = Rc::new(RefCell::new(Vec::new()));
}

fn log(s: String) {
    LOG.with(|l| l.borrow_mut().push(s));
}

fn take_log() -> Vec<String> {
    LOG.with(|l| std::mem::take(&mut *l.borrow_mut()))
}

fn dev_null() -> OwnedFd {
    std::fs::File::open("/dev/null")
        .expect("/dev/null opens")
        .into()
}

/// A kind whose files are the files.img entries of type `ty`.
struct Fake {
    name: &'static str,
    ty: i32,
    ids: Vec<u32>,
}

struct FakeOpen {
    name: &'static str,
    ty: i32,
    fds: HashMap<u32, OwnedFd>,
}

fn load_fake(ctx: &LoadCtx<'_>, name: &'static str, ty: i32) -> Result<Fake, Error> {
    let ids: Vec<u32> = ctx
        .files
        .entries()?
        .iter()
        .filter(|f| f.r#type == ty)
        .map(|f| f.id)
        .collect();
    log(format!("load {name} {ids:?}"));
    Ok(Fake { name, ty, ids })
}

fn load_pipes(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(load_fake(ctx, "pipes", fd_types::PIPE)?))
}

fn load_socks(ctx: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
    Ok(Box::new(load_fake(ctx, "socks", fd_types::UNIXSK)?))
}

impl RestoreKind for Fake {
    fn name(&self) -> &'static str {
        self.name
    }

    fn make(&mut self, made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error> {
        // What the kinds before it made is there to use.
        let before: Vec<u32> = (1..10).filter(|id| made.get(*id).is_some()).collect();
        log(format!("make {} (sees {before:?})", self.name));
        Ok(Box::new(FakeOpen {
            name: self.name,
            ty: self.ty,
            fds: self.ids.iter().map(|id| (*id, dev_null())).collect(),
        }))
    }
}

impl OpenKind for FakeOpen {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(&id).map(|f| f.as_fd())
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        (ty == self.ty).then_some(self.name)
    }

    fn at(
        &mut self,
        phase: Phase,
        loaded: &dyn RestoreKind,
        made: &Made<'_>,
        ctx: &mut PhaseCtx<'_>,
    ) -> Result<(), Error> {
        let others = (1..10).filter(|id| made.get(*id).is_some()).count();
        log(format!(
            "{} at {phase:?} (loaded {}, {others} other fds, pid 7 is {:?})",
            self.name,
            loaded.name(),
            (ctx.host_pid)(7)
        ));
        Ok(())
    }
}

fn entry(id: u32, ty: i32) -> FileEntry {
    FileEntry {
        id,
        r#type: ty,
        ..Default::default()
    }
}

fn fdinfo(fd: u32, id: u32, ty: i32) -> FdinfoEntry {
    FdinfoEntry {
        fd,
        id,
        r#type: ty,
        ..Default::default()
    }
}

#[test]
fn registry_loads_makes_and_runs_phases_in_order() {
    take_log();
    let files = LoadedFiles::from_entries(vec![
        entry(1, fd_types::PIPE),
        entry(2, fd_types::PIPE),
        entry(3, fd_types::UNIXSK),
        entry(4, fd_types::REG),
    ]);
    let opts = crate::Options::default();
    let inherited = Inherited::default();
    let fds = [fdinfo(0, 1, fd_types::PIPE), fdinfo(3, 3, fd_types::UNIXSK)];
    let ctx = LoadCtx {
        dir: Path::new("/nonexistent"),
        files: &files,
        opts: &opts,
        netlock: Default::default(),
        inherited: &inherited,
        procs: vec![
            ProcFds {
                pid: 7,
                sid: 7,
                pgid: 7,
                fds: Some(&fds),
                ids: None,
            },
            ProcFds {
                pid: 8,
                sid: 7,
                pgid: 7,
                fds: None,
                ids: None,
            },
        ],
    };
    assert_eq!(ctx.ids_of_type(fd_types::UNIXSK), vec![3]);
    assert_eq!(ctx.live().count(), 1);
    let mut kinds = FileKinds::load_with(&ctx, &[load_pipes, load_socks]).expect("loads");
    assert_eq!(kinds.kind::<Fake>().map(|k| k.name), Some("pipes"));

    let mut open = kinds.open().expect("makes");
    // Made fds by files.img id, whichever kind made them.
    assert!(open.get(1).is_some() && open.get(2).is_some() && open.get(3).is_some());
    // A REG file no kind made: opened by path, not an error.
    assert!(open.get(4).is_none());
    assert_eq!(open.type_name(fd_types::REG), None);
    // A typed fd whose kind did not make it: named for the error.
    assert_eq!(open.type_name(fd_types::UNIXSK), Some("socks"));
    assert!(open.kind::<FakeOpen>().is_some());

    let host = |pid: u32| (pid == 7).then_some(1007);
    let mut pctx = PhaseCtx {
        host_pid: &host,
        accept_server: None,
    };
    for phase in Phase::LATE {
        open.run(phase, &kinds, &mut pctx).expect("phase runs");
    }
    assert_eq!(
        take_log(),
        vec![
            "load pipes [1, 2]",
            "load socks [3]",
            "make pipes (sees [])",
            "make socks (sees [1, 2])",
            "pipes at TasksExist (loaded pipes, 1 other fds, pid 7 is Some(1007))",
            "socks at TasksExist (loaded socks, 2 other fds, pid 7 is Some(1007))",
            "pipes at NetworkUp (loaded pipes, 1 other fds, pid 7 is Some(1007))",
            "socks at NetworkUp (loaded socks, 2 other fds, pid 7 is Some(1007))",
            "pipes at ClocksStart (loaded pipes, 1 other fds, pid 7 is Some(1007))",
            "socks at ClocksStart (loaded socks, 2 other fds, pid 7 is Some(1007))",
            "pipes at Handover (loaded pipes, 1 other fds, pid 7 is Some(1007))",
            "socks at Handover (loaded socks, 2 other fds, pid 7 is Some(1007))",
        ]
    );
    kinds.put_first(Box::new(Inherited::default()));
    assert!(kinds.kind::<Inherited>().is_some());
}

#[test]
fn a_loader_error_stops_the_load() {
    fn broken(_: &LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error> {
        Err(Error::unsupported("a broken kind"))
    }
    take_log();
    let files = LoadedFiles::from_entries(vec![entry(1, fd_types::PIPE)]);
    let opts = crate::Options::default();
    let inherited = Inherited::default();
    let ctx = LoadCtx {
        dir: Path::new("/nonexistent"),
        files: &files,
        opts: &opts,
        netlock: Default::default(),
        inherited: &inherited,
        procs: Vec::new(),
    };
    assert!(FileKinds::load_with(&ctx, &[broken, load_pipes]).is_err());
    assert!(take_log().is_empty());
}

#[test]
fn unreadable_files_img_fails_when_needed() {
    let files = LoadedFiles::read(Path::new("/nonexistent/crust-images"));
    assert!(files.is_missing());
    assert!(files.entries().is_err());
    assert!(files.ghosted().is_ok_and(|g| g.is_empty()));
}
