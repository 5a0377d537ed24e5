//! Chains over the page server: the server's answers about its parent
//! set, the client's refusal to send runs as in a parent the server lacks,
//! and the client's record of the runs it sent.

use super::*;
use crate::mem::{PageOwner, PageSink, Run};
use crate::pageserver::proto::Target;
use crust_images::consts::pe;
use crust_images::image::{ImageReader, ImageType};
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};

/// A pagemap of process `id` in `dir` (a parent set).
fn parent_pagemap(dir: &std::path::Path, id: u64, runs: &[(u64, u64, u32)]) {
    let name = ImageType::Pagemap.file_name(id);
    crate::mem::write_pagemap_named(dir, ImageType::Pagemap, &name, 1, runs).unwrap();
}

/// A server into `dst` (whose `parent` holds process 7's pagemap) and a
/// sink recording into `src`: PS_IOV_PARENT answers by process; runs sent
/// are recorded in `src` and counted in its tally.
#[test]
fn parent_answers_and_record() {
    let d = temp("parent");
    let (src, dst) = (d.0.join("src"), d.0.join("dst"));
    std::fs::create_dir_all(dst.join("p")).unwrap();
    std::fs::create_dir_all(&src).unwrap();
    parent_pagemap(
        &dst.join("p"),
        7,
        &[(0x10000, 2, pe::PRESENT), (0x12000, 3, pe::PARENT)],
    );
    std::os::unix::fs::symlink("p", dst.join("parent")).unwrap();
    let (o, srv) = start_server(&dst);
    let sink = PageServerSink::new(Conn::connect(&o).unwrap()).with_local(&src);
    assert!(sink.has_parent(Target::Task(7)).unwrap());
    assert!(!sink.has_parent(Target::Task(8)).unwrap());
    let _ = crate::mem::take_page_tally(&src);
    {
        let mut s = sink.open(PageOwner::Task { id: 7, pages_id: 1 }).unwrap();
        s.runs(&[
            Run {
                vaddr: 0x10000,
                npages: 1,
                flags: pe::PRESENT,
            },
            Run {
                vaddr: 0x11000,
                npages: 4,
                flags: pe::PARENT,
            },
        ])
        .unwrap();
        s.pages(&page(5)).unwrap();
        s.finish().unwrap();
    }
    {
        // No parent for 8 on the server: a run as in the parent is refused.
        let mut s = sink.open(PageOwner::Task { id: 8, pages_id: 2 }).unwrap();
        s.runs(&[Run {
            vaddr: 0x10000,
            npages: 1,
            flags: pe::PARENT,
        }])
        .unwrap();
        let e = s.finish().unwrap_err();
        assert!(e.to_string().contains("no parent set"), "{e}");
    }
    sink.close(false).unwrap();
    srv.join().unwrap().unwrap();
    let name = record_name(7);
    let mut r = ImageReader::open_typed(&src, ImageType::Pagemap, &name).unwrap();
    let _: PagemapHead = r.read_entry().unwrap().unwrap();
    let e: Vec<PagemapEntry> = r.read_remaining().unwrap();
    let runs: Vec<_> = e
        .iter()
        .map(|e| (e.vaddr, e.nr_pages.unwrap(), e.flags.unwrap()))
        .collect();
    assert_eq!(
        runs,
        vec![(0x10000, 1, pe::PRESENT), (0x11000, 4, pe::PARENT)]
    );
    assert!(!src.join(record_name(8)).exists());
    assert_eq!(crate::mem::take_page_tally(&src).pages_written, 1);
    assert_eq!(
        std::fs::read(dst.join(format!("pages-{}.img", server::PAGES_ID_BASE))).unwrap(),
        page(5)
    );
}

/// A run sent as in the parent that the server's parent set does not
/// hold: the server refuses it (as CRIU's does), the client's close fails.
#[test]
fn server_refuses_a_run_not_in_its_parent() {
    let d = temp("not-in-parent");
    let dst = d.0.join("dst");
    std::fs::create_dir_all(dst.join("p")).unwrap();
    parent_pagemap(&dst.join("p"), 7, &[(0x10000, 2, pe::PRESENT)]);
    std::os::unix::fs::symlink("p", dst.join("parent")).unwrap();
    let (o, srv) = start_server(&dst);
    let sink = PageServerSink::new(Conn::connect(&o).unwrap());
    {
        let mut s = sink.open(PageOwner::Task { id: 7, pages_id: 1 }).unwrap();
        s.runs(&[Run {
            vaddr: 0x11000,
            npages: 2,
            flags: pe::PARENT,
        }])
        .unwrap();
        let _ = s.finish();
    }
    assert!(sink.close(false).is_err());
    let e = srv.join().unwrap().unwrap_err();
    assert!(e.to_string().contains("does not hold them"), "{e}");
}
