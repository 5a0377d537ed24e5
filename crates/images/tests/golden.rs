//! Decode every golden CRIU 4.2 image, re-encode it and compare bytes;
//! spot-check decoded values against what crit showed.

use std::path::{Path, PathBuf};

use crust_images::image::{ImageReader, ImageType, MessageVisitor, Payload};
use crust_images::proto::*;
use crust_images::wire::Message;
use crust_images::{read_all, read_one};

const CASES: &[&str] = &["loop", "tree", "threads", "files", "tcp", "pidns"];

fn golden(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/golden")
        .join(case)
}

fn image_files(case: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(golden(case))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".img") || n.starts_with("stats-"))
        .collect();
    v.sort();
    v
}

/// Decode `bytes` as M and re-encode it.
struct Roundtrip<'a>(&'a [u8]);
impl MessageVisitor for Roundtrip<'_> {
    type Out = Result<Vec<u8>, String>;
    fn visit<M: Message + Clone + std::fmt::Debug + PartialEq>(self) -> Self::Out {
        let m = M::decode(self.0).map_err(|e| e.to_string())?;
        assert!(
            m.encoded_len() == m.encode_to_vec().len(),
            "encoded_len mismatch for {}",
            M::NAME
        );
        Ok(m.encode_to_vec())
    }
}

fn roundtrip_entry(ty: ImageType, index: usize, entry: &[u8]) -> Result<Vec<u8>, String> {
    match (ty.payload(), index) {
        (Payload::Pagemap, 0) => PagemapHead::decode(entry)
            .map(|m| m.encode_to_vec())
            .map_err(|e| e.to_string()),
        (Payload::GhostFile, i) if i > 0 => GhostChunkEntry::decode(entry)
            .map(|m| m.encode_to_vec())
            .map_err(|e| e.to_string()),
        _ => ty.visit_message(Roundtrip(entry)),
    }
}

#[test]
fn every_golden_image_roundtrips_byte_identical() {
    let mut checked = 0;
    for case in CASES {
        let dir = golden(case);
        for name in image_files(case) {
            let ty = ImageType::from_file_name(&name)
                .unwrap_or_else(|| panic!("{case}/{name}: unknown image type"));
            let orig = std::fs::read(dir.join(&name)).unwrap();
            let mut r =
                ImageReader::open(&dir, &name).unwrap_or_else(|e| panic!("{case}/{name}: {e}"));
            let mut rebuilt = ty.header_bytes();
            let mut index = 0;
            while let Some(rec) = r
                .next_record()
                .unwrap_or_else(|e| panic!("{case}/{name}: {e}"))
            {
                if ty.payload() != Payload::Raw {
                    let enc = roundtrip_entry(ty, index, &rec.entry)
                        .unwrap_or_else(|e| panic!("{case}/{name} entry {index}: {e}"));
                    assert_eq!(
                        enc, rec.entry,
                        "{case}/{name} entry {index}: re-encoded bytes differ"
                    );
                    rebuilt.extend_from_slice(&(enc.len() as u32).to_le_bytes());
                    rebuilt.extend_from_slice(&enc);
                }
                rebuilt.extend_from_slice(&rec.payload);
                index += 1;
            }
            assert_eq!(rebuilt, orig, "{case}/{name}: rebuilt file differs");
            checked += 1;
        }
    }
    assert!(checked >= 115, "only {checked} images checked");
}

#[test]
fn magic_of_every_golden_image_is_known() {
    for case in CASES {
        for name in image_files(case) {
            let ty = ImageType::from_file_name(&name).unwrap();
            if ty == ImageType::Pages {
                continue;
            }
            let r = ImageReader::open_path(&golden(case).join(&name), None).unwrap();
            assert_eq!(r.image_type(), ty, "{case}/{name}");
        }
    }
}

#[test]
fn loop_values_match_crit() {
    let dir = golden("loop");
    let core: CoreEntry = read_one(&dir, "core-1077.img").unwrap();
    assert_eq!(core.mtype, core_entry_march::X86_64);
    let ti = core.thread_info.as_ref().unwrap();
    assert_eq!(ti.gpregs.ip, 0x45ecf3);
    let tc = core.tc.as_ref().unwrap();
    assert_eq!(tc.sigactions.len(), 62);
    assert_eq!(tc.comm, "loop");

    let mut r = ImageReader::open(&dir, "pagemap-1077.img").unwrap();
    let head: PagemapHead = r.read_entry().unwrap().unwrap();
    assert_eq!(head.pages_id, 1);
    let entries: Vec<PagemapEntry> = r.read_remaining().unwrap();
    assert!(!entries.is_empty());
    let total: u64 = entries.iter().map(|e| e.nr_pages.unwrap_or(0)).sum();
    let pages = std::fs::metadata(dir.join("pages-1.img")).unwrap().len();
    let present: u64 = entries
        .iter()
        .filter(|e| e.flags.unwrap_or(0) & 4 != 0)
        .map(|e| e.nr_pages.unwrap_or(0))
        .sum();
    assert_eq!(present * 4096, pages);
    assert!(total >= present);

    let pstree: Vec<PstreeEntry> = read_all(&dir, "pstree.img").unwrap();
    assert_eq!(pstree.len(), 1);
    assert_eq!(pstree[0].pid, 1077);
    assert_eq!(pstree[0].threads, vec![1077]);

    let inv: InventoryEntry = read_one(&dir, "inventory.img").unwrap();
    assert_eq!(inv.img_version, 2);

    let fdinfo: Vec<FdinfoEntry> = read_all(&dir, "fdinfo-2.img").unwrap();
    assert!(fdinfo.iter().any(|f| f.r#type == fd_types::REG));
    let files: Vec<FileEntry> = read_all(&dir, "files.img").unwrap();
    assert!(files
        .iter()
        .any(|f| f.reg.as_ref().is_some_and(|r| r.pos == 100)));

    let stats: StatsEntry = read_one(&dir, "stats-dump").unwrap();
    assert!(stats.dump.is_some());
}

#[test]
fn threads_have_xsave() {
    let dir = golden("threads");
    for tid in [1373, 1376, 1377, 1378] {
        let core: CoreEntry = read_one(&dir, &format!("core-{tid}.img")).unwrap();
        let fp = core.thread_info.unwrap().fpregs;
        let xs = fp.xsave.expect("xsave present");
        assert_eq!(xs.ymmh_space.len(), 64);
        assert!(!xs.zmm_upper.is_empty());
        assert!(!xs.hi16_zmm.is_empty());
        assert!(!xs.opmask_reg.is_empty());
    }
}
