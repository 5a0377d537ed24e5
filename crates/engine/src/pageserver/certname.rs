//! The names a peer's certificate is valid for, as CRIU's GnuTLS (3.7)
//! judges them beyond what rustls does: for a host name (never for an
//! address), a certificate with no DNS-name or IP-address subjectAltName
//! is valid for its one common name (CN), a wildcard `*.rest` included,
//! when it may serve a TLS server (no extended key usage, or one that
//! lists serverAuth or any). Only ever asked after the certificate chain
//! was verified: this widens the name check, never the trust. The rules
//! were read off GnuTLS 3.7.9's `gnutls_x509_crt_check_hostname2`.
//!
//! The certificate is DER read from the network: every length is checked
//! against what is there; anything malformed matches nothing.

/// One DER element at the start of `b`: (tag, contents, what follows).
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&l0, b) = b.split_first()?;
    let (len, b) = if l0 < 0x80 {
        (usize::from(l0), b)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (lb, b) = b.split_at_checked(n)?;
        (lb.iter().fold(0usize, |a, &x| (a << 8) | usize::from(x)), b)
    };
    let (v, rest) = b.split_at_checked(len)?;
    Some((tag, v, rest))
}

/// The elements of a constructed element's contents.
fn elements(mut b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (t, v, rest) = tlv(b)?;
        out.push((t, v));
        b = rest;
    }
    Some(out)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OCTETS: u8 = 0x04;
const EXTENSIONS: u8 = 0xa3;
/// 2.5.4.3 commonName.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17 subjectAltName.
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];
/// 2.5.29.37 extKeyUsage.
const OID_EKU: &[u8] = &[0x55, 0x1d, 0x25];
/// 1.3.6.1.5.5.7.3.1 serverAuth.
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// 2.5.29.37.0 anyExtendedKeyUsage.
const OID_ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];
/// GeneralName tags: dNSName, iPAddress.
const SAN_DNS: u8 = 0x82;
const SAN_IP: u8 = 0x87;

/// What the name check needs of a certificate.
#[derive(Debug, Default, PartialEq, Eq)]
struct Names<'a> {
    /// The subject's common names (their string contents).
    cns: Vec<&'a [u8]>,
    /// Has it DNS-name or IP-address SANs?
    sans: bool,
    /// The extended key usage purposes, if the extension is there.
    eku: Option<Vec<&'a [u8]>>,
}

fn names(der: &[u8]) -> Option<Names<'_>> {
    let (SEQUENCE, cert, _) = tlv(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(cert)? else {
        return None;
    };
    let fields = elements(tbs)?;
    // [0] version is optional; then serial, signature, issuer, validity,
    // subject.
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (SEQUENCE, subject) = *fields.get(skip + 4)? else {
        return None;
    };
    let mut n = Names::default();
    for (t, rdn) in elements(subject)? {
        if t != SET {
            return None;
        }
        for (t, atv) in elements(rdn)? {
            if t != SEQUENCE {
                return None;
            }
            if let [(OID, OID_CN), (_, value)] = elements(atv)?.as_slice() {
                n.cns.push(value);
            }
        }
    }
    if let Some(&(EXTENSIONS, exts)) = fields.iter().find(|f| f.0 == EXTENSIONS) {
        let (SEQUENCE, list, _) = tlv(exts)? else {
            return None;
        };
        for (_, ext) in elements(list)? {
            let e = elements(ext)?;
            let (Some(&(OID, id)), Some(&(OCTETS, value))) = (e.first(), e.last()) else {
                return None;
            };
            if id != OID_SAN && id != OID_EKU {
                continue;
            }
            let (SEQUENCE, inner, _) = tlv(value)? else {
                return None;
            };
            if id == OID_SAN {
                for (t, _) in elements(inner)? {
                    match t {
                        SAN_DNS | SAN_IP => n.sans = true,
                        _ => {}
                    }
                }
            } else if id == OID_EKU {
                n.eku = Some(elements(inner)?.into_iter().map(|p| p.1).collect());
            }
        }
    }
    Some(n)
}

/// Is the certificate (DER, its chain already verified) valid for host
/// name `addr` by its common name, as GnuTLS allows (see the module's
/// text)? Never for an IP address.
pub(super) fn gnutls_name_match(der: &[u8], addr: &str) -> bool {
    if addr.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    let Some(n) = names(der) else {
        return false;
    };
    let server_ok = n.eku.as_ref().is_none_or(|purposes| {
        purposes
            .iter()
            .any(|p| *p == OID_SERVER_AUTH || *p == OID_ANY_EKU)
    });
    match n.cns.as_slice() {
        [cn] => {
            !n.sans && server_ok && std::str::from_utf8(cn).is_ok_and(|cn| host_match(cn, addr))
        }
        _ => false,
    }
}

/// GnuTLS's comparison: whole, ignoring ASCII case; `*.rest` (rest with
/// a dot in it) stands for any one label before `.rest`.
fn host_match(pattern: &str, host: &str) -> bool {
    if pattern.eq_ignore_ascii_case(host) {
        return true;
    }
    let Some(rest) = pattern.strip_prefix("*.") else {
        return false;
    };
    rest.contains('.')
        && host
            .split_once('.')
            .is_some_and(|(_, h)| h.eq_ignore_ascii_case(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of one element.
    fn el(tag: u8, v: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if v.len() < 0x80 {
            out.push(v.len() as u8);
        } else {
            out.extend([0x82, (v.len() >> 8) as u8, v.len() as u8]);
        }
        out.extend_from_slice(v);
        out
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    /// A certificate skeleton with `cns` in its subject and `exts`.
    fn cert(cns: &[&str], exts: &[Vec<u8>]) -> Vec<u8> {
        let rdns: Vec<u8> = cns
            .iter()
            .flat_map(|cn| {
                let atv = el(SEQUENCE, &cat(&[el(OID, OID_CN), el(0x0c, cn.as_bytes())]));
                el(SET, &atv)
            })
            .collect();
        let mut tbs = cat(&[
            el(0xa0, &el(0x02, &[2])),
            el(0x02, &[1]),
            el(SEQUENCE, &[]),
            el(SEQUENCE, &[]),
            el(SEQUENCE, &[]),
            el(SEQUENCE, &rdns),
            el(SEQUENCE, &[]),
        ]);
        if !exts.is_empty() {
            tbs.extend(el(EXTENSIONS, &el(SEQUENCE, &cat(exts))));
        }
        el(SEQUENCE, &cat(&[el(SEQUENCE, &tbs), el(SEQUENCE, &[])]))
    }

    fn ext(id: &[u8], inner: &[u8]) -> Vec<u8> {
        el(
            SEQUENCE,
            &cat(&[el(OID, id), el(OCTETS, &el(SEQUENCE, inner))]),
        )
    }

    #[test]
    fn cn_only() {
        let c = cert(&["localhost"], &[]);
        assert!(gnutls_name_match(&c, "localhost"));
        assert!(gnutls_name_match(&c, "LocalHost"));
        assert!(!gnutls_name_match(&c, "otherhost"));
        // Never for an address, as GnuTLS.
        assert!(!gnutls_name_match(&cert(&["127.0.0.1"], &[]), "127.0.0.1"));
        assert!(!gnutls_name_match(&cert(&["::1"], &[]), "::1"));
    }

    #[test]
    fn wildcards_as_gnutls() {
        let c = cert(&["*.Example.com"], &[]);
        assert!(gnutls_name_match(&c, "a.example.COM"));
        assert!(!gnutls_name_match(&c, "b.a.example.com"));
        assert!(!gnutls_name_match(&c, "example.com"));
        assert!(!gnutls_name_match(&cert(&["*.com"], &[]), "a.com"));
        assert!(!gnutls_name_match(
            &cert(&["f*.example.com"], &[]),
            "foo.example.com"
        ));
    }

    #[test]
    fn no_cn_fallback_with_address_sans_or_two_cns() {
        let ip = ext(OID_SAN, &el(SAN_IP, &[127, 0, 0, 1]));
        assert!(!gnutls_name_match(
            &cert(&["localhost"], &[ip]),
            "localhost"
        ));
        let dns = ext(OID_SAN, &el(SAN_DNS, b"elsewhere"));
        assert!(!gnutls_name_match(
            &cert(&["localhost"], &[dns]),
            "localhost"
        ));
        let email = ext(OID_SAN, &el(0x81, b"a@b.c"));
        assert!(gnutls_name_match(
            &cert(&["localhost"], &[email]),
            "localhost"
        ));
        assert!(!gnutls_name_match(&cert(&["a", "a"], &[]), "a"));
    }

    #[test]
    fn key_usage_must_allow_a_server() {
        let client_only = ext(OID_EKU, &el(OID, &[0x2b, 6, 1, 5, 5, 7, 3, 2]));
        assert!(!gnutls_name_match(&cert(&["a"], &[client_only]), "a"));
        let both = ext(
            OID_EKU,
            &cat(&[
                el(OID, &[0x2b, 6, 1, 5, 5, 7, 3, 2]),
                el(OID, OID_SERVER_AUTH),
            ]),
        );
        assert!(gnutls_name_match(&cert(&["a"], &[both]), "a"));
    }

    #[test]
    fn other_extensions_are_passed_over() {
        let key_usage = el(
            SEQUENCE,
            &cat(&[
                el(OID, &[0x55, 0x1d, 0x0f]),
                el(0x01, &[0xff]),
                el(OCTETS, &el(0x03, &[5, 0xa0])),
            ]),
        );
        assert!(gnutls_name_match(&cert(&["a"], &[key_usage]), "a"));
    }

    #[test]
    fn malformed_matches_nothing() {
        let c = cert(&["a"], &[]);
        for cut in 0..c.len() {
            assert!(!gnutls_name_match(&c[..cut], "a"));
        }
        assert!(!gnutls_name_match(
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            "a"
        ));
    }
}
