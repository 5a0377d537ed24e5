use super::*;
use crate::mem::pages::write_pagemap;

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const PG: u64 = PAGE_SIZE;
const P: u32 = pe::PRESENT;
const PAR: u32 = pe::PARENT;

/// A scratch directory holding image sets `names` (subdirectories), each
/// with an inventory.
fn sets(tag: &str, names: &[&str]) -> TempDir {
    let root = std::env::temp_dir().join(format!("crust-chain-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for n in names {
        let d = root.join(n);
        std::fs::create_dir_all(&d).unwrap();
        let inv = InventoryEntry {
            img_version: 2,
            ..Default::default()
        };
        crate::util::write_image(&d, ImageType::Inventory, 0, &[inv]).unwrap();
    }
    TempDir(root)
}

/// Process 42's pagemap in `dir`: runs (page index, pages, flags) from
/// 0x10000; the pages file holds `fill` for each present page.
fn pagemap(dir: &Path, runs: &[(u64, u64, u32)], fill: u8) {
    let entries: Vec<_> = runs
        .iter()
        .map(|&(i, n, f)| (0x10000 + i * PG, n, f))
        .collect();
    write_pagemap(dir, ImageType::Pagemap, 42, 1, &entries).unwrap();
    let present: u64 = runs.iter().filter(|r| r.2 & P != 0).map(|r| r.1).sum();
    std::fs::write(dir.join("pages-1.img"), vec![fill; (present * PG) as usize]).unwrap();
}

fn link(from: &Path, to: &str) {
    std::os::unix::fs::symlink(to, from.join(PARENT_LINK)).unwrap();
}

/// (first page index, pages, level, page offset) of each piece.
fn resolved(dir: &Path, runs: &[(u64, u64)]) -> Result<Vec<(u64, u64, usize, u64)>, Error> {
    let runs: Vec<_> = runs
        .iter()
        .map(|&(i, n)| (0x10000 + i * PG, 0x10000 + (i + n) * PG))
        .collect();
    Ok(resolve(dir, Owner::Task(42), 1, &runs)?
        .iter()
        .map(|p| {
            (
                (p.start - 0x10000) / PG,
                (p.end - p.start) / PG,
                p.level,
                p.off / PG,
            )
        })
        .collect())
}

#[test]
fn a_run_split_over_three_sets() {
    let t = sets("three", &["a", "b", "c"]);
    let (a, b, c) = (t.0.join("a"), t.0.join("b"), t.0.join("c"));
    // a: pages 0-7; b: 2-3 new, the rest from a; c: 5 new, 0-4 and 6-7
    // from b.
    pagemap(&a, &[(0, 8, P)], 1);
    pagemap(&b, &[(0, 2, PAR), (2, 2, P), (4, 4, PAR)], 2);
    pagemap(&c, &[(0, 5, PAR), (5, 1, P), (6, 2, PAR)], 3);
    link(&b, "../a");
    link(&c, "../b");
    let got = resolved(&c, &[(0, 5), (6, 2)]).unwrap();
    assert_eq!(
        got,
        vec![(0, 2, 2, 0), (2, 2, 1, 0), (4, 1, 2, 4), (6, 2, 2, 6),]
    );
    // The fills find each level's file.
    let runs = pieces_to_runs(&resolve(&c, Owner::Task(42), 1, &[(0x10000, 0x12000)]).unwrap());
    let fills: Vec<_> = runs
        .iter()
        .map(|r| (r.vaddr, r.npages * PG, r.file_off))
        .collect();
    let files = level_files(&c, 1, &fills).unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, a.canonicalize().unwrap().join("pages-1.img"));
    assert_eq!(files[0].1, vec![(0x10000, 2 * PG, 0)]);
    // Own offsets stay with the set's own file.
    let own = level_files(&c, 1, &[(0x15000, PG, 0)]).unwrap();
    assert_eq!(own, vec![(c.join("pages-1.img"), vec![(0x15000, PG, 0)])]);
}

#[test]
fn bad_chains_are_refused() {
    let t = sets("bad", &["a", "b", "x"]);
    let (a, b) = (t.0.join("a"), t.0.join("b"));
    pagemap(&a, &[(0, 4, P)], 1);
    pagemap(&b, &[(0, 8, PAR)], 2);
    let err = |r: Result<Vec<_>, Error>| match r {
        Err(Error::BadImage { why, .. }) => why,
        other => panic!("not refused: {other:?}"),
    };
    // No parent link.
    assert!(err(resolved(&b, &[(0, 2)])).contains("there is none"));
    // Dangling.
    link(&b, "../gone");
    assert!(err(resolved(&b, &[(0, 2)])).contains("cannot be reached"));
    std::fs::remove_file(b.join(PARENT_LINK)).unwrap();
    // The parent does not cover the run.
    link(&b, "../a");
    assert!(resolved(&b, &[(0, 4)]).is_ok());
    assert!(err(resolved(&b, &[(2, 4)])).contains("does not hold"));
    // Another tree: no pagemap of the process.
    std::fs::remove_file(b.join(PARENT_LINK)).unwrap();
    link(&b, "../x");
    assert!(err(resolved(&b, &[(0, 2)])).contains("not a parent"));
    // Not an image set at all.
    std::fs::remove_file(t.0.join("x/inventory.img")).unwrap();
    assert!(err(resolved(&b, &[(0, 2)])).contains("not an image set"));
    // The parent's pages file is shorter than its pagemap says.
    std::fs::remove_file(b.join(PARENT_LINK)).unwrap();
    link(&b, "../a");
    std::fs::write(a.join("pages-1.img"), vec![0u8; PG as usize]).unwrap();
    assert!(err(resolved(&b, &[(0, 2)])).contains("truncated"));
    // A loop: a's parent is b.
    pagemap(&a, &[(0, 4, PAR)], 1);
    link(&a, "../b");
    assert!(err(resolved(&b, &[(0, 2)])).contains("loops"));
    // A link to a file.
    std::fs::remove_file(b.join(PARENT_LINK)).unwrap();
    link(&b, "../a/inventory.img");
    assert!(err(resolved(&b, &[(0, 2)])).contains("not a directory"));
}

#[test]
fn too_deep_a_chain_is_refused() {
    let names: Vec<String> = (0..=MAX_DEPTH + 1).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let t = sets("deep", &refs);
    for (i, n) in names.iter().enumerate() {
        let d = t.0.join(n);
        if i + 1 < names.len() {
            pagemap(&d, &[(0, 1, PAR)], 0);
            link(&d, &format!("../s{}", i + 1));
        } else {
            pagemap(&d, &[(0, 1, P)], 9);
        }
    }
    match resolved(&t.0.join("s0"), &[(0, 1)]) {
        Err(Error::BadImage { why, .. }) => assert!(why.contains("deeper"), "{why}"),
        other => panic!("not refused: {other:?}"),
    }
    // A chain within the bound resolves to its oldest set.
    let mid = format!("s{}", names.len() - 8);
    assert_eq!(
        resolved(&t.0.join(mid), &[(0, 1)]).unwrap(),
        vec![(0, 1, 7, 0)]
    );
}

#[test]
fn old_in_parent_flag_is_a_parent_run() {
    let e = PagemapEntry {
        vaddr: 0,
        in_parent: Some(true),
        ..Default::default()
    };
    assert_eq!(entry_flags(&e), PAR);
    let e = PagemapEntry::default();
    assert_eq!(entry_flags(&e), P);
}

/// The bytes of `pieces` (as resolved from `dir`), read from each level's
/// pages file.
fn piece_bytes(dir: &Path, pieces: &[Piece]) -> Vec<u8> {
    let runs = pieces_to_runs(pieces);
    let fills: Vec<_> = runs
        .iter()
        .map(|r| (r.vaddr, r.npages * PG, r.file_off))
        .collect();
    let mut out = Vec::new();
    for (file, runs) in level_files(dir, 1, &fills).unwrap() {
        let data = std::fs::read(file).unwrap();
        for (_, len, off) in runs {
            out.extend_from_slice(&data[off as usize..(off + len) as usize]);
        }
    }
    out
}

#[test]
fn dedup_punches_only_superseded_pages() {
    let t = sets("dedup", &["a", "b", "c"]);
    let (a, b, c) = (t.0.join("a"), t.0.join("b"), t.0.join("c"));
    pagemap(&a, &[(0, 8, P)], 1);
    pagemap(&b, &[(0, 2, PAR), (2, 2, P), (4, 4, PAR)], 2);
    pagemap(&c, &[(0, 5, PAR), (5, 1, P), (6, 2, PAR)], 3);
    link(&b, "../a");
    link(&c, "../b");
    let all = [(0x10000, 0x15000), (0x16000, 0x18000)];
    let before = piece_bytes(&c, &resolve(&c, Owner::Task(42), 1, &all).unwrap());
    let stats = crate::mem::dedup::dedup(&c).unwrap();
    // Page 5, stored in c, is punched out of a (b holds it in a).
    assert_eq!(stats.bytes, PG);
    let after = piece_bytes(&c, &resolve(&c, Owner::Task(42), 1, &all).unwrap());
    assert_eq!(before, after);
    let data = std::fs::read(a.join("pages-1.img")).unwrap();
    assert_eq!(data.len() as u64, 8 * PG);
    assert!(data[(5 * PG) as usize..(6 * PG) as usize]
        .iter()
        .all(|&x| x == 0));
    assert!(data[(4 * PG) as usize..(5 * PG) as usize]
        .iter()
        .all(|&x| x == 1));
    // Deduplicating b: its pages 2-3 go from a.
    crate::mem::dedup::dedup(&b).unwrap();
    let data = std::fs::read(a.join("pages-1.img")).unwrap();
    assert!(data[(2 * PG) as usize..(4 * PG) as usize]
        .iter()
        .all(|&x| x == 0));
    // c still restores.
    let again = piece_bytes(&c, &resolve(&c, Owner::Task(42), 1, &all).unwrap());
    assert_eq!(before, again);
    // Without a parent there is nothing to do.
    assert_eq!(
        crate::mem::dedup::dedup(&a).unwrap(),
        crate::mem::dedup::DedupStats::default()
    );
}
