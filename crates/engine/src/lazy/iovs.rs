//! The pages a lazily restored process still waits for: pieces of its
//! address space with where their bytes are in the pages file. Faults take
//! the piece they hit, the background copy takes the first, and the
//! process's events cut (`MADV_DONTNEED`, `munmap`) or move (`mremap`)
//! pieces, so a page is never put where the process does not expect it.

use std::collections::BTreeMap;
use std::ops::Range;

/// Sort `ranges` and merge those that overlap or touch; empty ones go.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The parts of `ranges` (sorted, apart) outside `cut` (sorted, apart).
pub fn subtract(ranges: Vec<Range<u64>>, cut: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    for r in ranges {
        let mut at = r.start;
        let first = cut.partition_point(|c| c.end <= at);
        for c in cut.iter().skip(first) {
            if c.start >= r.end {
                break;
            }
            if c.start > at {
                out.push(at..c.start);
            }
            at = at.max(c.end);
        }
        if at < r.end {
            out.push(at..r.end);
        }
    }
    out
}

/// Pieces still to put in: start address -> (end, offset in the pages
/// file of the byte at start).
#[derive(Debug, Default, Clone)]
pub struct Iovs {
    map: BTreeMap<u64, (u64, u64)>,
}

impl Iovs {
    /// Add the piece [start, end) whose bytes start at `off`.
    pub fn add(&mut self, start: u64, end: u64, off: u64) {
        if start < end {
            self.map.insert(start, (end, off));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes still to put in.
    pub fn bytes(&self) -> u64 {
        self.map.iter().map(|(s, (e, _))| e - s).sum()
    }

    /// The piece holding `addr`: (start, end, offset).
    pub fn find(&self, addr: u64) -> Option<(u64, u64, u64)> {
        let (&s, &(e, off)) = self.map.range(..=addr).next_back()?;
        (addr < e).then_some((s, e, off))
    }

    /// What is left from `addr` on: the rest of the piece holding it, or
    /// else the first piece after it: (start, end, offset).
    pub fn from(&self, addr: u64) -> Option<(u64, u64, u64)> {
        if let Some((s, e, off)) = self.find(addr) {
            return Some((addr, e, off + (addr - s)));
        }
        self.map
            .range(addr..)
            .next()
            .map(|(&s, &(e, off))| (s, e, off))
    }

    /// The first piece.
    pub fn first(&self) -> Option<(u64, u64, u64)> {
        self.map.iter().next().map(|(&s, &(e, off))| (s, e, off))
    }

    /// The start of the first piece whose offset satisfies `f`.
    pub fn first_where(&self, f: impl Fn(u64) -> bool) -> Option<u64> {
        (self.map.iter())
            .find(|(_, &(_, off))| f(off))
            .map(|(&s, _)| s)
    }

    /// Forget [start, end): put in, or no longer to be filled.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let hit: Vec<(u64, (u64, u64))> = self
            .map
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, &v)| (s, v))
            .collect();
        // Pieces are apart and sorted: going down from `end`, the first
        // that ends at or before `start` is the last to look at.
        for (s, (e, off)) in hit {
            if e <= start || s >= end {
                continue;
            }
            self.map.remove(&s);
            if s < start {
                self.map.insert(s, (start, off));
            }
            if e > end {
                self.map.insert(end, (e, off + (end - s)));
            }
        }
    }

    /// Forget everything outside `keep` (sorted, apart).
    pub fn keep_within(&mut self, keep: &[Range<u64>]) {
        let mut at = 0u64;
        for r in keep {
            self.remove(at, r.start);
            at = at.max(r.end);
        }
        self.remove(at, u64::MAX);
    }

    /// `mremap`: the pieces in [from, from+len) are now at `to`.
    pub fn remap(&mut self, from: u64, to: u64, len: u64) {
        let end = from.saturating_add(len);
        let moved: Vec<(u64, u64, u64)> = self
            .map
            .range(..end)
            .filter(|(_, &(e, _))| e > from)
            .map(|(&s, &(e, off))| (s, e, off))
            .collect();
        self.remove(from, end);
        for (s, e, off) in moved {
            let (cs, ce) = (s.max(from), e.min(end));
            let coff = off + (cs - s);
            self.add(cs - from + to, ce - from + to, coff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(i: &Iovs) -> Vec<(u64, u64, u64)> {
        i.map.iter().map(|(&s, &(e, o))| (s, e, o)).collect()
    }

    #[test]
    fn what_is_left_from_an_address() {
        let mut i = Iovs::default();
        i.add(0x1000, 0x4000, 0x10);
        i.add(0x8000, 0x9000, 0x50);
        assert_eq!(i.from(0x2000), Some((0x2000, 0x4000, 0x1010)));
        assert_eq!(i.from(0x4000), Some((0x8000, 0x9000, 0x50)));
        assert_eq!(i.from(0x9000), None);
    }

    #[test]
    fn remove_cuts_and_keeps_offsets() {
        let mut i = Iovs::default();
        i.add(0x1000, 0x5000, 0);
        i.add(0x8000, 0x9000, 0x4000);
        i.remove(0x2000, 0x3000);
        assert_eq!(
            all(&i),
            vec![
                (0x1000, 0x2000, 0),
                (0x3000, 0x5000, 0x2000),
                (0x8000, 0x9000, 0x4000)
            ]
        );
        i.remove(0x0, 0x8800);
        assert_eq!(all(&i), vec![(0x8800, 0x9000, 0x4800)]);
        assert_eq!(i.find(0x8900), Some((0x8800, 0x9000, 0x4800)));
        assert_eq!(i.find(0x9000), None);
    }

    #[test]
    fn remap_moves_pieces() {
        let mut i = Iovs::default();
        i.add(0x1000, 0x4000, 0x10000);
        i.remap(0x2000, 0x100000, 0x4000);
        assert_eq!(
            all(&i),
            vec![(0x1000, 0x2000, 0x10000), (0x100000, 0x102000, 0x11000)]
        );
    }

    #[test]
    fn keep_within_cuts_outside() {
        let mut i = Iovs::default();
        i.add(0x1000, 0x9000, 0);
        i.add(0x10000, 0x11000, 0x8000);
        i.keep_within(&[0x2000..0x3000, 0x4000..0x5000]);
        assert_eq!(
            all(&i),
            vec![(0x2000, 0x3000, 0x1000), (0x4000, 0x5000, 0x3000)]
        );
    }

    #[test]
    fn subtract_and_merge() {
        assert_eq!(
            subtract(merge(vec![0..10, 10..20, 30..40]), &[5..8, 15..35]),
            vec![0..5, 8..15, 35..40]
        );
    }
}
