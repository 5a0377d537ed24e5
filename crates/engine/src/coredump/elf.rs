//! The ELF core file layout (x86-64, little endian), as the kernel's
//! binfmt_elf writes it and elf(5) describes it: the ELF header, one
//! PT_NOTE program header then one PT_LOAD per mapping, the notes, and
//! the memory of each PT_LOAD from the next page boundary on, one after
//! the other. With 0xffff program headers or more, `e_phnum` is PN_XNUM
//! and the real count is in `sh_info` of the one section header, at the
//! end of the file.

use std::io::{self, Write};

pub const EHDR_SIZE: u64 = 64;
pub const PHDR_SIZE: u64 = 56;
pub const SHDR_SIZE: u64 = 64;
const PAGE: u64 = 4096;

const ET_CORE: u16 = 4;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PN_XNUM: u64 = 0xffff;

pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

// Note types (elf.h).
pub const NT_PRSTATUS: u32 = 1;
pub const NT_FPREGSET: u32 = 2;
pub const NT_PRPSINFO: u32 = 3;
pub const NT_AUXV: u32 = 6;
pub const NT_X86_XSTATE: u32 = 0x202;
pub const NT_SIGINFO: u32 = 0x5349_4749;
pub const NT_FILE: u32 = 0x4649_4c45;

/// One note: owner name ("CORE", "LINUX"), type, descriptor bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub name: &'static str,
    pub ty: u32,
    pub desc: Vec<u8>,
}

impl Note {
    pub fn core(ty: u32, desc: Vec<u8>) -> Note {
        Note {
            name: "CORE",
            ty,
            desc,
        }
    }

    /// Bytes the note takes: header, name and descriptor each padded to 4.
    pub fn size(&self) -> u64 {
        12 + pad4(self.name.len() as u64 + 1) + pad4(self.desc.len() as u64)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let name_len = self.name.len() + 1;
        out.extend_from_slice(&(name_len as u32).to_le_bytes());
        out.extend_from_slice(&(self.desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.ty.to_le_bytes());
        out.extend_from_slice(self.name.as_bytes());
        out.resize(
            out.len() + (pad4(name_len as u64) as usize - self.name.len()),
            0,
        );
        out.extend_from_slice(&self.desc);
        let d = self.desc.len();
        out.resize(out.len() + (pad4(d as u64) as usize - d), 0);
    }
}

fn pad4(n: u64) -> u64 {
    n.div_ceil(4) * 4
}

/// One PT_LOAD: a mapping at `vaddr` of `memsz` bytes, the first `filesz`
/// of them in the file; `flags` PF_R/PF_W/PF_X.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub filesz: u64,
    pub flags: u32,
}

/// Where everything goes in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub notes_off: u64,
    pub notes_size: u64,
    /// File offset of each segment's bytes.
    pub seg_offs: Vec<u64>,
    /// Offset of the section header (PN_XNUM only) and the file size.
    pub shdr_off: Option<u64>,
    pub end: u64,
}

/// Lay out a core of `notes` and `segs`.
pub fn layout(notes: &[Note], segs: &[Segment]) -> Layout {
    let phnum = segs.len() as u64 + 1;
    let notes_off = EHDR_SIZE + phnum * PHDR_SIZE;
    let notes_size: u64 = notes.iter().map(Note::size).sum();
    let mut off = (notes_off + notes_size).div_ceil(PAGE) * PAGE;
    let mut seg_offs = Vec::with_capacity(segs.len());
    for s in segs {
        seg_offs.push(off);
        off += s.filesz;
    }
    let shdr_off = (phnum >= PN_XNUM).then_some(off);
    let end = off + if shdr_off.is_some() { SHDR_SIZE } else { 0 };
    Layout {
        notes_off,
        notes_size,
        seg_offs,
        shdr_off,
        end,
    }
}

/// The ELF header, the program headers and the notes: everything before
/// the first segment's bytes, padded up to them.
pub fn head(notes: &[Note], segs: &[Segment], l: &Layout) -> Vec<u8> {
    let phnum = segs.len() as u64 + 1;
    let mut b = Vec::with_capacity(l.seg_offs.first().copied().unwrap_or(l.end) as usize);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE.
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&ET_CORE.to_le_bytes());
    b.extend_from_slice(&EM_X86_64.to_le_bytes());
    b.extend_from_slice(&1u32.to_le_bytes()); // e_version
    b.extend_from_slice(&0u64.to_le_bytes()); // e_entry
    b.extend_from_slice(&EHDR_SIZE.to_le_bytes()); // e_phoff
    b.extend_from_slice(&l.shdr_off.unwrap_or(0).to_le_bytes()); // e_shoff
    b.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    b.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    b.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    b.extend_from_slice(&(phnum.min(PN_XNUM) as u16).to_le_bytes());
    let (shentsize, shnum) = if l.shdr_off.is_some() {
        (SHDR_SIZE as u16, 1u16)
    } else {
        (0, 0)
    };
    b.extend_from_slice(&shentsize.to_le_bytes());
    b.extend_from_slice(&shnum.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    phdr(
        &mut b,
        PT_NOTE,
        0,
        l.notes_off,
        0,
        l.notes_size,
        l.notes_size,
        0,
    );
    for (s, &off) in segs.iter().zip(&l.seg_offs) {
        phdr(
            &mut b, PT_LOAD, s.flags, off, s.vaddr, s.filesz, s.memsz, PAGE,
        );
    }
    for n in notes {
        n.encode(&mut b);
    }
    let to = l.seg_offs.first().copied().unwrap_or(l.end);
    let to = l.shdr_off.map_or(to, |s| to.min(s)) as usize;
    b.resize(to.max(b.len()), 0);
    b
}

#[allow(clippy::too_many_arguments)]
fn phdr(
    b: &mut Vec<u8>,
    ty: u32,
    flags: u32,
    off: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
) {
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&off.to_le_bytes());
    b.extend_from_slice(&vaddr.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // p_paddr
    b.extend_from_slice(&filesz.to_le_bytes());
    b.extend_from_slice(&memsz.to_le_bytes());
    b.extend_from_slice(&align.to_le_bytes());
}

/// The section header that carries the program header count (PN_XNUM).
pub fn xnum_shdr(segs: usize) -> Vec<u8> {
    let mut b = vec![0u8; SHDR_SIZE as usize];
    let info = (segs as u32).saturating_add(1);
    // sh_info is at offset 44 of Elf64_Shdr.
    if let Some(s) = b.get_mut(44..48) {
        s.copy_from_slice(&info.to_le_bytes());
    }
    b
}

/// Write a whole core: the head, then each segment's bytes from
/// `fill(index, segment, out)`, which must write exactly `filesz` bytes.
pub fn write_core(
    out: &mut dyn Write,
    notes: &[Note],
    segs: &[Segment],
    fill: &mut dyn FnMut(usize, &Segment, &mut dyn Write) -> io::Result<()>,
) -> io::Result<Layout> {
    let l = layout(notes, segs);
    out.write_all(&head(notes, segs, &l))?;
    for (i, s) in segs.iter().enumerate() {
        fill(i, s, out)?;
    }
    if l.shdr_off.is_some() {
        out.write_all(&xnum_shdr(segs.len()))?;
    }
    Ok(l)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], o: usize) -> u16 {
        u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn notes_are_padded_to_four() {
        let n = Note {
            name: "LINUX",
            ty: NT_X86_XSTATE,
            desc: vec![1, 2, 3, 4, 5],
        };
        let mut b = Vec::new();
        n.encode(&mut b);
        assert_eq!(b.len() as u64, n.size());
        assert_eq!(b.len(), 12 + 8 + 8);
        assert_eq!(u32_at(&b, 0), 6);
        assert_eq!(u32_at(&b, 4), 5);
        assert_eq!(&b[12..18], b"LINUX\0");
        assert_eq!(&b[20..25], &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn header_and_layout() {
        let notes = vec![Note::core(NT_PRSTATUS, vec![0; 336])];
        let segs = vec![
            Segment {
                vaddr: 0x1000,
                memsz: 0x3000,
                filesz: 0x1000,
                flags: PF_R | PF_X,
            },
            Segment {
                vaddr: 0x10000,
                memsz: 0x2000,
                filesz: 0x2000,
                flags: PF_R | PF_W,
            },
        ];
        let mut out = Vec::new();
        let l = write_core(&mut out, &notes, &segs, &mut |_, s, w| {
            w.write_all(&vec![0xab; s.filesz as usize])
        })
        .unwrap();
        assert_eq!(out.len() as u64, l.end);
        assert_eq!(&out[0..4], b"\x7fELF");
        assert_eq!(u16_at(&out, 16), ET_CORE);
        assert_eq!(u16_at(&out, 18), EM_X86_64);
        assert_eq!(u16_at(&out, 56), 3);
        // PT_NOTE first, right after the program headers.
        assert_eq!(u32_at(&out, 64), PT_NOTE);
        assert_eq!(u64_at(&out, 64 + 8), 64 + 3 * 56);
        assert_eq!(u64_at(&out, 64 + 32), 12 + 8 + 336);
        // PT_LOADs: page-aligned data, one after the other.
        let p1 = 64 + 56;
        assert_eq!(u32_at(&out, p1), PT_LOAD);
        assert_eq!(u32_at(&out, p1 + 4), PF_R | PF_X);
        assert_eq!(u64_at(&out, p1 + 8), 4096);
        assert_eq!(u64_at(&out, p1 + 16), 0x1000);
        assert_eq!(u64_at(&out, p1 + 32), 0x1000);
        assert_eq!(u64_at(&out, p1 + 40), 0x3000);
        let p2 = p1 + 56;
        assert_eq!(u64_at(&out, p2 + 8), 4096 + 0x1000);
        assert_eq!(out[4096], 0xab);
        assert_eq!(out.len(), 4096 + 0x3000);
    }

    #[test]
    fn many_segments_use_pn_xnum() {
        let segs = vec![
            Segment {
                vaddr: 0,
                memsz: 4096,
                filesz: 0,
                flags: 0,
            };
            0xffff
        ];
        let l = layout(&[], &segs);
        assert!(l.shdr_off.is_some());
        let h = head(&[], &segs, &l);
        assert_eq!(u16_at(&h, 56), 0xffff);
        assert_eq!(u64_at(&h, 40), l.shdr_off.unwrap());
        assert_eq!(u32_at(&xnum_shdr(segs.len()), 44), 0x10000);
    }
}
