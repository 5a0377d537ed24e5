//! Messages of CRIU's `stats.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::message! {
    /// message `dump_stats_entry`
    DumpStatsEntry = "dump_stats_entry" {
        1 freezing_time: required Uint32,
        2 frozen_time: required Uint32,
        3 memdump_time: required Uint32,
        4 memwrite_time: required Uint32,
        5 pages_scanned: required Uint64,
        6 pages_skipped_parent: required Uint64,
        7 pages_written: required Uint64,
        8 irmap_resolve: optional Uint32,
        9 pages_lazy: required Uint64,
        10 page_pipes: optional Uint64,
        11 page_pipe_bufs: optional Uint64,
        12 shpages_scanned: optional Uint64,
        13 shpages_skipped_parent: optional Uint64,
        14 shpages_written: optional Uint64,
    }
    /// message `restore_stats_entry`
    RestoreStatsEntry = "restore_stats_entry" {
        1 pages_compared: required Uint64,
        2 pages_skipped_cow: required Uint64,
        3 forking_time: required Uint32,
        4 restore_time: required Uint32,
        5 pages_restored: optional Uint64,
    }
    /// message `stats_entry`
    StatsEntry = "stats_entry" {
        1 dump: optional Msg<DumpStatsEntry>,
        2 restore: optional Msg<RestoreStatsEntry>,
    }
}
