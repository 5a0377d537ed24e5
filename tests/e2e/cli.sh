# What callers parse (issue 11, item 7): crust's command line, `check`
# answers and exit codes side by side with CRIU 4.2's on this machine.
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.
# CRIU 4.2 is $CRIU42_BIN, else the cached build of ../shared/criu/build.sh;
# without it these tests are skipped.

# Sets C42 to CRIU 4.2's binary, or skips.
need_criu42() {
    need_crust || return 1
    if [ -z "${C42:-}" ]; then
        C42=${CRIU42_BIN:-}
        local build=$ROOT/../shared/criu/build.sh
        if [ -z "$C42" ] && [ -f "$build" ]; then
            C42=$(bash "$build" 2>/dev/null | tail -n 1)
        fi
    fi
    [ -n "$C42" ] && [ -x "$C42" ] || { skip "no CRIU 4.2 (set CRIU42_BIN or run ../shared/criu/build.sh)"; return 2; }
}

# The 45 feature names of CRIU 4.2 (criu/cr-check.c, feature_list).
CRIU42_FEATURES="mnt_id mem_dirty_track aio_remap timerfd tun tun_ns userns fdinfo_lock
seccomp_suspend seccomp_filters loginuid cgroupns autofs tcp_half_closed compat_cr uffd
uffd-noncoop can_map_vdso sk_ns sk_unix_file net_diag_raw nsid link_nsid kcmp_epoll timens
external_net_ns clone3_set_tid newifindex nftables has_ipt_legacy pidfd_store ns_pid
apparmor_stacking network_lock_nftables sockopt_buf_lock memfd_hugetlb move_mount_set_group
openat2 get_rseq_conf ipv6_freebind pagemap_scan timer_cr_ids overlayfs_maps breakpoints
pagemap_scan_guard_pages"

# Where crust's answer may differ from CRIU's, and why: a feature crust does
# not use (yet) is "no" even when the kernel has it. Every other name must
# get CRIU's answer.
declare -A FEATURE_DIFFERS=(
    [cgroupns]="no cgroups in crust"
    [autofs]="no autofs mounts in crust"
    [compat_cr]="crust restores 64-bit tasks only"
    [can_map_vdso]="crust moves the vDSO with mremap, never maps one"
    [apparmor_stacking]="no LSM profiles in crust"
    [openat2]="crust opens images with O_NOFOLLOW, not openat2"
    [breakpoints]="crust steps remote syscalls without hardware breakpoints"
    [mem_dirty_track]="crust also tracks with userfaultfd write-protection and PAGEMAP_SCAN (CRIU: soft-dirty only)"
)
# Where crust may say yes and CRIU no (crust does more).
declare -A FEATURE_BEYOND=([mem_dirty_track]=1)

# `check --feature NAME` for every name of CRIU 4.2: crust knows them all,
# and answers as CRIU does unless the table above says why not (and then
# it may only say no where CRIU says yes). Both with `-verbosity=0`, as
# callers write it.
t_cli_features() {
    need_criu42 || return $?
    local f a b n=0 same=0 out
    for f in $CRIU42_FEATURES; do
        n=$((n + 1))
        "$C42" check --no-default-config -verbosity=0 --feature "$f" >/dev/null 2>&1
        a=$?
        "$CRUST" check --no-default-config -verbosity=0 --feature "$f" >"$D/feat.out" 2>"$D/feat.err"
        b=$?
        case $b in 0 | 1) ;; *) fail "crust check --feature $f exited $b: $(head -c 200 "$D/feat.err")"; return 1 ;; esac
        if [ "$a" = "$b" ]; then
            same=$((same + 1))
            [ $b = 0 ] && { out=$(cat "$D/feat.out"); [ "$out" = "$f is supported" ] ||
                { fail "crust check --feature $f printed '$out'"; return 1; }; }
            continue
        fi
        [ -n "${FEATURE_DIFFERS[$f]:-}" ] ||
            { fail "--feature $f: CRIU 4.2 exits $a, crust $b, and no reason is written for it: $(head -c 200 "$D/feat.err")"; return 1; }
        [ $b = 1 ] || [ -n "${FEATURE_BEYOND[$f]:-}" ] || { fail "--feature $f: crust says yes where CRIU 4.2 says no"; return 1; }
    done
    [ $n = 45 ] || { fail "the list has $n names, CRIU 4.2 has 45"; return 1; }
    echo "    $same of 45 feature answers as CRIU's, the others as the table says" >&2
    "$CRUST" check --no-default-config --feature nope >/dev/null 2>"$D/feat.err" &&
        { fail "an unknown feature name succeeded"; return 1; }
    return 0
}

# `check` with --extra, --experimental, --all: one of CRIU's verdicts, exit
# code 0 exactly when it is "Looks good.".
t_cli_check_verdicts() {
    need_crust || return 1
    local a out rc
    for a in "" --extra --experimental --all; do
        # shellcheck disable=SC2086
        out=$("$CRUST" check --no-default-config $a 2>/dev/null)
        rc=$?
        case "$rc:$out" in
            "0:Looks good.") ;;
            "1:Looks good but some kernel features are missing"*) ;;
            *) fail "crust check $a exited $rc with '$out'"; return 1 ;;
        esac
    done
}

# --version: CRIU's `Version: X.Y` line for 4.2 first, crust's own after.
t_cli_version() {
    need_criu42 || return $?
    local ours criu
    ours=$("$CRUST" --version | head -n 1)
    criu=$("$C42" --version | head -n 1)
    [ "$ours" = "$criu" ] || { fail "crust --version says '$ours', CRIU 4.2 '$criu'"; return 1; }
    "$CRUST" -V | grep -qx "crust: [0-9.]*" || { fail "crust's own version is not on its second line"; return 1; }
}

# Exit codes and corners of the command line, crust beside CRIU 4.2 on the
# same failing (and succeeding) commands.
t_cli_exit_codes() {
    need_criu42 || return $?
    mkdir -p "$D/empty" && chmod 700 "$D/empty"
    local -a cases=(
        "check --no-default-config"
        "restore --no-default-config -D $D/missing -d"
        "dump --no-default-config -D $D/missing -t 1"
        "dump --no-default-config -D $D/empty -t 999999"
        "dump --no-default-config -D $D/empty"
        "restore --no-default-config -D $D/empty -d"
        "dump --no-default-config --bogus"
        "--no-default-config"
        "check --no-default-config --feature timerfd extra"
        "check --no-default-config --manage-cgroups full"
        "check --no-default-config --manage-cgroups=full"
        "check --no-default-config --tcp"
        "check --no-default-config --tcp-est"
        "check --no-default-config -t 0"
        "check --no-default-config --ghost-limit=1T"
        "check --no-default-config --config $D/missing.conf"
        "check --config=$D/missing.conf --feature mnt_id"
        "--feature mnt_id check --no-default-config"
        "check --no-default-config -verbosity=0 --feature nope"
        "check --no-default-config --help=1"
        "check -h --bogus"
        "exec"
        "cpuinfo"
    )
    local c a b
    for c in "${cases[@]}"; do
        # shellcheck disable=SC2086
        (cd "$D" && "$C42" $c) >/dev/null 2>&1 </dev/null
        a=$?
        # shellcheck disable=SC2086
        (cd "$D" && "$CRUST" $c) >/dev/null 2>"$D/cli.err" </dev/null
        b=$?
        [ "$a" = "$b" ] || { fail "'$c': CRIU 4.2 exits $a, crust $b: $(head -c 200 "$D/cli.err")"; return 1; }
    done
}
ALL_TESTS+=(cli-features cli-check-verdicts cli-version cli-exit-codes)

# Progress (issue 16): a dump and a restore on a terminal (script(1)) draw
# a status line on stderr (tasks frozen, pages with rate and ETA, tasks
# built), which never reaches the -o log; --display-stats adds the time of
# each stage. CRUST_PROGRESS_AFTER_MS=0: shown from the start, however fast
# the machine (the default waits a second).
t_cli_progress_tty() {
    need_cr || return $?
    command -v script >/dev/null || { skip "no script(1) (util-linux)"; return 2; }
    start_prog bigmem --mb 1024 || return 1
    mkdir -p "$D/img"
    (cd "$D" && CRUST_PROGRESS_AFTER_MS=0 timeout -k 5 "$CR_TIMEOUT" script -qec \
        "$CRUST dump -t $PID -D $D/img -v4 -o dump.log --display-stats" /dev/null) >"$D/dump.tty" 2>&1 ||
        { fail "dump on a terminal failed: $(tail -c 300 "$D/dump.tty")" "$D/img/dump.log"; return 1; }
    grep -q "crust dump: .* 1 tasks frozen, pages [0-9]*/[0-9]* MiB at [0-9.]* GB/s" "$D/dump.tty" ||
        { fail "no progress line on the terminal: $(tail -c 300 "$D/dump.tty")"; return 1; }
    grep -q "ETA [0-9.]* s" "$D/dump.tty" || grep -q "pages 10[0-9][0-9]/10[0-9][0-9] MiB" "$D/dump.tty" ||
        { fail "the progress shows neither an ETA nor all pages: $(tail -c 300 "$D/dump.tty")"; return 1; }
    grep -q "^Stage dumping tasks and pages: [0-9]* us" "$D/dump.tty" ||
        { fail "--display-stats lacks the stage times: $(tail -c 400 "$D/dump.tty")"; return 1; }
    grep -q "crust dump:" "$D/img/dump.log" && { fail "progress went into the -o log" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 10 || { fail "the dumped task did not go"; return 1; }
    (cd "$D" && CRUST_PROGRESS_AFTER_MS=0 timeout -k 5 "$CR_TIMEOUT" script -qec \
        "$CRUST restore -D $D/img -d -v4 -o restore.log --display-stats" /dev/null) >"$D/restore.tty" 2>&1 ||
        { fail "restore on a terminal failed: $(tail -c 300 "$D/restore.tty")" "$D/img/restore.log"; return 1; }
    grep -q "crust restore: .* pages [0-9]*/10[0-9][0-9] MiB at [0-9.]* GB/s.* 1/1 tasks built" "$D/restore.tty" ||
        { fail "no restore progress on the terminal: $(tail -c 300 "$D/restore.tty")"; return 1; }
    grep -q "^Stage creating and building tasks: [0-9]* us" "$D/restore.tty" ||
        { fail "restore --display-stats lacks the stage times: $(tail -c 400 "$D/restore.tty")"; return 1; }
    grep -q "crust restore:" "$D/img/restore.log" && { fail "progress went into the -o log" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# Without a terminal, nothing: stderr stays empty (a script reading it sees
# no status line), whatever the delay.
t_cli_progress_notty() {
    need_cr || return $?
    start_prog bigmem --mb 256 || return 1
    mkdir -p "$D/img"
    CRUST_PROGRESS_AFTER_MS=0 dump_with "$D/img" --display-stats || return 1
    grep -q "crust dump:" "$D/dump.err" "$D/dump.out" && { fail "progress without a terminal: $(head -c 300 "$D/dump.err")"; return 1; }
    grep -q "^Stage freezing: [0-9]* us" "$D/dump.out" || { fail "--display-stats lacks the stage times: $(head -c 400 "$D/dump.out")"; return 1; }
    wait_gone "$PID" 10 || { fail "the dumped task did not go"; return 1; }
    CRUST_PROGRESS_AFTER_MS=0 crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    grep -q "crust restore:" "$D/restore.err" && { fail "restore progress without a terminal: $(head -c 300 "$D/restore.err")"; return 1; }
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(cli-progress-tty cli-progress-notty)
