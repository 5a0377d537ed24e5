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
//! * [`Method::Nftables`] (1): the table `inet CRIU-crust-netlock` with
//!   the sets `conns4` and `conns6` (`addr . port . addr . port`, both
//!   directions of each connection) and two base chains, `input` and
//!   `output` (filter hooks, priority 0), that accept [`SOCCR_MARK`] packets
//!   and drop those whose `saddr . sport . daddr . dport` is in a set: the
//!   layout of CRIU's table. CRIU keeps one such table per dump, named
//!   `CRIU-<run id>`; crust shares one table among dumps so that a later
//!   process can unlock from the connection list alone: [`unlock`] deletes
//!   its elements, and the table once both sets are empty. It also takes
//!   them out of CRIU's tables (images dumped by CRIU), and crust's dumps
//!   record the run id [`NFT_RUN_ID`] that makes CRIU's restore delete
//!   crust's table.
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
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;

use log::{debug, info, warn};

/// The firewall mark of the packets crust sends itself while connections
/// are locked (CRIU's `SOCCR_MARK`): the lock lets them pass.
pub const SOCCR_MARK: u32 = 0xC114;

/// The nftables table (family `inet`) that holds crust's locks. CRIU names
/// the table of a dump `CRIU-<run id>`, the run id being `dump_criu_run_id`
/// of its inventory; crust's dumps with nftables record [`NFT_RUN_ID`]
/// there, so that CRIU's restore of them deletes this table.
pub const NFT_TABLE: &str = "CRIU-crust-netlock";

/// The `dump_criu_run_id` crust records in `inventory.img` when it locked
/// with nftables: CRIU derives [`NFT_TABLE`] from it.
pub const NFT_RUN_ID: &str = "crust-netlock";

/// How connections are locked (`--network-lock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// iptables/ip6tables DROP rules per connection (CRIU's default).
    #[default]
    Iptables,
    /// An nftables table with sets of connections.
    Nftables,
    /// No locking at all.
    Skip,
}

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
    let v4 = Conn {
        local: "127.0.0.1:1".parse().expect("literal address"),
        remote: "127.0.0.1:2".parse().expect("literal address"),
    };
    let v6 = Conn {
        local: "[::1]:1".parse().expect("literal address"),
        remote: "[::1]:2".parse().expect("literal address"),
    };
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

// ---------------------------------------------------------------------------
// iptables.

/// The match part of one DROP rule, after the chain: CRIU 4.2's shape.
/// `input`: the rule on INPUT, for packets from the peer; else the rule on
/// OUTPUT, for packets to it.
fn ipt_rule(e: &Ends, input: bool) -> Vec<String> {
    let (chain, src, sport, dst, dport) = if input {
        ("INPUT", e.remote, e.rport, e.local, e.lport)
    } else {
        ("OUTPUT", e.local, e.lport, e.remote, e.rport)
    };
    [
        chain,
        "--protocol",
        "tcp",
        "-m",
        "mark",
        "!",
        "--mark",
        "0xC114",
        "--source",
        &src.to_string(),
        "--sport",
        &sport.to_string(),
        "--destination",
        &dst.to_string(),
        "--dport",
        &dport.to_string(),
        "-j",
        "DROP",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The arguments of the `iptables`/`ip6tables` run that inserts (`lock`) or
/// deletes one rule: `-w -t filter -I|-D CHAIN ...`.
fn ipt_args(e: &Ends, input: bool, lock: bool) -> Vec<String> {
    let mut v: Vec<String> = ["-w", "-t", "filter", if lock { "-I" } else { "-D" }]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(ipt_rule(e, input));
    v
}

/// The rules of `ends`, INPUT then OUTPUT for each, as CRIU orders them.
fn ipt_rules(ends: &[Ends]) -> impl Iterator<Item = (&Ends, bool)> {
    ends.iter().flat_map(|e| [(e, true), (e, false)])
}

/// An `iptables-restore --noflush` script that inserts or deletes `rules`.
///
/// Deletions go in the reverse order of the insertions: `-I` put the last
/// rule first, and iptables looks for a rule to delete from the top of its
/// chain, so each is found at once (1000 connections: 0.08 s instead of
/// 2 s with iptables-nft).
fn ipt_script<'a>(rules: impl Iterator<Item = (&'a Ends, bool)>, lock: bool) -> String {
    let mut rules: Vec<(&Ends, bool)> = rules.collect();
    if !lock {
        rules.reverse();
    }
    let mut s = String::from("*filter\n");
    for (e, input) in rules {
        s.push_str(if lock { "-I " } else { "-D " });
        s.push_str(&ipt_rule(e, input).join(" "));
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

fn ipt_tools(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        ("ip6tables", "ip6tables-restore")
    } else {
        ("iptables", "iptables-restore")
    }
}

/// Insert (or delete) the rules of `ends`, which are all of one family, in
/// one transaction; without the restore tool, one rule at a time (undoing
/// the inserted ones if one fails).
///
/// The rules go in a canonical order (sorted by connection), whatever the
/// order of `ends`: the restore lists the connections in another order than
/// the dump, and deleting in the reverse order of insertion is what keeps
/// unlocking fast.
fn ipt_apply(ends: &[Ends], lock: bool) -> Result<(), NetLockError> {
    let mut ends = ends.to_vec();
    ends.sort();
    let ends = &ends[..];
    let Some(first) = ends.first() else {
        return Ok(());
    };
    let (tool, restore_tool) = ipt_tools(first.v6());
    let m = Method::Iptables;
    if find_tool(restore_tool).is_some() {
        let script = ipt_script(ipt_rules(ends), lock);
        match run(m, restore_tool, &["-w", "--noflush"], Some(&script)) {
            Ok(()) => return Ok(()),
            Err(e) if lock => return Err(e),
            // Some rule is already gone: delete the others one by one.
            Err(e) => debug!("{e}; deleting rule by rule"),
        }
    }
    let mut done: Vec<(&Ends, bool)> = Vec::new();
    let mut first_err = None;
    for (e, input) in ipt_rules(ends) {
        let args = ipt_args(e, input, lock);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match run(m, tool, &args, None) {
            Ok(()) => done.push((e, input)),
            Err(err) if lock => {
                for (e, input) in done.into_iter().rev() {
                    let args = ipt_args(e, input, false);
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    if let Err(u) = run(m, tool, &args, None) {
                        warn!("undoing a network lock rule: {u}");
                    }
                }
                return Err(err);
            }
            Err(NetLockError::ToolFailed { stderr, .. })
                if stderr.contains("does a matching rule exist") =>
            {
                warn!("network lock rule {} was already gone", args[4..].join(" "));
            }
            Err(err) => {
                warn!("{err}");
                first_err.get_or_insert(err);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn ipt_lock(ends: &[Ends]) -> Result<(), NetLockError> {
    let (v6, v4): (Vec<Ends>, Vec<Ends>) = ends.iter().partition(|e| e.v6());
    ipt_apply(&v4, true)?;
    if let Err(e) = ipt_apply(&v6, true) {
        if let Err(u) = ipt_apply(&v4, false) {
            warn!("undoing the IPv4 network lock: {u}");
        }
        return Err(e);
    }
    Ok(())
}

fn ipt_unlock(ends: &[Ends]) -> Result<(), NetLockError> {
    let (v6, v4): (Vec<Ends>, Vec<Ends>) = ends.iter().partition(|e| e.v6());
    let r4 = ipt_apply(&v4, false);
    let r6 = ipt_apply(&v6, false);
    r4.and(r6)
}

// ---------------------------------------------------------------------------
// nftables.

/// The commands that create the table `table`, its sets and chains.
fn nft_table_script(table: &str) -> String {
    let t = format!("inet {table}");
    let mut s = format!("create table {t}\n");
    for (set, ty) in [("conns4", "ipv4_addr"), ("conns6", "ipv6_addr")] {
        s.push_str(&format!(
            "add set {t} {set} {{ type {ty} . inet_service . {ty} . inet_service; }}\n"
        ));
    }
    for chain in ["input", "output"] {
        s.push_str(&format!(
            "add chain {t} {chain} {{ type filter hook {chain} priority 0; }}\n"
        ));
        s.push_str(&format!(
            "add rule {t} {chain} meta mark {SOCCR_MARK:#x} accept\n"
        ));
        for (set, ip) in [("conns4", "ip"), ("conns6", "ip6")] {
            s.push_str(&format!(
                "add rule {t} {chain} {ip} saddr . tcp sport . {ip} daddr . tcp dport @{set} drop\n"
            ));
        }
    }
    s
}

/// The set elements of one connection: its packets both ways, as
/// `saddr . sport . daddr . dport`.
fn nft_elements(e: &Ends) -> [String; 2] {
    [
        format!("{} . {} . {} . {}", e.remote, e.rport, e.local, e.lport),
        format!("{} . {} . {} . {}", e.local, e.lport, e.remote, e.rport),
    ]
}

fn nft_set(e: &Ends) -> &'static str {
    if e.v6() {
        "conns6"
    } else {
        "conns4"
    }
}

/// The elements of `ends`, each once, as (set, element).
fn nft_all_elements(ends: &[Ends]) -> Vec<(&'static str, String)> {
    // Both ends of a connection within the tree give the same two
    // elements: each goes in once.
    let mut seen = std::collections::HashSet::new();
    ends.iter()
        .flat_map(|e| nft_elements(e).map(|x| (nft_set(e), x)))
        .filter(|x| seen.insert(x.clone()))
        .collect()
}

/// `add element` or `delete element` commands for `elems` in `table`, one
/// per set.
fn nft_elements_script(table: &str, elems: &[(&str, String)], verb: &str) -> String {
    let mut s = String::new();
    for set in ["conns4", "conns6"] {
        let these: Vec<&str> = elems
            .iter()
            .filter(|(s, _)| *s == set)
            .map(|(_, x)| x.as_str())
            .collect();
        if !these.is_empty() {
            s.push_str(&format!(
                "{verb} element inet {table} {set} {{ {} }}\n",
                these.join(", ")
            ));
        }
    }
    s
}

/// The output of `nft args` (None if it fails, e.g. no such table).
fn nft_output(args: &[&str]) -> Result<Option<String>, NetLockError> {
    let Some(path) = find_tool("nft") else {
        return Err(NetLockError::ToolMissing {
            method: Method::Nftables,
            tool: "nft",
            others: others(Method::Nftables),
        });
    };
    let out = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map_err(|source| NetLockError::Spawn {
            method: Method::Nftables,
            tool: "nft",
            source,
        })?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// `nft list table inet TABLE`, or None if there is no such table.
fn nft_list_table(table: &str) -> Result<Option<String>, NetLockError> {
    nft_output(&["list", "table", "inet", table])
}

/// The set elements in a `nft list table` listing, as (set, element).
fn nft_parse_elements(listing: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut set = String::new();
    let mut rest = listing;
    while let Some(line_end) = rest.find('\n').or((!rest.is_empty()).then_some(rest.len())) {
        let line = rest[..line_end].trim();
        if let Some(name) = line.strip_prefix("set ").and_then(|l| l.strip_suffix(" {")) {
            set = name.to_string();
        }
        if let Some(start) = rest[..line_end].find("elements = {") {
            let body_start = start + "elements = {".len();
            let Some(len) = rest[body_start..].find('}') else {
                break;
            };
            for x in rest[body_start..body_start + len].split(',') {
                let x = x.split_whitespace().collect::<Vec<_>>().join(" ");
                if !x.is_empty() {
                    out.push((set.clone(), x));
                }
            }
            rest = &rest[body_start + len + 1..];
            continue;
        }
        rest = rest.get(line_end + 1..).unwrap_or("");
    }
    out
}

fn nft_lock(ends: &[Ends]) -> Result<(), NetLockError> {
    let add = nft_elements_script(NFT_TABLE, &nft_all_elements(ends), "add");
    // The table may appear or vanish under us (another crust): try twice.
    let mut last = None;
    for _ in 0..2 {
        let script = if nft_list_table(NFT_TABLE)?.is_some() {
            add.clone()
        } else {
            nft_table_script(NFT_TABLE) + &add
        };
        match run(Method::Nftables, "nft", &["-f", "-"], Some(&script)) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once"))
}

/// Delete `elems` from `table`, all at once or, if that fails (some are
/// gone), one by one. Returns the first failure other than a missing
/// element.
fn nft_delete_elements(table: &str, elems: &[(&str, String)]) -> Option<NetLockError> {
    let m = Method::Nftables;
    let script = nft_elements_script(table, elems, "delete");
    let Err(e) = run(m, "nft", &["-f", "-"], Some(&script)) else {
        return None;
    };
    debug!("{e}; deleting element by element");
    let mut first_err = None;
    for one in elems {
        let cmd = nft_elements_script(table, std::slice::from_ref(one), "delete");
        match run(m, "nft", &["-f", "-"], Some(&cmd)) {
            Ok(()) => {}
            Err(NetLockError::ToolFailed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                warn!("network lock element {} was already gone", one.1);
            }
            Err(err) => {
                warn!("{err}");
                first_err.get_or_insert(err);
            }
        }
    }
    first_err
}

/// Delete `table` if its sets hold nothing any more.
fn nft_drop_if_empty(table: &str) -> Result<(), NetLockError> {
    if let Some(listing) = nft_list_table(table)? {
        if nft_parse_elements(&listing).is_empty() {
            run(
                Method::Nftables,
                "nft",
                &["delete", "table", "inet", table],
                None,
            )?;
        }
    }
    Ok(())
}

/// Tables a CRIU dump locked with (`inet CRIU-<run id>`), other than
/// crust's own.
fn nft_criu_tables() -> Result<Vec<String>, NetLockError> {
    let listing = nft_output(&["list", "tables", "inet"])?.unwrap_or_default();
    Ok(listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter(|t| t.starts_with("CRIU-") && *t != NFT_TABLE)
        .map(str::to_string)
        .collect())
}

fn nft_unlock(ends: &[Ends]) -> Result<(), NetLockError> {
    let elems = nft_all_elements(ends);
    let mut first_err = None;
    let mut found = false;
    if nft_list_table(NFT_TABLE)?.is_some() {
        found = true;
        first_err = nft_delete_elements(NFT_TABLE, &elems);
        nft_drop_if_empty(NFT_TABLE)?;
    }
    // Images dumped by CRIU: their connections are in CRIU's table of that
    // dump, which goes once it locks nothing else.
    for table in nft_criu_tables()? {
        let Some(listing) = nft_list_table(&table)? else {
            continue;
        };
        let there = nft_parse_elements(&listing);
        let ours: Vec<(&str, String)> = elems
            .iter()
            .filter(|(s, x)| there.iter().any(|(ts, tx)| ts == s && tx == x))
            .cloned()
            .collect();
        if ours.is_empty() {
            continue;
        }
        found = true;
        info!(
            "network lock: unlocking {} elements of CRIU's table inet {table}",
            ours.len()
        );
        if let Some(e) = nft_delete_elements(&table, &ours) {
            first_err.get_or_insert(e);
        }
        nft_drop_if_empty(&table)?;
    }
    if !found {
        warn!("network lock: no nftables table locks these connections: nothing to unlock");
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(l: &str, r: &str) -> Conn {
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
    fn iptables_rules_have_criu_shape() {
        // The golden dump's client socket: 127.0.0.1:47013 -> :47011.
        let e = normalize(&[conn("127.0.0.1:47013", "127.0.0.1:47011")]).unwrap();
        assert_eq!(
            ipt_args(&e[0], true, true).join(" "),
            "-w -t filter -I INPUT --protocol tcp -m mark ! --mark 0xC114 --source 127.0.0.1 \
             --sport 47011 --destination 127.0.0.1 --dport 47013 -j DROP"
        );
        assert_eq!(
            ipt_args(&e[0], false, true).join(" "),
            "-w -t filter -I OUTPUT --protocol tcp -m mark ! --mark 0xC114 --source 127.0.0.1 \
             --sport 47013 --destination 127.0.0.1 --dport 47011 -j DROP"
        );
        assert_eq!(
            ipt_args(&e[0], true, false)[..5].join(" "),
            "-w -t filter -D INPUT"
        );
        let s = ipt_script(ipt_rules(&e), true);
        assert_eq!(
            s,
            "*filter\n\
             -I INPUT --protocol tcp -m mark ! --mark 0xC114 --source 127.0.0.1 --sport 47011 \
             --destination 127.0.0.1 --dport 47013 -j DROP\n\
             -I OUTPUT --protocol tcp -m mark ! --mark 0xC114 --source 127.0.0.1 --sport 47013 \
             --destination 127.0.0.1 --dport 47011 -j DROP\n\
             COMMIT\n"
        );
        // Deleted last-inserted first.
        let d = ipt_script(ipt_rules(&e), false);
        assert!(d.starts_with("*filter\n-D OUTPUT "), "{d}");
        assert!(d.contains("\n-D INPUT "));
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let e = normalize(&[
            conn("[::1]:5000", "[::1]:6000"),
            conn("[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.2]:9999"),
        ])
        .unwrap();
        assert!(e[0].v6());
        assert!(!e[1].v6());
        assert_eq!(ipt_tools(e[0].v6()).0, "ip6tables");
        assert_eq!(ipt_tools(e[1].v6()).1, "iptables-restore");
        assert!(ipt_args(&e[0], true, true)
            .join(" ")
            .contains("--source ::1 --sport 6000 --destination ::1 --dport 5000"));
        assert!(ipt_args(&e[1], false, true)
            .join(" ")
            .contains("--source 10.0.0.1 --sport 80 --destination 10.0.0.2 --dport 9999"));
        assert!(matches!(
            normalize(&[conn("10.0.0.1:1", "[::1]:2")]),
            Err(NetLockError::MixedFamilies { .. })
        ));
        // A mapped address on one end and IPv4 on the other is still IPv4.
        assert!(!normalize(&[conn("[::ffff:1.2.3.4]:1", "1.2.3.5:2")]).unwrap()[0].v6());
    }

    #[test]
    fn nftables_script() {
        let t = nft_table_script(NFT_TABLE);
        assert!(t.starts_with("create table inet CRIU-crust-netlock\n"));
        // CRIU's table name from the run id crust records: "inet CRIU-%s"
        // cut to 31 characters.
        let criu = format!("inet CRIU-{NFT_RUN_ID}");
        assert_eq!(&criu[..criu.len().min(31)], format!("inet {NFT_TABLE}"));
        let t = nft_table_script("crust-netlock");
        assert!(t.contains(
            "add set inet crust-netlock conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }\n"
        ));
        assert!(t.contains(
            "add chain inet crust-netlock input { type filter hook input priority 0; }\n"
        ));
        assert!(t.contains("add rule inet crust-netlock output meta mark 0xc114 accept\n"));
        assert!(t.contains(
            "add rule inet crust-netlock output ip6 saddr . tcp sport . ip6 daddr . tcp dport @conns6 drop\n"
        ));
        // The mark rule comes before the drop rules of its chain.
        let accept = t.find("input meta mark").unwrap();
        let drop = t.find("input ip saddr").unwrap();
        assert!(accept < drop);
        let e = normalize(&[
            conn("127.0.0.1:47013", "127.0.0.1:47011"),
            conn("[::1]:5000", "[::1]:6000"),
        ])
        .unwrap();
        let all = nft_all_elements(&e);
        assert_eq!(
            nft_elements_script("crust-netlock", &all, "add"),
            "add element inet crust-netlock conns4 { 127.0.0.1 . 47011 . 127.0.0.1 . 47013, \
             127.0.0.1 . 47013 . 127.0.0.1 . 47011 }\n\
             add element inet crust-netlock conns6 { ::1 . 6000 . ::1 . 5000, ::1 . 5000 . ::1 . 6000 }\n"
        );
        assert_eq!(
            nft_elements_script("crust-netlock", &nft_all_elements(&e[..1]), "delete"),
            "delete element inet crust-netlock conns4 { 127.0.0.1 . 47011 . 127.0.0.1 . 47013, \
             127.0.0.1 . 47013 . 127.0.0.1 . 47011 }\n"
        );
    }

    #[test]
    fn nftables_listing_parsed() {
        let listing = "table inet CRIU-e2a95659-2e55-4759-a2 {
\tset conns4 {
\t\ttype ipv4_addr . inet_service . ipv4_addr . inet_service
\t\telements = { 127.0.0.1 . 5001 . 127.0.0.1 . 5000,
\t\t\t     127.0.0.1 . 5000 . 127.0.0.1 . 5001 }
\t}

\tset conns6 {
\t\ttype ipv6_addr . inet_service . ipv6_addr . inet_service
\t\telements = { ::1 . 5000 . ::1 . 5001 }
\t}

\tset empty {
\t\ttype ipv4_addr
\t}

\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\tmeta mark 0x0000c114 accept
\t}
}
";
        let got = nft_parse_elements(listing);
        let want: Vec<(String, String)> = [
            ("conns4", "127.0.0.1 . 5001 . 127.0.0.1 . 5000"),
            ("conns4", "127.0.0.1 . 5000 . 127.0.0.1 . 5001"),
            ("conns6", "::1 . 5000 . ::1 . 5001"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
        assert!(nft_parse_elements("table inet x {\n\tset conns4 {\n\t}\n}\n").is_empty());
        // Our elements are written as nft lists them.
        let e = normalize(&[conn("127.0.0.1:5000", "127.0.0.1:5001")]).unwrap();
        assert_eq!(nft_elements(&e[0])[0], want[0].1);
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
