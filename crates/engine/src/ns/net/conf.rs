//! The network namespace's sysctls as CRIU 4.2 records them: the ipv4 and
//! ipv6 `conf/{all,default,DEV}` entries (in CRIU's fixed order: an
//! entry's place in the image names it), `net/unix/max_dgram_qlen` and
//! `net/ipv4/ping_group_range`. Read and written through /proc/sys/net by
//! a crust thread that joined the namespace (/proc/sys/net shows the
//! reader's network namespace).

use crust_images::proto::sysctl::{SysctlEntry, SysctlType};
use std::io;

/// `net/ipv4/conf/*/` entries, in CRIU's order.
pub(super) const CONF4: [&str; 30] = [
    "accept_local",
    "accept_redirects",
    "accept_source_route",
    "arp_accept",
    "arp_announce",
    "arp_filter",
    "arp_ignore",
    "arp_notify",
    "bootp_relay",
    "disable_policy",
    "disable_xfrm",
    "force_igmp_version",
    "forwarding",
    "igmpv2_unsolicited_report_interval",
    "igmpv3_unsolicited_report_interval",
    "log_martians",
    "medium_id",
    "promote_secondaries",
    "proxy_arp",
    "proxy_arp_pvlan",
    "route_localnet",
    "rp_filter",
    "secure_redirects",
    "send_redirects",
    "shared_media",
    "src_valid_mark",
    "tag",
    "ignore_routes_with_linkdown",
    "drop_gratuitous_arp",
    "drop_unicast_in_l2_multicast",
];

/// `net/ipv6/conf/*/` entries, in CRIU's order.
pub(super) const CONF6: [&str; 42] = [
    "accept_dad",
    "accept_ra",
    "accept_ra_defrtr",
    "accept_ra_from_local",
    "accept_ra_min_hop_limit",
    "accept_ra_mtu",
    "accept_ra_pinfo",
    "accept_ra_rt_info_max_plen",
    "accept_ra_rtr_pref",
    "accept_redirects",
    "accept_source_route",
    "autoconf",
    "dad_transmits",
    "disable_ipv6",
    "drop_unicast_in_l2_multicast",
    "drop_unsolicited_na",
    "force_mld_version",
    "force_tllao",
    "forwarding",
    "hop_limit",
    "ignore_routes_with_linkdown",
    "keep_addr_on_down",
    "max_addresses",
    "max_desync_factor",
    "mldv1_unsolicited_report_interval",
    "mldv2_unsolicited_report_interval",
    "mtu",
    "ndisc_notify",
    "optimistic_dad",
    "proxy_ndp",
    "regen_max_retry",
    "router_probe_interval",
    "router_solicitation_delay",
    "router_solicitation_interval",
    "router_solicitations",
    "stable_secret",
    "suppress_frag_ndisc",
    "temp_prefered_lft",
    "temp_valid_lft",
    "use_oif_addrs_only",
    "use_optimistic",
    "use_tempaddr",
];

/// The one string entry of CONF6.
const STABLE_SECRET: &str = "stable_secret";
/// Written last: it must follow `forwarding` (CRIU's rule).
const ACCEPT_REDIRECTS: &str = "accept_redirects";
/// The kernel's default of `ping_group_range`: no group may ping.
const PING_DEFAULT: &str = "1\t0";

fn path(rel: &str) -> String {
    format!("/proc/sys/net/{rel}")
}

fn read_sysctl(rel: &str) -> io::Result<String> {
    std::fs::read_to_string(path(rel)).map(|s| s.trim_end_matches('\n').to_string())
}

fn write_sysctl(rel: &str, v: &str) -> io::Result<()> {
    std::fs::write(path(rel), v)
}

fn int_entry(v: Option<i32>) -> SysctlEntry {
    SysctlEntry {
        r#type: SysctlType::CTL_32,
        iarg: v,
        ..Default::default()
    }
}

fn str_entry(v: Option<String>) -> SysctlEntry {
    SysctlEntry {
        r#type: SysctlType::CTL_STR,
        sarg: v,
        ..Default::default()
    }
}

/// Read `net/PROTO/conf/TGT/*` (`proto` ipv4 or ipv6); an entry the kernel
/// lacks stays without a value, as CRIU leaves it.
pub(super) fn read_conf(proto: &str, tgt: &str) -> Vec<SysctlEntry> {
    let names: &[&str] = if proto == "ipv4" { &CONF4 } else { &CONF6 };
    names
        .iter()
        .map(|n| {
            let v = read_sysctl(&format!("{proto}/conf/{tgt}/{n}"));
            if *n == STABLE_SECRET {
                // EIO while unset: no value.
                str_entry(v.ok())
            } else {
                int_entry(
                    v.ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .map(|v| v as i32),
                )
            }
        })
        .collect()
}

/// `net/unix/max_dgram_qlen` (empty when the kernel has none).
pub(super) fn read_unix() -> Vec<SysctlEntry> {
    read_sysctl("unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(|v| vec![int_entry(Some(v))])
        .unwrap_or_default()
}

/// `net/ipv4/ping_group_range`, without a value when it is the kernel's
/// default (CRIU's rule). Its gids as the tree's user namespace sees them
/// (crust reads them as its own namespace sees them): CRIU records them so.
pub(super) fn read_ipv4_sysctls() -> Vec<SysctlEntry> {
    match read_sysctl("ipv4/ping_group_range") {
        Ok(v) if v.split_whitespace().eq(PING_DEFAULT.split_whitespace()) => {
            vec![str_entry(None)]
        }
        Ok(v) => {
            let to_ns = |g| match crate::util::idmap::to_ns_gid(g) {
                crate::util::idmap::INVALID => Some(OVERFLOW_GID),
                g => Some(g),
            };
            vec![str_entry(Some(turn_range(&v, to_ns).unwrap_or(v)))]
        }
        Err(_) => Vec::new(),
    }
}

/// The gid the kernel shows for one a user namespace cannot name.
const OVERFLOW_GID: u32 = 65534;

/// A `ping_group_range` value ("LOW HIGH") with both gids turned by `f`,
/// in the form the kernel prints; `None` when it is not two gids or `f`
/// cannot turn one.
fn turn_range(v: &str, f: impl Fn(u32) -> Option<u32>) -> Option<String> {
    let mut it = v.split_whitespace().map(|x| x.parse::<u32>().ok());
    let (lo, hi) = match (it.next(), it.next(), it.next()) {
        (Some(Some(lo)), Some(Some(hi)), None) => (lo, hi),
        _ => return None,
    };
    Some(format!("{}\t{}", f(lo)?, f(hi)?))
}

/// The value of entry `e` as the text a sysctl file takes, if it has one.
fn value(e: &SysctlEntry) -> Option<String> {
    match e.r#type {
        SysctlType::CTL_32 => e.iarg.map(|v| v.to_string()),
        SysctlType::CTL_STR => e.sarg.clone(),
        _ => None,
    }
}

fn same(a: &SysctlEntry, b: &SysctlEntry) -> bool {
    a.r#type == b.r#type && value(a).is_some() && value(a) == value(b)
}

/// One sysctl write that failed: its path and the error.
#[derive(Debug)]
pub(super) struct WriteFailed {
    pub path: String,
    pub source: io::Error,
}

/// Write `net/PROTO/conf/TGT/*` from `conf` (image order), skipping the
/// entries without a value and those equal to `def` (the namespace's
/// defaults, when given; `mtu` is always written), `accept_redirects`
/// last.
pub(super) fn write_conf(
    proto: &str,
    tgt: &str,
    conf: &[SysctlEntry],
    def: Option<&[SysctlEntry]>,
) -> Result<(), WriteFailed> {
    let names: &[&str] = if proto == "ipv4" { &CONF4 } else { &CONF6 };
    let mut todo: Vec<(&str, String)> = Vec::new();
    let mut last = None;
    for (i, (name, e)) in names.iter().zip(conf).enumerate() {
        let Some(v) = value(e) else { continue };
        let d = def.and_then(|d| d.get(i));
        if d.is_some_and(|d| same(e, d)) && *name != "mtu" {
            continue;
        }
        if *name == ACCEPT_REDIRECTS {
            last = Some((*name, v));
        } else {
            todo.push((name, v));
        }
    }
    todo.extend(last);
    for (name, v) in todo {
        let rel = format!("{proto}/conf/{tgt}/{name}");
        write_sysctl(&rel, &v).map_err(|source| WriteFailed {
            path: path(&rel),
            source,
        })?;
    }
    Ok(())
}

/// Write `net/unix/max_dgram_qlen` and `net/ipv4/ping_group_range` from
/// the image's lists (only the values given).
pub(super) fn write_misc(unix: &[SysctlEntry], ipv4: &[SysctlEntry]) -> Result<(), WriteFailed> {
    let pairs = unix
        .first()
        .map(|e| ("unix/max_dgram_qlen", e))
        .into_iter()
        .chain(ipv4.first().map(|e| ("ipv4/ping_group_range", e)));
    for (rel, e) in pairs {
        if let Some(mut v) = value(e) {
            if rel == "ipv4/ping_group_range" {
                // The image's gids are the tree's user namespace's; crust
                // writes from its own.
                let to_host = |g| match crate::util::idmap::to_host_gid(g) {
                    crate::util::idmap::INVALID => None,
                    g => Some(g),
                };
                v = turn_range(&v, to_host).ok_or_else(|| WriteFailed {
                    path: path(rel),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "the image's value {v:?} is not two gids the tree's user namespace maps"
                        ),
                    ),
                })?;
            }
            write_sysctl(rel, &v).map_err(|source| WriteFailed {
                path: path(rel),
                source,
            })?;
        }
    }
    Ok(())
}

/// Why a list of entries of the image cannot be written: a type that is
/// not the one CRIU gives that place, or more entries than CRIU knows.
pub(super) fn check_conf(proto: &str, conf: &[SysctlEntry]) -> Result<(), String> {
    let names: &[&str] = if proto == "ipv4" { &CONF4 } else { &CONF6 };
    if conf.len() > names.len() {
        return Err(format!(
            "{} {proto} conf entries, CRIU knows {}",
            conf.len(),
            names.len()
        ));
    }
    for (name, e) in names.iter().zip(conf) {
        let want = if *name == STABLE_SECRET {
            SysctlType::CTL_STR
        } else {
            SysctlType::CTL_32
        };
        if e.r#type != want {
            return Err(format!("{proto} conf entry {name} has type {:?}", e.r#type));
        }
        if e.sarg
            .as_ref()
            .is_some_and(|s| s.contains(['\0', '\n', '/']))
        {
            return Err(format!("{proto} conf entry {name} has a bad value"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_range_turned() {
        assert_eq!(
            turn_range("400000\t508468", |g| g.checked_sub(400000)).as_deref(),
            Some("0\t108468")
        );
        assert_eq!(turn_range("0 5", |g| g.checked_sub(1)), None);
        assert_eq!(turn_range("0", Some), None);
        assert_eq!(turn_range("1 2 3", Some), None);
    }

    #[test]
    fn values_and_defaults() {
        assert_eq!(value(&int_entry(Some(3))).as_deref(), Some("3"));
        assert_eq!(value(&int_entry(None)), None);
        assert!(same(&int_entry(Some(1)), &int_entry(Some(1))));
        assert!(!same(&int_entry(None), &int_entry(None)));
        assert!(!same(&int_entry(Some(1)), &str_entry(Some("1".into()))));
    }

    #[test]
    fn checks_types_by_place() {
        let mut v6: Vec<SysctlEntry> = CONF6
            .iter()
            .map(|n| {
                if *n == STABLE_SECRET {
                    str_entry(None)
                } else {
                    int_entry(Some(0))
                }
            })
            .collect();
        assert!(check_conf("ipv6", &v6).is_ok());
        v6[0] = str_entry(Some("x".into()));
        assert!(check_conf("ipv6", &v6).is_err());
        let v4 = vec![int_entry(Some(0)); 31];
        assert!(check_conf("ipv4", &v4).is_err());
    }
}
