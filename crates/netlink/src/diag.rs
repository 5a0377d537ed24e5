//! sock_diag (NETLINK_SOCK_DIAG): a SOCK_DIAG_BY_FAMILY dump request with
//! a family's `*_diag_req`, answered by datagrams of SOCK_DIAG_BY_FAMILY
//! messages (one per socket) until NLMSG_DONE, or by an NLMSG_ERROR.

use crate::msg::{messages, request, u32_at, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN};
use crate::msg::{NLM_F_DUMP, NLM_F_REQUEST};
use crate::transport::Transport;
use std::collections::HashMap;

/// The message type of sock_diag requests and answers
/// (linux/sock_diag.h).
pub const SOCK_DIAG_BY_FAMILY: u16 = crust_sys::unix::SOCK_DIAG_BY_FAMILY;

/// Size of the buffer one answer datagram is received into (the kernel
/// fills up to a page or so per datagram).
const RECV_BUF: usize = 64 << 10;

/// What went wrong in [`diag_dump`].
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("cannot send the sock_diag request: {source}")]
    Send {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot receive the sock_diag answer: {source}")]
    Recv {
        #[source]
        source: std::io::Error,
    },
    /// The answer is malformed, is an NLMSG_ERROR, or the caller's
    /// callback refused a message.
    #[error("bad sock_diag answer: {why}")]
    Answer { why: String },
}

/// A SOCK_DIAG_BY_FAMILY dump request: nlmsghdr, then the family's
/// `*_diag_req` given as `req`.
pub fn diag_request(req: &[u8], seq: u32) -> Vec<u8> {
    request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, req)
}

/// Split one datagram of a sock_diag dump into the bodies of its
/// SOCK_DIAG_BY_FAMILY messages; the flag says the dump is complete
/// (NLMSG_DONE). An NLMSG_ERROR is an error, and so is a message whose
/// length is too small or runs past the datagram.
pub fn split_msgs(buf: &[u8]) -> Result<(Vec<&[u8]>, bool), String> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    for m in messages(buf) {
        match m.ty {
            NLMSG_DONE => return Ok((out, true)),
            NLMSG_ERROR => {
                let errno = u32_at(m.body, 0).unwrap_or(0) as i32;
                return Err(format!(
                    "the kernel answered with error {}",
                    std::io::Error::from_raw_os_error(-errno)
                ));
            }
            SOCK_DIAG_BY_FAMILY => out.push(m.body),
            _ => {}
        }
        seen += (NLMSG_HDRLEN + m.body.len()).next_multiple_of(4);
    }
    // `messages` stops at a bad header: say where, unless only padding
    // (less than a header) is left.
    if seen + NLMSG_HDRLEN <= buf.len() {
        let len = u32_at(buf, seen).unwrap_or(0);
        return Err(format!("bad netlink message length {len} at offset {seen}"));
    }
    Ok((out, false))
}

/// Run a sock_diag dump over `t`: send the request with the family's
/// `*_diag_req` `req`, and give every answer message body to `each`, until
/// NLMSG_DONE (or an empty datagram).
pub fn diag_dump<T: Transport + ?Sized>(
    t: &mut T,
    req: &[u8],
    mut each: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<(), DumpError> {
    t.send(&diag_request(req, 1))
        .map_err(|source| DumpError::Send { source })?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = t
            .recv(&mut buf)
            .map_err(|source| DumpError::Recv { source })?;
        let got = buf.get(..n).unwrap_or(&buf);
        let (msgs, done) = split_msgs(got).map_err(|why| DumpError::Answer { why })?;
        for m in msgs {
            each(m).map_err(|why| DumpError::Answer { why })?;
        }
        if done || n == 0 {
            return Ok(());
        }
    }
}

/// The sock_diag record of socket `ino` from `cache`, (re)filled by
/// `load` when empty or when it lacks the socket (one made since).
pub fn diag_of<D: Clone, E>(
    cache: &mut Option<HashMap<u32, D>>,
    ino: u32,
    load: impl FnOnce() -> Result<HashMap<u32, D>, E>,
) -> Result<Option<D>, E> {
    if cache.as_ref().is_none_or(|m| !m.contains_key(&ino)) {
        *cache = Some(load()?);
    }
    Ok(cache.as_ref().and_then(|m| m.get(&ino)).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::push_attr;
    use crate::transport::Fake;

    /// A SOCK_DIAG_BY_FAMILY answer message with `body`, padded to 4.
    fn answer(body: &[u8]) -> Vec<u8> {
        let mut m = request(SOCK_DIAG_BY_FAMILY, 2, 1, body);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    fn done() -> Vec<u8> {
        request(NLMSG_DONE, 2, 1, &0u32.to_ne_bytes())
    }

    fn error(errno: i32) -> Vec<u8> {
        request(NLMSG_ERROR, 0, 1, &(-errno).to_ne_bytes())
    }

    #[test]
    fn request_bytes() {
        let r = diag_request(&[1, 2, 3, 4, 5], 9);
        assert_eq!(r.len(), 21);
        assert_eq!(u32_at(&r, 0), Some(21));
        assert_eq!(crate::u16_at(&r, 4), Some(20));
        assert_eq!(crate::u16_at(&r, 6), Some(0x301));
        assert_eq!(u32_at(&r, 8), Some(9));
        assert_eq!(u32_at(&r, 12), Some(0));
        assert_eq!(&r[16..], &[1, 2, 3, 4, 5]);
    }

    #[test]
    fn multi_part_dump() {
        let mut f = Fake::new();
        // Two datagrams of answers (the first with an odd-sized message and
        // an unrelated one), then NLMSG_DONE in a third.
        let mut d1 = answer(&[1, 1, 1]);
        d1.extend(request(0x10, 0, 1, &[7; 4]));
        d1.extend(answer(&[2; 8]));
        f.reply(d1).reply(answer(&[3; 4])).reply(done());
        let mut got = Vec::new();
        diag_dump(&mut f, &[0xAA; 4], |m| {
            got.push(m.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![vec![1, 1, 1], vec![2; 8], vec![3; 4]]);
        assert_eq!(f.sent, vec![diag_request(&[0xAA; 4], 1)]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn done_in_the_same_datagram_ends_the_dump() {
        let mut f = Fake::new();
        let mut d = answer(&[5; 4]);
        d.extend(done());
        d.extend(answer(&[6; 4]));
        f.reply(d).reply(answer(&[7; 4]));
        let mut n = 0;
        diag_dump(&mut f, &[], |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        assert_eq!(f.pending(), 1);
    }

    #[test]
    fn kernel_error_is_reported() {
        let mut f = Fake::new();
        let mut d = answer(&[5; 4]);
        d.extend(error(libc::EINVAL));
        f.reply(d);
        let e = diag_dump(&mut f, &[], |_| Ok(())).unwrap_err();
        assert!(matches!(&e, DumpError::Answer { why } if why.contains("error")));
        assert!(split_msgs(&error(libc::EPERM))
            .unwrap_err()
            .contains("error"));
    }

    #[test]
    fn truncated_messages_are_refused() {
        // Says 40 bytes, has 16.
        let short = [40, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let e = split_msgs(&short).unwrap_err();
        assert!(e.contains("length 40 at offset 0"), "{e}");
        // A good message, then one cut short.
        let mut d = answer(&[1; 4]);
        let mut cut = answer(&[2; 8]);
        cut.truncate(20);
        d.extend(cut);
        assert!(split_msgs(&d).unwrap_err().contains("offset 20"));
        // A length below the header's own.
        let mut tiny = answer(&[1; 4]);
        tiny[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(split_msgs(&tiny).is_err());
        // Trailing bytes shorter than a header are not a message.
        let mut pad = answer(&[1; 4]);
        pad.extend_from_slice(&[0; 8]);
        assert_eq!(split_msgs(&pad).unwrap(), (vec![&[1u8; 4][..]], false));
    }

    #[test]
    fn transport_and_callback_errors() {
        let mut f = Fake::new();
        f.fail_send(std::io::ErrorKind::PermissionDenied.into());
        assert!(matches!(
            diag_dump(&mut f, &[], |_| Ok(())),
            Err(DumpError::Send { .. })
        ));
        let mut f = Fake::new();
        f.reply_error(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(
            diag_dump(&mut f, &[], |_| Ok(())),
            Err(DumpError::Recv { .. })
        ));
        let mut f = Fake::new();
        f.reply(answer(&[1; 4]));
        let e = diag_dump(&mut f, &[], |_| Err("no good".into())).unwrap_err();
        assert!(matches!(e, DumpError::Answer { why } if why == "no good"));
        // An empty datagram ends the dump.
        let mut f = Fake::new();
        f.reply(Vec::new());
        diag_dump(&mut f, &[], |_| Ok(())).unwrap();
    }

    #[test]
    fn answers_with_aligned_attributes() {
        // A record of 5 bytes, then attributes at the next 4-byte boundary.
        let mut body = request(0, 0, 0, &[9; 5]);
        push_attr(&mut body, 1, &[1, 2]);
        push_attr(&mut body, 2, &7u32.to_ne_bytes());
        let body = &body[NLMSG_HDRLEN..];
        let mut f = Fake::new();
        let mut d = answer(body);
        d.extend(done());
        f.reply(d);
        let mut seen = Vec::new();
        diag_dump(&mut f, &[], |m| {
            for (ty, data) in crate::attrs(m, 8)? {
                seen.push((ty, data.to_vec()));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(1, vec![1, 2]), (2, 7u32.to_ne_bytes().to_vec())]
        );
    }

    #[test]
    fn cache_refills_for_new_sockets() {
        let mut cache = None;
        let mut loads = 0;
        let mut load = |n: u32| {
            loads += 1;
            Ok::<_, ()>((1..=n).map(|i| (i, i * 10)).collect::<HashMap<_, _>>())
        };
        assert_eq!(diag_of(&mut cache, 1, || load(1)), Ok(Some(10)));
        assert_eq!(diag_of(&mut cache, 1, || load(9)), Ok(Some(10)));
        assert_eq!(diag_of(&mut cache, 2, || load(2)), Ok(Some(20)));
        assert_eq!(diag_of(&mut cache, 5, || load(2)), Ok(None));
        assert_eq!(loads, 3);
    }
}
