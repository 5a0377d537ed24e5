//! Network locking: keeping the TCP connections of a tree off the wire from
//! the dump until the restore, as CRIU does.
//!
//! While a connection is in repair mode, and between the dump and the
//! restore, neither its socket nor the kernel may answer the peer: an RST or
//! a FIN (or data) would break the connection for good. So before a
//! connection is dumped, packets of its 4-tuple are dropped in both
//! directions, and the drop is lifted only when the restored socket is back
//! (or the dump failed, or `dump -R` leaves the tree running). Packets that
//! carry the firewall mark [`SOCCR_MARK`] pass: crust's own crafted packets.
//!
//! The methods (`--network-lock`, saved as `network_lock_method` in
//! `inventory.img`, whose values are CRIU's enum):
//!
//! * [`Method::Iptables`] (0, the default): per connection, two rules in the
//!   `filter` table, in CRIU 4.2's shape
//!   (`-I INPUT --protocol tcp -m mark ! --mark 0xC114 --source PEER --sport
//!   PP --destination LOCAL --dport LP -j DROP` and the `OUTPUT` rule with
//!   the ends swapped), with `iptables`, or `ip6tables` for IPv6. An IPv6
//!   socket on IPv4-mapped addresses (`::ffff:a.b.c.d`) sends IPv4 packets,
//!   so its rules are IPv4 rules. All the rules of one call go in one
//!   `iptables-restore --noflush` transaction (all or nothing); without
//!   `iptables-restore`, one `iptables -w` run per rule, undone on failure.
//! * [`Method::Nftables`] (1): a table with the sets `conns4` and `conns6`
//!   (`addr . port . addr . port`, both directions of each connection) and
//!   two base chains, `input` and `output` (filter hooks, priority 0), that
//!   accept [`SOCCR_MARK`] packets and drop those whose `saddr . sport .
//!   daddr . dport` is in a set: the layout of CRIU's table. As CRIU, one
//!   table per dump, `CRIU-<run id>`; crust's run id is [`nft_run_id`],
//!   `crust-netlock-` and a hash of the connections, so a later process
//!   finds the table from the connection list alone. [`lock`] is one `nft
//!   -f -` transaction, [`unlock`] one `nft delete table` (no listing: the
//!   fixed cost of each `nft` run is some 10-20 ms). Without that table
//!   (images of an older crust, which shared the table [`NFT_TABLE`], or of
//!   CRIU), [`unlock`] takes the elements out of those tables, and a table
//!   goes once both its sets are empty. Crust's dumps record the run id in
//!   the inventory, so CRIU's restore deletes crust's table.
//! * [`Method::Skip`] (2): nothing is locked (the caller takes care of the
//!   network, e.g. with its own namespace).
//!
//! If the chosen tool is missing or fails, locking fails (CRIU does not fall
//! back to another method either) and the error names the tool and the
//! other choices.
//!
//! Everything is derived from the connection list, so a restore, run by a
//! different crust process, unlocks what the dump locked from the
//! connections it reads in the images.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;

use log::{debug, info, warn};

mod iptables;
mod netns;
mod nftables;
mod nswatch;
use iptables::{ipt_lock, ipt_unlock};
pub use netns::{lock_netns, unlock_netns, with_marked_passing};
use nftables::{nft_lock, nft_unlock};
pub use nswatch::dismiss as netns_lock_kept;

/// The firewall mark of the packets crust sends itself while connections
/// are locked (CRIU's `SOCCR_MARK`): the lock lets them pass.
pub const SOCCR_MARK: u32 = 0xC114;

/// The nftables table (family `inet`) older crust dumps shared for their
/// locks, and the start of the name of every table of crust's locks
/// (`CRIU-crust-netlock-<hash>`, see [`nft_run_id`]). CRIU names the table
/// of a dump `CRIU-<run id>`, the run id being `dump_criu_run_id` of its
/// inventory.
pub const NFT_TABLE: &str = "CRIU-crust-netlock";

/// The `dump_criu_run_id` crust records in `inventory.img` when it locked
/// with nftables and no connection (CRIU derives [`NFT_TABLE`] from it),
/// and the start of [`nft_run_id`].
pub const NFT_RUN_ID: &str = "crust-netlock";

/// The `dump_criu_run_id` of a dump that locked `conns` with nftables:
/// CRIU's restore deletes the table `CRIU-<run id>`, the one [`lock`]
/// made. [`NFT_RUN_ID`] if there is no connection or one cannot be locked.
pub fn nft_run_id(conns: &[Conn]) -> String {
    match normalize(conns) {
        Ok(ends) if !ends.is_empty() => nftables::nft_ends_run_id(&ends),
        _ => NFT_RUN_ID.to_string(),
    }
}

/// How connections are locked (`--network-lock`): defined with the
/// options, whose value it is.
pub use crate::options::NetworkLock as Method;

impl Method {
    /// The `network_lock_method` value of `inventory.img` (CRIU's
    /// `NETWORK_LOCK_IPTABLES` 0, `NETWORK_LOCK_NFTABLES` 1,
    /// `NETWORK_LOCK_SKIP` 2).
    pub fn inventory_value(self) -> u32 {
        match self {
            Method::Iptables => 0,
            Method::Nftables => 1,
            Method::Skip => 2,
        }
    }

    /// The method an `inventory.img` value names; `None` for an unknown
    /// value. An inventory without the field (images of an older CRIU) means
    /// iptables: see [`Method::from_inventory_field`].
    pub fn from_inventory(v: u32) -> Option<Method> {
        match v {
            0 => Some(Method::Iptables),
            1 => Some(Method::Nftables),
            2 => Some(Method::Skip),
            _ => None,
        }
    }

    /// The method of an inventory's optional `network_lock_method` field:
    /// absent means iptables, as CRIU assumes for images of versions that
    /// knew no other method.
    pub fn from_inventory_field(v: Option<u32>) -> Option<Method> {
        match v {
            None => Some(Method::Iptables),
            Some(v) => Method::from_inventory(v),
        }
    }

    /// The `--network-lock` keyword.
    pub fn name(self) -> &'static str {
        match self {
            Method::Iptables => "iptables",
            Method::Nftables => "nftables",
            Method::Skip => "skip",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;

    /// `iptables`, `nftables`, `skip` (or CRIU's synonym `none`).
    fn from_str(s: &str) -> Result<Method, String> {
        match s {
            "iptables" => Ok(Method::Iptables),
            "nftables" => Ok(Method::Nftables),
            "skip" | "none" => Ok(Method::Skip),
            _ => Err(format!(
                "unknown network lock method {s:?} (expected iptables, nftables or skip)"
            )),
        }
    }
}

/// The method a restore unlocks with: the one the dump used, as recorded in
/// the inventory (CRIU ignores `--network-lock` on restore, with a warning).
/// `cli` is what the restore command line said, if anything.
pub fn restore_method(inventory: Option<u32>, cli: Option<Method>) -> Result<Method, NetLockError> {
    let m = Method::from_inventory_field(inventory)
        .ok_or(NetLockError::BadInventoryValue(inventory.unwrap_or(0)))?;
    if inventory.is_none() {
        info!("inventory.img names no network lock method: iptables, as for older images");
    }
    if let Some(c) = cli {
        if c != m {
            warn!(
                "--network-lock {c} is ignored on restore: the dump locked with {m}, which unlocks"
            );
        }
    }
    Ok(m)
}

/// One TCP connection of the tree, as its socket sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conn {
    /// The socket's own address (getsockname).
    pub local: SocketAddr,
    /// The peer's address (getpeername).
    pub remote: SocketAddr,
}

impl fmt::Display for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.local, self.remote)
    }
}

/// Why locking or unlocking failed.
#[derive(Debug, thiserror::Error)]
pub enum NetLockError {
    #[error(
        "network lock with {method}: `{tool}` was not found in PATH, /usr/sbin or /sbin; \
         install it, or choose another method with --network-lock {others}"
    )]
    ToolMissing {
        method: Method,
        tool: &'static str,
        others: &'static str,
    },
    #[error("network lock with {method}: cannot run `{tool}`")]
    Spawn {
        method: Method,
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("network lock with {method}: `{cmd}` failed ({status}): {stderr}")]
    ToolFailed {
        method: Method,
        /// The command line (and the first line of its input, if any).
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("network lock: connection {conn} has an IPv4 and an IPv6 end")]
    MixedFamilies { conn: Conn },
    #[error(
        "inventory.img has the unknown network_lock_method {0} (0 iptables, 1 nftables, 2 skip)"
    )]
    BadInventoryValue(u32),
}

/// Lock `conns` out of the network with `method`: packets of their
/// 4-tuples, both ways, are dropped unless marked [`SOCCR_MARK`].
///
/// Either every connection is locked or, on error, nothing this call added
/// is left behind. Locking an already locked connection again is harmless
/// (with iptables it adds a second copy of its rules, which a second
/// [`unlock`] removes).
pub fn lock(method: Method, conns: &[Conn]) -> Result<(), crate::Error> {
    if conns.is_empty() || method == Method::Skip {
        return Ok(());
    }
    let ends = normalize(conns).map_err(crate::Error::NetLock)?;
    match method {
        Method::Iptables => ipt_lock(&ends),
        Method::Nftables => nft_lock(&ends),
        Method::Skip => Ok(()),
    }
    .map_err(crate::Error::NetLock)?;
    for c in conns {
        info!("Locked {c} connection ({method})");
    }
    Ok(())
}

/// Lift the lock [`lock`] put on `conns` with `method`: exactly the rules
/// (iptables) or set elements (nftables) of these connections are removed;
/// the nftables table goes when it locks nothing any more. Rules already
/// gone are warned about, not errors. Tries every connection; the error is
/// the first failure.
pub fn unlock(method: Method, conns: &[Conn]) -> Result<(), crate::Error> {
    if conns.is_empty() || method == Method::Skip {
        return Ok(());
    }
    let ends = normalize(conns).map_err(crate::Error::NetLock)?;
    match method {
        Method::Iptables => ipt_unlock(&ends),
        Method::Nftables => nft_unlock(&ends),
        Method::Skip => Ok(()),
    }
    .map_err(crate::Error::NetLock)?;
    for c in conns {
        info!("Unlocked {c} connection ({method})");
    }
    Ok(())
}

/// Whether `method` works here: a made-up loopback connection (ports 1 and
/// 2, on 127.0.0.1 and on ::1) is locked and unlocked again. For `crust
/// check`.
pub fn probe(method: Method) -> Result<(), crate::Error> {
    let on = |ip: IpAddr| Conn {
        local: SocketAddr::new(ip, 1),
        remote: SocketAddr::new(ip, 2),
    };
    let (v4, v6) = (
        on(Ipv4Addr::LOCALHOST.into()),
        on(Ipv6Addr::LOCALHOST.into()),
    );
    let conns = [v4, v6];
    lock(method, &conns)?;
    unlock(method, &conns)
}

// ---------------------------------------------------------------------------
// Connections as the packets see them.

/// One connection with both ends in the same family: IPv4-mapped IPv6
/// addresses are turned into the IPv4 addresses their packets carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ends {
    local: IpAddr,
    lport: u16,
    remote: IpAddr,
    rport: u16,
}

impl Ends {
    fn v6(&self) -> bool {
        self.local.is_ipv6()
    }
}

fn unmap(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => a,
        },
        v4 => v4,
    }
}

fn normalize(conns: &[Conn]) -> Result<Vec<Ends>, NetLockError> {
    conns
        .iter()
        .map(|c| {
            let local = unmap(c.local.ip());
            let remote = unmap(c.remote.ip());
            if local.is_ipv6() != remote.is_ipv6() {
                return Err(NetLockError::MixedFamilies { conn: *c });
            }
            Ok(Ends {
                local,
                lport: c.local.port(),
                remote,
                rport: c.remote.port(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Running the tools.

/// Where `tool` is: the first match in PATH, else /usr/sbin, /sbin (a
/// restricted PATH often lacks the sbin directories).
pub(crate) fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn others(method: Method) -> &'static str {
    match method {
        Method::Iptables => "nftables or skip",
        Method::Nftables => "iptables or skip",
        Method::Skip => "iptables or nftables",
    }
}

/// Run `tool args`, feeding it `input`; its stderr becomes the error.
fn run(
    method: Method,
    tool: &'static str,
    args: &[&str],
    input: Option<&str>,
) -> Result<(), NetLockError> {
    let path = find_tool(tool).ok_or(NetLockError::ToolMissing {
        method,
        tool,
        others: others(method),
    })?;
    let shown = match input.and_then(|i| i.lines().find(|l| !l.starts_with('*'))) {
        Some(first) => format!("{tool} {} <<< {first}...", args.join(" ")),
        None => format!("{tool} {}", args.join(" ")),
    };
    debug!("\tRunning [{shown}]");
    let mut child = Command::new(&path)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetLockError::Spawn {
            method,
            tool,
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        // A tool that stops reading (it failed) closes the pipe: its
        // stderr, read below, says why.
        if let Err(e) = stdin.write_all(text.as_bytes()) {
            debug!("writing to {tool}: {e}");
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NetLockError::Spawn {
            method,
            tool,
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetLockError::ToolFailed {
        method,
        cmd: shown,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn conn(l: &str, r: &str) -> Conn {
        Conn {
            local: l.parse().unwrap(),
            remote: r.parse().unwrap(),
        }
    }

    #[test]
    fn method_names_and_inventory_values() {
        for (m, v, n) in [
            (Method::Iptables, 0, "iptables"),
            (Method::Nftables, 1, "nftables"),
            (Method::Skip, 2, "skip"),
        ] {
            assert_eq!(m.inventory_value(), v);
            assert_eq!(Method::from_inventory(v), Some(m));
            assert_eq!(n.parse::<Method>().unwrap(), m);
            assert_eq!(m.to_string(), n);
        }
        assert_eq!("none".parse::<Method>().unwrap(), Method::Skip);
        assert!("ipfw".parse::<Method>().is_err());
        assert_eq!(Method::from_inventory(3), None);
        assert_eq!(Method::from_inventory_field(None), Some(Method::Iptables));
        assert_eq!(Method::default(), Method::Iptables);
        assert_eq!(
            restore_method(Some(1), Some(Method::Iptables)).unwrap(),
            Method::Nftables
        );
        assert_eq!(restore_method(None, None).unwrap(), Method::Iptables);
        assert!(restore_method(Some(7), None).is_err());
    }

    #[test]
    fn missing_tool_is_named() {
        let e = run(Method::Nftables, "crust-no-such-nft", &[], None).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, NetLockError::ToolMissing { .. }), "{msg}");
        assert!(msg.contains("`crust-no-such-nft` was not found"), "{msg}");
        assert!(msg.contains("--network-lock iptables or skip"), "{msg}");
        let e = run(Method::Iptables, "false", &[], Some("x\n")).unwrap_err();
        assert!(matches!(e, NetLockError::ToolFailed { .. }), "{e}");
    }

    #[test]
    fn skip_and_empty_do_nothing() {
        let c = [conn("127.0.0.1:1", "127.0.0.1:2")];
        lock(Method::Skip, &c).unwrap();
        unlock(Method::Skip, &c).unwrap();
        lock(Method::Iptables, &[]).unwrap();
        unlock(Method::Nftables, &[]).unwrap();
    }
}
