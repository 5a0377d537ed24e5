# Tests of `dump --freeze-cgroup` (issue 14): the tree is frozen through a
# freezer cgroup (v1 freezer.state, v2 cgroup.freeze), seized, and the
# cgroup's state is put back. Sourced by run.sh: uses its helpers and adds
# its tests to ALL_TESTS. Every test makes its cgroups (named after the
# test's dir) and removes them, pass or fail.

FZ_V1=/sys/fs/cgroup/freezer
FZ_V2=/sys/fs/cgroup/unified

# fz_make VER: make a cgroup of this test in hierarchy VER (1 or 2); sets
# CG. Skips the test when that hierarchy is not there.
fz_make() {
    local base
    case $1 in 1) base=$FZ_V1 ;; *) base=$FZ_V2 ;; esac
    [ -w "$base/cgroup.procs" ] || { skip "no writable cgroup v$1 freezer at $base"; return 2; }
    [ "$1" = 1 ] || [ -e "$base/cgroup.events" ] || [ -d "$base" ] || { skip "no cgroup v2 at $base"; return 2; }
    CG=$base/crust-e2e-${D##*/}-$$-$1
    mkdir "$CG" || { fail "cannot make cgroup $CG"; return 1; }
    FZ_MADE+=("$CG")
    if [ "$1" = 2 ] && [ ! -e "$CG/cgroup.freeze" ]; then
        skip "cgroup v2 without cgroup.freeze"
        return 2
    fi
}

# Thaw, empty (kill what is left in it) and remove every cgroup the test made.
fz_cleanup() {
    local cg t n i
    # Made last, removed first (cgroups below others).
    for ((i = ${#FZ_MADE[@]} - 1; i >= 0; i--)); do
        cg=${FZ_MADE[$i]}
        [ -d "$cg" ] || continue
        if [ -e "$cg/freezer.state" ]; then echo THAWED >"$cg/freezer.state"; else echo 0 >"$cg/cgroup.freeze"; fi
        for n in $(seq 50); do
            t=$(cat "$cg/cgroup.procs" 2>/dev/null)
            [ -z "$t" ] && break
            # shellcheck disable=SC2086
            kill -KILL $t 2>/dev/null
            sleep 0.05
        done
        rmdir "$cg" 2>/dev/null || echo "freezecg: could not remove $cg" >&2
    done
    FZ_MADE=()
}
declare -a FZ_MADE=()

# fz_state: the cgroup's freezer state, THAWED or FROZEN (v2 read as v1).
fz_state() {
    if [ -e "$CG/freezer.state" ]; then
        cat "$CG/freezer.state"
    else
        case $(cat "$CG/cgroup.freeze") in 0) echo THAWED ;; *) echo FROZEN ;; esac
    fi
}

# fz_freeze: freeze the cgroup and wait until it is.
fz_freeze() {
    local n
    if [ -e "$CG/freezer.state" ]; then echo FROZEN >"$CG/freezer.state"; else echo 1 >"$CG/cgroup.freeze"; fi
    for n in $(seq 100); do
        if [ -e "$CG/freezer.state" ]; then
            [ "$(cat "$CG/freezer.state")" = FROZEN ] && return 0
        else
            grep -q '^frozen 1' "$CG/cgroup.events" && return 0
        fi
        sleep 0.05
    done
    fail "cgroup $CG did not freeze"
}

fz_thaw() {
    if [ -e "$CG/freezer.state" ]; then echo THAWED >"$CG/freezer.state"; else echo 0 >"$CG/cgroup.freeze"; fi
}

# fz_start [ARGS...]: cgtree (4 processes of 3 threads) born in $CG.
fz_start() {
    local c
    start_prog cgtree --join "$CG/cgroup.procs" --n 4 --threads 2 "$@" || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/cgtree"; done
    [ "$(wc -l <"$CG/cgroup.procs")" -ge 4 ] || { fail "the tree is not in $CG: $(cat "$CG/cgroup.procs" | tr '\n' ' ')"; return 1; }
}

# Every process of the tree running, untraced.
fz_untouched() {
    local c
    expect_untouched "$PID" || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do expect_untouched "$c" || return 1; done
}

# fz_seized LOG: the dump seized the tree through the freezer.
fz_seized() {
    grep -q "Seized [0-9]* tasks of freezer cgroup $CG" "$1" ||
        { fail "the dump did not freeze through $CG" "$1"; return 1; }
}

# VER: dump the tree with --freeze-cgroup, restore it, it passes. One
# child is in a cgroup below (frozen and seized with the rest).
fz_cr() {
    local kid
    need_cr || return
    fz_make "$1" || return
    fz_start || return 1
    kid=$(cat /proc/"$PID"/task/"$PID"/children | awk '{print $1}')
    mkdir "$CG/sub" && FZ_MADE+=("$CG/sub") && echo "$kid" >"$CG/sub/cgroup.procs" ||
        { fail "cannot put child $kid in $CG/sub"; return 1; }
    do_dump "$D/img" --freeze-cgroup "$CG" || return 1
    fz_seized "$D/img/dump.log" || return 1
    [ "$(fz_state)" = THAWED ] || { fail "cgroup left $(fz_state) after the dump" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_freezecg_v1() { fz_cr 1; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }
t_freezecg_v2() { fz_cr 2; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }

# VER: dump -R with --freeze-cgroup: the tree runs on, untraced, the cgroup
# thawed; it passes, and the images restore it too.
fz_leave_running() {
    need_cr || return
    fz_make "$1" || return
    fz_start || return 1
    dump_with "$D/img" -R --freeze-cgroup "$CG" || return 1
    fz_seized "$D/img/dump.log" || return 1
    [ "$(fz_state)" = THAWED ] || { fail "cgroup left $(fz_state) after dump -R" "$D/img/dump.log"; return 1; }
    fz_untouched || return 1
    expect_pass "$D/img/dump.log" || { REASON="the tree left running: $REASON"; return 1; }
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log" || { REASON="restored from the -R images: $REASON"; return 1; }
}
t_freezecg_leave_running_v1() { fz_leave_running 1; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }
t_freezecg_leave_running_v2() { fz_leave_running 2; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }

# VER: a cgroup frozen before the dump (a paused container) is frozen after
# dump -R, its tasks untraced; thawed, the tree passes.
fz_frozen_stays() {
    local c
    need_cr || return
    fz_make "$1" || return
    fz_start || return 1
    fz_freeze || return 1
    dump_with "$D/img" -R --freeze-cgroup "$CG" || return 1
    fz_seized "$D/img/dump.log" || return 1
    [ "$(fz_state)" = FROZEN ] || { fail "cgroup frozen before the dump is $(fz_state) after it" "$D/img/dump.log"; return 1; }
    sleep 0.2
    for c in $(cat "$CG/tasks" 2>/dev/null || cat "$CG/cgroup.threads"); do
        [ "$(tracer_of "$c")" = 0 ] || { fail "task $c is still traced after the dump" "$D/img/dump.log"; return 1; }
    done
    [ "$1" = 2 ] && ! grep -q '^frozen 1' "$CG/cgroup.events" && { fail "cgroup.events does not say frozen after the dump" "$D/img/dump.log"; return 1; }
    fz_thaw
    expect_pass "$D/img/dump.log" || { REASON="the thawed tree: $REASON"; return 1; }
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_freezecg_frozen_v1() { fz_frozen_stays 1; local rc=$?; fz_cleanup; kill_tree "$PID" "$BIN/cgtree"; return $rc; }
t_freezecg_frozen_v2() { fz_frozen_stays 2; local rc=$?; fz_cleanup; kill_tree "$PID" "$BIN/cgtree"; return $rc; }

# Another process in the cgroup, not in the tree: held during the dump,
# then let go; it runs on and passes while the tree is dumped and killed.
fz_stray() {
    local tree stray
    need_cr || return
    fz_make 1 || return
    fz_start || return 1
    tree=$PID
    mkdir -p "$D/s"
    (D=$D/s; start_prog loop) || { fail "loop did not start"; return 1; }
    stray=$(pgrep -f "loop --ready $D/s/ready" | head -1)
    [ -n "$stray" ] || { fail "no stray loop"; return 1; }
    track "$stray" "$BIN/loop"
    echo "$stray" >"$CG/cgroup.procs"
    do_dump "$D/img" --freeze-cgroup "$CG" || return 1
    grep -q "not in the dumped tree (\[$stray\])" "$D/img/dump.log" ||
        { fail "the dump does not name the stray $stray" "$D/img/dump.log"; return 1; }
    PID=$stray
    expect_untouched "$stray" || return 1
    (D=$D/s; expect_pass "$D/img/dump.log") || { fail "the stray loop: failed after the dump"; return 1; }
    PID=$tree
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_freezecg_stray() { fz_stray; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }

# fz_refused WHAT CGROUP: the dump with --freeze-cgroup CGROUP fails saying
# WHAT (a regex); the tree runs on, untraced.
fz_refused() {
    local what=$1 cg=$2
    mkdir -p "$D/img"
    proc_snapshot "$PID" >"$D/before"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --freeze-cgroup "$cg"
    expect_error dump "$D/img/dump.log" || return 1
    grep -qiE -e "$what" "$D/dump.err" ||
        { fail "the message does not say '$what': $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    fz_untouched
}

# A path that does not exist, a directory that is no cgroup, a cgroup of
# another controller: refused before any task is touched.
t_err_freezecg_path() {
    need_cr || return
    fz_make 1 || { local r=$?; fz_cleanup; return $r; }
    fz_start || { fz_cleanup; return 1; }
    local rc=0
    fz_refused "--freeze-cgroup $CG-none: no such directory" "$CG-none" &&
        fz_refused "neither a v1 freezer cgroup" "$D" &&
        fz_refused "neither a v1 freezer cgroup" /sys/fs/cgroup/pids &&
        expect_pass "$D/img/dump.log" || rc=1
    kill_tree "$PID" "$BIN/cgtree"
    fz_cleanup
    return $rc
}

# The tree is not in the cgroup named (an empty one): refused naming the
# process; the cgroup is thawed again and the tree untouched.
t_err_freezecg_outside() {
    need_cr || return
    local rc=0 home
    fz_make 2 || { local r=$?; fz_cleanup; return $r; }
    home=$CG
    CG=$home-other
    mkdir "$CG" && FZ_MADE+=("$CG")
    CG=$home
    fz_start || { fz_cleanup; return 1; }
    CG=$home-other
    fz_refused "process $PID of the tree is not in freezer cgroup $CG" "$CG" || rc=1
    [ $rc = 0 ] && [ "$(fz_state)" != THAWED ] && { fail "the empty cgroup is left $(fz_state)"; rc=1; }
    [ $rc = 0 ] && { expect_pass "$D/img/dump.log" || rc=1; }
    kill_tree "$PID" "$BIN/cgtree"
    fz_cleanup
    return $rc
}

ALL_TESTS+=(freezecg-v1 freezecg-v2 freezecg-leave-running-v1 freezecg-leave-running-v2
    freezecg-frozen-v1 freezecg-frozen-v2 freezecg-stray err-freezecg-path err-freezecg-outside)

# CRIU 4.2 and crust on the same v1 --freeze-cgroup dump: CRIU dumps and
# crust restores (from), crust dumps and CRIU restores (to).
fz_criu() {
    local way=$1 criu
    need_cr || return
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    fz_make 1 || return
    fz_start || return 1
    mkdir -p "$D/img"
    if [ "$way" = from ]; then
        (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" dump -t "$PID" -D "$D/img" -v4 -o dump.log \
            --freeze-cgroup "$CG") >"$D/criu-dump.out" 2>&1 ||
            { fail "CRIU's dump failed" "$D/img/dump.log"; return 1; }
        grep -q "freezing processes" "$D/img/dump.log" || { fail "CRIU did not freeze through $CG" "$D/img/dump.log"; return 1; }
        wait_gone "$PID" 5 || { fail "pid $PID still exists after CRIU's dump"; return 1; }
        do_restore "$D/img" || return 1
        expect_pass "$D/img/restore.log"
    else
        do_dump "$D/img" --freeze-cgroup "$CG" || return 1
        fz_seized "$D/img/dump.log" || return 1
        criu_restore_as_dumped "$criu" || return 1
        expect_pass "$D/img/restore.log"
    fi
}
t_freezecg_from_criu() { fz_criu from; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }
t_freezecg_to_criu() { fz_criu to; local rc=$?; kill_tree "$PID" "$BIN/cgtree"; fz_cleanup; return $rc; }

ALL_TESTS+=(freezecg-from-criu freezecg-to-criu)
