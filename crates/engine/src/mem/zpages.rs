//! crust's compressed pages files (`dump --compress`), read and written.
//!
//! A compressed set keeps CRIU's pagemap images as they are; only the
//! bytes of a pages file move from `pages-N.img` to crust's own
//! `crust-zpages-N.img`, so CRIU, which looks for `pages-N.img`, refuses
//! the set rather than restore garbage. Layout (little endian):
//!
//! ```text
//! header  32 bytes: magic ZPAGES_MAGIC, version 1, codec (1 lz4, 2 zstd),
//!                   frame size (bytes of pages per frame), 16 bytes zero
//! frames  each FRAME bytes of pages (the last may be shorter), compressed
//!         on its own (or stored raw when that is not smaller)
//! index   one u32 per frame: its stored length, bit 31 set when raw
//! footer  32 bytes: pages bytes (u64), frames (u64), index offset (u64),
//!                   magic again, 4 bytes zero
//! ```
//!
//! Frames are independent: the dump compresses several at once on
//! [`threads`] threads, and a restore reads any range by decompressing
//! only the frames it covers (the filler's threads each their own).

use crate::options::Compress;
use crate::Error;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// crust's magic of a compressed pages file ("CZPG"); CRIU has no such
/// image.
pub const ZPAGES_MAGIC: u32 = 0x4750_5a43;
const VERSION: u32 = 1;
/// Bytes of pages in one frame.
pub const FRAME: usize = 1 << 20;
const HEADER: u64 = 32;
const FOOTER: u64 = 32;
/// The index's mark of a frame stored raw.
const RAW: u32 = 1 << 31;

const CODEC_LZ4: u32 = 1;
const CODEC_ZSTD: u32 = 2;

/// The name of the compressed pages file with id `pages_id`.
pub fn file_name(pages_id: u64) -> String {
    format!("crust-zpages-{pages_id}.img")
}

/// The compressed file standing for the plain pages file `plain`
/// (`.../pages-N.img` -> `.../crust-zpages-N.img`).
pub fn sibling(plain: &Path) -> Option<PathBuf> {
    let name = plain.file_name()?.to_str()?;
    let rest = name.strip_prefix("pages-")?;
    Some(plain.with_file_name(format!("crust-zpages-{rest}")))
}

/// Compressing threads of one stream: the machine's CPUs, at most 4.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

fn bad_file(path: &Path, why: impl Into<String>) -> Error {
    Error::Io {
        op: "cannot read the compressed pages file",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, why.into()),
    }
}

/// Compress `src` with `codec` into `dst` (cleared first); false when the
/// result is not smaller than `src` (the frame is then stored raw).
fn compress_frame(
    codec: Compress,
    z: &mut Option<zstd::bulk::Compressor<'static>>,
    src: &[u8],
    dst: &mut Vec<u8>,
) -> bool {
    dst.clear();
    match codec {
        Compress::Lz4 => {
            dst.resize(lz4_flex::block::get_maximum_output_size(src.len()), 0);
            match lz4_flex::block::compress_into(src, dst) {
                Ok(n) if n < src.len() => {
                    dst.truncate(n);
                    true
                }
                _ => false,
            }
        }
        Compress::Zstd(level) => {
            if z.is_none() {
                *z = zstd::bulk::Compressor::new(level).ok();
            }
            let Some(c) = z.as_mut() else { return false };
            dst.reserve(zstd::zstd_safe::compress_bound(src.len()));
            matches!(c.compress_to_buffer(src, dst), Ok(n) if n < src.len())
        }
    }
}

/// Writes a compressed pages file as the pages come: whole frames are
/// compressed a batch at a time, [`threads`] at once, and appended in
/// order.
pub struct ZWriter {
    codec: Compress,
    threads: usize,
    /// The frame being filled.
    cur: Vec<u8>,
    /// Whole frames waiting for the next batch.
    full: Vec<Vec<u8>>,
    /// Frame buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Stored length of each frame written, with [`RAW`].
    index: Vec<u32>,
    /// Bytes of pages taken.
    total: u64,
    /// Bytes of the file written.
    pos: u64,
}

impl ZWriter {
    /// Start the file `out` (written at its start) with `codec`.
    pub fn start(out: &mut File, codec: Compress) -> std::io::Result<ZWriter> {
        let mut h = [0u8; HEADER as usize];
        h[0..4].copy_from_slice(&ZPAGES_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&VERSION.to_le_bytes());
        let id = match codec {
            Compress::Lz4 => CODEC_LZ4,
            Compress::Zstd(_) => CODEC_ZSTD,
        };
        h[8..12].copy_from_slice(&id.to_le_bytes());
        h[12..16].copy_from_slice(&(FRAME as u32).to_le_bytes());
        out.write_all(&h)?;
        let threads = threads();
        Ok(ZWriter {
            codec,
            threads,
            cur: Vec::with_capacity(FRAME),
            full: Vec::new(),
            spare: Vec::new(),
            index: Vec::new(),
            total: 0,
            pos: HEADER,
        })
    }

    /// Take `bytes` of pages.
    pub fn write(&mut self, out: &mut File, mut bytes: &[u8]) -> std::io::Result<()> {
        self.total += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (FRAME - self.cur.len()).min(bytes.len());
            let (now, rest) = bytes.split_at(take);
            self.cur.extend_from_slice(now);
            bytes = rest;
            if self.cur.len() == FRAME {
                let next = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(FRAME));
                self.full.push(std::mem::replace(&mut self.cur, next));
                if self.full.len() >= 2 * self.threads {
                    self.flush(out)?;
                }
            }
        }
        Ok(())
    }

    /// Compress the frames waiting, on up to `threads` threads, and
    /// append them in order.
    fn flush(&mut self, out: &mut File) -> std::io::Result<()> {
        if self.full.is_empty() {
            return Ok(());
        }
        let codec = self.codec;
        let per = self.full.len().div_ceil(self.threads);
        let mut packed: Vec<(Vec<u8>, bool)> = Vec::with_capacity(self.full.len());
        let work = |frames: &[Vec<u8>]| {
            let mut z = None;
            let mut done = Vec::with_capacity(frames.len());
            for f in frames {
                let mut dst = Vec::new();
                let ok = compress_frame(codec, &mut z, f, &mut dst);
                done.push((dst, ok));
            }
            done
        };
        if self.full.len() == 1 {
            packed.extend(work(&self.full));
        } else {
            std::thread::scope(|s| {
                let hs: Vec<_> = self
                    .full
                    .chunks(per)
                    .map(|c| s.spawn(move || work(c)))
                    .collect();
                for h in hs {
                    match h.join() {
                        Ok(v) => packed.extend(v),
                        Err(_) => packed.push((Vec::new(), false)),
                    }
                }
            });
        }
        if packed.len() != self.full.len() {
            return Err(std::io::Error::other("a compressing thread failed"));
        }
        for (frame, (dst, ok)) in self.full.iter().zip(&packed) {
            let stored: &[u8] = if *ok { dst } else { frame };
            out.write_all(stored)?;
            self.pos += stored.len() as u64;
            let mark = if *ok { 0 } else { RAW };
            self.index.push(stored.len() as u32 | mark);
        }
        for mut f in self.full.drain(..) {
            f.clear();
            self.spare.push(f);
        }
        self.spare.truncate(2 * self.threads);
        Ok(())
    }

    /// Write what is left, the index and the footer.
    pub fn finish(mut self, out: &mut File) -> std::io::Result<()> {
        if !self.cur.is_empty() {
            self.full.push(std::mem::take(&mut self.cur));
        }
        self.flush(out)?;
        let mut tail = Vec::with_capacity(self.index.len() * 4 + FOOTER as usize);
        for l in &self.index {
            tail.extend_from_slice(&l.to_le_bytes());
        }
        tail.extend_from_slice(&self.total.to_le_bytes());
        tail.extend_from_slice(&(self.index.len() as u64).to_le_bytes());
        tail.extend_from_slice(&self.pos.to_le_bytes());
        tail.extend_from_slice(&ZPAGES_MAGIC.to_le_bytes());
        tail.extend_from_slice(&[0u8; 4]);
        out.write_all(&tail)
    }
}

/// A compressed pages file opened for reading: its index checked, the
/// last frame it decompressed kept.
pub struct ZReader {
    file: File,
    path: PathBuf,
    codec: u32,
    /// Bytes of pages it holds.
    len: u64,
    /// (offset in the file, stored length, raw) of each frame.
    frames: Vec<(u64, u32, bool)>,
    /// The frame decompressed last: (its number, its bytes).
    cache: std::sync::Mutex<(usize, Vec<u8>)>,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

impl ZReader {
    /// Open `path` (refusing a symlink) and check its header, footer and
    /// index against the file's size.
    pub fn open(path: &Path) -> Result<ZReader, Error> {
        let file = crate::util::open_image_data(path)?;
        let size = file
            .metadata()
            .map_err(|source| Error::Io {
                op: "cannot stat",
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let rd = |buf: &mut [u8], at: u64| {
            file.read_exact_at(buf, at).map_err(|source| Error::Io {
                op: "cannot read",
                path: path.to_path_buf(),
                source,
            })
        };
        if size < HEADER + FOOTER {
            return Err(bad_file(path, format!("{size} bytes: too short")));
        }
        let (mut h, mut f) = ([0u8; HEADER as usize], [0u8; FOOTER as usize]);
        rd(&mut h, 0)?;
        rd(&mut f, size - FOOTER)?;
        let (codec, frame) = (le_u32(&h, 8), le_u32(&h, 12));
        if le_u32(&h, 0) != ZPAGES_MAGIC || le_u32(&f, 24) != ZPAGES_MAGIC {
            return Err(bad_file(path, "not a crust compressed pages file (magic)"));
        }
        if le_u32(&h, 4) != VERSION || !matches!(codec, CODEC_LZ4 | CODEC_ZSTD) {
            return Err(bad_file(
                path,
                format!(
                    "version {} codec {codec}: not one this crust reads",
                    le_u32(&h, 4)
                ),
            ));
        }
        let (len, n, index_at) = (le_u64(&f, 0), le_u64(&f, 8), le_u64(&f, 16));
        if frame as usize != FRAME
            || n != len.div_ceil(FRAME as u64)
            || index_at
                .checked_add(n.saturating_mul(4))
                .and_then(|e| e.checked_add(FOOTER))
                != Some(size)
        {
            return Err(bad_file(path, "its footer does not match its size"));
        }
        let mut idx = vec![0u8; (n * 4) as usize];
        rd(&mut idx, index_at)?;
        let mut frames = Vec::with_capacity(n as usize);
        let mut at = HEADER;
        for (i, c) in idx.chunks_exact(4).enumerate() {
            let v = le_u32(c, 0);
            let (stored, raw) = (v & !RAW, v & RAW != 0);
            let want = (len - i as u64 * FRAME as u64).min(FRAME as u64);
            if (raw && u64::from(stored) != want) || stored as usize > 2 * FRAME {
                return Err(bad_file(
                    path,
                    format!("frame {i}: bad stored length {stored}"),
                ));
            }
            frames.push((at, stored, raw));
            at += u64::from(stored);
        }
        if at != index_at {
            return Err(bad_file(
                path,
                "its frames do not end where its index starts",
            ));
        }
        Ok(ZReader {
            file,
            path: path.to_path_buf(),
            codec,
            len,
            frames,
            cache: std::sync::Mutex::new((usize::MAX, Vec::new())),
        })
    }

    /// Bytes of pages it holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Decompress frame `i` into `out` (cleared first).
    fn frame(&self, i: usize, out: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Result<(), Error> {
        let Some(&(at, stored, raw)) = self.frames.get(i) else {
            return Err(bad_file(&self.path, format!("no frame {i}")));
        };
        let want = (self.len - i as u64 * FRAME as u64).min(FRAME as u64) as usize;
        let rd = |buf: &mut [u8]| {
            self.file
                .read_exact_at(buf, at)
                .map_err(|source| Error::Io {
                    op: "cannot read",
                    path: self.path.clone(),
                    source,
                })
        };
        out.resize(want, 0);
        if raw {
            return rd(out);
        }
        tmp.resize(stored as usize, 0);
        rd(tmp)?;
        let got = match self.codec {
            CODEC_LZ4 => lz4_flex::block::decompress_into(tmp, out).map_err(|e| e.to_string()),
            _ => {
                zstd::bulk::decompress_to_buffer(tmp, out.as_mut_slice()).map_err(|e| e.to_string())
            }
        };
        match got {
            Ok(n) if n == want => Ok(()),
            Ok(n) => Err(bad_file(
                &self.path,
                format!("frame {i} holds {n} bytes, not {want}"),
            )),
            Err(e) => Err(bad_file(&self.path, format!("frame {i}: {e}"))),
        }
    }

    /// Fill `buf` with the pages bytes at `off`.
    pub fn read_exact_at(&self, buf: &mut [u8], off: u64) -> Result<(), Error> {
        if off
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > self.len)
        {
            return Err(bad_file(
                &self.path,
                format!("{} bytes at {off} asked, it holds {}", buf.len(), self.len),
            ));
        }
        let mut g = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (cached, data) = &mut *g;
        let mut tmp = Vec::new();
        let mut done = 0usize;
        while done < buf.len() {
            let at = off + done as u64;
            let i = (at / FRAME as u64) as usize;
            if *cached != i {
                *cached = usize::MAX;
                self.frame(i, data, &mut tmp)?;
                *cached = i;
            }
            let inner = (at % FRAME as u64) as usize;
            let n = (data.len().saturating_sub(inner)).min(buf.len() - done);
            let (Some(dst), Some(src)) = (buf.get_mut(done..done + n), data.get(inner..inner + n))
            else {
                return Err(bad_file(&self.path, format!("frame {i} is short")));
            };
            dst.copy_from_slice(src);
            done += n;
        }
        Ok(())
    }
}

/// A pages file to read: CRIU's plain `pages-N.img`, or crust's
/// compressed one in its place.
pub enum PagesFile {
    Plain(File, PathBuf),
    Compressed(Box<ZReader>),
}

impl PagesFile {
    /// Open the pages file `plain` (`.../pages-N.img`), or its compressed
    /// sibling when only that exists.
    pub fn open(plain: &Path) -> Result<PagesFile, Error> {
        if let Some(z) = sibling(plain).filter(|z| !plain.exists() && z.exists()) {
            return Ok(PagesFile::Compressed(Box::new(ZReader::open(&z)?)));
        }
        let f = crate::util::open_image_data(plain)?;
        Ok(PagesFile::Plain(f, plain.to_path_buf()))
    }

    /// Fill `buf` with the pages bytes at `off`.
    pub fn read_exact_at(&self, buf: &mut [u8], off: u64) -> Result<(), Error> {
        match self {
            PagesFile::Plain(f, path) => f.read_exact_at(buf, off).map_err(|source| Error::Io {
                op: "cannot read",
                path: path.clone(),
                source,
            }),
            PagesFile::Compressed(z) => z.read_exact_at(buf, off),
        }
    }
}

/// Bytes of pages in the pages file `plain` or its compressed sibling;
/// None when neither exists.
pub fn pages_len(plain: &Path) -> Result<Option<u64>, Error> {
    match std::fs::symlink_metadata(plain) {
        Ok(m) => return Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                op: "cannot stat",
                path: plain.to_path_buf(),
                source,
            })
        }
    }
    match sibling(plain).filter(|z| z.exists()) {
        Some(z) => Ok(Some(ZReader::open(&z)?.len())),
        None => Ok(None),
    }
}

/// Is the pages file `plain` stored compressed (its sibling in its place)?
pub fn is_compressed(plain: &Path) -> bool {
    !plain.exists() && sibling(plain).is_some_and(|z| z.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(codec: Compress, data: &[u8]) {
        let dir = std::env::temp_dir().join(format!(
            "crust-zpages-test-{}-{:?}-{}",
            std::process::id(),
            codec,
            data.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let z = dir.join(file_name(7));
        let mut f = File::create(&z).unwrap();
        let mut w = ZWriter::start(&mut f, codec).unwrap();
        for c in data.chunks(300_000) {
            w.write(&mut f, c).unwrap();
        }
        w.finish(&mut f).unwrap();
        drop(f);
        let plain = dir.join("pages-7.img");
        assert!(is_compressed(&plain));
        assert_eq!(pages_len(&plain).unwrap(), Some(data.len() as u64));
        let r = PagesFile::open(&plain).unwrap();
        let mut all = vec![0u8; data.len()];
        r.read_exact_at(&mut all, 0).unwrap();
        assert!(all == data);
        // A range across a frame boundary.
        if data.len() > FRAME + 8192 {
            let mut b = vec![0u8; 8192];
            r.read_exact_at(&mut b, (FRAME - 4096) as u64).unwrap();
            assert!(b[..] == data[FRAME - 4096..FRAME + 4096]);
        }
        let mut past = [0u8; 1];
        assert!(r.read_exact_at(&mut past, data.len() as u64).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sample(len: usize) -> Vec<u8> {
        // Half text-like, half pseudo-random (stored raw).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|i| {
                if (i / 65536) % 2 == 0 {
                    (i % 251) as u8
                } else {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                }
            })
            .collect()
    }

    #[test]
    fn lz4_and_zstd_round_trip() {
        for codec in [Compress::Lz4, Compress::Zstd(1)] {
            roundtrip(codec, &sample(3 * FRAME + 12288));
            roundtrip(codec, &sample(4096));
            roundtrip(codec, &[]);
        }
    }

    #[test]
    fn random_frames_are_stored_raw() {
        let mut x = 1u64;
        let data: Vec<u8> = (0..FRAME)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 33) as u8
            })
            .collect();
        roundtrip(Compress::Lz4, &data);
    }

    #[test]
    fn damage_is_refused() {
        let dir = std::env::temp_dir().join(format!("crust-zpages-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let z = dir.join(file_name(1));
        let mut f = File::create(&z).unwrap();
        let mut w = ZWriter::start(&mut f, Compress::Lz4).unwrap();
        w.write(&mut f, &sample(2 * FRAME)).unwrap();
        w.finish(&mut f).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 1).unwrap();
        drop(f);
        assert!(ZReader::open(&z).is_err());
        std::fs::write(&z, b"short").unwrap();
        assert!(ZReader::open(&z).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sibling_names() {
        assert_eq!(
            sibling(Path::new("/d/pages-3.img")),
            Some(PathBuf::from("/d/crust-zpages-3.img"))
        );
        assert_eq!(sibling(Path::new("/d/other.img")), None);
    }
}
