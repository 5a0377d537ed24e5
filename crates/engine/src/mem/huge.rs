//! Hugetlb objects: the page size of a hugetlbfs file and the flags that
//! carry it, as CRIU records them. memfd.img's `hugetlb_flag` is
//! memfd_create's `MFD_HUGETLB | log2(page size) << 26`; the same size bits
//! go with `MAP_HUGETLB` in a VMA's `flags`.

use super::{bad, Vma, SHMEM_ANON_NAME};
use crate::Error;
use crust_images::proto::memfd::MemfdInodeEntry;
use crust_sys::memfd::{hugetlb_page_size, HUGE_MASK, HUGE_SHIFT, MFD_HUGETLB};
use std::os::fd::AsFd;
use std::path::Path;

/// The name the kernel gives anonymous hugetlb memory in the maps, and
/// CRIU 4.2 its memfd.img inode when shared.
pub(crate) const ANON_NAME: &str = "/anon_hugepage";

/// The size bits (mmap's MAP_HUGE_*, memfd_create's MFD_HUGE_*) of huge
/// pages of `size` bytes: log2 of it at bit 26. `None` if it is no power of
/// two above the base page size.
pub(crate) fn size_bits(size: u64) -> Option<u32> {
    let shift = size.trailing_zeros();
    (size.is_power_of_two() && size > crust_sys::PAGE_SIZE && shift <= HUGE_MASK >> HUGE_SHIFT)
        .then_some(shift << HUGE_SHIFT)
}

/// memfd.img's `hugetlb_flag` of a hugetlb object of pages of `size` bytes.
pub(crate) fn mfd_flag(size: u64) -> Option<u32> {
    size_bits(size).map(|b| b | MFD_HUGETLB)
}

/// The `hugetlb_flag` of the file `f` is on: `Some` for a hugetlbfs file
/// (a hugetlb memfd, anonymous shared hugetlb memory), `None` otherwise.
pub(crate) fn file_flag(f: &impl AsFd) -> std::io::Result<Option<u32>> {
    Ok(hugetlb_page_size(f.as_fd())?.and_then(mfd_flag))
}

/// The default huge page size in bytes (/proc/meminfo's Hugepagesize).
pub(crate) fn default_size() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The page size an image's `hugetlb_flag` asks for: MFD_HUGETLB with the
/// size bits of a power of two (none: the default size). `None` for any
/// other bit, or MFD_HUGETLB missing.
pub(crate) fn flag_size(flag: u32) -> Option<u64> {
    if flag & !(MFD_HUGETLB | HUGE_MASK) != 0 || flag & MFD_HUGETLB == 0 {
        return None;
    }
    match (flag & HUGE_MASK) >> HUGE_SHIFT {
        0 => default_size(),
        shift => 1u64
            .checked_shl(shift)
            .filter(|s| *s > crust_sys::PAGE_SIZE),
    }
}

/// The name memfd.img records for the shared memory object `v` maps: the
/// memfd's (`memfd`), else "/anon_hugepage" for hugetlb memory (as CRIU 4.2
/// names it), else "/dev/zero".
pub(crate) fn object_name<'a>(v: &Vma, memfd: Option<&'a str>) -> &'a str {
    match memfd {
        Some(n) => n,
        None if v.has("ht") => ANON_NAME,
        None => SHMEM_ANON_NAME,
    }
}

/// `hugetlb_flag` of a hugetlb VMA (VmFlags `ht`) at the default page
/// size: anonymous hugetlb memory (crust dumps no other size of it), or
/// the object of a memfd VMA until its file tells. `None` for other VMAs.
pub(crate) fn vma_flag(v: &Vma) -> Option<u32> {
    if !v.has("ht") {
        return None;
    }
    default_size().and_then(mfd_flag)
}

/// The hugetlb page size of a memfd.img inode (`None`: not hugetlb),
/// checked: a known flag, and a size made of whole huge pages (hugetlbfs
/// has no other).
pub(crate) fn inode_page_size(dir: &Path, e: &MemfdInodeEntry) -> Result<Option<u64>, Error> {
    let Some(flag) = e.hugetlb_flag.filter(|f| *f != 0) else {
        return Ok(None);
    };
    let what = format!("memfd.img: inode {} ({:?})", e.inode_id, e.name);
    let size = flag_size(flag)
        .ok_or_else(|| bad(dir, format!("{what} has a bad hugetlb_flag {flag:#x}")))?;
    if !e.size.is_multiple_of(size) {
        return Err(bad(
            dir,
            format!(
                "{what}: size {} is no multiple of its huge pages ({size} bytes)",
                e.size
            ),
        ));
    }
    Ok(Some(size))
}

/// A hugetlb object of `size` bytes (what its VMAs and memfd.img need),
/// its pages of the size `bits` says (none: the default size), must be
/// made of whole huge pages: hugetlbfs maps and truncates no other.
pub(crate) fn check_object_size(dir: &Path, ino: u64, size: u64, bits: u32) -> Result<(), Error> {
    let page = flag_size(MFD_HUGETLB | bits).ok_or_else(|| {
        bad(
            dir,
            format!("hugetlb object {ino} has bad page size bits {bits:#x}"),
        )
    })?;
    if !size.is_multiple_of(page) {
        return Err(bad(
            dir,
            format!("hugetlb object {ino}: {size} bytes are no whole huge pages of {page} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_criu_writes_them() {
        // CRIU 4.2's memfd.img of a 2 MiB hugetlb memfd: 1409286148.
        assert_eq!(mfd_flag(2 << 20), Some(1_409_286_148));
        assert_eq!(size_bits(1 << 30), Some(30 << 26));
        assert_eq!(flag_size(1_409_286_148), Some(2 << 20));
        assert_eq!(flag_size(MFD_HUGETLB | 30 << 26), Some(1 << 30));
        assert_eq!(size_bits(4096), None);
        assert_eq!(size_bits(3 << 20), None);
        // MFD_HUGETLB missing, other bits, a size below a page.
        assert_eq!(flag_size(21 << 26), None);
        assert_eq!(flag_size(1_409_286_148 | 1), None);
        assert_eq!(flag_size(MFD_HUGETLB | 10 << 26), None);
    }

    #[test]
    fn inode_flags_and_sizes_checked() {
        let dir = Path::new("/nonexistent");
        let mut e = MemfdInodeEntry {
            name: "m".into(),
            size: 4 << 20,
            hugetlb_flag: Some(1_409_286_148),
            ..Default::default()
        };
        assert_eq!(inode_page_size(dir, &e).unwrap(), Some(2 << 20));
        e.hugetlb_flag = None;
        assert_eq!(inode_page_size(dir, &e).unwrap(), None);
        e.hugetlb_flag = Some(0);
        assert_eq!(inode_page_size(dir, &e).unwrap(), None);
        // Not whole huge pages; a flag with stray bits.
        e.hugetlb_flag = Some(1_409_286_148);
        e.size = 3 << 20;
        assert!(matches!(
            inode_page_size(dir, &e),
            Err(Error::BadImage { .. })
        ));
        e.size = 2 << 20;
        e.hugetlb_flag = Some(1_409_286_148 | 2);
        assert!(matches!(
            inode_page_size(dir, &e),
            Err(Error::BadImage { .. })
        ));
        assert!(check_object_size(dir, 1, 4 << 20, 21 << 26).is_ok());
        assert!(check_object_size(dir, 1, 4096, 21 << 26).is_err());
    }

    #[test]
    fn a_plain_memfd_is_no_hugetlb_file() {
        let fd = crust_sys::memfd::memfd_create("crust-test", 0).unwrap();
        assert_eq!(file_flag(&fd).unwrap(), None);
    }
}
