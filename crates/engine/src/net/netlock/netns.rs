//! Locking a whole network namespace: the tree's own. As CRIU does for a
//! tree with a network namespace of its own, the namespace is locked as a
//! whole from inside instead of connection by connection in crust's: with
//! iptables, a chain `CRIU` that accepts packets marked [`SOCCR_MARK`] and
//! drops every other one, jumped to first from INPUT and OUTPUT (IPv4 and,
//! when ip6tables is there, IPv6), so a restore by CRIU removes it as its
//! own. With nftables, a table `inet CRIU-crust-netns` inside the
//! namespace with input and output chains whose policy is drop and that
//! accept [`SOCCR_MARK`] packets (the layout of CRIU's own namespace lock).
//! The namespace is locked whether or not it has connections, as CRIU
//! does: nothing of it talks until the restore.
//!
//! Both run from a crust thread that joined the namespace (the tools it
//! starts are in it).

use super::*;
use std::fs::File;

/// The chain the lock jumps to (CRIU's name).
const CHAIN: &str = "CRIU";

/// The iptables-restore script that makes the chain and jumps to it.
fn lock_script() -> String {
    format!(
        "*filter\n:{CHAIN} - [0:0]\n-I INPUT -j {CHAIN}\n-I OUTPUT -j {CHAIN}\n\
         -A {CHAIN} -m mark --mark 0x{SOCCR_MARK:X} -j ACCEPT\n-A {CHAIN} -j DROP\nCOMMIT\n"
    )
}

/// The script that removes the jumps, then the one that removes the chain.
fn unlock_scripts() -> [String; 2] {
    [
        format!("*filter\n:{CHAIN} - [0:0]\n-D INPUT -j {CHAIN}\n-D OUTPUT -j {CHAIN}\nCOMMIT\n"),
        format!("*filter\n:{CHAIN} - [0:0]\n-X {CHAIN}\nCOMMIT\n"),
    ]
}

/// The iptables-restore script of [`with_marked_passing`]: the lock's
/// chain with its accept of marked packets, and no drop.
fn pass_script() -> String {
    format!(
        "*filter\n:{CHAIN} - [0:0]\n-I INPUT -j {CHAIN}\n-I OUTPUT -j {CHAIN}\n\
         -A {CHAIN} -m mark --mark 0x{SOCCR_MARK:X} -j ACCEPT\nCOMMIT\n"
    )
}

/// Run `f` on this thread, which is in the tree's network namespace (its
/// lock lifted), while packets marked [`SOCCR_MARK`] get past the
/// namespace's own iptables rules: crust's crafted segments that replay
/// FINs and ACKs into its connections. CRIU's lock, which its images hold
/// with the namespace's rules, does this for CRIU; crust's images hold the
/// rules without the lock, so a rule of the tree that drops a
/// connection's port (zdtm socket-tcp-closed-last-ack) would drop them.
/// The chain has the lock's name, so an unlock removes it should crust
/// die in between. With nftables nothing is added: an accept in one table
/// does not get past another's drop.
pub fn with_marked_passing<T>(
    method: Method,
    f: impl FnOnce() -> Result<T, crate::Error>,
) -> Result<T, crate::Error> {
    if !matches!(method, Method::Iptables) {
        return f();
    }
    let script = pass_script();
    let mut done = Vec::new();
    for (tool, restore) in families() {
        match run(method, restore, &["-w", "--noflush"], Some(&script)) {
            Ok(()) => done.push((tool, restore)),
            Err(e) => warn!("crust's crafted segments may meet the namespace's {tool} rules: {e}"),
        }
    }
    let out = f();
    for (tool, restore) in done {
        ipt_unlock_ns_one(tool, restore);
    }
    out
}

/// The nftables table of the namespace lock.
const NFT_NS_TABLE: &str = "inet CRIU-crust-netns";

/// The nft script that makes the table of the namespace lock.
fn nft_lock_script() -> String {
    let t = NFT_NS_TABLE;
    let mut s = format!("create table {t}\n");
    for hook in ["output", "input"] {
        s += &format!(
            "add chain {t} {hook} {{ type filter hook {hook} priority 0; policy drop; }}\n\
             add rule {t} {hook} meta mark 0x{SOCCR_MARK:X} accept\n"
        );
    }
    s
}

/// The (listing tool, restore tool) pairs to use: IPv4, and IPv6 when
/// ip6tables-restore is installed.
fn families() -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("iptables", "iptables-restore")];
    if find_tool("ip6tables-restore").is_some() {
        v.push(("ip6tables", "ip6tables-restore"));
    }
    v
}

/// Whether the lock chain exists (`iptables -w -S CRIU` succeeds).
fn has_chain(tool: &'static str) -> bool {
    run(
        Method::Iptables,
        tool,
        &["-w", "-t", "filter", "-S", CHAIN],
        None,
    )
    .is_ok()
}

fn ipt_lock_ns() -> Result<(), NetLockError> {
    let script = lock_script();
    let mut done = Vec::new();
    for (tool, restore) in families() {
        if let Err(e) = run(
            Method::Iptables,
            restore,
            &["-w", "--noflush"],
            Some(&script),
        ) {
            for (t, r) in done {
                ipt_unlock_ns_one(t, r);
            }
            return Err(e);
        }
        done.push((tool, restore));
    }
    Ok(())
}

/// Remove the lock of one family, if it is there (warned, never fatal:
/// the namespace may never have been locked, as after a dump by a tool
/// that did not lock it).
fn ipt_unlock_ns_one(tool: &'static str, restore: &'static str) {
    if !has_chain(tool) {
        debug!("no {CHAIN} chain for {tool} in the namespace: nothing to unlock");
        return;
    }
    let [jumps, chain] = unlock_scripts();
    // A second pass for the jumps: with iptables-nft, a jump left over
    // would keep the chain from going.
    for script in [&jumps, &jumps, &chain] {
        if let Err(e) = run(
            Method::Iptables,
            restore,
            &["-w", "--noflush"],
            Some(script),
        ) {
            debug!("{e}");
        }
    }
    if has_chain(tool) {
        warn!("the {CHAIN} chain of {tool} is still in the tree's network namespace");
    }
}

/// Run `f` in a thread that joined network namespace `ns`.
fn in_ns<T: Send>(
    ns: &File,
    f: impl FnOnce() -> Result<T, crate::Error> + Send,
) -> Result<T, crate::Error> {
    crate::net::in_netns_file(ns, f)
}

/// Lock the network namespace `ns` (the tree's own), whose TCP connections
/// are `conns`, with `method`.
pub fn lock_netns(method: Method, ns: &File, conns: &[Conn]) -> Result<(), crate::Error> {
    match method {
        Method::Skip => Ok(()),
        Method::Nftables => {
            let _ = conns;
            in_ns(ns, || {
                nswatch::start(method, "", "", NFT_NS_TABLE).map_err(crate::Error::NetLock)?;
                run(method, "nft", &["-f", "-"], Some(&nft_lock_script())).map_err(|e| {
                    nswatch::dismiss();
                    crate::Error::NetLock(e)
                })
            })?;
            info!("Locked the tree's network namespace (nftables table {NFT_NS_TABLE})");
            Ok(())
        }
        Method::Iptables => {
            in_ns(ns, || {
                let [jumps, chain] = unlock_scripts();
                nswatch::start(method, &jumps, &chain, "").map_err(crate::Error::NetLock)?;
                ipt_lock_ns().map_err(|e| {
                    nswatch::dismiss();
                    crate::Error::NetLock(e)
                })
            })?;
            info!("Locked the tree's network namespace (iptables chain {CHAIN})");
            Ok(())
        }
    }
}

/// Lift the lock of [`lock_netns`] (or CRIU's): what is not there is
/// passed over. Its watchdog is dismissed once it is lifted (on failure it
/// stays, to try again when crust exits).
pub fn unlock_netns(method: Method, ns: &File, conns: &[Conn]) -> Result<(), crate::Error> {
    let r = unlock_netns_now(method, ns, conns);
    if r.is_ok() {
        nswatch::dismiss();
    }
    r
}

fn unlock_netns_now(method: Method, ns: &File, conns: &[Conn]) -> Result<(), crate::Error> {
    match method {
        Method::Skip => Ok(()),
        Method::Nftables => in_ns(ns, || {
            // The table of crust's namespace lock, if there, and the
            // connections' elements of an older crust's.
            let listed = run(method, "nft", &["list", "table", NFT_NS_TABLE], None).is_ok();
            if listed {
                run(method, "nft", &["delete", "table", NFT_NS_TABLE], None)
                    .map_err(crate::Error::NetLock)?;
                info!("Unlocked the tree's network namespace");
            }
            if !conns.is_empty() {
                unlock(method, conns)?;
            }
            // CRIU's iptables lock, if its images brought it back.
            for (tool, restore) in families() {
                ipt_unlock_ns_one(tool, restore);
            }
            Ok(())
        }),
        Method::Iptables => in_ns(ns, || {
            for (tool, restore) in families() {
                ipt_unlock_ns_one(tool, restore);
            }
            info!("Unlocked the tree's network namespace");
            Ok(())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_make_and_remove_the_criu_chain() {
        let l = lock_script();
        assert!(l.starts_with("*filter\n:CRIU - [0:0]\n-I INPUT -j CRIU\n-I OUTPUT -j CRIU\n"));
        assert!(l.contains("-A CRIU -m mark --mark 0xC114 -j ACCEPT\n-A CRIU -j DROP\nCOMMIT\n"));
        let p = pass_script();
        assert!(p.contains("-A CRIU -m mark --mark 0xC114 -j ACCEPT\nCOMMIT\n"));
        assert!(!p.contains("DROP"), "{p}");
        let [j, c] = unlock_scripts();
        assert!(j.contains("-D INPUT -j CRIU\n-D OUTPUT -j CRIU\n"));
        assert!(c.contains("-X CRIU\n"));
    }
}
