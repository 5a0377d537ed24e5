# dump -R as a snapshot that barely pauses (issue 15): pages copied while
# the tree runs, write-protected through a userfaultfd. Sourced by run.sh.

# The writer rewrites 64 MiB without pause (every fourth page through
# read(2), a write the kernel makes) while `dump -R` copies it: the
# dumped process passes its own check (memory one writer's history, the
# header saying how far), crust's restore of the images passes it (every
# page as it was at ONE moment), and so does CRIU 4.2's restore of them.
t_snapshot_consistent() {
    need_cr || return $?
    : >"$D/go"
    start_prog snapwriter --mb 64 --go "$D/go" || return 1
    sleep 0.3
    dump_with "$D/img" -R --display-stats || return 1
    grep -q 'write faults taken' "$D/img/dump.log" ||
        { fail "the pages were not copied while the tree ran" "$D/img/dump.log"; return 1; }
    local faults
    faults=$(sed -n 's/.* \([0-9]*\) write faults taken.*/\1/p' "$D/img/dump.log" | head -1)
    [ "${faults:-0}" -gt 0 ] || { fail "no write fault during the copy: the writer did not run" "$D/img/dump.log"; return 1; }
    rm -f "$D/go"
    expect_pass "$D/img/dump.log" || return 1
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log" || return 1
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || return 0
    rm -f "$D/result"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$D/img" -d --pidfile "$D/pidfile-criu" \
        -v4 -o restore-criu.log) >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of the snapshot failed" "$D/img/restore-criu.log"; return 1; }
    expect_pass "$D/img/restore-criu.log"
}

# The same with the copy made late on purpose (CRUST_FAULT=snapshot-late:
# pages the task writes are not saved first): the restored writer must
# find its memory inconsistent, proving the check above can fail.
t_snapshot_late_detected() {
    need_cr || return $?
    : >"$D/go"
    start_prog snapwriter --mb 64 --go "$D/go" || return 1
    sleep 0.3
    CRUST_FAULT=snapshot-late dump_with "$D/img" -R || return 1
    rm -f "$D/go"
    expect_pass "$D/img/dump.log" || return 1
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    kill -TERM "$PID" 2>/dev/null
    wait_file "$D/result" "$RESULT_TIMEOUT" || { fail "no result after SIGTERM"; return 1; }
    grep -q '^FAIL' "$D/result" ||
        { fail "a snapshot taken late on purpose passed the check: $(head -c 200 "$D/result")"; return 1; }
}

t_snapshot_wrap() {
    local t=$1 rc
    "$t"
    rc=$?
    kill_tree "$PID" "$BIN/snapwriter"
    rm -f "$D/go"
    return $rc
}
t_snapshot_cr() { t_snapshot_wrap t_snapshot_consistent; }
t_snapshot_late() { t_snapshot_wrap t_snapshot_late_detected; }

ALL_TESTS+=(snapshot-cr snapshot-late)

# crust's dump worker SIGKILLed during the copy (after "left running"),
# while the writer faults on protected pages: the kernel drops the
# protection with crust's last userfaultfd descriptor and wakes the
# writer, which runs on (its CPU time grows, no `uw` VmFlags left) and
# passes its own check.
t_snapshot_killed() {
    need_cr || return $?
    : >"$D/go"
    start_prog snapwriter --mb 512 --go "$D/go" || return 1
    sleep 0.3
    mkdir -p "$D/img"
    (cd "$D" && exec "$CRUST" dump -t "$PID" -D "$D/img" -R -v4 -o dump.log) >"$D/dump.out" 2>&1 &
    local front=$! worker= n
    for n in $(seq 400); do
        grep -q 'left running' "$D/img/dump.log" 2>/dev/null && break
        sleep 0.01
    done
    worker=$(sed -n 's/.*dump worker \([0-9]*\).*/\1/p' "$D/img/dump.log" | head -1)
    grep -q 'left running' "$D/img/dump.log" && [ -n "$worker" ] ||
        { fail "the dump never reached its copy phase" "$D/img/dump.log"; return 1; }
    grep -q 'pages copied while running' "$D/img/dump.log" &&
        { fail "the copy ended before the kill: nothing tested (make the writer bigger)" "$D/img/dump.log"; return 1; }
    kill -KILL "$worker"
    wait "$front" 2>/dev/null
    local t1 t2
    t1=$(awk '{print $14}' "/proc/$PID/stat")
    sleep 0.3
    t2=$(awk '{print $14}' "/proc/$PID/stat")
    [ "$t2" -gt "$t1" ] || { fail "the writer does not run after crust was killed (utime $t1 then $t2, state $(pstate "$PID"))" "$D/img/dump.log"; return 1; }
    grep -q '^VmFlags:.* uw' "/proc/$PID/smaps" &&
        { fail "write protection left in the writer after crust died" "$D/img/dump.log"; return 1; }
    rm -f "$D/go"
    expect_pass "$D/img/dump.log"
}
t_snapshot_kill() { t_snapshot_wrap t_snapshot_killed; }

ALL_TESTS+=(snapshot-kill)
