//! The parts of a network namespace CRIU 4.2 saves with outside tools, in
//! their own formats: `ip addr save`, `ip route save`, `ip -6 route save`,
//! `ip rule save` (iproute2's binary dumps: a magic, then rtnetlink
//! messages), `iptables-save` / `ip6tables-save` (the legacy backend's
//! text) and `nft list ruleset`. Each tool runs as a child of a crust
//! thread that joined the namespace, so it acts on that namespace.

use std::io::{Seek, SeekFrom, Write};
use std::process::{Command, Stdio};

/// One tool's dump, for one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Addr,
    Route,
    Route6,
    Rule,
    Iptables,
    Ip6tables,
    Nftables,
}

impl Part {
    pub(super) const ALL: [Part; 7] = [
        Part::Addr,
        Part::Route,
        Part::Route6,
        Part::Rule,
        Part::Iptables,
        Part::Ip6tables,
        Part::Nftables,
    ];

    /// A firewall's rules (iptables, ip6tables, nftables), which may
    /// hold the network lock of the images' dump.
    pub(super) fn is_firewall(self) -> bool {
        matches!(self, Part::Iptables | Part::Ip6tables | Part::Nftables)
    }

    /// The magic iproute2 starts its dumps with (ip/ipaddress.c,
    /// ip/iproute.c, ip/iprule.c), checked before a dump is restored.
    fn magic(self) -> Option<u32> {
        match self {
            Part::Addr => Some(0x4736_1222),
            Part::Route | Part::Route6 => Some(0x4531_1224),
            Part::Rule => Some(0x7170_6986),
            _ => None,
        }
    }
}

/// A tool that failed: what it was, why.
#[derive(Debug)]
pub(super) struct ToolFailed {
    pub what: String,
    pub why: String,
}

fn run(argv: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, ToolFailed> {
    let what = argv.join(" ");
    let fail = |why: String| ToolFailed {
        what: what.clone(),
        why,
    };
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| fail("no program".into()))?;
    // `ip ... restore` seeks in its input: give it an unnamed file.
    let stdin = match input {
        Some(data) => {
            Stdio::from(seekable(data).map_err(|e| fail(format!("cannot write its input: {e}")))?)
        }
        None => Stdio::null(),
    };
    let out = Command::new(prog)
        .args(args)
        .stdin(stdin)
        .output()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// An unnamed temporary file holding `data`, at its start.
fn seekable(data: &[u8]) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(std::env::temp_dir())?;
    f.write_all(data)?;
    f.seek(SeekFrom::Start(0))?;
    Ok(f)
}

/// Whether `prog` exists and is not the nf_tables flavour of iptables
/// (whose rules `nft list ruleset` already holds; CRIU's rule).
fn legacy(prog: &str) -> bool {
    match run(&[prog, "--version"], None) {
        Ok(v) => !String::from_utf8_lossy(&v).contains("nf_tables"),
        Err(_) => false,
    }
}

/// The iptables binary CRIU 4.2 would use for `part` (save or restore),
/// if any: `ip[6]tables-save` unless it is nf_tables', then the
/// `-legacy-` one.
fn iptables_bin(v6: bool, restore: bool) -> Option<String> {
    let base = if v6 { "ip6tables" } else { "iptables" };
    let verb = if restore { "restore" } else { "save" };
    [format!("{base}-{verb}"), format!("{base}-legacy-{verb}")]
        .into_iter()
        .find(|p| legacy(p))
}

/// Dump `part` of the namespace the caller is in. `None`: nothing to save
/// (no such tool, or `ip rule save` unsupported, as CRIU tolerates).
pub(super) fn save(part: Part) -> Result<Option<Vec<u8>>, ToolFailed> {
    match part {
        Part::Addr => run(&["ip", "addr", "save"], None).map(Some),
        Part::Route => run(&["ip", "route", "save"], None).map(Some),
        Part::Route6 => run(&["ip", "-6", "route", "save"], None).map(Some),
        Part::Rule => Ok(run(&["ip", "rule", "save"], None).ok()),
        Part::Iptables | Part::Ip6tables => match iptables_bin(part == Part::Ip6tables, false) {
            Some(b) => run(&[b.as_str()], None).map(Some),
            None => Ok(None),
        },
        Part::Nftables => {
            if run(&["nft", "--version"], None).is_err() {
                return Ok(None);
            }
            run(&["nft", "list", "ruleset"], None).map(Some)
        }
    }
}

/// Why the dump `data` of `part` cannot be given to its tool.
pub(super) fn check(part: Part, data: &[u8]) -> Result<(), String> {
    if data.is_empty() {
        return Ok(());
    }
    match part.magic() {
        Some(m) => {
            let got = crust_netlink::u32_at(data, 0);
            if got != Some(m) {
                return Err(format!(
                    "it does not start with iproute2's magic {m:#x} (found {got:x?})"
                ));
            }
        }
        None => {
            if std::str::from_utf8(data).is_err() {
                return Err("it is not text".into());
            }
        }
    }
    Ok(())
}

/// Restore `part` from `data` (not empty) into the namespace the caller is
/// in.
pub(super) fn restore(part: Part, data: &[u8]) -> Result<(), ToolFailed> {
    let no_bin = |v6: bool| ToolFailed {
        what: format!("{} restore", if v6 { "ip6tables" } else { "iptables" }),
        why: "the image holds legacy iptables rules and no legacy iptables-restore is installed"
            .into(),
    };
    match part {
        Part::Addr => run(&["ip", "addr", "restore"], Some(data)).map(drop),
        Part::Route | Part::Route6 => {
            let data = super::routes::without_state_flags(data);
            run(&["ip", "route", "restore"], Some(&data)).map(drop)
        }
        Part::Rule => {
            // A new namespace has the kernel's three default rules: drop
            // them so the image's do not clash (CRIU does the same).
            let _ = run(&["ip", "rule", "flush"], None);
            let _ = run(&["ip", "rule", "delete", "table", "local"], None);
            run(&["ip", "rule", "restore"], Some(data)).map(drop)
        }
        Part::Iptables | Part::Ip6tables => {
            let v6 = part == Part::Ip6tables;
            let b = iptables_bin(v6, true).ok_or_else(|| no_bin(v6))?;
            run(&[b.as_str(), "-w"], Some(data)).map(drop)
        }
        Part::Nftables => run(&["nft", "-f", "-"], Some(data)).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_iproute2_magic() {
        let addr = 0x4736_1222u32.to_ne_bytes();
        assert!(check(Part::Addr, &addr).is_ok());
        assert!(check(Part::Route, &addr).is_err());
        assert!(check(Part::Addr, &[]).is_ok());
        assert!(check(Part::Nftables, b"table ip filter {}\n").is_ok());
        assert!(check(Part::Iptables, &[0xff, 0xfe]).is_err());
    }
}
