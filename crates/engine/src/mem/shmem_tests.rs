//! Tests of shared memory objects (`mem/shmem.rs`).

use super::*;
use crate::mem::pages::write_pagemap;
use crate::mem::{load_pagemap, validate_vmas};
use crate::util::{read_one, write_image};
use crust_images::proto::fdinfo::{fd_types, FileEntry};
use crust_images::proto::memfd::{MemfdFileEntry, MemfdInodeEntry};

fn golden_files() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden/files")
}

/// CRIU 4.2 stored P's MAP_SHARED|MAP_ANONYMOUS area as memfd file 4,
/// inode 11665, 2 pages at offset 0 in pages-1.img.
#[test]
fn golden_shared_anon_loads() {
    let dir = golden_files();
    if !dir.join("mm-1514.img").exists() {
        return;
    }
    let mm: MmEntry = read_one(&dir, ImageType::Mm, 1514).unwrap();
    let memfds = memfds_in(&dir);
    validate_vmas(&dir, &mm).unwrap();
    let objs = load_shmem(&dir, &mm, &memfds).unwrap();
    assert_eq!(objs.len(), 1);
    let o = &objs[0];
    assert_eq!((o.key, o.ino, o.size, o.pages_id), (4, 11665, 16384, 1));
    assert_eq!(o.runs.len(), 1);
    assert_eq!(
        (o.runs[0].vaddr, o.runs[0].npages, o.runs[0].file_off),
        (0, 2, 0)
    );
    let pages = std::fs::read(dir.join("pages-1.img")).unwrap();
    assert!(pages.starts_with(b"SHM-ANON page 0 written by parent"));
    assert!(pages[4096..].starts_with(b"SHM-ANON page 1 written by child"));
    // The private pagemap still loads beside it.
    load_pagemap(&dir, 1514, &mm, false).unwrap();
}

/// The memfd inodes of an image set by files.img id, as the restore
/// reads them (`files::memfds_of`).
fn memfds_in(dir: &Path) -> Memfds {
    let files: Vec<FileEntry> = crate::util::read_image(dir, ImageType::Files, 0).unwrap();
    let inodes: Vec<MemfdInodeEntry> =
        crate::util::read_image(dir, ImageType::MemfdInode, 0).unwrap();
    files
        .iter()
        .filter_map(|f| {
            let m = f.memfd.as_ref()?;
            let i = inodes.iter().find(|i| i.inode_id == m.inode_id as u64)?;
            Some((f.id, i.clone()))
        })
        .collect()
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An image set with one memfd-backed shared VMA of 4 pages whose
/// pagemap-shmem entry is (vaddr, npages), with `pages_len` bytes of pages.
fn shmem_set(
    tag: &str,
    name: &str,
    vaddr: u64,
    npages: u64,
    pages_len: usize,
) -> (TempDir, MmEntry, Memfds) {
    let dir = std::env::temp_dir().join(format!("crust-mem-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t = TempDir(dir.clone());
    let file = FileEntry {
        r#type: fd_types::MEMFD,
        id: 7,
        memfd: Some(Box::new(MemfdFileEntry {
            id: 7,
            inode_id: 1,
            ..Default::default()
        })),
        ..Default::default()
    };
    write_image(&dir, ImageType::Files, 0, &[file]).unwrap();
    let inode = MemfdInodeEntry {
        name: name.into(),
        size: 4 * PAGE_SIZE,
        shmid: 99,
        seals: 1,
        inode_id: 1,
        ..Default::default()
    };
    write_image(&dir, ImageType::MemfdInode, 0, &[inode]).unwrap();
    write_pagemap(
        &dir,
        ImageType::ShmemPagemap,
        99,
        5,
        &[(vaddr, npages, pe::PRESENT)],
    )
    .unwrap();
    std::fs::write(dir.join("pages-5.img"), vec![0u8; pages_len]).unwrap();
    let mm = MmEntry {
        vmas: vec![VmaEntry {
            start: 0x10000,
            end: 0x14000,
            shmid: 7,
            prot: 3,
            flags: libc::MAP_SHARED as u32,
            status: vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD,
            fd: -1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let memfds = memfds_in(&dir);
    (t, mm, memfds)
}

#[test]
fn shmem_image_checks() {
    let (t, mm, m) = shmem_set("ok", "/dev/zero", PAGE_SIZE, 2, 2 * PAGE_SIZE as usize);
    let objs = load_shmem(&t.0, &mm, &m).unwrap();
    assert_eq!(
        (objs[0].ino, objs[0].size, objs[0].pages_id),
        (99, 4 * PAGE_SIZE, 5)
    );
    // Pages past the end of the object.
    let (t, mm, m) = shmem_set(
        "past",
        "/dev/zero",
        3 * PAGE_SIZE,
        2,
        2 * PAGE_SIZE as usize,
    );
    assert!(matches!(
        load_shmem(&t.0, &mm, &m),
        Err(Error::BadImage { .. })
    ));
    // Overflowing run.
    let (t, mm, m) = shmem_set("ovf", "/dev/zero", PAGE_SIZE, u64::MAX / 2, 0);
    assert!(matches!(
        load_shmem(&t.0, &mm, &m),
        Err(Error::BadImage { .. })
    ));
    // Truncated pages file.
    let (t, mm, m) = shmem_set("trunc", "/dev/zero", 0, 2, PAGE_SIZE as usize);
    assert!(matches!(
        load_shmem(&t.0, &mm, &m),
        Err(Error::BadImage { .. })
    ));
    // A named memfd is rebuilt as a memfd of that name.
    let (t, mm, m) = shmem_set("memfd", "mine", 0, 1, PAGE_SIZE as usize);
    let got = load_shmem(&t.0, &mm, &m).expect("a named memfd loads");
    assert_eq!(got.first().and_then(|o| o.name.as_deref()), Some("mine"));
    // One whose name memfd_create would refuse is a bad image.
    let long = "x".repeat(250);
    let (t, mm, m) = shmem_set("memfd-long", &long, 0, 1, PAGE_SIZE as usize);
    assert!(matches!(
        load_shmem(&t.0, &mm, &m),
        Err(Error::BadImage { .. })
    ));
    // A VMA naming a file id files.img lacks.
    let (t, mut mm, m) = shmem_set("noid", "/dev/zero", 0, 1, PAGE_SIZE as usize);
    mm.vmas[0].shmid = 8;
    assert!(matches!(
        load_shmem(&t.0, &mm, &m),
        Err(Error::BadImage { .. })
    ));
}

#[test]
fn zero_pages() {
    let mut p = vec![0u8; PAGE_SIZE as usize];
    assert!(all_zero(&p));
    p[4095] = 1;
    assert!(!all_zero(&p));
}

#[test]
fn object_store_keeps_nonzero_pages_in_runs() {
    use crate::mem::pages::tests::CollectSink;
    let dir = std::env::temp_dir().join(format!("crust-mem-obj-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = TempDir(dir.clone());
    // 300 pages: page 0 and pages 255-257 (across the first 1 MiB
    // buffer's end) hold data, the rest zeros.
    let pg = PAGE_SIZE as usize;
    let mut content = vec![0u8; 300 * pg];
    for (i, p) in [0usize, 255, 256, 257].iter().enumerate() {
        content[p * pg] = i as u8 + 1;
        content[p * pg + pg - 1] = 0xaa;
    }
    let path = t.0.join("object");
    std::fs::write(&path, &content).unwrap();
    let f = File::open(&path).unwrap();
    let sink = CollectSink::default();
    let owner = PageOwner::Object {
        shmid: 9,
        pages_id: 3,
    };
    let (scanned, stored, runs) =
        store_object(&sink, owner, &f, &path, content.len() as u64 - 10).unwrap();
    assert_eq!((scanned, stored, runs), (300, 4, 2));
    let got = sink.take();
    assert_eq!(got.len(), 1);
    let (o, runs, bytes) = &got[0];
    assert_eq!(*o, owner);
    // The run cut by the buffer boundary is one run again.
    assert_eq!(
        runs,
        &vec![
            Run {
                vaddr: 0,
                npages: 1,
                flags: pe::PRESENT
            },
            Run {
                vaddr: 255 * PAGE_SIZE,
                npages: 3,
                flags: pe::PRESENT
            },
        ]
    );
    let mut want = content[..pg].to_vec();
    want.extend_from_slice(&content[255 * pg..258 * pg]);
    assert_eq!(bytes, &want);
}

#[test]
fn object_store_reads_only_what_holds_data() {
    use crate::mem::pages::tests::CollectSink;
    use std::os::unix::fs::FileExt;
    // tmpfs, as shared memory is: it tells data from holes.
    let dir = Path::new("/dev/shm").join(format!("crust-mem-sparse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let t = TempDir(dir.clone());
    let path = t.0.join("object");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    // 1 GiB, three pages written: the rest is never read.
    let pages = 1u64 << 18;
    f.set_len(pages * PAGE_SIZE).unwrap();
    for p in [300, 5000, pages - 1] {
        f.write_all_at(&[7], p * PAGE_SIZE + 9).unwrap();
    }
    let ext = super::data_extents(&f, pages * PAGE_SIZE);
    let read: u64 = ext.iter().map(|(s, e)| e - s).sum();
    assert!(read <= 3 * (2 << 20), "{ext:x?}");
    let sink = CollectSink::default();
    let owner = PageOwner::Object {
        shmid: 9,
        pages_id: 3,
    };
    let (scanned, stored, runs) = store_object(&sink, owner, &f, &path, pages * PAGE_SIZE).unwrap();
    assert_eq!((scanned, stored, runs), (pages, 3, 3));
    let got = sink.take();
    let at: Vec<u64> = got[0].1.iter().map(|r| r.vaddr / PAGE_SIZE).collect();
    assert_eq!(at, [300, 5000, pages - 1]);
}

#[test]
fn keep_nonzero_compacts() {
    let pg = PAGE_SIZE as usize;
    let mut chunk = vec![0u8; 4 * pg];
    chunk[pg] = 1;
    chunk[3 * pg + 5] = 2;
    let mut runs = Vec::new();
    let kept = keep_nonzero(&mut chunk, 0x1000_0000, &mut runs);
    assert_eq!(kept, 2 * pg);
    assert_eq!((chunk[0], chunk[pg + 5]), (1, 2));
    assert_eq!(
        runs.iter().map(|r| (r.vaddr, r.npages)).collect::<Vec<_>>(),
        vec![
            (0x1000_0000 + PAGE_SIZE, 1),
            (0x1000_0000 + 3 * PAGE_SIZE, 1)
        ]
    );
}
