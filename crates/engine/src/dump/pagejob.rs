//! The dump's page worker: a second thread that copies each process's
//! pages (its pagemap and pages images) while the tracer goes on with the
//! next process; with -R it only does the frozen part of a snapshot.

use super::snapshot;
use crate::util::us_since;
use crate::{mem, Error, Options};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::time::Instant;

/// Copying one process's pages into the page sink (its pagemap and pages
/// images), done by the page worker thread.
pub(super) struct PageJob {
    pub(super) pid: i32,
    pub(super) nspid: i32,
    pub(super) vmas: std::sync::Arc<Vec<mem::Vma>>,
    pub(super) pages_id: u32,
    /// The parent process and its VMAs, to find copy-on-write sharing.
    pub(super) parent: Option<(i32, std::sync::Arc<Vec<mem::Vma>>)>,
    /// -R: the process's userfaultfd, to copy its pages while it runs.
    pub(super) uffd: Option<crust_sys::uffd::Uffd>,
    /// The pages written since the parent image set, when tracked.
    pub(super) since: Option<super::predump::Dirty>,
    /// The memory whose pages may be restored lazily (`super::lazy::ranges`):
    /// marked `PE_LAZY`, and with `dump --lazy-pages` left on the source.
    pub(super) lazy: Vec<std::ops::Range<u64>>,
}

/// What the page worker is given: a process's pages, or an image the
/// tracer built, written here so that the tracer goes on at once (an
/// error ends the worker, and comes out when it is joined).
pub(super) enum Job {
    Pages(PageJob),
    Image(ImageWrite),
}

/// The write of one image, its entries built.
pub(super) type ImageWrite = Box<dyn FnOnce() -> Result<(), Error> + Send>;

/// Queue the write of image `ty`-`id` of `entries` into `dir` to the
/// page worker (see [`Job::Image`]).
pub(super) fn write_later<M: crust_images::Message + Send + 'static>(
    jobs: &std::sync::mpsc::Sender<Job>,
    dir: &Path,
    ty: crust_images::image::ImageType,
    id: u64,
    entries: Vec<M>,
) {
    let dir = dir.to_path_buf();
    let write = move || crate::util::write_image(&dir, ty, id, &entries);
    // If the worker has stopped on an error, that error comes out when it
    // is joined.
    let _ = jobs.send(Job::Image(Box::new(write)));
}

/// What the page worker did: the page counts, its time, and the
/// processes whose pages are still to copy (-R).
pub(super) type Worked = (mem::PageCounts, u64, Vec<mem::snapshot::Prepared>);

/// The page worker: runs the jobs of `queue` into the images of `dir`, or
/// with `--page-server` to the server (then not as `COW_PARENT` runs,
/// which CRIU's protocol cannot carry, and never as a snapshot: the
/// copy after the thaw writes locally).
pub(super) fn worker(
    dir: &Path,
    opts: &Options,
    queue: Receiver<Job>,
    ps: Option<&crate::pageserver::PageServerSink>,
) -> Result<Worked, Error> {
    let mut total = mem::PageCounts::default();
    let t = Instant::now();
    let local = mem::LocalImages::compressed(dir, opts.compress);
    let (sink, cow_parent): (&dyn mem::PageSink, bool) = match ps {
        Some(p) => (p, false),
        None => (&local, opts.cow_parent),
    };
    let mut deferred = Vec::new();
    for job in queue {
        match job {
            Job::Pages(job) => {
                let n = job.run(sink, (cow_parent, opts.lazy_pages), &mut deferred)?;
                total.add(&n);
            }
            Job::Image(write) => write()?,
        }
    }
    Ok((total, us_since(t), deferred))
}

impl PageJob {
    /// Copy the pages into `sink`, under the pid the images use (with
    /// `cow_parent`, the parent's very pages as `COW_PARENT` runs; with
    /// `leave_lazy`, lazy pages announced, not stored).
    fn run(
        mut self,
        sink: &dyn mem::PageSink,
        (cow_parent, leave_lazy): (bool, bool),
        deferred: &mut Vec<mem::snapshot::Prepared>,
    ) -> Result<mem::PageCounts, Error> {
        let parent = || {
            (self.parent.as_ref().filter(|_| cow_parent))
                .map(|(pid, vmas)| mem::CowParent { pid: *pid, vmas })
        };
        // An incremental dump copies while frozen: the snapshot's copy
        // knows no parent set (its userfaultfd, dropped, lets go of all).
        if let Some(u) = self.uffd.take().filter(|_| self.since.is_none()) {
            let job = (self.pid, self.nspid as u64, &self.vmas[..], self.pages_id);
            return snapshot::prepare_or_copy(job, sink, parent, u, deferred);
        }
        self.copy(sink, parent(), leave_lazy, None)
    }

    /// The pages of a process not copied as a snapshot, into `sink`
    /// (through `pipe` if given: see [`PageJob::run_piped`]).
    fn copy(
        &self,
        sink: &dyn mem::PageSink,
        parent: Option<mem::CowParent<'_>>,
        leave_lazy: bool,
        pipe: Option<&mut dyn mem::TaskPipe>,
    ) -> Result<mem::PageCounts, Error> {
        let since = self.since.as_ref().map(super::predump::as_since);
        let (pid, id, vmas) = (self.pid, self.nspid as u64, &self.vmas);
        let lazy = mem::LazyMark {
            ranges: &self.lazy,
            leave: leave_lazy,
        };
        mem::dump_pages_since(
            pid,
            id,
            sink,
            vmas,
            self.pages_id,
            parent,
            since,
            Some(lazy),
            pipe,
        )
    }

    /// Run the job on the tracer (a dump to a page server without TLS):
    /// the pages of `p` go through a pipe planted in it
    /// (`super::vmsplice`), spliced to the server, never copied by crust.
    /// Not a snapshot, and no `COW_PARENT` runs (the page server cannot
    /// take them).
    pub(super) fn run_piped(
        self,
        sink: &dyn mem::PageSink,
        p: &mut super::Proc,
        leave_lazy: bool,
    ) -> Result<mem::PageCounts, Error> {
        let vmas = self.vmas.clone();
        super::vmsplice::with_pipe(p, &vmas, |pipe| self.copy(sink, None, leave_lazy, pipe))
    }
}
