//! VMAs: reading and classifying /proc/PID/smaps, the mm image, and
//! checking an image's VMA list.

use super::shmem::{is_shmem_entry, load_shmem, shmem_inode};
use super::{bad, Vma, TASK_SIZE};
use super::{MappedFiles, Memfds, SHMEM_ANON_NAME};
use crate::task::ProcInside as Inside;
use crate::util::proc_err;
use crate::Error;
use crust_images::consts::vma as vs;
use crust_images::proto::fdinfo::FdinfoEntry;
use crust_images::proto::mm::MmEntry;
use crust_images::proto::vma::VmaEntry;
use crust_proc::{MapKind, ProcRoot, SmapsEntry, Stat};
use crust_sys::PAGE_SIZE;
use log::debug;
use std::path::Path;

fn describe(m: &crust_proc::MapEntry) -> String {
    format!(
        "{:#x}-{:#x} {} {}",
        m.start,
        m.end,
        m.perms(),
        m.path.as_deref().unwrap_or("")
    )
}

/// Read and classify the task's VMAs ([vvar] and [vvar_vclock] are merged
/// into one VVAR area, as CRIU records them).
pub fn collect_vmas(proc: &ProcRoot, pid: i32) -> Result<Vec<Vma>, Error> {
    let mut smaps = crust_proc::smaps_iter(proc, pid).map_err(proc_err(pid))?;
    collect_from(pid, &mut smaps)
}

/// [`collect_vmas`] from `smaps`, read as it is parsed: the text and the
/// other smaps fields of tens of thousands of VMAs are never all in memory.
fn collect_from(pid: i32, smaps: &mut crust_proc::SmapsIter) -> Result<Vec<Vma>, Error> {
    let mut out: Vec<Vma> = Vec::new();
    for e in smaps {
        let SmapsEntry {
            map,
            vm_flags,
            kernel_page_kb,
            ..
        } = e.map_err(proc_err(pid))?;
        let kind = map.kind();
        let unsupported = |why: &str| {
            Err(Error::unsupported(format!(
                "process {pid} has a {why} mapping ({})",
                describe(&map)
            )))
        };
        if vm_flags.has("ht") {
            let Some(status) = hugetlb_status(&map, kernel_page_kb) else {
                return unsupported(
                    "hugetlb (a hugetlbfs file, or anonymous of other than the default page size)",
                );
            };
            out.push(Vma {
                map,
                vm_flags,
                status,
            });
            continue;
        }
        let status = match kind {
            MapKind::Vsyscall => vs::AREA_VSYSCALL | vs::ANON_PRIVATE,
            MapKind::Vdso => vs::AREA_REGULAR | vs::AREA_VDSO | vs::ANON_PRIVATE,
            MapKind::Vvar | MapKind::VvarVclock => {
                if let Some(prev) = out.last_mut() {
                    if prev.status & vs::AREA_VVAR != 0 && prev.map.end == map.start {
                        prev.map.end = map.end;
                        continue;
                    }
                }
                vs::AREA_REGULAR | vs::AREA_VVAR | vs::ANON_PRIVATE
            }
            MapKind::Heap => vs::AREA_REGULAR | vs::AREA_HEAP | vs::ANON_PRIVATE,
            MapKind::Anon | MapKind::Stack | MapKind::AnonNamed(_) => {
                if map.shared {
                    return unsupported("shared anonymous");
                }
                vs::AREA_REGULAR | vs::ANON_PRIVATE
            }
            // MAP_SHARED|MAP_ANONYMOUS: the kernel backs it with a shmem
            // file it names "/dev/zero" (deleted), on device 00:01.
            MapKind::File
                if map.shared
                    && map.deleted
                    && map.dev_major == 0
                    && map.path.as_deref() == Some(SHMEM_ANON_NAME) =>
            {
                vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD
            }
            MapKind::AnonShmemNamed(_) if map.shared => {
                vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD
            }
            MapKind::File if super::aio::is_ring(&map) => vs::AREA_AIORING,
            MapKind::File => {
                let path = map.path.clone().unwrap_or_default();
                if map.shared && path == "/dev/zero" {
                    return unsupported("shared anonymous");
                }
                if path.starts_with("/SYSV") && map.shared {
                    // The kernel names an attached segment /SYSV<key>; its
                    // inode number is the segment id (see sysvipc).
                    out.push(Vma {
                        map,
                        vm_flags,
                        status: vs::AREA_REGULAR | vs::ANON_SHARED | vs::AREA_SYSVIPC,
                    });
                    continue;
                }
                if path.starts_with("socket:[") {
                    // A packet socket's rings (the only sockets one can
                    // map); which socket is told once the fds are known
                    // (`link_socket_vmas`).
                    out.push(Vma {
                        map,
                        vm_flags,
                        status: vs::AREA_REGULAR | vs::AREA_SOCKET,
                    });
                    continue;
                }
                if is_memfd_map(&map) || is_private_shmem(&map) {
                    // A memfd (its fd may be closed since: Erlang's JIT
                    // maps one twice), stored as CRIU does: a memfd object
                    // whose pages are dumped like shared anonymous memory.
                    // Mapped private (of a memfd or of shared anonymous
                    // memory, through map_files), it is FILE_PRIVATE of the
                    // same object, its own written pages stored as those of
                    // any private file mapping.
                    let kind = if map.shared {
                        vs::FILE_SHARED
                    } else {
                        vs::FILE_PRIVATE
                    };
                    out.push(Vma {
                        map,
                        vm_flags,
                        status: vs::AREA_REGULAR | kind | vs::AREA_MEMFD,
                    });
                    continue;
                }
                if map.is_deleted() && !is_regular(pid, &map) {
                    return unsupported("deleted file");
                }
                if vm_flags.has("io")
                    || vm_flags.has("pf")
                    || (path.starts_with("/dev/") && path != "/dev/zero" && !is_regular(pid, &map))
                {
                    return unsupported("device");
                }
                if map.shared {
                    vs::AREA_REGULAR | vs::FILE_SHARED
                } else {
                    vs::AREA_REGULAR | vs::FILE_PRIVATE
                }
            }
            MapKind::AnonShmemNamed(_) => return unsupported("shared anonymous"),
            MapKind::Uprobes | MapKind::OtherSpecial(_) => return unsupported("special"),
        };
        out.push(Vma {
            map,
            vm_flags,
            status,
        });
    }
    Ok(out)
}

/// The VMAs of a task read before it is frozen, with the maps lines
/// smaps listed them by, for [`collect_vmas_frozen`].
pub struct EarlyVmas {
    pid: i32,
    /// The text /proc/PID/maps had as smaps was read.
    maps: Vec<u8>,
    vmas: Vec<Vma>,
}

impl EarlyVmas {
    /// The process they were read from.
    pub fn pid(&self) -> i32 {
        self.pid
    }
}

/// Read the VMAs of `pid` while it still runs: reading smaps walks every
/// page table of the task (about 30 ms per GiB mapped), and prints 700
/// bytes per mapping (150 ms for 30,000), which is better not done while
/// the tree is frozen. None when they cannot be read now (the frozen read
/// then says why).
pub fn collect_vmas_early(proc: &ProcRoot, pid: i32) -> Option<EarlyVmas> {
    let t = std::time::Instant::now();
    let mut smaps = crust_proc::smaps_iter(proc, pid).ok()?.keep_headers();
    let vmas = collect_from(pid, &mut smaps).ok()?;
    let maps = smaps.take_headers();
    debug!(
        "{pid}: {} vmas read before the freeze in {} us",
        vmas.len(),
        t.elapsed().as_micros()
    );
    Some(EarlyVmas { pid, maps, vmas })
}

/// The VMAs of the frozen task `pid`: those read before the freeze when
/// /proc/PID/maps (which walks no page table) is now the very text smaps
/// listed the mappings by (bounds, protections, offsets, files), else
/// read again from smaps. smaps is not read at one instant: a mapping
/// that changed while it was read differs from what maps lists now.
/// What maps does not show, a change of VmFlags alone over a whole
/// mapping (madvise, mlock) in the milliseconds between the two reads, is
/// missed (said in docs/ARCHITECTURE.md, "Known limits").
pub fn collect_vmas_frozen(
    proc: &ProcRoot,
    pid: i32,
    early: Option<EarlyVmas>,
) -> Result<Vec<Vma>, Error> {
    if let Some(e) = early.filter(|e| e.pid == pid) {
        let t = std::time::Instant::now();
        match crust_proc::maps_match(proc, pid, &e.maps) {
            Ok(true) => {
                debug!(
                    "{pid}: mappings unchanged since read before the freeze (checked in {} us)",
                    t.elapsed().as_micros()
                );
                return Ok(e.vmas);
            }
            Ok(false) => debug!("{pid}: mappings changed since read before the freeze: read again"),
            Err(err) => debug!("{pid}: maps: {err}: smaps read again"),
        }
    }
    collect_vmas(proc, pid)
}

/// Is this a mapping of a memfd (`/memfd:NAME (deleted)`, on the kernel's
/// internal shmem mount)?
pub(crate) fn is_memfd_map(m: &crust_proc::MapEntry) -> bool {
    m.deleted
        && m.dev_major == 0
        && m.path
            .as_deref()
            .is_some_and(|p| p.starts_with(MEMFD_PREFIX))
}

/// Is this a private mapping of shared anonymous memory (its "/dev/zero"
/// object mapped again, MAP_PRIVATE, through /proc/PID/map_files)?
fn is_private_shmem(m: &crust_proc::MapEntry) -> bool {
    !m.shared && m.deleted && m.dev_major == 0 && m.path.as_deref() == Some(SHMEM_ANON_NAME)
}

/// The name memfd.img records for a memfd mapping: what follows
/// "/memfd:" (as CRIU stores it).
pub(crate) fn memfd_name(m: &crust_proc::MapEntry) -> Option<&str> {
    m.path.as_deref()?.strip_prefix(MEMFD_PREFIX)
}

const MEMFD_PREFIX: &str = "/memfd:";

/// The status of a hugetlb VMA. A hugetlb memfd (any page size), shared
/// or private, is a mapping of a memfd object as any memfd's. Anonymous
/// hugetlb memory (MAP_HUGETLB) of the default huge page size: private,
/// its pages are stored as any; shared, it is an object as shared
/// anonymous memory is. Files of a hugetlbfs mount and anonymous memory
/// of other page sizes: `None`.
fn hugetlb_status(map: &crust_proc::MapEntry, kps: u64) -> Option<u32> {
    if is_memfd_map(map) {
        let kind = if map.shared {
            vs::FILE_SHARED
        } else {
            vs::FILE_PRIVATE
        };
        return Some(vs::AREA_REGULAR | kind | vs::AREA_MEMFD);
    }
    let sysv = map.shared && map.path.as_deref().is_some_and(|p| p.starts_with("/SYSV"));
    if sysv && kps.checked_mul(1024) == super::huge::default_size() {
        // A System V segment made with SHM_HUGETLB (of the default page
        // size): attached again as any segment is.
        return Some(vs::AREA_REGULAR | vs::ANON_SHARED | vs::AREA_SYSVIPC);
    }
    let anon_huge = map.deleted && map.path.as_deref() == Some(super::huge::ANON_NAME);
    if !anon_huge || kps.checked_mul(1024) != super::huge::default_size() {
        return None;
    }
    Some(if map.shared {
        vs::AREA_REGULAR | vs::FILE_SHARED | vs::AREA_MEMFD
    } else {
        vs::AREA_REGULAR | vs::ANON_PRIVATE
    })
}

/// mmap's MAP_DROPPABLE (Linux 6.11): a private anonymous mapping whose
/// pages the kernel may drop at any time (VmFlags "dp"). Its pages are not
/// stored, as CRIU does not store them.
pub const MAP_DROPPABLE: u32 = 0x08;

/// Is the file a mapping maps a regular file? Decided by the file itself
/// (through /proc/PID/map_files), not by its path: a file in /dev/shm
/// (shm_open) is a tmpfs file, mapped as any file is.
fn is_regular(pid: i32, m: &crust_proc::MapEntry) -> bool {
    std::fs::metadata(super::map_files_path(pid, m)).is_ok_and(|md| md.file_type().is_file())
}

/// madvise advice numbers that VmFlags letters stand for.
fn madv_bits(v: &Vma) -> u64 {
    let mut m = 0u64;
    for (flag, advice) in [
        ("sr", libc::MADV_SEQUENTIAL),
        ("rr", libc::MADV_RANDOM),
        ("dd", libc::MADV_DONTDUMP),
        ("dc", libc::MADV_DONTFORK),
        ("hg", libc::MADV_HUGEPAGE),
        ("nh", libc::MADV_NOHUGEPAGE),
        ("mg", libc::MADV_MERGEABLE),
        ("wf", libc::MADV_WIPEONFORK),
    ] {
        if v.has(flag) {
            m |= 1u64 << advice;
        }
    }
    m
}

/// How a System V attachment was made, as CRIU records it in `fdflags`:
/// read-write unless attached SHM_RDONLY (the map_files link's mode tells).
fn attach_fdflags(pid: i32, start: u64, end: u64) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    let link = format!("/proc/{pid}/map_files/{start:x}-{end:x}");
    match std::fs::symlink_metadata(link) {
        Ok(md) if md.permissions().mode() & 0o200 == 0 => libc::O_RDONLY as u32,
        _ => libc::O_RDWR as u32,
    }
}

pub fn build_mm(
    proc: &ProcRoot,
    pid: i32,
    stat: &Stat,
    vmas: &[Vma],
    inside: &Inside,
    files: &mut dyn MappedFiles,
) -> Result<MmEntry, Error> {
    let exe = crust_proc::exe(proc, pid).map_err(proc_err(pid))?;
    let exe_file_id = files.mapped(&exe, libc::O_RDONLY as u32)?;
    let mut entries = Vec::with_capacity(vmas.len());
    let mut aios = Vec::new();
    for v in vmas {
        let m = &v.map;
        if v.is_aio() {
            aios.push(super::aio::dump_ring(pid, v)?);
        }
        let mut prot = 0u32;
        if m.read {
            prot |= libc::PROT_READ as u32;
        }
        if m.write {
            prot |= libc::PROT_WRITE as u32;
        }
        if m.exec {
            prot |= libc::PROT_EXEC as u32;
        }
        let mut flags = if m.shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        } as u32;
        if v.status & (vs::ANON_PRIVATE | vs::ANON_SHARED) != 0 {
            flags |= libc::MAP_ANONYMOUS as u32;
        }
        if v.has("gd") {
            flags |= libc::MAP_GROWSDOWN as u32;
        }
        if v.has("nr") {
            flags |= libc::MAP_NORESERVE as u32;
        }
        if v.has("lo") {
            flags |= libc::MAP_LOCKED as u32;
        }
        // With the page size bits, as CRIU records them: the object's
        // (a memfd may have any), or the default size (anonymous memory).
        let mut huge = super::huge::vma_flag(v);
        if huge.is_some() {
            flags |= libc::MAP_HUGETLB as u32;
        }
        if v.has("dp") {
            // A private mapping in nature, but mapped with its own type.
            flags = (flags & !(libc::MAP_PRIVATE as u32)) | MAP_DROPPABLE;
        }
        let (shmid, fdflags) = if v.status & vs::AREA_SOCKET != 0 {
            // The socket inode for now; `link_socket_vmas` puts its
            // files.img id.
            (m.inode as u32, None)
        } else if v.status & vs::AREA_SYSVIPC != 0 {
            let ff = attach_fdflags(pid, m.start, m.end);
            (m.inode as u32, Some(ff))
        } else if v.is_shmem() {
            // As CRIU records it: the memfd is opened read-write.
            let obj = shmem_inode(pid, v, vmas);
            huge = huge.and(obj.hugetlb_flag.or(huge));
            (files.shmem(&obj), Some(libc::O_RDWR as u32))
        } else if v.status & (vs::FILE_PRIVATE | vs::FILE_SHARED) != 0 {
            let fdflags = if m.shared && (m.write || v.has("mw")) {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            } as u32;
            let path = m.path.clone().unwrap_or_default();
            let id = if m.is_deleted() {
                // Saved as a ghost file, reopened for the mapping at restore.
                files.mapped_deleted(pid, m.start, m.end, Path::new(&path), fdflags)?
            } else {
                files.mapped(Path::new(&path), fdflags)?
            };
            (id, Some(fdflags))
        } else {
            (0, None)
        };
        flags |= huge.unwrap_or(0) & crust_sys::memfd::HUGE_MASK;
        let madv = madv_bits(v);
        entries.push(VmaEntry {
            start: m.start,
            end: m.end,
            pgoff: if fdflags.is_some() || v.status & vs::AREA_SOCKET != 0 {
                m.offset
            } else {
                0
            },
            shmid: shmid as u64,
            prot,
            flags,
            status: v.status,
            fd: -1,
            madv: (madv != 0).then_some(madv),
            fdflags,
            ..Default::default()
        });
    }
    let mut auxv = crust_proc::auxv(proc, pid).map_err(proc_err(pid))?;
    while auxv.len() >= 2 && auxv[auxv.len() - 2] == 0 && auxv[auxv.len() - 1] == 0 {
        auxv.truncate(auxv.len() - 2);
    }
    Ok(MmEntry {
        mm_start_code: stat.start_code,
        mm_end_code: stat.end_code,
        mm_start_data: stat.start_data,
        mm_end_data: stat.end_data,
        mm_start_stack: stat.start_stack,
        mm_start_brk: stat.start_brk,
        mm_brk: inside.brk,
        mm_arg_start: stat.arg_start,
        mm_arg_end: stat.arg_end,
        mm_env_start: stat.env_start,
        mm_env_end: stat.env_end,
        exe_file_id,
        mm_saved_auxv: auxv,
        vmas: entries,
        dumpable: Some(inside.dumpable),
        thp_disabled: Some(inside.thp_disabled),
        aios,
        ..Default::default()
    })
}

/// Name the packet socket each socket VMA of `mm` maps (its rings), as
/// CRIU does: `shmid` becomes the socket's files.img id. `fds` are the
/// process's fds (None when it shares another process's table). Refused:
/// a mapped socket no fd of the tree holds as a packet socket (e.g. its fd
/// was closed after mmap), one the process itself holds no fd of, and a
/// mapping of part of the rings (the kernel maps them only whole).
pub fn link_socket_vmas(
    pid: i32,
    mm: &mut MmEntry,
    files: &dyn MappedFiles,
    fds: Option<&[FdinfoEntry]>,
) -> Result<(), Error> {
    for v in mm
        .vmas
        .iter_mut()
        .filter(|v| v.status & vs::AREA_SOCKET != 0)
    {
        let ino = v.shmid as u32;
        let here = format!(
            "process {pid} maps socket {ino} at {:#x}-{:#x}",
            v.start, v.end
        );
        let (id, len) = files.packet_rings(ino).ok_or_else(|| {
            Error::unsupported(format!(
                "{here}, which no fd of the tree holds as a packet socket (only packet socket rings can be mapped; its fd may have been closed)"
            ))
        })?;
        if v.pgoff != 0 || v.end - v.start != len {
            return Err(Error::unsupported(format!(
                "{here} at offset {:#x}: part of its rings ({len} bytes), which cannot be mapped again",
                v.pgoff
            )));
        }
        if let Some(fds) = fds {
            if !fds.iter().any(|f| f.id == id) {
                return Err(Error::unsupported(format!(
                    "{here}, a packet socket it has no fd of (restore maps the rings through the process's own fd)"
                )));
            }
        }
        debug!("{here}: rings of packet socket file {id}");
        v.shmid = id as u64;
    }
    Ok(())
}

/// Check the VMA list of an image: sorted, page aligned, non-overlapping,
/// inside user space (vsyscall excepted).
pub fn validate_vmas(dir: &Path, mm: &MmEntry) -> Result<(), Error> {
    let mut prev_end = 0u64;
    for v in &mm.vmas {
        if v.status & vs::AREA_VSYSCALL != 0 {
            continue;
        }
        if v.start >= v.end
            || v.start % PAGE_SIZE != 0
            || v.end % PAGE_SIZE != 0
            || v.end > TASK_SIZE
            || v.start < prev_end
        {
            return Err(bad(
                dir,
                format!("mm image has a bad VMA {:#x}-{:#x}", v.start, v.end),
            ));
        }
        if v.status & vs::UNSUPP != 0 {
            return Err(Error::unsupported(format!(
                "restoring VMA {:#x}-{:#x} with status {:#x}",
                v.start, v.end, v.status
            )));
        }
        prev_end = v.end;
    }
    super::aio::validate_rings(dir, mm)
}

/// Does `mm` map a memfd as shared memory, so that checking it
/// ([`validate_shmem`]) needs the memfd inodes of the image set?
pub fn maps_memfd(mm: &MmEntry) -> bool {
    mm.vmas.iter().any(is_shmem_entry) && mm.vmas.iter().any(|v| v.status & vs::AREA_MEMFD != 0)
}

/// Check the shared memory objects `mm` maps: their memfd entries (in
/// `memfds`) and pages must hold up.
pub fn validate_shmem(dir: &Path, mm: &MmEntry, memfds: &Memfds) -> Result<(), Error> {
    load_shmem(dir, mm, memfds)?;
    Ok(())
}
