# dump -R as a snapshot that barely pauses (issue 15): pages copied before
# the freeze under asynchronous write tracking (dump/precopy.rs), the
# pages written meanwhile stored at the freeze; or, with CRUST_PRECOPY=0
# (the fallback), write-protected while frozen through a userfaultfd and
# copied after the thaw. Sourced by run.sh.

# The writer rewrites 64 MiB without pause (every fourth page through
# read(2), a write the kernel makes) while `dump -R` copies it: the
# dumped process passes its own check (memory one writer's history, the
# header saying how far), crust's restore of the images passes it (every
# page as it was at ONE moment), and so does CRIU 4.2's restore of them.
# The pre-copy must have seen writes (pages stored again at the freeze).
t_snapshot_consistent() {
    need_cr || return $?
    : >"$D/go"
    start_prog snapwriter --mb 64 --go "$D/go" || return 1
    sleep 0.3
    dump_with "$D/img" -R --display-stats || return 1
    grep -q 'moved into the image set' "$D/img/dump.log" ||
        { fail "the pages were not copied before the freeze" "$D/img/dump.log"; return 1; }
    [ ! -e "$D/img/.crust-precopy" ] || { fail "the pre-copy was left in the images directory"; return 1; }
    # The writer neither maps nor drops memory: the pre-copy's pages file
    # becomes the set's, only the pages written meanwhile written again.
    grep -q 'pre-copied pages kept in place' "$D/img/dump.log" ||
        { fail "the pre-copied pages were copied again, not kept in place" "$D/img/dump.log"; return 1; }
    local again
    again=$(sed -n 's/.* pages scanned, \([0-9]*\) written in .*/\1/p' "$D/img/dump.log" | sed -n 2p)
    [ "${again:-0}" -gt 0 ] || { fail "no page stored again at the freeze: the writer did not run" "$D/img/dump.log"; return 1; }
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
# the pages written during the pre-copy are not stored again): the
# restored writer must find its memory inconsistent, proving the check
# above can fail.
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

# crust's dump worker SIGKILLed during the pre-copy (the writer's memory
# tracked through crust's userfaultfd, the tree running): the kernel drops
# the tracking with crust's last descriptor; the writer runs on (its CPU
# time grows, no `uw` VmFlags left), the pre-copy directory is gone with
# the next dump, and the writer passes its own check.
t_snapshot_killed() {
    need_cr || return $?
    : >"$D/go"
    start_prog snapwriter --mb 512 --go "$D/go" || return 1
    sleep 0.3
    mkdir -p "$D/img"
    (cd "$D" && exec "$CRUST" dump -t "$PID" -D "$D/img" -R -v4 -o dump.log) >"$D/dump.out" 2>&1 &
    local front=$! worker= n
    # Once the tree runs again ("Pre-copy: tree N paused ... to make its
    # userfaultfds"; the earlier "Pre-copy: tree seized" is logged while
    # the tree is still held, inside the window of remote calls that a
    # SIGKILL of the worker is not covered in).
    for n in $(seq 400); do
        grep -q 'to make its userfaultfds' "$D/img/dump.log" 2>/dev/null && break
        sleep 0.01
    done
    worker=$(sed -n 's/.*dump worker \([0-9]*\).*/\1/p' "$D/img/dump.log" | head -1)
    grep -q 'to make its userfaultfds' "$D/img/dump.log" && [ -n "$worker" ] ||
        { fail "the dump never reached its pre-copy" "$D/img/dump.log"; return 1; }
    grep -q 'copied while the tree ran' "$D/img/dump.log" &&
        { fail "the pre-copy ended before the kill: nothing tested (make the writer bigger)" "$D/img/dump.log"; return 1; }
    kill -KILL "$worker"
    wait "$front" 2>/dev/null
    # Its user time grows (up to 10 s: a loaded machine may not run it at
    # once).
    local t1 t2
    t1=$(awk '{print $14}' "/proc/$PID/stat")
    for n in $(seq 100); do
        sleep 0.1
        t2=$(awk '{print $14}' "/proc/$PID/stat")
        [ "$t2" -gt "$t1" ] && break
    done
    [ "$t2" -gt "$t1" ] || { fail "the writer does not run after crust was killed (utime $t1 then $t2, state $(pstate "$PID"))" "$D/img/dump.log"; return 1; }
    grep -q '^VmFlags:.* uw' "/proc/$PID/smaps" &&
        { fail "write tracking left in the writer after crust died" "$D/img/dump.log"; return 1; }
    ls -l "/proc/$PID/fd" | grep -q userfaultfd &&
        { fail "a userfaultfd left in the writer's fd table" "$D/img/dump.log"; return 1; }
    rm -f "$D/go"
    expect_pass "$D/img/dump.log"
}
t_snapshot_kill() { t_snapshot_wrap t_snapshot_killed; }

ALL_TESTS+=(snapshot-kill)

# The writer also drops pieces of a second region (MADV_DONTNEED), moves
# it (mremap) and maps and unmaps scratch memory while `dump -R` copies
# (`snapwriter --churn 1`): the dump succeeds (nothing is read after the
# thaw), the writer passes its own check, and so does crust's restore.
t_snapshot_churned() {
    need_cr || return $?
    : >"$D/go"
    start_prog snapwriter --mb 64 --churn 1 --go "$D/go" || return 1
    sleep 0.3
    dump_with "$D/img" -R || return 1
    grep -q 'moved into the image set' "$D/img/dump.log" ||
        { fail "the pages were not copied before the freeze" "$D/img/dump.log"; return 1; }
    rm -f "$D/go"
    expect_pass "$D/img/dump.log" || return 1
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_snapshot_churn() { t_snapshot_wrap t_snapshot_churned; }

ALL_TESTS+=(snapshot-churn)
