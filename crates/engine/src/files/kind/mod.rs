//! Kinds of files at restore: the trait each kind implements, the
//! registry that lists them, and the late phases of a restore.
//!
//! A kind (pipes and FIFOs, event files, unix sockets...) is read from the
//! image set once ([`RestoreKind`], built by the kind's loader from a
//! [`LoadCtx`] that holds files.img parsed once), makes its descriptions in
//! crust before any task exists ([`RestoreKind::make`] gives an
//! [`OpenKind`]), hands them to the tasks by files.img id
//! ([`OpenKind::fd`]), and may act at named [`Phase`]s once the tree is
//! built. Adding a kind is one module implementing both traits and one
//! line in [`crate::registry`].

pub(crate) mod dump;

use crate::files::inherit::Inherited;
use crate::files::loaded::LoadedFiles;
use crate::Error;
use crust_images::proto::fdinfo::FdinfoEntry;
use std::any::Any;
use std::os::fd::BorrowedFd;
use std::path::Path;

/// The kind traits' way to their implementors' own types (a step that
/// needs a kind's own state downcasts it): every `'static` type has it.
/// Call it on the kind itself (`(**boxed).as_any()`), not on a `Box` of
/// it: the box is `'static` too and would answer for itself.
pub(crate) trait AsAny: Any {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// What a kind's loader may read: the image set (files.img parsed once),
/// the restore options, and the fd tables of the tree's processes.
pub(crate) struct LoadCtx<'a> {
    pub dir: &'a Path,
    pub files: &'a LoadedFiles,
    pub opts: &'a crate::Options,
    /// How the dump locked the network (inventory.img).
    pub netlock: crate::options::NetworkLock,
    /// Files replaced by crust's own fds (`--inherit-fd`).
    pub inherited: &'a Inherited,
    /// Every process in pstree.img order.
    pub procs: Vec<ProcFds<'a>>,
}

/// One process as the loaders see it.
#[derive(Clone, Copy)]
pub(crate) struct ProcFds<'a> {
    pub pid: i32,
    pub sid: i32,
    pub pgid: i32,
    /// Its fd table; `None` for a zombie or a helper.
    pub fds: Option<&'a [FdinfoEntry]>,
    /// Its namespaces and shared objects (ids-N.img); `None` for a zombie
    /// or a helper.
    pub ids: Option<&'a crust_images::proto::core::TaskKobjIdsEntry>,
}

impl<'a> LoadCtx<'a> {
    /// (pid, fd table) of every live process, in pstree.img order.
    pub fn live(&self) -> impl Iterator<Item = (i32, &'a [FdinfoEntry])> + Clone + '_ {
        self.procs.iter().filter_map(|p| Some((p.pid, p.fds?)))
    }

    /// The files.img ids that fds of type `ty` of the tree name (with
    /// repeats, in pstree.img and fd table order).
    pub fn ids_of_type(&self, ty: i32) -> Vec<u32> {
        self.live()
            .flat_map(|(_, fds)| fds.iter())
            .filter(|f| f.r#type == ty)
            .map(|f| f.id)
            .collect()
    }
}

/// A file carried by a message queued on a socket (SCM_RIGHTS), as the
/// kind of the socket read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CarriedFile {
    /// Its files.img id.
    pub id: u32,
    /// The process (pid in the images) whose fd numbers name the files it
    /// refers to (an epoll's targets), if any.
    pub names_in: Option<i32>,
}

/// A kind of file as read from the image set, before anything is made.
pub(crate) trait RestoreKind: AsAny + Send + Sync {
    /// The kind's name, for logs ("pipes and FIFOs").
    fn name(&self) -> &'static str;
    /// The files this kind's files carry (messages queued on sockets), in
    /// the order the images list the messages (a file carried by several
    /// appears as many times).
    fn carried(&self) -> Vec<CarriedFile> {
        Vec::new()
    }
    /// The files other kinds' files carry (see [`RestoreKind::carried`]):
    /// a kind checks those of its own that need more than being made (an
    /// epoll no task holds has its targets registered by a process).
    fn carried_by_others(
        &mut self,
        _ctx: &LoadCtx<'_>,
        _carried: &[CarriedFile],
    ) -> Result<(), Error> {
        Ok(())
    }
    /// Make every description of this kind in crust; `made` holds those of
    /// the kinds made before it (in registry order).
    fn make(&mut self, made: &Made<'_>) -> Result<Box<dyn OpenKind>, Error>;
}

/// The descriptions a kind made, held by crust until the tasks run.
pub(crate) trait OpenKind: AsAny + Send + Sync {
    /// The description made for files.img id `id`, if this kind made it.
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>>;
    /// When fds of type `ty` (fdinfo) must be made by this kind, what to
    /// call them in an error ("pipe or FIFO").
    fn type_name(&self, _ty: i32) -> Option<&'static str> {
        None
    }
    /// Whether the description for files.img id `id` can only be made once
    /// every task of the tree exists (a pidfd names a process of the tree):
    /// the fd tables are then built without it, and it is made by
    /// [`OpenKind::make_late`] and handed over once the whole tree exists,
    /// before file owners and credentials.
    fn late(&self, _id: u32) -> bool {
        false
    }
    /// Whether the description for files.img id `id` is opened by the task
    /// itself late in the restore (/dev/tty, once its controlling terminal
    /// is set): the fd tables are built without it.
    fn in_task(&self, _id: u32) -> bool {
        false
    }
    /// The restore succeeded: what the kind made on the file system for
    /// it (bound socket files...) stays. Without this call, a kind removes
    /// those when dropped, so a failed restore leaves none behind.
    fn keep(&mut self) {}
    /// Make the late descriptions (see [`OpenKind::late`]); `host_pid`
    /// gives the host pid of a pid of the images.
    fn make_late(&mut self, _host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        Ok(())
    }
    /// The kind's step at `phase`, if it has one. `loaded` is the kind as
    /// read (the [`RestoreKind`] that made this), `made` the other kinds'
    /// descriptions.
    fn at(
        &mut self,
        _phase: Phase,
        _loaded: &dyn RestoreKind,
        _made: &Made<'_>,
        _ctx: &mut PhaseCtx<'_>,
    ) -> Result<(), Error> {
        Ok(())
    }
}

/// A kind's loader: reads and checks its part of the image set.
pub(crate) type Loader = fn(&LoadCtx<'_>) -> Result<Box<dyn RestoreKind>, Error>;

/// The late steps of a restore, in the order they run: after every task
/// is built (fds, memory, credentials), before any task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Every task exists: messages that carry their senders' credentials
    /// are queued (the kernel wants a live pid).
    TasksExist,
    /// Every task holds its sockets: connections leave repair mode and
    /// the network is unlocked.
    NetworkUp,
    /// Timers run from now on, with the time they had left.
    ClocksStart,
    /// Connections waiting in accept queues go to the accept server.
    Handover,
}

impl Phase {
    /// The phases in the order they run.
    pub const LATE: [Phase; 4] = [
        Phase::TasksExist,
        Phase::NetworkUp,
        Phase::ClocksStart,
        Phase::Handover,
    ];
}

/// What a phase step may use.
pub(crate) struct PhaseCtx<'a> {
    /// The host pid of a recorded pid (they differ in a new pid namespace).
    pub host_pid: &'a dyn Fn(u32) -> Option<i32>,
    /// Where connections waiting in accept queues go at
    /// [`Phase::Handover`], when something takes them (the accept server
    /// of the restore): the kind that holds them knows its type.
    pub accept_server: Option<&'a mut dyn Any>,
}

/// The descriptions made by other kinds, looked up by files.img id.
pub(crate) struct Made<'a> {
    parts: [&'a [Box<dyn OpenKind>]; 2],
}

impl<'a> Made<'a> {
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'a>> {
        self.parts
            .iter()
            .flat_map(|p| p.iter())
            .find_map(|k| k.fd(id))
    }
}

/// Every kind of file of an image set, as read.
#[derive(Default)]
pub(crate) struct FileKinds {
    kinds: Vec<Box<dyn RestoreKind>>,
}

impl FileKinds {
    /// Read every kind of `registry` (the one list is
    /// [`crate::registry::RESTORE`]), in its order.
    pub fn load_with(ctx: &LoadCtx<'_>, registry: &[Loader]) -> Result<FileKinds, Error> {
        let mut kinds = Vec::with_capacity(registry.len() + 1);
        for load in registry {
            let k = load(ctx)?;
            log::debug!("files: {} read", k.name());
            kinds.push(k);
        }
        let carried: Vec<CarriedFile> = kinds.iter().flat_map(|k| k.carried()).collect();
        if !carried.is_empty() {
            for k in &mut kinds {
                k.carried_by_others(ctx, &carried)?;
            }
        }
        Ok(FileKinds { kinds })
    }

    /// Add a kind in front of the others: looked up first.
    pub fn put_first(&mut self, kind: Box<dyn RestoreKind>) {
        self.kinds.insert(0, kind);
    }

    /// The kind of type `T`, for the steps that need its own state.
    pub fn kind<T: RestoreKind>(&self) -> Option<&T> {
        self.kinds
            .iter()
            .find_map(|k| (**k).as_any().downcast_ref::<T>())
    }

    /// Make every kind's descriptions, in order.
    pub fn open(&mut self) -> Result<OpenFiles, Error> {
        let mut out = OpenFiles::default();
        for k in &mut self.kinds {
            let made = Made {
                parts: [out.kinds.as_slice(), &[]],
            };
            let o = k.make(&made)?;
            out.kinds.push(o);
        }
        Ok(out)
    }
}

/// The descriptions crust made for the restore, kind by kind (same order
/// as [`FileKinds`]); given to the tasks as they are built and closed
/// (dropped) before any task runs.
#[derive(Default)]
pub(crate) struct OpenFiles {
    kinds: Vec<Box<dyn OpenKind>>,
}

impl OpenFiles {
    /// The description made for files.img id `id`, by whichever kind.
    pub fn get(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.kinds.iter().find_map(|k| k.fd(id))
    }

    /// Whether the description for files.img id `id` is made late, once
    /// every task exists (see [`OpenKind::late`]).
    pub fn late(&self, id: u32) -> bool {
        self.kinds.iter().any(|k| k.late(id))
    }

    /// Whether the task opens the description for `id` itself (see
    /// [`OpenKind::in_task`]).
    pub fn in_task(&self, id: u32) -> bool {
        self.kinds.iter().any(|k| k.in_task(id))
    }

    /// The restore succeeded: every kind keeps what it made on the file
    /// system (see [`OpenKind::keep`]).
    pub fn keep(&mut self) {
        for k in &mut self.kinds {
            k.keep();
        }
    }

    /// Make every kind's late descriptions (see [`OpenKind::late`]).
    pub fn make_late(&mut self, host_pid: &dyn Fn(u32) -> Option<i32>) -> Result<(), Error> {
        for k in &mut self.kinds {
            k.make_late(host_pid)?;
        }
        Ok(())
    }

    /// The name of what should have been made for an fd of type `ty`, when
    /// a kind makes fds of that type.
    pub fn type_name(&self, ty: i32) -> Option<&'static str> {
        self.kinds.iter().find_map(|k| k.type_name(ty))
    }

    /// The kind of type `T`, for the steps that need its own state.
    pub fn kind<T: OpenKind>(&self) -> Option<&T> {
        self.kinds
            .iter()
            .find_map(|k| (**k).as_any().downcast_ref::<T>())
    }

    /// Run every kind's step at `phase`, in registry order.
    pub fn run(
        &mut self,
        phase: Phase,
        loaded: &FileKinds,
        ctx: &mut PhaseCtx<'_>,
    ) -> Result<(), Error> {
        for i in 0..self.kinds.len() {
            let (before, rest) = self.kinds.split_at_mut(i);
            let Some((me, after)) = rest.split_first_mut() else {
                break;
            };
            let Some(l) = loaded.kinds.get(i) else {
                break;
            };
            let made = Made {
                parts: [&*before, &*after],
            };
            me.at(phase, l.as_ref(), &made, ctx)?;
        }
        Ok(())
    }
}

/// The descriptions of a kind that has no step of its own after they are
/// made: fds by files.img id, and the fd types they are for.
pub(crate) struct MadeOf {
    pub fds: crate::files::fdpass::MadeFds,
    /// What to call them in errors ("memfd").
    pub what: &'static str,
    /// The fd types (fdinfo) they are made for; empty when fds of this
    /// kind are REG fds that other files may serve too (ghosts).
    pub types: &'static [i32],
}

impl OpenKind for MadeOf {
    fn fd(&self, id: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(id)
    }

    fn type_name(&self, ty: i32) -> Option<&'static str> {
        self.types.contains(&ty).then_some(self.what)
    }
}

#[cfg(test)]
mod tests;
