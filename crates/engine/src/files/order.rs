//! The order of files.img entries, as CRIU 4.2 writes them.
//!
//! CRIU's restore depends on it for unix sockets: the entries of a
//! connected pair are paired up in the reverse of their order in files.img,
//! and the socket whose entry comes last is made first, by the process
//! that opens it first, with its peer's end. When the pair is split between
//! a parent and its child and that process also holds the peer's end at
//! another fd, but is not the first to open it, CRIU 4.2 stops on an
//! internal BUG (sk-unix.c, "See interconnected_pair()"). CRIU's dump never
//! writes that order: a socket whose peer has not been dumped yet is
//! written right after that peer (the sockets waiting for one peer in the
//! reverse of their order), so the end met first comes second. crust
//! writes the same order, so that its sets restore with CRIU.

use crust_images::proto::fdinfo::FileEntry;
use std::collections::HashMap;

/// Put the unix socket entries of `files` (sorted by id: the order in
/// which the dump met them) in the order CRIU writes them; every other
/// entry keeps its place among the entries.
pub(crate) fn order_as_criu(files: &mut Vec<FileEntry>) {
    // Position of each unix socket by inode.
    let at: HashMap<u32, usize> = files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| f.usk.as_ref().map(|u| (u.ino, i)))
        .collect();
    let waits_for = |i: usize, f: &FileEntry| -> Option<u32> {
        let u = f.usk.as_ref()?;
        let peer = *at.get(&u.peer)?;
        (u.peer != u.ino && peer > i).then_some(u.peer)
    };
    // Entries waiting for a peer met later, by the peer's inode.
    let mut waiting: HashMap<u32, Vec<FileEntry>> = HashMap::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in std::mem::take(files).into_iter().enumerate() {
        if let Some(peer) = waits_for(i, &f) {
            waiting.entry(peer).or_default().push(f);
            continue;
        }
        flush(f, &mut waiting, &mut out);
    }
    // Nothing is left: every peer waited for comes later in the list.
    let mut left: Vec<FileEntry> = waiting.into_values().flatten().collect();
    left.sort_by_key(|f| f.id);
    out.extend(left);
    *files = out;
}

/// Write `f`, then the entries waiting for it (the last one to wait
/// first), and theirs.
fn flush(f: FileEntry, waiting: &mut HashMap<u32, Vec<FileEntry>>, out: &mut Vec<FileEntry>) {
    let mut stack = vec![f];
    while let Some(f) = stack.pop() {
        let ino = f.usk.as_ref().map(|u| u.ino);
        out.push(f);
        if let Some(w) = ino.and_then(|ino| waiting.remove(&ino)) {
            // Popped last-first: the entry that waited first comes last.
            stack.extend(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crust_images::proto::sk_unix::UnixSkEntry;

    fn usk(id: u32, ino: u32, peer: u32) -> FileEntry {
        FileEntry {
            id,
            usk: Some(Box::new(UnixSkEntry {
                id,
                ino,
                peer,
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    fn other(id: u32) -> FileEntry {
        FileEntry {
            id,
            ..Default::default()
        }
    }

    fn ids(files: &[FileEntry]) -> Vec<u32> {
        files.iter().map(|f| f.id).collect()
    }

    #[test]
    fn a_socket_met_before_its_peer_comes_after_it() {
        // The parent holds A (7) and A' (8); the child holds B (13) and
        // B' (14) too. CRIU writes 13, 7, 14, 8.
        let mut files = vec![
            other(1),
            usk(7, 100, 101),
            usk(8, 200, 201),
            other(9),
            usk(13, 101, 100),
            usk(14, 201, 200),
            other(15),
        ];
        order_as_criu(&mut files);
        assert_eq!(ids(&files), vec![1, 9, 13, 7, 14, 8, 15]);
    }

    #[test]
    fn sockets_waiting_for_one_peer_come_last_first() {
        // Two datagram sockets connected to a server met after them, and
        // a socket connected to itself, and one whose peer is outside.
        let mut files = vec![
            usk(1, 10, 30),
            usk(2, 20, 30),
            usk(3, 30, 0),
            usk(4, 40, 40),
            usk(5, 50, 999),
        ];
        order_as_criu(&mut files);
        assert_eq!(ids(&files), vec![3, 2, 1, 4, 5]);
    }

    #[test]
    fn chains_are_written_whole() {
        // 1 waits for 2, which waits for 3.
        let mut files = vec![usk(1, 10, 20), usk(2, 20, 30), usk(3, 30, 0)];
        order_as_criu(&mut files);
        assert_eq!(ids(&files), vec![3, 2, 1]);
    }
}
