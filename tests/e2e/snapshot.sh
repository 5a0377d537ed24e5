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
