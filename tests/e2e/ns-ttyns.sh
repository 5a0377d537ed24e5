# Tests of sessions and /proc in a tree that is the init of a pid
# namespace of its own, as zdtm's ns flavor runs them (issue 13). Sourced
# by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# Start test program $1 (more arguments after it) as the init of a new
# pid namespace (unshare -p -f); PID is that init.
start_pidns_init() {
    local prog=$1 outer
    shift
    rm -f "$D/ready" "$D/result"
    outer=$(setsid unshare -p -f "$BIN/$prog" --ready "$D/ready" --result "$D/result" "$@" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "$prog in a pid namespace did not become ready"; return 1; }
    PID=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$PID" ] || { fail "no init under unshare $outer"; return 1; }
    track "$PID" "$BIN/$prog"
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status || { fail "$PID is not pid 1 of a namespace"; return 1; }
}

# sessns as a pid namespace's init: a process born in the root's session
# under a parent that called setsid later; an orphan in the session of a
# leader gone (the dump records a helper with the leader's pid as its
# parent); an orphan in the session of a zombie leader that is the
# root's grandchild (a helper under the zombie makes it and exits, the
# init adopts it); a SIGEV_THREAD_ID timer. Restored, parents, groups,
# sessions, the zombie and the timer are as they were.
t_ns_sessions() {
    need_cr || return $?
    start_pidns_init sessns || return 1
    do_dump "$D/img" || return 1
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/sessns"
    grep -q "makes .* for the init" "$D/img/restore.log" ||
        { fail "no helper made the zombie leader's orphan" "$D/img/restore.log"; return 1; }
    rm -f "$D/ready"
    expect_pass "$D/img/restore.log"
}

# A bad case: the same tree with a root that is a child subreaper but not
# a pid namespace's init: the zombie leader's orphan cannot be handed to
# it by a helper that exits. The dump, which checks its images restore,
# refuses, naming the process and the session, and the tree runs on.
t_err_ns_session_elsewhere() {
    need_cr || return $?
    start_prog sessns --subreaper 1 || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -ne 0 ] || { fail "the dump of an orphan of a nephew leader succeeded" "$D/img/dump.log"; return 1; }
    grep -q "is in session [0-9]*, whose leader is neither its ancestor nor its sibling" "$D/dump.err" ||
        { fail "unclear error: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    [ "$(pstate "$PID")" != "" ] || { fail "the tree is gone after a refused dump"; return 1; }
    kill_tree "$PID" "$BIN/sessns"
}

# mntns --procfd 1 as the init of a pid namespace of its own, in a mount
# namespace of its own with a proc of its own: its fd on /proc/1/status is
# opened again through the tree's proc (crust's /proc at the host pid
# would be another inode).
t_ns_own_proc_file() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_pidns_init mntns --dir "$D/dir" --procfd 1 || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --external 'mnt[dev]:/dev'
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/mntns"
    rm -f "$D/ready"
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(ns-sessions err-ns-session-elsewhere ns-own-proc-file)
