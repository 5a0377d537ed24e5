//! Routes as `ip route save` wrote them (iproute2's magic, then raw
//! RTM_NEWROUTE messages), made fit for `ip route restore`: a route over a
//! link that had no carrier at dump carries RTNH_F_LINKDOWN (and a dead
//! nexthop RTNH_F_DEAD) in its flags, which the kernel reports but refuses
//! in a request ("Invalid rtm_flags - can not contain DEAD or LINKDOWN").
//! Those state bits are cleared, in the route's rtmsg and in each nexthop
//! of an RTA_MULTIPATH; the kernel sets them again from the links' state.

/// RTNH_F_DEAD, RTNH_F_LINKDOWN: nexthop state the kernel reports.
const STATE_FLAGS: u32 = 0x1 | 0x10;
const NLMSG_HDRLEN: usize = 16;
/// struct rtmsg: 8 bytes, then rtm_flags (u32).
const RTMSG_LEN: usize = 12;
const RTA_MULTIPATH: u16 = 9;
/// struct rtnexthop: len (u16), flags (u8), hops (u8), ifindex (i32).
const RTNH_LEN: usize = 8;

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2)?.try_into().ok().map(u16::from_ne_bytes)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)?.try_into().ok().map(u32::from_ne_bytes)
}

/// Clear the state flags of the nexthops in multipath attribute data `mp`.
fn clear_nexthops(mp: &mut [u8]) {
    let mut off = 0;
    while let Some(len) = u16_at(mp, off).map(usize::from) {
        if len < RTNH_LEN {
            return;
        }
        if let Some(f) = mp.get_mut(off + 2) {
            *f &= !(STATE_FLAGS as u8);
        }
        off += align4(len);
    }
}

/// `data` (the image: magic, messages) with the state flags cleared.
/// Whatever does not parse is left as it is (the tool says what is wrong).
pub(super) fn without_state_flags(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut off = 4;
    while let Some(len) = u32_at(&out, off).map(|l| l as usize) {
        if len < NLMSG_HDRLEN + RTMSG_LEN || off + len > out.len() {
            break;
        }
        let flags_at = off + NLMSG_HDRLEN + 8;
        if let Some(f) = u32_at(&out, flags_at) {
            if let Some(b) = out.get_mut(flags_at..flags_at + 4) {
                b.copy_from_slice(&(f & !STATE_FLAGS).to_ne_bytes());
            }
        }
        let mut a = off + NLMSG_HDRLEN + RTMSG_LEN;
        while let (Some(alen), Some(aty)) = (u16_at(&out, a), u16_at(&out, a + 2)) {
            let alen = usize::from(alen);
            if alen < 4 || a + alen > off + len {
                break;
            }
            if aty & 0x3fff == RTA_MULTIPATH {
                if let Some(mp) = out.get_mut(a + 4..a + alen) {
                    clear_nexthops(mp);
                }
            }
            a += align4(alen);
        }
        off += align4(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(flags: u32, attrs: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + RTMSG_LEN + attrs.len();
        let mut m = (len as u32).to_ne_bytes().to_vec();
        m.extend([24u8, 0, 0, 0]); // RTM_NEWROUTE, flags
        m.extend([0u8; 8]); // seq, pid
        m.extend([2u8, 24, 0, 0, 254, 2, 253, 1]); // rtmsg up to flags
        m.extend(flags.to_ne_bytes());
        m.extend(attrs);
        m
    }

    #[test]
    fn clears_linkdown_and_dead() {
        let mut img = 0x4531_1224u32.to_ne_bytes().to_vec();
        img.extend(route(0x10 | 0x4, &[]));
        // RTA_MULTIPATH with one nexthop flagged dead + linkdown.
        let mut mp = 12u16.to_ne_bytes().to_vec();
        mp.extend(RTA_MULTIPATH.to_ne_bytes());
        mp.extend(8u16.to_ne_bytes());
        mp.extend([0x11u8, 0]);
        mp.extend(3i32.to_ne_bytes());
        img.extend(route(0x1, &mp));
        let out = without_state_flags(&img);
        assert_eq!(out.len(), img.len());
        let first = 4;
        assert_eq!(u32_at(&out, first + 24), Some(0x4));
        let second = first + NLMSG_HDRLEN + RTMSG_LEN;
        assert_eq!(u32_at(&out, second + 24), Some(0));
        assert_eq!(out.get(second + 28 + 4 + 2), Some(&0u8));
        // Short or odd data is passed over untouched.
        assert_eq!(without_state_flags(&[1, 2, 3]), vec![1, 2, 3]);
        let mut bad = img.clone();
        bad.truncate(10);
        assert_eq!(without_state_flags(&bad), bad);
    }
}
