//! Messages of CRIU's `rpc.proto` (field facts from CRIU, written in crust's `message!` syntax).

#![allow(unused_imports)]

use super::*;
use crate::wire::*;

crate::enumeration! {
    /// enum `criu_cg_mode`
    criu_cg_mode {
        IGNORE = 0,
        CG_NONE = 1,
        PROPS = 2,
        SOFT = 3,
        FULL = 4,
        STRICT = 5,
        DEFAULT = 6,
    }
    /// enum `criu_network_lock_method`
    criu_network_lock_method {
        IPTABLES = 1,
        NFTABLES = 2,
        SKIP = 3,
    }
    /// enum `criu_pre_dump_mode`
    criu_pre_dump_mode {
        SPLICE = 1,
        VM_READ = 2,
    }
    /// enum `criu_req_type`
    criu_req_type {
        EMPTY = 0,
        DUMP = 1,
        RESTORE = 2,
        CHECK = 3,
        PRE_DUMP = 4,
        PAGE_SERVER = 5,
        NOTIFY = 6,
        CPUINFO_DUMP = 7,
        CPUINFO_CHECK = 8,
        FEATURE_CHECK = 9,
        VERSION = 10,
        WAIT_PID = 11,
        PAGE_SERVER_CHLD = 12,
        SINGLE_PRE_DUMP = 13,
    }
}

crate::message! {
    /// message `criu_page_server_info`
    CriuPageServerInfo = "criu_page_server_info" {
        1 address: optional Str,
        2 port: optional Int32,
        3 pid: optional Int32,
        4 fd: optional Int32,
    }
    /// message `criu_veth_pair`
    CriuVethPair = "criu_veth_pair" {
        1 if_in: required Str,
        2 if_out: required Str,
    }
    /// message `ext_mount_map`
    ExtMountMap = "ext_mount_map" {
        1 key: required Str,
        2 val: required Str,
    }
    /// message `join_namespace`
    JoinNamespace = "join_namespace" {
        1 ns: required Str,
        2 ns_file: required Str,
        3 extra_opt: optional Str,
    }
    /// message `inherit_fd`
    InheritFd = "inherit_fd" {
        1 key: required Str,
        2 fd: required Int32,
    }
    /// message `cgroup_root`
    CgroupRoot = "cgroup_root" {
        1 ctrl: optional Str,
        2 path: required Str,
    }
    /// message `unix_sk`
    UnixSk = "unix_sk" {
        1 inode: required Uint32,
    }
    /// message `criu_opts`
    CriuOpts = "criu_opts" {
        1 images_dir_fd: required Int32,
        2 pid: optional Int32,
        3 leave_running: optional Bool,
        4 ext_unix_sk: optional Bool,
        5 tcp_established: optional Bool,
        6 evasive_devices: optional Bool,
        7 shell_job: optional Bool,
        8 file_locks: optional Bool,
        9 log_level: optional Int32,
        10 log_file: optional Str,
        11 ps: optional Msg<CriuPageServerInfo>,
        12 notify_scripts: optional Bool,
        13 root: optional Str,
        14 parent_img: optional Str,
        15 track_mem: optional Bool,
        16 auto_dedup: optional Bool,
        17 work_dir_fd: optional Int32,
        18 link_remap: optional Bool,
        19 veths: repeated Msg<CriuVethPair>,
        20 cpu_cap: optional Uint32,
        21 force_irmap: optional Bool,
        22 exec_cmd: repeated Str,
        23 ext_mnt: repeated Msg<ExtMountMap>,
        24 manage_cgroups: optional Bool,
        25 cg_root: repeated Msg<CgroupRoot>,
        26 rst_sibling: optional Bool,
        27 inherit_fd: repeated Msg<InheritFd>,
        28 auto_ext_mnt: optional Bool,
        29 ext_sharing: optional Bool,
        30 ext_masters: optional Bool,
        31 skip_mnt: repeated Str,
        32 enable_fs: repeated Str,
        33 unix_sk_ino: repeated Msg<UnixSk>,
        /// enum [`criu_cg_mode`]
        34 manage_cgroups_mode: optional EnumOf<criu_cg_mode::Names>,
        35 ghost_limit: optional Uint32,
        36 irmap_scan_paths: repeated Str,
        37 external: repeated Str,
        38 empty_ns: optional Uint32,
        39 join_ns: repeated Msg<JoinNamespace>,
        41 cgroup_props: optional Str,
        42 cgroup_props_file: optional Str,
        43 cgroup_dump_controller: repeated Str,
        44 freeze_cgroup: optional Str,
        45 timeout: optional Uint32,
        46 tcp_skip_in_flight: optional Bool,
        47 weak_sysctls: optional Bool,
        48 lazy_pages: optional Bool,
        49 status_fd: optional Int32,
        50 orphan_pts_master: optional Bool,
        51 config_file: optional Str,
        52 tcp_close: optional Bool,
        53 lsm_profile: optional Str,
        54 tls_cacert: optional Str,
        55 tls_cacrl: optional Str,
        56 tls_cert: optional Str,
        57 tls_key: optional Str,
        58 tls: optional Bool,
        59 tls_no_cn_verify: optional Bool,
        60 cgroup_yard: optional Str,
        /// enum [`criu_pre_dump_mode`]
        61 pre_dump_mode: optional EnumOf<criu_pre_dump_mode::Names>,
        62 pidfd_store_sk: optional Int32,
        63 lsm_mount_context: optional Str,
        /// enum [`criu_network_lock_method`]
        64 network_lock: optional EnumOf<criu_network_lock_method::Names>,
        65 mntns_compat_mode: optional Bool,
        66 skip_file_rwx_check: optional Bool,
        67 unprivileged: optional Bool,
        68 images_dir: optional Str,
        69 leave_stopped: optional Bool,
        70 display_stats: optional Bool,
        71 log_to_stderr: optional Bool,
    }
    /// message `criu_dump_resp`
    CriuDumpResp = "criu_dump_resp" {
        1 restored: optional Bool,
    }
    /// message `criu_restore_resp`
    CriuRestoreResp = "criu_restore_resp" {
        1 pid: required Int32,
    }
    /// message `criu_notify`
    CriuNotify = "criu_notify" {
        1 script: optional Str,
        2 pid: optional Int32,
    }
    /// message `criu_features`
    CriuFeatures = "criu_features" {
        1 mem_track: optional Bool,
        2 lazy_pages: optional Bool,
        3 pidfd_store: optional Bool,
    }
    /// message `criu_req`
    CriuReq = "criu_req" {
        /// enum [`criu_req_type`]
        1 r#type: required EnumOf<criu_req_type::Names>,
        2 opts: optional Msg<CriuOpts>,
        3 notify_success: optional Bool,
        4 keep_open: optional Bool,
        5 features: optional Msg<CriuFeatures>,
        6 pid: optional Uint32,
    }
    /// message `criu_resp`
    CriuResp = "criu_resp" {
        /// enum [`criu_req_type`]
        1 r#type: required EnumOf<criu_req_type::Names>,
        2 success: required Bool,
        3 dump: optional Msg<CriuDumpResp>,
        4 restore: optional Msg<CriuRestoreResp>,
        5 notify: optional Msg<CriuNotify>,
        6 ps: optional Msg<CriuPageServerInfo>,
        7 cr_errno: optional Int32,
        8 features: optional Msg<CriuFeatures>,
        9 cr_errmsg: optional Str,
        10 version: optional Msg<CriuVersion>,
        11 status: optional Int32,
    }
    /// message `criu_version`
    CriuVersion = "criu_version" {
        1 major_number: required Int32,
        2 minor_number: required Int32,
        3 gitid: optional Str,
        4 sublevel: optional Int32,
        5 extra: optional Int32,
        6 name: optional Str,
    }
}
