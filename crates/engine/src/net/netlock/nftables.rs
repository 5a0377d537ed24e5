//! `--network-lock nftables`: one table per set of locked connections,
//! `inet CRIU-crust-netlock-<hash>`, with its sets of connections and its
//! drop chains in the layout of CRIU's table. The name comes from the
//! connections alone, so the restore (another process) finds it from the
//! images: locking is one `nft -f -` transaction, unlocking one `delete
//! table`. Tables of older crust dumps (the shared `CRIU-crust-netlock`)
//! and of CRIU's dumps are unlocked element by element.

use super::*;

/// The commands that make the table `table`, its sets and chains, or
/// reset the chains of an existing one (all in one transaction, so a
/// second lock of the same connections is harmless).
fn nft_table_script(table: &str) -> String {
    let t = format!("inet {table}");
    let mut s = format!("add table {t}\n");
    for (set, ty) in [("conns4", "ipv4_addr"), ("conns6", "ipv6_addr")] {
        s.push_str(&format!(
            "add set {t} {set} {{ type {ty} . inet_service . {ty} . inet_service; }}\n"
        ));
    }
    for chain in ["input", "output"] {
        s.push_str(&format!(
            "add chain {t} {chain} {{ type filter hook {chain} priority 0; }}\n"
        ));
        s.push_str(&format!("flush chain {t} {chain}\n"));
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

/// 32 bits of FNV-1a over `bytes`: stable across builds and versions (a
/// dump and its restore may be run by different crust binaries).
fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// The run id of the lock of `ends`: `crust-netlock-` and 7 hex digits of
/// a hash of its elements in order, whatever the order of `ends`. CRIU's
/// table `CRIU-<run id>` fits the 31 bytes CRIU gives `inet CRIU-...`.
pub(super) fn nft_ends_run_id(ends: &[Ends]) -> String {
    let mut elems = nft_all_elements(ends);
    elems.sort();
    let mut text = String::new();
    for (set, x) in &elems {
        text.push_str(set);
        text.push(' ');
        text.push_str(x);
        text.push('\n');
    }
    format!("{NFT_RUN_ID}-{:07x}", fnv32(text.as_bytes()) >> 4)
}

/// The table that locks `ends` (see [`nft_ends_run_id`]).
fn nft_ends_table(ends: &[Ends]) -> String {
    format!("CRIU-{}", nft_ends_run_id(ends))
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
    while !rest.is_empty() {
        let (line, next) = rest.split_once('\n').unwrap_or((rest, ""));
        if let Some(name) = line
            .trim()
            .strip_prefix("set ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            set = name.to_string();
        }
        if line.contains("elements = {") {
            // The elements run to the closing brace, over lines.
            let Some((_, tail)) = rest.split_once("elements = {") else {
                break;
            };
            let Some((body, after)) = tail.split_once('}') else {
                break;
            };
            for x in body.split(',') {
                let x = x.split_whitespace().collect::<Vec<_>>().join(" ");
                if !x.is_empty() {
                    out.push((set.clone(), x));
                }
            }
            rest = after;
            continue;
        }
        rest = next;
    }
    out
}

pub(super) fn nft_lock(ends: &[Ends]) -> Result<(), NetLockError> {
    // One transaction: the table (made or reset), its rules, the elements.
    let table = nft_ends_table(ends);
    let script =
        nft_table_script(&table) + &nft_elements_script(&table, &nft_all_elements(ends), "add");
    run(Method::Nftables, "nft", &["-f", "-"], Some(&script))?;
    debug!("network lock: nftables table inet {table}");
    Ok(())
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

pub(super) fn nft_unlock(ends: &[Ends]) -> Result<(), NetLockError> {
    // The table of these connections goes in one command.
    let table = nft_ends_table(ends);
    match run(
        Method::Nftables,
        "nft",
        &["delete", "table", "inet", &table],
        None,
    ) {
        Ok(()) => return Ok(()),
        Err(e @ NetLockError::ToolMissing { .. }) => return Err(e),
        Err(e) => debug!("{e}; looking for the connections in other tables"),
    }
    nft_unlock_elements(ends)
}

/// Unlock `ends` element by element: in the table older crust dumps shared
/// ([`NFT_TABLE`]) and in CRIU's tables; a table goes once it is empty.
fn nft_unlock_elements(ends: &[Ends]) -> Result<(), NetLockError> {
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
    use crate::net::netlock::tests::conn;

    #[test]
    fn nftables_script() {
        let t = nft_table_script(NFT_TABLE);
        assert!(t.starts_with("add table inet CRIU-crust-netlock\n"));
        assert!(t.contains("flush chain inet CRIU-crust-netlock output\n"));
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
    fn nftables_table_named_after_the_connections() {
        let a = normalize(&[
            conn("127.0.0.1:47013", "127.0.0.1:47011"),
            conn("[::1]:5000", "[::1]:6000"),
        ])
        .unwrap();
        let b: Vec<Ends> = a.iter().rev().copied().collect();
        let id = nft_ends_run_id(&a);
        // The same connections in another order (the restore's): the
        // same table.
        assert_eq!(id, nft_ends_run_id(&b));
        assert!(id.starts_with("crust-netlock-"), "{id}");
        // CRIU's "inet CRIU-<run id>" in 31 bytes: the table CRIU deletes
        // is the whole name.
        assert_eq!(format!("inet CRIU-{id}").len(), 31);
        assert_eq!(nft_ends_table(&a), format!("CRIU-{id}"));
        assert!(nft_ends_table(&a).starts_with(NFT_TABLE));
        assert_ne!(id, nft_ends_run_id(&a[..1]));
        assert_eq!(nft_run_id(&[]), NFT_RUN_ID);
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
}
