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
        .filter(|e| e.flags.unwrap_or(0) & crust_images::consts::pe::PRESENT != 0)
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

/// crust's `--pretty` JSON is crit's, byte for byte (decoded/ was written
/// by CRIU 4.2's `crit decode --pretty` to stdout: one final newline), and
/// crust's encode of crit's JSON gives back the image.
#[test]
fn json_matches_crit_decoded() {
    let mut compared = 0;
    for case in CASES {
        let dir = golden(case);
        for name in image_files(case) {
            if name.starts_with("pages-") {
                continue;
            }
            let crit_name = format!("{name}.json");
            let Ok(crit) = std::fs::read_to_string(dir.join("decoded").join(&crit_name)) else {
                // stats-dump's decoded file is stats-dump.json
                panic!("{case}: no decoded/{crit_name}");
            };
            let pretty = crust_images::crit::DecodeOpts {
                pretty: true,
                nopl: false,
            };
            let ours = crust_images::json::image_to_json_opts(&dir.join(&name), pretty)
                .unwrap_or_else(|e| panic!("{case}/{name}: {e}"));
            assert_eq!(ours + "\n", crit, "{case}/{name}: not crit's JSON");
            let bytes = crust_images::crit::encode(&crit)
                .unwrap_or_else(|e| panic!("{case}/{name}: encode: {e}"));
            assert!(
                bytes == std::fs::read(dir.join(&name)).unwrap(),
                "{case}/{name}: encode of crit's JSON is not the image"
            );
            compared += 1;
        }
    }
    assert!(compared > 100, "compared only {compared} images");
}

/// A temporary directory removed on drop, pass or fail.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "crust-images-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Re-write a single-process dump's images with ImageWriter from decoded
/// values; they must equal the originals byte for byte.
fn rewrite_loop(out: &Path) -> Vec<&'static str> {
    use crust_images::image::ImageWriter;
    use crust_images::{write_all, write_one};
    let src = golden("loop");
    let core: CoreEntry = read_one(&src, "core-1077.img").unwrap();
    write_one(out, ImageType::Core, "core-1077.img", &core).unwrap();
    let mm: MmEntry = read_one(&src, "mm-1077.img").unwrap();
    write_one(out, ImageType::Mm, "mm-1077.img", &mm).unwrap();
    let inv: InventoryEntry = read_one(&src, "inventory.img").unwrap();
    write_one(out, ImageType::Inventory, "inventory.img", &inv).unwrap();
    let ids: TaskKobjIdsEntry = read_one(&src, "ids-1077.img").unwrap();
    write_one(out, ImageType::Ids, "ids-1077.img", &ids).unwrap();
    let fs: FsEntry = read_one(&src, "fs-1077.img").unwrap();
    write_one(out, ImageType::Fs, "fs-1077.img", &fs).unwrap();
    let stats: StatsEntry = read_one(&src, "stats-dump").unwrap();
    write_one(out, ImageType::Stats, "stats-dump", &stats).unwrap();
    let pstree: Vec<PstreeEntry> = read_all(&src, "pstree.img").unwrap();
    write_all(out, ImageType::Pstree, "pstree.img", &pstree).unwrap();
    let files: Vec<FileEntry> = read_all(&src, "files.img").unwrap();
    write_all(out, ImageType::Files, "files.img", &files).unwrap();
    let fdinfo: Vec<FdinfoEntry> = read_all(&src, "fdinfo-2.img").unwrap();
    write_all(out, ImageType::Fdinfo, "fdinfo-2.img", &fdinfo).unwrap();
    let mut r = ImageReader::open(&src, "pagemap-1077.img").unwrap();
    let head: PagemapHead = r.read_entry().unwrap().unwrap();
    let entries: Vec<PagemapEntry> = r.read_remaining().unwrap();
    let mut w = ImageWriter::create(out, ImageType::Pagemap, "pagemap-1077.img").unwrap();
    w.write_entry(&head).unwrap();
    for e in &entries {
        w.write_entry(e).unwrap();
    }
    w.finish_sync().unwrap();
    let names = vec![
        "core-1077.img",
        "mm-1077.img",
        "inventory.img",
        "ids-1077.img",
        "fs-1077.img",
        "stats-dump",
        "pstree.img",
        "files.img",
        "fdinfo-2.img",
        "pagemap-1077.img",
    ];
    for n in &names {
        assert_eq!(
            std::fs::read(out.join(n)).unwrap(),
            std::fs::read(src.join(n)).unwrap(),
            "{n} rewritten differs"
        );
    }
    names
}

#[test]
fn writer_reproduces_goldens() {
    let tmp = TempDir::new("rewrite");
    rewrite_loop(&tmp.0);
}

#[test]
fn crit_decodes_our_images() {
    let crit = Path::new("/usr/bin/crit");
    if !crit.exists() {
        crust_sys::testing::skip(
            "crit_decodes_our_images",
            "/usr/bin/crit is not installed (apt-get install criu)",
        );
        return;
    }
    let tmp = TempDir::new("crit");
    for n in rewrite_loop(&tmp.0) {
        let out = std::process::Command::new("/usr/bin/python3")
            .arg(crit)
            .args(["decode", "--pretty", "-i"])
            .arg(tmp.0.join(n))
            .output()
            .expect("run crit");
        assert!(
            out.status.success(),
            "crit decode {n} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"magic\""));
    }
}

#[test]
fn mutated_golden_entries_never_panic() {
    let mut seed: u64 = 42;
    for case in CASES {
        let dir = golden(case);
        for name in image_files(case) {
            let ty = ImageType::from_file_name(&name).unwrap();
            if ty.payload() == Payload::Raw {
                continue;
            }
            let mut r = ImageReader::open(&dir, &name).unwrap();
            let mut index = 0;
            while let Some(rec) = r.next_record().unwrap() {
                let e = &rec.entry;
                for n in 0..e.len().min(64) {
                    let _ = roundtrip_entry(ty, index, &e[..n]);
                }
                for _ in 0..200 {
                    if e.is_empty() {
                        break;
                    }
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let mut b = e.clone();
                    let i = (seed >> 33) as usize % b.len();
                    b[i] ^= 1 << ((seed >> 20) % 8);
                    let _ = roundtrip_entry(ty, index, &b);
                }
                index += 1;
            }
        }
    }
}

#[test]
fn reader_errors_name_file_and_offset() {
    let tmp = TempDir::new("errors");
    let src = golden("loop");
    // Missing file.
    let e = ImageReader::open(&tmp.0, "core-1.img").err().unwrap();
    assert!(e.is_missing(), "{e}");
    assert!(e.to_string().contains("core-1.img"));
    // Wrong magic: an mm image renamed to core.
    std::fs::copy(src.join("mm-1077.img"), tmp.0.join("core-5.img")).unwrap();
    let e = ImageReader::open(&tmp.0, "core-5.img").err().unwrap();
    let msg = e.to_string();
    assert!(
        msg.contains("core-5.img") && msg.contains("0x57492820") && msg.contains("0x55053847"),
        "{msg}"
    );
    // Truncated entry.
    let data = std::fs::read(src.join("core-1077.img")).unwrap();
    std::fs::write(tmp.0.join("core-6.img"), &data[..data.len() - 10]).unwrap();
    let mut r = ImageReader::open(&tmp.0, "core-6.img").unwrap();
    let e = r.read_entry::<CoreEntry>().err().unwrap();
    assert!(
        matches!(e, crust_images::ImageError::Truncated { offset: 8, .. }),
        "{e}"
    );
    // Truncated length word.
    std::fs::write(tmp.0.join("core-7.img"), &data[..10]).unwrap();
    let mut r = ImageReader::open(&tmp.0, "core-7.img").unwrap();
    assert!(r.read_entry::<CoreEntry>().is_err());
    // Empty image for read_one.
    std::fs::write(tmp.0.join("core-8.img"), &data[..8]).unwrap();
    let e = read_one::<CoreEntry>(&tmp.0, "core-8.img").err().unwrap();
    assert!(matches!(e, crust_images::ImageError::Empty { .. }));
    assert!(read_all::<CoreEntry>(&tmp.0, "core-8.img")
        .unwrap()
        .is_empty());
    // Garbage entry: a decode error with the offset.
    let mut g = data[..8].to_vec();
    g.extend_from_slice(&3u32.to_le_bytes());
    g.extend_from_slice(&[0x0a, 0x05, 0x00]);
    std::fs::write(tmp.0.join("core-9.img"), &g).unwrap();
    let e = read_one::<CoreEntry>(&tmp.0, "core-9.img").err().unwrap();
    assert!(
        matches!(e, crust_images::ImageError::Decode { offset: 8, .. }),
        "{e}"
    );
}

#[test]
fn image_type_names() {
    let t = |n| ImageType::from_file_name(n);
    assert_eq!(t("core-1077.img"), Some(ImageType::Core));
    assert_eq!(t("pagemap-1077.img"), Some(ImageType::Pagemap));
    assert_eq!(t("pagemap-shmem-11665.img"), Some(ImageType::ShmemPagemap));
    assert_eq!(t("pages-1.img"), Some(ImageType::Pages));
    assert_eq!(t("tcp-stream-1204c4.img"), Some(ImageType::TcpStream));
    assert_eq!(t("ghost-file-1.img"), Some(ImageType::GhostFile));
    assert_eq!(t("stats-dump"), Some(ImageType::Stats));
    assert_eq!(t("stats-restore"), Some(ImageType::Stats));
    assert_eq!(t("tty.img"), Some(ImageType::TtyFiles));
    assert_eq!(t("tty-info.img"), Some(ImageType::TtyInfo));
    assert_eq!(t("netns-ct-3.img"), Some(ImageType::NetnfCt));
    assert_eq!(t("netns-3.img"), Some(ImageType::Netns));
    assert_eq!(t("inventory.img"), Some(ImageType::Inventory));
    assert_eq!(t("core-.img"), None);
    assert_eq!(t("whatever"), None);
    assert_eq!(ImageType::Core.file_name(1077), "core-1077.img");
    assert_eq!(
        ImageType::TcpStream.file_name(0x1204c4),
        "tcp-stream-1204c4.img"
    );
    assert_eq!(ImageType::Files.file_name(0), "files.img");
    assert_eq!(ImageType::from_magic(0x55053847), Some(ImageType::Core));
    assert_eq!(ImageType::from_magic(0x56084025), Some(ImageType::Pagemap));
    assert_eq!(
        ImageType::Stats.header_bytes(),
        [0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57]
    );
    assert_eq!(
        ImageType::Inventory.header_bytes(),
        [0x16, 0x31, 0x31, 0x58]
    );
    assert_eq!(
        ImageType::Core.header_bytes(),
        [0x19, 0x43, 0x56, 0x54, 0x47, 0x38, 0x05, 0x55]
    );
    assert!(ImageType::Pages.header_bytes().is_empty());
    assert_eq!(ImageType::Core.message_name(), "core_entry");
}
