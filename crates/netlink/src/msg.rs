//! The netlink message layout (linux/netlink.h): a 16-byte `nlmsghdr`
//! (length, type, flags, sequence number, port id) in the host's byte
//! order, then the payload; messages and attributes are aligned to 4 bytes.
//! An attribute is a 4-byte `nlattr` (length, type) then its data.

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nlattr`.
pub const NLA_HDRLEN: usize = 4;
/// An error or an ack: the payload starts with a negative errno (0: ack).
pub const NLMSG_ERROR: u16 = 2;
/// The end of a multi-part answer.
pub const NLMSG_DONE: u16 = 3;
/// Every request to the kernel carries it.
pub const NLM_F_REQUEST: u16 = 1;
/// Ask for an ack (an NLMSG_ERROR with errno 0 on success).
pub const NLM_F_ACK: u16 = 4;
/// NLM_F_ROOT | NLM_F_MATCH: dump every object.
pub const NLM_F_DUMP: u16 = 0x300;
/// The type bits of an attribute (without NLA_F_NESTED and
/// NLA_F_NET_BYTEORDER).
pub const NLA_TYPE_MASK: u16 = 0x3FFF;

/// The u32 at byte `o` of `b` (host order), if `b` is long enough.
pub fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The u16 at byte `o` of `b` (host order), if `b` is long enough.
pub fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// A request: a header of type `ty` with `flags` and `seq` (port id 0),
/// then `payload`. The length covers the payload as given (unpadded).
pub fn request(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = (NLMSG_HDRLEN + payload.len()) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&ty.to_ne_bytes());
    b.extend_from_slice(&flags.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(payload);
    b
}

/// Append attribute `ty` with `data` to message `m` (made by [`request`]),
/// at a 4-byte boundary and padded to one, and update the message length.
pub fn push_attr(m: &mut Vec<u8>, ty: u16, data: &[u8]) {
    m.resize(m.len().next_multiple_of(4), 0);
    let len = (NLA_HDRLEN + data.len()) as u16;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(data);
    m.resize(m.len().next_multiple_of(4), 0);
    let total = (m.len() as u32).to_ne_bytes();
    if let Some(h) = m.get_mut(0..4) {
        h.copy_from_slice(&total);
    }
}

/// One message of a datagram: its header fields and its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub portid: u32,
    /// The payload (after the header, without the trailing padding).
    pub body: &'a [u8],
}

/// The messages of one datagram, in order. Stops at the first malformed
/// header (shorter than a header, or longer than what is left).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    let mut off = 0usize;
    std::iter::from_fn(move || {
        let h = buf.get(off..off.checked_add(NLMSG_HDRLEN)?)?;
        let len = u32_at(h, 0)? as usize;
        if len < NLMSG_HDRLEN {
            return None;
        }
        let body = buf.get(off + NLMSG_HDRLEN..off.checked_add(len)?)?;
        let m = Msg {
            ty: u16_at(h, 4)?,
            flags: u16_at(h, 6)?,
            seq: u32_at(h, 8)?,
            portid: u32_at(h, 12)?,
            body,
        };
        off += len.next_multiple_of(4);
        Some(m)
    })
}

/// The result carried by the ack (NLMSG_ERROR) of request `seq` in `buf`,
/// if `buf` holds it: Ok for errno 0, the errno otherwise.
pub fn ack_of(buf: &[u8], seq: u32) -> Option<std::io::Result<()>> {
    let m = messages(buf).find(|m| m.ty == NLMSG_ERROR && m.seq == seq && m.body.len() >= 4)?;
    let err = u32_at(m.body, 0)? as i32;
    Some(if err == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(-err))
    })
}

/// The attributes (type without flag bits, data) of `b` from byte `off`.
/// A length that is too small or runs past `b` is an error.
pub fn attrs(b: &[u8], off: usize) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    let mut off = off;
    while off + NLA_HDRLEN <= b.len() {
        let len = u16_at(b, off).unwrap_or(0) as usize;
        let ty = u16_at(b, off + 2).unwrap_or(0) & NLA_TYPE_MASK;
        match b.get(off + NLA_HDRLEN..off + len) {
            Some(data) if len >= NLA_HDRLEN => out.push((ty, data)),
            _ => return Err(format!("bad attribute length {len} at offset {off}")),
        }
        off += len.next_multiple_of(4);
    }
    Ok(out)
}

/// The attributes of `b` from byte `off`, like [`attrs`], stopping
/// quietly at the first malformed one.
pub fn attr_iter(b: &[u8], off: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = off;
    std::iter::from_fn(move || {
        let len = u16_at(b, off)? as usize;
        let ty = u16_at(b, off.checked_add(2)?)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN {
            return None;
        }
        let data = b.get(off + NLA_HDRLEN..off.checked_add(len)?)?;
        off += len.next_multiple_of(4);
        Some((ty, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_in_bounds_only() {
        let b = 0x0102_0304u32.to_ne_bytes();
        assert_eq!(u32_at(&b, 0), Some(0x0102_0304));
        assert_eq!(u32_at(&b, 1), None);
        assert_eq!(u16_at(&b, 2), Some(u16::from_ne_bytes([b[2], b[3]])));
        assert_eq!(u16_at(&b, 3), None);
        assert_eq!(u32_at(&b, usize::MAX - 1), None);
    }

    #[test]
    fn request_and_attributes_are_aligned() {
        let mut m = request(0x0401, NLM_F_REQUEST | NLM_F_ACK, 7, &[0, 0, 0x81, 0x23]);
        assert_eq!(m.len(), 20);
        push_attr(&mut m, 1, &[1]);
        assert_eq!(m.len(), 28);
        assert_eq!(u32_at(&m, 0), Some(28));
        assert_eq!(u16_at(&m, 20), Some(5));
        assert_eq!(&m[24..28], &[1, 0, 0, 0]);
        push_attr(&mut m, 2, &[9; 6]);
        assert_eq!(m.len(), 40);
        let got: Vec<_> = attr_iter(&m, 20).collect();
        assert_eq!(got, vec![(1, &[1u8][..]), (2, &[9u8; 6][..])]);
        assert_eq!(attrs(&m, 20).unwrap(), got);
        let ms: Vec<_> = messages(&m).collect();
        assert_eq!(ms.len(), 1);
        assert_eq!((ms[0].ty, ms[0].flags, ms[0].seq), (0x0401, 5, 7));
        assert_eq!(ms[0].body.len(), 24);
    }

    #[test]
    fn attribute_flags_are_masked_and_bad_lengths_refused() {
        let mut m = Vec::new();
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&(0x8000u16 | 3).to_ne_bytes());
        m.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(attrs(&m, 0).unwrap(), vec![(3, &[1u8, 2, 3, 4][..])]);
        // Longer than what is left.
        m.extend_from_slice(&[200, 0, 1, 0]);
        assert!(attrs(&m, 0).unwrap_err().contains("offset 8"));
        assert_eq!(attr_iter(&m, 0).count(), 1);
        // Shorter than its own header.
        let short = [2u8, 0, 1, 0];
        assert!(attrs(&short, 0).is_err());
        assert_eq!(attr_iter(&short, 0).count(), 0);
        // Fewer bytes than a header at the end: ignored.
        assert!(attrs(&[0, 0], 0).unwrap().is_empty());
    }

    #[test]
    fn messages_stop_at_truncation() {
        let mut buf = request(20, 0, 1, &[1, 2, 3]);
        buf.resize(20, 0);
        buf.extend(request(20, 0, 2, &[4; 4]));
        let seqs: Vec<_> = messages(&buf).map(|m| (m.seq, m.body.len())).collect();
        assert_eq!(seqs, vec![(1, 3), (2, 4)]);
        let cut = &buf[..buf.len() - 1];
        assert_eq!(messages(cut).count(), 1);
        assert_eq!(messages(&buf[..10]).count(), 0);
        let mut zero = buf.clone();
        zero[0..4].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(messages(&zero).count(), 0);
    }

    #[test]
    fn acks_found() {
        let mut ack = request(NLMSG_ERROR, 0, 3, &(-libc::EBUSY).to_ne_bytes());
        ack.extend_from_slice(&[0; 16]);
        let len = ack.len() as u32;
        ack[0..4].copy_from_slice(&len.to_ne_bytes());
        assert!(ack_of(&ack, 4).is_none());
        let e = ack_of(&ack, 3).unwrap().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert!(ack_of(&ack, 3).unwrap().is_ok());
        assert!(ack_of(&ack[..10], 3).is_none());
    }
}
