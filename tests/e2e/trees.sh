# Tests of process trees, threads, sessions and pid namespaces (issue 3).
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# expect_pass, fail, skip, track...) and adds its tests to ALL_TESTS.

# exe_of, descendants, kill_tree (run.sh's kill_tracked kills direct
# children only).
# shellcheck source=../lib/proc.sh
. "$ROOT/tests/lib/proc.sh"

# cr_tree PROG [ARGS...]: like cr_test, and the whole tree is killed after.
cr_tree() {
    local prog=$1 rc
    cr_test "$@"
    rc=$?
    kill_tree "$PID" "$BIN/$prog"
    return $rc
}

t_ptree() { cr_tree ptree; }
t_mthreads() { cr_tree mthreads --threads 8; }
t_sharedfd() { cr_tree sharedfd; }
t_orphans() { cr_tree orphans; }
# 30 processes; after the restore every task of the tree may run on the
# CPUs crust had (the restore builds them on one: restore/pin.rs).
t_forest() {
    local rc=0 want p t got
    start_prog forest --n 30 || return 1
    if [ "$NO_CR" = 1 ]; then
        sleep 0.3
    else
        need_crust || return 1
        do_dump "$D/img" || return 1
        do_restore "$D/img" || { kill_tree "$PID" "$BIN/forest"; return 1; }
        want=$(awk '/^Cpus_allowed_list:/ { print $2 }' /proc/self/status)
        for p in "$PID" $(descendants "$PID"); do
            for t in /proc/"$p"/task/*; do
                got=$(awk '/^Cpus_allowed_list:/ { print $2 }' "$t/status" 2>/dev/null)
                [ "$got" = "$want" ] && continue
                fail "task ${t##*/} of $p may run on CPUs '$got', not '$want' as crust" "$D/img/restore.log"
                rc=1
                break 2
            done
        done
    fi
    [ $rc -eq 0 ] && { expect_pass "$D/img/restore.log" || rc=1; }
    kill_tree "$PID" "$BIN/forest"
    return $rc
}
# 40 processes (and 4 zombies) of every kind (forest --mix 1: group
# leaders, shared anonymous pages, threads, zombies): the restore builds
# the subtrees that share nothing with the rest on a second thread and CPU
# (restore/split.rs; -v4 says so), the tree passes its checks; restored
# again with CRUST_PARTREE=0, on one thread.
t_forest_split() {
    local rc=0 p
    [ "$(nproc)" -ge 2 ] || { skip "one CPU: nothing to build on two"; return; }
    start_prog forest --n 40 --mix 1 || return 1
    if [ "$NO_CR" = 1 ]; then
        sleep 0.3
        expect_pass || rc=1
        kill_tree "$PID" "$BIN/forest"
        return $rc
    fi
    need_crust || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || { kill_tree "$PID" "$BIN/forest"; return 1; }
    grep -Eq "building [0-9]+ processes on CPU [0-9]+ and [0-9]+ on CPU [0-9]+" "$D/img/restore.log" ||
        { fail "the restore built the tree on one thread" "$D/img/restore.log"; rc=1; }
    expect_pass "$D/img/restore.log" || rc=1
    kill_tree "$PID" "$BIN/forest"
    [ $rc -eq 0 ] || return 1
    for p in $(descendants "$PID") "$PID"; do wait_gone "$p" 5; done
    rm -f "$D/result"
    CRUST_PARTREE=0 do_restore "$D/img" 2 || { kill_tree "$PID" "$BIN/forest"; return 1; }
    ! grep -q "building [0-9]* processes on CPU" "$D/img/restore2.log" ||
        { fail "CRUST_PARTREE=0: the restore built on two threads" "$D/img/restore2.log"; rc=1; }
    expect_pass "$D/img/restore2.log" || rc=1
    kill_tree "$PID" "$BIN/forest"
    return $rc
}
# A split restore (as forest-split) whose crust dies (SIGKILL,
# CRUST_FAULT=die-while-parked) once the second builder thread parked its
# tasks, untraced, for the first to take back: no task of the tree is
# left (each parked task armed a parent-death SIGKILL).
t_kill_restore_parked() {
    local pids p n left
    [ "$(nproc)" -ge 2 ] || { skip "one CPU: nothing to build on two"; return; }
    need_cr || return $?
    start_prog forest --n 40 || return 1
    pids="$PID $(descendants "$PID")"
    do_dump "$D/img" || return 1
    for p in $pids; do wait_gone "$p" 5; done
    CRUST_FAULT=die-while-parked crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    [ $RC -ne 0 ] || { fail "the restore succeeded though crust killed itself" "$D/img/restore.log"; kill_tree "$PID" "$BIN/forest"; return 1; }
    grep -q "building [0-9]* processes on CPU" "$D/img/restore.log" ||
        { fail "the restore built the tree on one thread" "$D/img/restore.log"; kill_tree "$PID" "$BIN/forest"; return 1; }
    for n in $(seq 200); do
        left=
        for p in $pids; do
            [ -e "/proc/$p" ] && [ "$(pstate "$p")" != Z ] && left="$left $p:$(pstate "$p")"
        done
        [ -z "$left" ] && return 0
        sleep 0.01
    done
    fail "tasks of the tree were left behind:$left" "$D/img/restore.log"
    for p in $pids; do kill -KILL "$p" 2>/dev/null; done
    return 1
}
t_vforker() { cr_tree vforker; }
t_ptimers() { cr_test ptimers; }
t_shmchild() { cr_tree shmchild; }

# A tree whose root is pid 1 of its own pid namespace (unshare -p -f runs
# `loop` as the namespace's init), dumped and restored twice in a row.
t_pidns() {
    need_cr || return $?
    rm -f "$D/ready" "$D/result"
    local outer inner i
    outer=$(setsid unshare -p -f "$BIN/loop" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "loop in a pid namespace did not become ready"; return 1; }
    rm -f "$D/ready"
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$inner" ] || { fail "no init under unshare $outer"; return 1; }
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$inner"/status || { fail "$inner is not pid 1 of a namespace"; return 1; }
    PID=$inner
    do_dump "$D/img" || return 1
    grep -q '"pid": 1,' <("$CRUST" image decode -i "$D/img/pstree.img") ||
        { fail "pstree.img does not hold namespace pid 1" "$D/img/dump.log"; return 1; }
    for i in 1 2; do
        rm -f "$D/pidfile$i"
        crust_run "restore$i" restore -D "$D/img" -d --pidfile "$D/pidfile$i" -v4 -o "restore$i.log"
        [ $RC -eq 0 ] || { fail "restore #$i exited with $RC: $(head -c 300 "$D/restore$i.err")" "$D/img/restore$i.log"; return 1; }
        PID=$(cat "$D/pidfile$i")
        track "$PID" "$BIN/loop"
        grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status 2>/dev/null ||
            { fail "restored $PID is not pid 1 of a new namespace ($(grep NSpid /proc/"$PID"/status))" "$D/img/restore$i.log"; return 1; }
        if [ $i = 1 ]; then
            kill -KILL "$PID"
            wait_gone "$PID" 5
        fi
    done
    expect_pass "$D/img/restore2.log"
}

# Dumping a thread id instead of a process id is refused clearly.
t_err_dump_thread_id() {
    need_cr || return $?
    start_prog mthreads --threads 2 || return 1
    local tid
    tid=$(ls /proc/"$PID"/task | grep -vx "$PID" | head -n1)
    crust_run dump dump -t "$tid" -D "$D/img" -v4 -o dump.log
    mkdir -p "$D/img"
    [ $RC -ne 0 ] || { fail "dump of thread $tid succeeded"; return 1; }
    grep -q "thread" "$D/dump.err" || { fail "unclear error: $(head -c 200 "$D/dump.err")"; return 1; }
    expect_pass
    kill_tree "$PID" "$BIN/mthreads"
}

# A tree with a process crust cannot dump (a userfaultfd): the error names
# it and why, and the tree runs on untouched.
t_err_dump_tree_uffd() {
    need_cr || return $?
    start_prog forest --n 3 --uffd 1 || return 1
    local p named=""
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -ne 0 ] || { fail "dump of a tree with a userfaultfd succeeded"; return 1; }
    for p in $(descendants "$PID"); do
        ls -l /proc/"$p"/fd 2>/dev/null | grep -q userfaultfd && grep -q "process $p\b" "$D/dump.err" && named=$p
    done
    [ -n "$named" ] && grep -qi "userfaultfd" "$D/dump.err" ||
        { fail "error does not name the process with the userfaultfd: $(head -c 300 "$D/dump.err")"; return 1; }
    expect_pass
    kill_tree "$PID" "$BIN/forest"
}

# A restore whose pid namespace cannot be created fails cleanly: crust runs
# in a user namespace of its own whose max_pid_namespaces is 0.
t_err_restore_pidns_refused() {
    need_cr || return $?
    local outer inner
    unshare -U --map-root-user true 2>/dev/null || { skip "no user namespaces"; return 2; }
    rm -f "$D/ready"
    outer=$(setsid unshare -p -f "$BIN/loop" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "loop in a pid namespace did not become ready"; return 1; }
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    PID=$inner
    do_dump "$D/img" || return 1
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" unshare -U --map-root-user sh -c \
        'echo 0 >/proc/sys/user/max_pid_namespaces && exec "$0" restore -D img -d -v4 -o restore.log' \
        "$CRUST") >"$D/restore.out" 2>"$D/restore.err"
    RC=$?
    [ $RC -ne 0 ] || { fail "restore succeeded although pid namespaces are disabled"; return 1; }
    grep -qi "pid namespace" "$D/restore.err" || { fail "unclear error: $(head -c 300 "$D/restore.err")"; return 1; }
    pgrep -f "$BIN/loop --ready $D/ready" >/dev/null && { fail "a restored task was left behind"; return 1; }
    return 0
}

# --restore-sibling: the restored root is a child of crust's parent.
t_restore_sibling() {
    need_cr || return $?
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    # A shell that starts crust and stays alive, reporting its own pid and
    # the root's parent.
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" bash -c \
        '"$0" restore -D img -d --restore-sibling --pidfile "$PWD/pidfile" -v4 -o restore.log || exit 1
         echo "shell $$ ppid $(awk "/^PPid:/ {print \$2}" /proc/$(cat pidfile)/status)"' \
        "$CRUST") >"$D/sibling.out" 2>"$D/restore.err"
    RC=$?
    [ $RC -eq 0 ] || { fail "restore --restore-sibling exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    read -r _ shell _ ppid <"$D/sibling.out"
    [ -n "$shell" ] && [ "$shell" = "$ppid" ] ||
        { fail "restored root's parent is ${ppid:-?}, not the shell ${shell:-?} that ran crust" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# Copy-on-write memory shared by a parent and its child: every page of
# both is stored (CRIU's encoding, which CRIU restores too), and the
# restore shares again the child's pages that equal the parent's (the
# child checks its Pss itself).
t_cow() {
    need_cr || return $?
    start_prog cow --mb 32 || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/cow"
    return $rc
}

# With --cow-parent (crust's own encoding) the shared pages are stored
# once, and shared again after restore.
t_cow_parent() {
    need_cr || return $?
    start_prog cow --mb 32 || return 1
    do_dump "$D/img" --cow-parent || return 1
    local bytes limit=$((60 << 20))
    bytes=$(cat "$D"/img/pages-*.img | wc -c)
    [ "$bytes" -lt $limit ] ||
        { fail "pages images hold $bytes bytes: the 32 MiB shared by parent and child were stored twice" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/cow"
    return $rc
}

ALL_TESTS+=(ptree mthreads sharedfd orphans forest forest-split kill-restore-parked vforker cow cow-parent ptimers shmchild pidns restore-sibling err-dump-thread-id
    err-dump-tree-uffd err-restore-pidns-refused)
