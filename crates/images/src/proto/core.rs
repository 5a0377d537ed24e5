//! Messages of CRIU's `core.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::crit::conv::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `seccomp_mode`
    seccomp_mode {
        disabled = 0,
        strict = 1,
        filter = 2,
    }
    /// enum `march` nested in `core_entry`
    core_entry_march {
        UNKNOWN = 0,
        X86_64 = 1,
        ARM = 2,
        AARCH64 = 3,
        PPC64 = 4,
        S390 = 5,
        MIPS = 6,
        LOONGARCH64 = 7,
        RISCV64 = 8,
    }
}

crate::message! {
    /// message `task_core_entry`
    TaskCoreEntry = "task_core_entry" {
        1 task_state: required Dict<Uint32, TaskState>,
        2 exit_code: required Uint32,
        3 personality: required Uint32,
        4 flags: required Uint32,
        5 blk_sigset: required Hex<Uint64>,
        6 comm: required Str,
        7 timers: optional Msg<TaskTimersEntry>,
        8 rlimits: optional Msg<TaskRlimitsEntry>,
        9 cg_set: optional Uint32,
        10 signals_s: optional Msg<SignalQueueEntry>,
        /// enum [`seccomp_mode`]
        11 old_seccomp_mode: optional EnumOf<seccomp_mode::Names>,
        12 old_seccomp_filter: optional Uint32,
        13 loginuid: optional Uint32,
        14 oom_score_adj: optional Int32,
        15 sigactions: repeated Msg<SaEntry>,
        18 child_subreaper: optional Bool,
        20 blk_sigset_extended: optional Hex<Uint64>,
        21 stop_signo: optional Uint32,
        22 membarrier_registration_mask: optional Hex<Uint32>,
    }
    /// message `task_kobj_ids_entry`
    TaskKobjIdsEntry = "task_kobj_ids_entry" {
        1 vm_id: required Uint32,
        2 files_id: required Uint32,
        3 fs_id: required Uint32,
        4 sighand_id: required Uint32,
        5 pid_ns_id: optional Uint32,
        6 net_ns_id: optional Uint32,
        7 ipc_ns_id: optional Uint32,
        8 uts_ns_id: optional Uint32,
        9 mnt_ns_id: optional Uint32,
        10 user_ns_id: optional Uint32,
        11 cgroup_ns_id: optional Uint32,
        12 time_ns_id: optional Uint32,
    }
    /// message `thread_sas_entry`
    ThreadSasEntry = "thread_sas_entry" {
        1 ss_sp: required Uint64,
        2 ss_size: required Uint64,
        3 ss_flags: required Uint32,
    }
    /// message `thread_core_entry`
    ThreadCoreEntry = "thread_core_entry" {
        1 futex_rla: required Uint64,
        2 futex_rla_len: required Uint32,
        3 sched_nice: optional Sint32,
        4 sched_policy: optional Uint32,
        5 sched_prio: optional Uint32,
        6 blk_sigset: optional Uint64,
        7 sas: optional Msg<ThreadSasEntry>,
        8 pdeath_sig: optional Uint32,
        9 signals_p: optional Msg<SignalQueueEntry>,
        10 creds: optional Msg<CredsEntry>,
        /// enum [`seccomp_mode`]
        11 seccomp_mode: optional EnumOf<seccomp_mode::Names>,
        12 seccomp_filter: optional Uint32,
        13 comm: optional Str,
        14 blk_sigset_extended: optional Uint64,
        15 rseq_entry: optional Msg<RseqEntry>,
        16 cg_set: optional Uint32,
    }
    /// message `task_rlimits_entry`
    TaskRlimitsEntry = "task_rlimits_entry" {
        1 rlimits: repeated Msg<RlimitEntry>,
    }
    /// message `core_entry`
    CoreEntry = "core_entry" {
        /// enum [`core_entry_march`]
        1 mtype: required EnumOf<core_entry_march::Names>,
        2 thread_info: optional BoxMsg<ThreadInfoX86>,
        3 tc: optional BoxMsg<TaskCoreEntry>,
        4 ids: optional BoxMsg<TaskKobjIdsEntry>,
        5 thread_core: optional BoxMsg<ThreadCoreEntry>,
        6 ti_arm: optional BoxMsg<ThreadInfoArm>,
        8 ti_aarch64: optional BoxMsg<ThreadInfoAarch64>,
        9 ti_ppc64: optional BoxMsg<ThreadInfoPpc64>,
        10 ti_s390: optional BoxMsg<ThreadInfoS390>,
        11 ti_mips: optional BoxMsg<ThreadInfoMips>,
        12 ti_loongarch64: optional BoxMsg<ThreadInfoLoongarch64>,
        13 ti_riscv64: optional BoxMsg<ThreadInfoRiscv64>,
    }
}
