# A dump stopped by a signal (issue 10): SIGINT, SIGTERM and SIGHUP sent
# to crust in the middle of a dump make it roll back and fail with a
# message; the tree runs on untouched (the program's own checks pass).
# Sourced by run.sh after netsk.sh: uses its helpers and adds its tests to
# ALL_TESTS.

# stopped_dump SIGNAL: a dump with -R of bigmem (256 MiB, so the dump
# lasts), SIGNAL sent to crust once its log shows the tree frozen.
stopped_dump() {
    local sig=$1 cpid n
    need_cr || return $?
    start_prog bigmem --mb 256 || return 1
    mkdir -p "$D/img"
    (cd "$D" && exec "$CRUST" dump -t "$PID" -D "$D/img" -R -v4 -o dump.log) \
        >"$D/dump.out" 2>"$D/dump.err" &
    cpid=$!
    n=0
    until grep -q "Froze" "$D/img/dump.log" 2>/dev/null || [ $n -ge 200 ]; do
        sleep 0.01
        n=$((n + 1))
    done
    kill "-$sig" "$cpid" 2>/dev/null
    wait "$cpid"
    RC=$?
    if [ $RC -ne 0 ]; then
        grep -q "stopped by signal" "$D/dump.err" ||
            { fail "crust failed (rc $RC) without saying it was stopped: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    fi
    [ "$(pstate "$PID")" != T ] || { fail "the tree was left stopped" "$D/img/dump.log"; return 1; }
    grep -q TracerPid:.0 "/proc/$PID/status" || { fail "the tree is still traced" "$D/img/dump.log"; return 1; }
    expect_pass "$D/img/dump.log"
}
t_dump_stopped_int() { stopped_dump INT; }
t_dump_stopped_term() { stopped_dump TERM; }
t_dump_stopped_hup() { stopped_dump HUP; }
ALL_TESTS+=(dump-stopped-int dump-stopped-term dump-stopped-hup)

# A restore killed right after it made the root, before it traces it
# (CRUST_FAULT=die-after-root-clone: crust SIGKILLs itself there): the root
# must not be left behind, stopped or running on its own.
t_kill_restore_root_clone() {
    need_cr || return $?
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    wait_gone "$PID" 5 || { fail "the dumped tree did not go" "$D/img/dump.log"; return 1; }
    CRUST_FAULT=die-after-root-clone crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    [ $RC -ne 0 ] || { fail "the restore succeeded though crust killed itself" "$D/img/restore.log"; kill_tree "$PID" "$BIN/loop"; return 1; }
    local n=0
    while [ -e "/proc/$PID" ] && [ "$(pstate "$PID")" != Z ] && [ $n -lt 200 ]; do
        sleep 0.01
        n=$((n + 1))
    done
    if [ -e "/proc/$PID" ] && [ "$(pstate "$PID")" != Z ]; then
        fail "the root $PID was left behind in state $(pstate "$PID")" "$D/img/restore.log"
        kill -KILL "$PID" 2>/dev/null
        return 1
    fi
    return 0
}

ALL_TESTS+=(kill-restore-root-clone)
