//! CRIU 4.2's page-server wire format: every command is one 32-byte
//! `page_server_iov` in host byte order (see docs/ARCHITECTURE.md, "Live migration").

/// Bytes of one command on the wire.
pub const IOV_SIZE: usize = 32;

/// The command words (low 16 bits of `Iov::cmd`).
pub mod cmd {
    /// Pages follow (flags: PRESENT). Old form of `ADD_F`.
    pub const ADD: u32 = 1;
    /// A run that is in the parent set (flags: PARENT), no bytes.
    pub const HOLE: u32 = 2;
    /// Open a pagemap, no answer. Old form of `OPEN2`.
    pub const OPEN: u32 = 3;
    /// Open a pagemap; the server answers one byte: has it a parent.
    pub const OPEN2: u32 = 4;
    /// Has the server a parent pagemap for dst_id? Answer: a 4-byte int.
    pub const PARENT: u32 = 5;
    /// A run with `pe::` flags in the high 16 bits; bytes follow when
    /// PRESENT is among them.
    pub const ADD_F: u32 = 6;
    /// Lazy pages: ask for pages of a process (dst_id: its pid).
    pub const GET: u32 = 7;
    /// All sent: the server answers a 4-byte status.
    pub const CLOSE: u32 = 0x1023;
    /// As `CLOSE`, for a socket the server's caller keeps open.
    pub const FORCE_CLOSE: u32 = 0x1024;
}

const CMD_BITS: u32 = 16;
const CMD_MASK: u32 = (1 << CMD_BITS) - 1;
const TYPE_BITS: u32 = 8;
const TYPE_MASK: u64 = (1 << TYPE_BITS) - 1;
const TYPE_PID: u64 = 1;
const TYPE_SHMEM: u64 = 2;

/// One `page_server_iov`: `u32 cmd`, 4 bytes of padding, `u64 nr_pages`,
/// `u64 vaddr`, `u64 dst_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Iov {
    pub cmd: u32,
    pub nr_pages: u64,
    pub vaddr: u64,
    pub dst_id: u64,
}

impl Iov {
    pub fn to_bytes(&self) -> [u8; IOV_SIZE] {
        let mut b = [0u8; IOV_SIZE];
        b[0..4].copy_from_slice(&self.cmd.to_ne_bytes());
        b[8..16].copy_from_slice(&self.nr_pages.to_ne_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_ne_bytes());
        b[24..32].copy_from_slice(&self.dst_id.to_ne_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; IOV_SIZE]) -> Iov {
        let word = |at: usize| {
            let mut w = [0u8; 8];
            for (i, x) in w.iter_mut().enumerate() {
                *x = b.get(at + i).copied().unwrap_or(0);
            }
            u64::from_ne_bytes(w)
        };
        let [c0, c1, c2, c3, ..] = *b;
        Iov {
            cmd: u32::from_ne_bytes([c0, c1, c2, c3]),
            nr_pages: word(8),
            vaddr: word(16),
            dst_id: word(24),
        }
    }

    /// The command word, without flags.
    pub fn command(&self) -> u32 {
        self.cmd & CMD_MASK
    }

    /// The `pe::` flags carried in the high 16 bits.
    pub fn flags(&self) -> u32 {
        self.cmd >> CMD_BITS
    }
}

/// A command word with `pe::` flags (only the low 16 bits of the flags fit).
pub fn encode_cmd(cmd: u32, flags: u32) -> u32 {
    (flags << CMD_BITS) | (cmd & CMD_MASK)
}

/// Whose pagemap a dst_id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `pagemap-<id>.img`.
    Task(u64),
    /// `pagemap-shmem-<id>.img`.
    Object(u64),
}

pub fn encode_dst(t: Target) -> u64 {
    match t {
        Target::Task(id) => (id << TYPE_BITS) | TYPE_PID,
        Target::Object(id) => (id << TYPE_BITS) | TYPE_SHMEM,
    }
}

/// The pagemap a dst_id names; older CRIUs' type numbers are accepted as
/// CRIU 4.2 accepts them. None: an unknown type.
pub fn decode_dst(dst_id: u64) -> Option<Target> {
    let id = dst_id >> TYPE_BITS;
    match dst_id & TYPE_MASK {
        TYPE_PID | 10 | 11 | 16 | 17 => Some(Target::Task(id)),
        TYPE_SHMEM | 27 | 28 | 29 | 32 | 33 | 34 => Some(Target::Object(id)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iov_layout_is_criu_s() {
        let iov = Iov {
            cmd: encode_cmd(cmd::ADD_F, 4),
            nr_pages: 3,
            vaddr: 0x7f00_0000_1000,
            dst_id: encode_dst(Target::Task(42)),
        };
        let b = iov.to_bytes();
        assert_eq!(&b[0..4], &(4u32 << 16 | 6).to_ne_bytes());
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(&b[8..16], &3u64.to_ne_bytes());
        assert_eq!(&b[24..32], &(42u64 << 8 | 1).to_ne_bytes());
        let back = Iov::from_bytes(&b);
        assert_eq!(back, iov);
        assert_eq!(back.command(), cmd::ADD_F);
        assert_eq!(back.flags(), 4);
    }

    #[test]
    fn dst_ids() {
        assert_eq!(
            decode_dst(encode_dst(Target::Object(7))),
            Some(Target::Object(7))
        );
        assert_eq!(decode_dst(5 << 8 | 11), Some(Target::Task(5)));
        assert_eq!(decode_dst(5 << 8 | 34), Some(Target::Object(5)));
        assert_eq!(decode_dst(5 << 8 | 3), None);
    }
}
