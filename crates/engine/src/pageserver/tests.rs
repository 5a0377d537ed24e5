//! A dump's sink and lazy-pages' requests against crust's own page
//! server, over loopback TCP.

use super::*;
use crate::mem::{PageOwner, PageSink, Run};
use crate::Options;
use crust_images::consts::pe;
use crust_images::image::{ImageReader, ImageType};
use crust_images::proto::pagemap::{PagemapEntry, PagemapHead};
use crust_sys::PAGE_SIZE;

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("crust-ps-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

fn local_opts(port: u16) -> Options {
    Options {
        address: Some("127.0.0.1".into()),
        port: Some(port),
        ..Default::default()
    }
}

/// crust's page server on a free loopback port, serving one connection
/// into `dir` on a thread; and the options a client connects with.
fn start_server(dir: &std::path::Path) -> (Options, Served) {
    let mut o = local_opts(0);
    let l = Listener::bind(&o).unwrap();
    o.port = Some(l.port());
    let so = o.clone();
    let sdir = dir.to_path_buf();
    let srv = std::thread::spawn(move || serve(l.accept(&so).unwrap(), &sdir, None, true));
    (o, srv)
}

type Served = std::thread::JoinHandle<Result<ServeStats, crate::Error>>;

fn page(b: u8) -> Vec<u8> {
    vec![b; PAGE_SIZE as usize]
}

fn pagemap(dir: &std::path::Path, ty: ImageType, id: u64) -> (u32, Vec<(u64, u64, u32)>) {
    let name = ty.file_name(id);
    let mut r = ImageReader::open_typed(dir, ty, &name).unwrap();
    let head: PagemapHead = r.read_entry().unwrap().unwrap();
    let e: Vec<PagemapEntry> = r.read_remaining().unwrap();
    (
        head.pages_id,
        e.iter()
            .map(|e| (e.vaddr, e.nr_pages.unwrap(), e.flags.unwrap()))
            .collect(),
    )
}

/// Runs cut across buffers, runs without bytes, an object after a task:
/// the server writes CRIU's pagemaps with its own pages ids, the bytes in
/// order; then the pages come back through PS_IOV_GET.
#[test]
fn dump_to_server_and_get_back() {
    let d = temp("roundtrip");
    let dir = d.0.clone();
    let (o, srv) = start_server(&dir);
    // A parent set holding process 7's pagemap: runs as in the parent may go.
    std::fs::create_dir_all(dir.join("p")).unwrap();
    let p = dir.join("p");
    crate::mem::write_pagemap_named(
        &p,
        ImageType::Pagemap,
        "pagemap-7.img",
        1,
        &[(0x20000, 3, pe::PRESENT)],
    )
    .unwrap();
    std::os::unix::fs::symlink("p", dir.join("parent")).unwrap();
    let sink = PageServerSink::new(Conn::connect(&o).unwrap());
    {
        let mut s = sink.open(PageOwner::Task { id: 7, pages_id: 1 }).unwrap();
        s.runs(&[
            Run {
                vaddr: 0x10000,
                npages: 2,
                flags: pe::PRESENT,
            },
            Run {
                vaddr: 0x20000,
                npages: 3,
                flags: pe::PARENT,
            },
            Run {
                vaddr: 0x30000,
                npages: 1,
                flags: pe::PRESENT | pe::LAZY,
            },
        ])
        .unwrap();
        let mut b = page(1);
        b.extend(page(2)[..PAGE_SIZE as usize / 2].iter());
        s.pages(&b[..PAGE_SIZE as usize]).unwrap();
        s.pages(&[page(2), page(3)].concat()).unwrap();
        s.finish().unwrap();
    }
    {
        let mut s = sink
            .open(PageOwner::Object {
                shmid: 99,
                pages_id: 5,
            })
            .unwrap();
        s.runs(&[Run {
            vaddr: 0,
            npages: 1,
            flags: pe::PRESENT,
        }])
        .unwrap();
        s.pages(&page(9)).unwrap();
        s.finish().unwrap();
    }
    sink.close(false).unwrap();
    let st = srv.join().unwrap().unwrap();
    assert_eq!(st.pages, 4);
    assert_eq!(st.opens, 2);
    let (id, runs) = pagemap(&dir, ImageType::Pagemap, 7);
    assert_eq!(id, server::PAGES_ID_BASE);
    assert_eq!(
        runs,
        vec![
            (0x10000, 2, pe::PRESENT),
            (0x20000, 3, pe::PARENT),
            (0x30000, 1, pe::PRESENT | pe::LAZY)
        ]
    );
    let pages = std::fs::read(dir.join(format!("pages-{}.img", id))).unwrap();
    assert_eq!(pages, [page(1), page(2), page(3)].concat());
    let (oid, oruns) = pagemap(&dir, ImageType::ShmemPagemap, 99);
    assert_eq!(oid, server::PAGES_ID_BASE + 1);
    assert_eq!(oruns, vec![(0, 1, pe::PRESENT)]);

    // lazy-pages' side: GET from a server serving these images.
    let mut o2 = local_opts(0);
    let l2 = Listener::bind(&o2).unwrap();
    o2.port = Some(l2.port());
    let so2 = o2.clone();
    let sdir2 = dir.clone();
    let srv2 = std::thread::spawn(move || {
        let mut p = ImagesProvider::open(&sdir2);
        let out = temp("roundtrip-out");
        serve(l2.accept(&so2).unwrap(), &out.0, Some(&mut p), true)
    });
    let mut r = Remote::new(Conn::connect(&o2).unwrap());
    let mut buf = vec![0u8; 4 * PAGE_SIZE as usize];
    // Asks for 4 pages from the second page of the first run: gets 1.
    assert_eq!(r.get(7, 0x11000, 4, &mut buf).unwrap(), 1);
    assert_eq!(&buf[..PAGE_SIZE as usize], &page(2)[..]);
    assert_eq!(r.get(7, 0x30000, 1, &mut buf).unwrap(), 1);
    assert_eq!(&buf[..PAGE_SIZE as usize], &page(3)[..]);
    r.close().unwrap();
    assert_eq!(srv2.join().unwrap().unwrap().sent, 2);
}

/// A server that goes away mid-stream: the sink fails (no hang), and the
/// server side leaves no half pages file.
#[test]
fn server_gone_fails_the_sink() {
    let d = temp("gone");
    let mut o = local_opts(0);
    let l = Listener::bind(&o).unwrap();
    o.port = Some(l.port());
    let so = o.clone();
    let srv = std::thread::spawn(move || {
        let mut c = l.accept(&so).unwrap();
        // Answer the open, then drop the connection.
        let _ = c.recv_iov().unwrap();
        c.send(&[0], "answer").unwrap();
    });
    let sink = PageServerSink::new(Conn::connect(&o).unwrap());
    let mut s = sink.open(PageOwner::Task { id: 1, pages_id: 1 }).unwrap();
    srv.join().unwrap();
    s.runs(&[Run {
        vaddr: 0x10000,
        npages: 256 * 64,
        flags: pe::PRESENT,
    }])
    .unwrap();
    let big = vec![7u8; 256 * PAGE_SIZE as usize];
    let mut failed = false;
    for _ in 0..64 {
        if s.pages(&big).is_err() {
            failed = true;
            break;
        }
    }
    let failed = if failed {
        drop(s);
        true
    } else {
        s.finish().is_err()
    };
    assert!(failed || sink.close(false).is_err());
    assert!(std::fs::read_dir(&d.0).unwrap().next().is_none());
}

/// A client that disconnects before PS_IOV_CLOSE: the server reports
/// incomplete images.
#[test]
fn client_gone_is_an_error() {
    let d = temp("client-gone");
    let (o, srv) = start_server(&d.0);
    {
        let sink = PageServerSink::new(Conn::connect(&o).unwrap());
        let mut s = sink.open(PageOwner::Task { id: 3, pages_id: 1 }).unwrap();
        s.runs(&[Run {
            vaddr: 0x10000,
            npages: 2,
            flags: pe::PRESENT,
        }])
        .unwrap();
        s.pages(&page(1)).unwrap();
        drop(s);
    }
    let e = srv.join().unwrap().unwrap_err();
    assert!(e.to_string().contains("page server"), "{e}");
    assert!(!d.0.join("pagemap-3.img").exists());
}

/// A run longer than the server's buffer, sent in pieces that do not
/// fall on its boundaries: the bytes land in order, every one.
#[test]
fn long_run_arrives_whole() {
    let d = temp("long");
    let dir = d.0.clone();
    let (o, srv) = start_server(&dir);
    let npages = 777u64;
    let bytes: Vec<u8> = (0..npages * PAGE_SIZE)
        .map(|i| (i / 7 % 251) as u8)
        .collect();
    let sink = PageServerSink::new(Conn::connect(&o).unwrap());
    {
        let mut s = sink.open(PageOwner::Task { id: 5, pages_id: 1 }).unwrap();
        s.runs(&[Run {
            vaddr: 0x100000,
            npages,
            flags: pe::PRESENT,
        }])
        .unwrap();
        for piece in bytes.chunks(PAGE_SIZE as usize * 37) {
            s.pages(piece).unwrap();
        }
        s.finish().unwrap();
    }
    sink.close(false).unwrap();
    assert_eq!(srv.join().unwrap().unwrap().pages, npages);
    let (id, runs) = pagemap(&dir, ImageType::Pagemap, 5);
    assert_eq!(runs, vec![(0x100000, npages, pe::PRESENT)]);
    let got = std::fs::read(dir.join(format!("pages-{id}.img"))).unwrap();
    assert!(got == bytes, "the pages file differs from what was sent");
}

#[cfg(test)]
#[path = "parent_tests.rs"]
mod parent_tests;
