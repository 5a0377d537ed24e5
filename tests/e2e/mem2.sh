# Memory tests of issue 12, second round: AIO rings (io_setup), guard
# regions (MADV_GUARD_INSTALL). Sourced by run.sh.

# Two AIO contexts, one gone round its ring (tail behind head), one never
# used: same addresses, head and tail, pending events after restore
# (zdtm's aio00, aio01).
t_aioring() {
    need_cr || return $?
    start_prog aioring || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/aioring"
    return $rc
}

ALL_TESTS+=(aioring)

# Guard regions (MADV_GUARD_INSTALL), one inside a VMA, one across two:
# the same pages are guard pages after restore, the others keep their
# contents (zdtm's maps12).
t_guards() {
    need_cr || return $?
    start_prog guards || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/guards"
    return $rc
}

ALL_TESTS+=(guards)
