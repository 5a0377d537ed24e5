//! The images of a whole dump, beside those of its processes: the
//! inventory and the stats.

use super::*;
use crust_images::proto::inventory::{InventoryEntry, PluginsEntry};
use crust_images::proto::stats::{DumpStatsEntry, StatsEntry};

/// The inventory; it records the network lock method (the restore unlocks
/// with it) and `--tcp-close` (the restore must be given it too).
pub(super) fn inventory(opts: &Options, nft_run_id: Option<String>) -> InventoryEntry {
    InventoryEntry {
        img_version: IMG_VERSION,
        fdinfo_per_id: Some(true),
        root_ids: Some(task_ids(1, &NsIds::CRUST)),
        ns_per_id: Some(true),
        // crust's own css set (the tasks in it stay where a restore is);
        // none for --unprivileged, as CRIU (no cgroups dumped).
        root_cg_set: (!opts.unprivileged).then_some(crate::cgroup::CRUST_SET),
        lsmtype: Some(crust_images::proto::inventory::lsmtype::NO_LSM),
        network_lock_method: Some(opts.network_lock.inventory_value()),
        tcp_close: opts.tcp_close.then_some(true),
        plugins_entry: Some(PluginsEntry::default()),
        // CRIU names its nftables lock table after the run id: crust's.
        dump_criu_run_id: Some(match opts.network_lock {
            crate::net::netlock::Method::Nftables => {
                nft_run_id.unwrap_or_else(|| crate::net::netlock::NFT_RUN_ID.to_string())
            }
            _ => run_id(),
        }),
        // With --track-mem, when the set was made (CRIU's pid-reuse check).
        dump_uptime: opts.track_mem.then(uptime_us).flatten(),
        ..Default::default()
    }
}

/// Time since boot in microseconds (/proc/uptime), CRIU's `dump_uptime`.
pub(super) fn uptime_us() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1e6) as u64)
}

/// A random UUID-shaped id for `dump_criu_run_id`.
fn run_id() -> String {
    use std::io::Read;
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// stats-dump: what the dump measured.
pub(super) fn write_stats(dir: &Path, s: &DumpStats) -> Result<(), Error> {
    debug!("dump stats: {s:?}");
    let e = StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: s.freezing_time_us as u32,
            frozen_time: s.frozen_time_us as u32,
            memdump_time: s.memdump_time_us as u32,
            memwrite_time: s.memwrite_time_us as u32,
            pages_scanned: s.pages_scanned,
            pages_skipped_parent: s.pages_skipped_parent,
            pages_written: s.pages_written,
            irmap_resolve: Some(0),
            pages_lazy: s.pages_lazy,
            page_pipes: Some(0),
            page_pipe_bufs: Some(0),
            shpages_scanned: Some(s.shpages_scanned),
            shpages_skipped_parent: Some(0),
            shpages_written: Some(s.shpages_written),
            ..Default::default()
        }),
        ..Default::default()
    };
    // stats-dump: the "%s" of its pattern is "dump".
    let name = "stats-dump";
    let mut w = crust_images::image::ImageWriter::create(dir, ImageType::Stats, name).map_err(
        |source| Error::Image {
            what: format!("cannot write {name}"),
            source,
        },
    )?;
    w.write_entry(&e).map_err(|source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    })?;
    w.finish().map_err(|source| Error::Image {
        what: format!("cannot write {name}"),
        source,
    })
}

/// Whether the parent set of the set in `dir` sent its pages to a page
/// server: it holds crust's records of the runs sent instead of pagemaps.
fn parent_sent_to_page_server(dir: &std::path::Path) -> bool {
    let prefix = crate::pageserver::record_name(0);
    let prefix = prefix.trim_end_matches("0.img");
    std::fs::read_dir(dir.join("parent"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
}

/// A set that would not restore is a failed dump: check the images just
/// written as a restore would before it touches anything (every image,
/// the tree's pids, memory, files), while the tree can still run on.
/// Pages left to a parent set are checked through the chain (the restore
/// reads it).
pub(super) fn check_restorable(opts: &Options) -> Result<(), Error> {
    let t = Instant::now();
    if opts.page_server {
        // The pagemaps and pages are on the page server: the set is
        // complete only there (the server confirmed it has every page).
        debug!("images not checked: their pages are on the page server");
        return Ok(());
    }
    if parent_sent_to_page_server(&opts.images_dir) {
        // The runs left to the parent are on the page server the parent
        // round sent its pages to (the migration's final round).
        debug!("images not checked: their parent set's pages are on a page server");
        return Ok(());
    }
    // Fault injection for the tests (as CRIU's CRIU_FAULT): spoil the
    // set (empty pages files) so that the check must catch it.
    if std::env::var_os("CRUST_FAULT").is_some_and(|v| v == "unrestorable-images") {
        for e in std::fs::read_dir(&opts.images_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("pages-") {
                let _ = std::fs::File::create(e.path());
            }
        }
    }
    crate::restore::check_images(opts).map_err(|e| Error::Unrestorable {
        dir: opts.images_dir.clone(),
        source: Box::new(e),
    })?;
    debug!("images checked as a restore would in {} us", us_since(t));
    Ok(())
}
