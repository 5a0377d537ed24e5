//! `crust check`: which kernel features crust needs, and whether this
//! kernel has them. Names follow CRIU's `criu check --feature` where they
//! overlap.

use anyhow::{bail, Result};
use crust_sys::probe::{self, ProbeResult};

use crate::cli::Opts;
use crate::error_chain;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    /// Needed for every dump or restore (CRIU's category 1).
    Required,
    /// Needed only by some trees or options (`--extra`).
    Extra,
    /// Reported, never counted against the verdict: crust has an
    /// alternative.
    Info,
}

struct Feature {
    name: &'static str,
    aliases: &'static [&'static str],
    category: Category,
    probe: fn() -> ProbeResult,
    /// What crust uses it for.
    purpose: &'static str,
    /// Said when the feature is missing.
    note: Option<&'static str>,
}

static FEATURES: &[Feature] = &[
    Feature {
        name: "seize",
        aliases: &["ptrace_seize"],
        category: Category::Required,
        probe: probe::seize,
        purpose: "PTRACE_SEIZE/PTRACE_INTERRUPT to freeze the tree",
        note: None,
    },
    Feature {
        name: "process_vm_readv",
        aliases: &[],
        category: Category::Required,
        probe: probe::process_vm_readv,
        purpose: "copying the memory of dumped tasks",
        note: None,
    },
    Feature {
        name: "map_files",
        aliases: &[],
        category: Category::Required,
        probe: probe::map_files,
        purpose: "/proc/PID/map_files to identify mapped files",
        note: None,
    },
    Feature {
        name: "mnt_id",
        aliases: &[],
        category: Category::Required,
        probe: probe::mnt_id,
        purpose: "mnt_id in /proc/PID/fdinfo",
        note: None,
    },
    Feature {
        name: "kcmp",
        aliases: &[],
        category: Category::Required,
        probe: probe::kcmp,
        purpose: "finding shared files, mm and fs between tasks",
        note: None,
    },
    Feature {
        name: "pidfd_open",
        aliases: &[],
        category: Category::Required,
        probe: probe::pidfd_open,
        purpose: "race-free handles on tasks",
        note: None,
    },
    Feature {
        name: "clone3_set_tid",
        aliases: &[],
        category: Category::Required,
        probe: probe::clone3_set_tid,
        purpose: "restoring tasks with their original pids",
        note: None,
    },
    Feature {
        name: "prctl_set_mm_map",
        aliases: &["prctl"],
        category: Category::Required,
        probe: probe::prctl_set_mm_map,
        purpose: "PR_SET_MM_MAP to restore brk, args, env, auxv, exe",
        note: None,
    },
    Feature {
        name: "get_robust_list",
        aliases: &[],
        category: Category::Required,
        probe: probe::get_robust_list,
        purpose: "dumping robust futex lists",
        note: None,
    },
    Feature {
        name: "memfd_create",
        aliases: &[],
        category: Category::Required,
        probe: probe::memfd_create,
        purpose: "memfd files and shared memory",
        note: None,
    },
    Feature {
        name: "get_rseq_conf",
        aliases: &["ptrace_get_rseq_conf"],
        category: Category::Required,
        probe: probe::get_rseq_conf,
        purpose: "PTRACE_GET_RSEQ_CONFIGURATION to dump rseq areas",
        note: None,
    },
    Feature {
        name: "sock_diag",
        aliases: &["net_diag"],
        category: Category::Required,
        probe: probe::sock_diag,
        purpose: "NETLINK_SOCK_DIAG to inspect sockets",
        note: None,
    },
    Feature {
        name: "pidfd_getfd",
        aliases: &[],
        category: Category::Extra,
        probe: probe::pidfd_getfd,
        purpose: "taking descriptors out of dumped tasks",
        note: None,
    },
    Feature {
        name: "pidfd_store",
        aliases: &[],
        category: Category::Extra,
        probe: pidfd_store,
        purpose: "pidfd_open and pidfd_getfd together",
        note: None,
    },
    Feature {
        name: "pagemap_scan",
        aliases: &[],
        category: Category::Extra,
        probe: probe::pagemap_scan,
        purpose: "PAGEMAP_SCAN to find present and written pages fast",
        note: None,
    },
    Feature {
        name: "pagemap_scan_guard_pages",
        aliases: &[],
        category: Category::Extra,
        probe: probe::pagemap_scan_guard_pages,
        purpose: "finding MADV_GUARD_INSTALL guard pages",
        note: None,
    },
    Feature {
        name: "uffd",
        aliases: &["userfaultfd"],
        category: Category::Extra,
        probe: probe::uffd,
        purpose: "userfaultfd for lazy restore",
        note: None,
    },
    Feature {
        name: "uffd-noncoop",
        aliases: &[],
        category: Category::Extra,
        probe: probe::uffd_noncoop,
        purpose: "non-cooperative userfaultfd events for lazy restore",
        note: None,
    },
    Feature {
        name: "uffd-wp",
        aliases: &["userfaultfd write-protect", "uffd_wp"],
        category: Category::Extra,
        probe: probe::uffd_wp,
        purpose: "userfaultfd write-protect",
        note: None,
    },
    Feature {
        name: "uffd-wp-async",
        aliases: &["uffd_wp_async"],
        category: Category::Extra,
        probe: probe::uffd_wp_async,
        purpose: "asynchronous write-protect: with pagemap_scan, tracks written pages",
        note: None,
    },
    Feature {
        name: "tcp_repair",
        aliases: &[],
        category: Category::Extra,
        probe: probe::tcp_repair,
        purpose: "TCP_REPAIR for --tcp-established",
        note: None,
    },
    Feature {
        name: "network_lock_iptables",
        aliases: &["iptables"],
        category: Category::Extra,
        probe: network_lock_iptables,
        purpose: "iptables/ip6tables DROP rules to lock TCP connections (--network-lock iptables)",
        note: Some("use --network-lock nftables or skip"),
    },
    Feature {
        name: "network_lock_nftables",
        aliases: &["nftables"],
        category: Category::Extra,
        probe: network_lock_nftables,
        purpose: "an nftables table to lock TCP connections (--network-lock nftables)",
        note: Some("use --network-lock iptables or skip"),
    },
    Feature {
        name: "seccomp_suspend",
        aliases: &[],
        category: Category::Extra,
        probe: probe::seccomp_suspend,
        purpose: "PTRACE_O_SUSPEND_SECCOMP for tasks with seccomp filters",
        note: None,
    },
    Feature {
        name: "seccomp_filters",
        aliases: &[],
        category: Category::Extra,
        probe: probe::seccomp_filters,
        purpose: "PTRACE_SECCOMP_GET_FILTER to dump seccomp filters",
        note: None,
    },
    Feature {
        name: "timens",
        aliases: &[],
        category: Category::Extra,
        probe: probe::timens,
        purpose: "time namespaces",
        note: None,
    },
    Feature {
        name: "can_map_vdso",
        aliases: &[],
        category: Category::Extra,
        probe: probe::can_map_vdso,
        purpose: "arch_prctl(ARCH_MAP_VDSO_64)",
        note: None,
    },
    Feature {
        name: "mem_dirty_track",
        aliases: &["soft_dirty"],
        category: Category::Info,
        probe: probe::mem_dirty_track,
        purpose: "soft-dirty bits for incremental dumps",
        note: Some(
            "crust does not use soft-dirty bits: its incremental dumps (not there yet) are to track \
             written pages with pagemap_scan and uffd-wp-async instead",
        ),
    },
];

/// Lock and unlock a made-up loopback connection (IPv4 and IPv6).
fn network_lock(m: crust_engine::netlock::Method) -> ProbeResult {
    crust_engine::netlock::probe(m).map_err(|e| probe::ProbeError::Missing(error_chain(&e)))
}

fn network_lock_iptables() -> ProbeResult {
    network_lock(crust_engine::netlock::Method::Iptables)
}

fn network_lock_nftables() -> ProbeResult {
    network_lock(crust_engine::netlock::Method::Nftables)
}

fn pidfd_store() -> ProbeResult {
    probe::pidfd_open()?;
    probe::pidfd_getfd()
}

fn find(name: &str) -> Option<&'static Feature> {
    FEATURES
        .iter()
        .find(|f| f.name == name || f.aliases.contains(&name))
}

fn missing_text(f: &Feature, err: &probe::ProbeError) -> String {
    let mut s = format!("{}: {}", f.purpose, error_chain(err));
    if let Some(note) = f.note {
        s.push_str("; ");
        s.push_str(note);
    }
    s
}

/// Run `crust check`; returns the exit code.
pub fn run(opts: &Opts) -> Result<i32> {
    if let Some(name) = opts.feature.as_deref() {
        if name == "list" {
            let names: Vec<&str> = FEATURES.iter().map(|f| f.name).collect();
            println!("{}", names.join(" "));
            return Ok(0);
        }
        let Some(f) = find(name) else {
            bail!("unknown feature {name:?} (`crust check --feature list` lists them)");
        };
        return match (f.probe)() {
            Ok(()) => {
                println!("{} is supported", f.name);
                Ok(0)
            }
            Err(e) => bail!(
                "feature {} is not supported: {}",
                f.name,
                missing_text(f, &e)
            ),
        };
    }

    let mut required_missing = 0;
    let mut extra_missing = 0;
    for f in FEATURES {
        let wanted = match f.category {
            Category::Required => true,
            Category::Extra | Category::Info => opts.check_extra,
        };
        if !wanted {
            continue;
        }
        match (f.probe)() {
            Ok(()) => log::info!("{}: supported", f.name),
            Err(e) => match f.category {
                Category::Required => {
                    required_missing += 1;
                    log::error!("{}: {}", f.name, missing_text(f, &e));
                }
                Category::Extra => {
                    extra_missing += 1;
                    log::warn!("{}: {}", f.name, missing_text(f, &e));
                }
                Category::Info => log::info!("{}: {}", f.name, missing_text(f, &e)),
            },
        }
    }
    if required_missing > 0 {
        println!("Does not look good.");
        Ok(1)
    } else if extra_missing > 0 {
        println!(
            "Looks good but some kernel features are missing\n\
             which, depending on your process tree, may cause\n\
             dump or restore failure."
        );
        Ok(1)
    } else {
        println!("Looks good.");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        let mut seen = std::collections::HashSet::new();
        for f in FEATURES {
            assert!(seen.insert(f.name), "duplicate {}", f.name);
            for a in f.aliases {
                assert!(seen.insert(a), "duplicate {a}");
            }
        }
        assert_eq!(find("ptrace_get_rseq_conf").unwrap().name, "get_rseq_conf");
        assert_eq!(find("userfaultfd write-protect").unwrap().name, "uffd-wp");
        assert!(find("nope").is_none());
    }

    #[test]
    fn required_features_present_here() {
        for f in FEATURES.iter().filter(|f| f.category == Category::Required) {
            (f.probe)().unwrap_or_else(|e| panic!("{}", missing_text(f, &e)));
        }
    }
}
