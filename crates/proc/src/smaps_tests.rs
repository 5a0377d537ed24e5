use super::*;

/// A directory laid out like /proc with one process, 7, whose smaps and
/// maps are given; removed when dropped.
struct FakeProc(PathBuf);

impl FakeProc {
    fn new(tag: &str, smaps: &[u8], maps: &[u8]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "crust-smaps-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("7")).unwrap();
        std::fs::write(dir.join("7/smaps"), smaps).unwrap();
        std::fs::write(dir.join("7/maps"), maps).unwrap();
        FakeProc(dir)
    }

    fn root(&self) -> ProcRoot {
        ProcRoot::new(&self.0)
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An smaps text of `n` entries as the kernel prints them (with a path
/// now and then, a hugetlb one, an unknown field and flag), and the maps
/// text of the same mappings.
fn synthetic(n: u64) -> (String, String) {
    let (mut smaps, mut maps) = (String::new(), String::new());
    for i in 0..n {
        let start = 0x7f00_0000_0000 + i * 0x2000;
        let name = match i % 4 {
            0 => "/usr/lib/some library.so (deleted)".to_string(),
            1 => String::new(),
            2 => format!("[anon:region {i}]"),
            _ => "[stack]".to_string(),
        };
        let head = format!(
            "{start:x}-{:x} rw-p {:08x} fe:01 {}{:>20}{name}\n",
            start + 0x1000,
            i * 0x1000,
            i * 7,
            ""
        );
        maps.push_str(&head);
        smaps.push_str(&head);
        for (j, k) in SMAPS_KEYS.iter().enumerate() {
            let v = if *k == "KernelPageSize" {
                4
            } else {
                i + j as u64
            };
            smaps.push_str(&format!("{:<16}{v:>8} kB\n", format!("{k}:")));
        }
        if i % 5 == 0 {
            smaps.push_str("Brand_New:      9 kB\n");
        }
        let ht = if i % 7 == 0 { " ht" } else { "" };
        smaps.push_str(&format!("VmFlags: rd wr mr mw me ac zq{ht} \n"));
    }
    (smaps, maps)
}

fn lean(mut v: Vec<SmapsEntry>) -> Vec<SmapsEntry> {
    v.iter_mut().for_each(|e| e.fields.clear());
    v
}

#[test]
fn smaps_fields_known_unknown_and_out_of_order() {
    let text = "\
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
Size:                  4 kB
Rss:                   4 kB
KernelPageSize:        4 kB
Brand_New:             7 kB
THPeligible:           0
Odd:                   x
VmFlags: rd wr mr mw me ac 
";
    let s = parse_smaps(text, Path::new("x")).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].field("Size"), Some(4));
    assert_eq!(s[0].field("KernelPageSize"), Some(4));
    assert_eq!(s[0].kernel_page_kb, 4);
    assert_eq!(s[0].field("Brand_New"), Some(7));
    assert_eq!(s[0].field("THPeligible"), Some(0));
    assert_eq!(s[0].field("Swap"), None);
    assert_eq!(s[0].field("Odd"), None);
    assert_eq!(s[0].rss_kb, 4);
    assert!(s[0].has_flag("ac"));
    assert!(!s[0].has_flag("gd"));
}

#[test]
fn vm_flags_known_and_unknown() {
    let f = VmFlags::parse(b" rd wr gd xyz q zz dd 9$ ");
    for c in ["rd", "wr", "gd", "dd", "zz", "9$"] {
        assert!(f.has(c), "{c}");
    }
    for c in ["ex", "xyz", "q", "", "ht", "zy"] {
        assert!(!f.has(c), "{c}");
    }
    assert_eq!(
        f.iter().collect::<Vec<_>>(),
        ["rd", "wr", "gd", "dd", "zz", "9$"]
    );
    assert_eq!(
        f,
        VmFlags::from_codes(["zz", "dd", "gd", "wr", "rd", "9$", "zz"])
    );
    assert!(VmFlags::parse(b"").is_empty());
    // Every known code has a bit of its own.
    let all = VmFlags::from_codes(KNOWN);
    assert_eq!(all.iter().collect::<Vec<_>>(), KNOWN);
    assert!(all.other.is_empty());
}

/// Read through the file, cut into chunks of every size from 1 byte to
/// past the longest line (each line split at each place), on this thread
/// and by the reader thread: the same entries as parsing the whole text.
#[test]
fn chunk_boundaries_anywhere() {
    let (text, maps) = synthetic(12);
    let fp = FakeProc::new("cut", text.as_bytes(), maps.as_bytes());
    let want = parse_smaps(&text, Path::new("x")).unwrap();
    assert_eq!(want.len(), 12);
    assert!(want[0].has_flag("ht") && want[0].has_flag("zq") && !want[1].has_flag("ht"));
    assert_eq!(want[3].map.path.as_deref(), Some("[stack]"));
    for size in (1..200).chain([1000, 4095, 4096, text.len() - 1, text.len(), 1 << 20]) {
        let it = smaps_iter(&fp.root(), 7).unwrap().chunk_size(size);
        let got: Vec<_> = it.collect::<Result<_>>().unwrap();
        assert_eq!(got, lean(want.clone()), "chunks of {size}");
        let it = smaps_iter(&fp.root(), 7).unwrap().chunk_size(size);
        let got: Vec<_> = it.with_fields().collect::<Result<_>>().unwrap();
        assert_eq!(got, want, "chunks of {size}, every field");
    }
}

/// A file of many chunks (the reader thread at work): the same entries,
/// the header lines are the maps text, and maps_match tells a change.
#[test]
fn long_file_and_headers() {
    let (text, maps) = synthetic(3000);
    assert!(text.len() > 4 * CHUNK);
    let fp = FakeProc::new("long", text.as_bytes(), maps.as_bytes());
    let want = parse_smaps(&text, Path::new("x")).unwrap();
    let mut it = smaps_iter(&fp.root(), 7).unwrap().keep_headers();
    let got: Vec<_> = it.by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(got, lean(want));
    let headers = it.take_headers();
    assert_eq!(headers, maps.as_bytes());
    assert!(maps_match(&fp.root(), 7, &headers).unwrap());
    let mut other = headers.clone();
    let last = other.len() - 2;
    other[last] ^= 1;
    assert!(!maps_match(&fp.root(), 7, &other).unwrap());
    assert!(!maps_match(&fp.root(), 7, &headers[..headers.len() - 1]).unwrap());
    let mut longer = headers.clone();
    longer.extend_from_slice(b"x\n");
    assert!(!maps_match(&fp.root(), 7, &longer).unwrap());
    assert!(!maps_match(&fp.root(), 7, b"").unwrap());
    // Left half read: the reader thread (reading since the first 64 KiB)
    // ends with it.
    let mut it = smaps_iter(&fp.root(), 7).unwrap();
    assert!(it.by_ref().take(1500).all(|e| e.is_ok()));
    assert!(matches!(it.src, Source::Thread(_)));
    drop(it);
    assert!(maps_match(&fp.root(), 8, b"").is_err());
}

/// Bad text fails with the line it is on, read in chunks or not; a last
/// line without its newline still counts.
#[test]
fn malformed_input() {
    let head = "7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n";
    let cases: [(String, usize, &str); 6] = [
        ("Size: 4 kB\n".to_string(), 1, "field before first mapping"),
        (format!("{head}Size 4 kB\n"), 2, "expected 'Key: value'"),
        (
            format!("{head}Size: 4 kB\nzz-1 rw-p 0 0:0 0\n"),
            3,
            "malformed smaps header",
        ),
        (
            format!("{head}0-1 rwqp 0 0:0 0\n"),
            2,
            "malformed smaps header",
        ),
        (
            format!("{head}VmFlags: rd\n1-2 rw-p 0 0:0 x"),
            3,
            "malformed smaps header",
        ),
        (
            format!("{head}{}\n", "A".repeat(CHUNK + MAX_LINE)),
            0,
            "line too long",
        ),
    ];
    for (i, (text, line, reason)) in cases.iter().enumerate() {
        let fp = FakeProc::new(&format!("bad{i}"), text.as_bytes(), b"");
        for size in [5, 4096, CHUNK] {
            let it = smaps_iter(&fp.root(), 7).unwrap().chunk_size(size);
            let err = it.collect::<Result<Vec<_>>>().unwrap_err();
            match err {
                ProcError::Parse {
                    line: l, reason: r, ..
                } => {
                    assert_eq!(&r, reason, "case {i}, chunks of {size}");
                    if *line > 0 {
                        assert_eq!(l, *line, "case {i}, chunks of {size}");
                    }
                }
                other => panic!("case {i}: {other}"),
            }
        }
    }
    // A path that is not UTF-8.
    let mut text = b"7f0000000000-7f0000001000 r--p 00000000 00:00 0 /a\xff\n".to_vec();
    text.extend_from_slice(b"VmFlags: rd\n");
    let fp = FakeProc::new("utf", &text, b"");
    assert!(smaps_iter(&fp.root(), 7).unwrap().next().unwrap().is_err());
    // No newline at the end; an empty file.
    let fp = FakeProc::new("end", format!("{head}VmFlags: rd gd").as_bytes(), b"");
    let mut it = smaps_iter(&fp.root(), 7).unwrap();
    let s: Vec<_> = it.by_ref().collect::<Result<_>>().unwrap();
    assert!(s.len() == 1 && s[0].has_flag("gd"));
    // A short file is read here, no thread started.
    assert!(matches!(it.src, Source::Here(None)));
    let fp = FakeProc::new("empty", b"", b"");
    assert_eq!(smaps_iter(&fp.root(), 7).unwrap().count(), 0);
    assert!(maps_match(&fp.root(), 7, b"").unwrap());
}

/// The real smaps of this process: the same entries read whole or in
/// chunks, and its header lines are its maps (nothing maps or unmaps
/// between the two reads in this test... usually: other tests run
/// alongside, so a difference is only reported).
#[test]
fn own_smaps() {
    let root = ProcRoot::default();
    let me = std::process::id() as i32;
    let mut it = smaps_iter(&root, me).unwrap().keep_headers();
    let s: Vec<_> = it.by_ref().collect::<Result<_>>().unwrap();
    assert!(s.len() > 5);
    assert!(s
        .iter()
        .any(|e| e.map.kind() == crate::MapKind::Stack && e.has_flag("gd")));
    assert!(s
        .iter()
        .all(|e| e.size_kb * 1024 == e.map.len() && e.kernel_page_kb > 0));
    let headers = it.take_headers();
    if !maps_match(&root, me, &headers).unwrap() {
        eprintln!("own maps changed between the reads");
    }
}
