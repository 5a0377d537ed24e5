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

# Guard regions changed between `dump -R`'s pre-copy and its freeze
# (CRUST_TEST_PRECOPY_WAIT holds crust there): pages 2-3 lose their guard,
# 12-13 get one. The freeze walks again only where tracking saw writes,
# and installing or removing a guard counts as one: the image has the
# guards of the moment of the freeze.
t_snapshot_guarded() {
    need_cr || return $?
    start_prog guards --toggled "$D/toggled" || return 1
    mkdir -p "$D/img"
    (cd "$D" && CRUST_TEST_PRECOPY_WAIT="$D/go" exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" dump -t "$PID" \
        -D "$D/img" -R -v4 -o dump.log) >"$D/dump.out" 2>&1 &
    local dumper=$! rc
    wait_file "$D/go.copied" 30 || { kill "$dumper" 2>/dev/null; fail "the pre-copy did not end" "$D/img/dump.log"; return 1; }
    kill -USR1 "$PID"
    wait_file "$D/toggled" 10 || { : >"$D/go"; wait "$dumper"; fail "guards did not change its guard regions"; return 1; }
    : >"$D/go"
    wait "$dumper"
    rc=$?
    [ $rc = 0 ] || { fail "dump -R exited $rc: $(head -c 300 "$D/dump.out")" "$D/img/dump.log"; return 1; }
    grep -q 'moved into the image set' "$D/img/dump.log" ||
        { fail "the pages were not copied before the freeze" "$D/img/dump.log"; return 1; }
    kill_tree "$PID" "$BIN/guards"
    wait_gone "$PID" 5 || { fail "guards did not go"; return 1; }
    do_restore "$D/img" && expect_pass "$D/img/restore.log"
}
# guarded FN: run test FN, then end the guards program it started.
guarded() {
    local rc
    "$1"
    rc=$?
    kill_tree "$PID" "$BIN/guards"
    return $rc
}

t_snapshot_guards() { guarded t_snapshot_guarded; }

ALL_TESTS+=(snapshot-guards)

# Shared anonymous memory under `dump -R`: the pre-copy stores the
# object (parent and child map it) while the tree runs; both write 4 MiB
# between the pre-copy and the freeze (CRUST_TEST_PRECOPY_WAIT), and the
# freeze stores only those pages of it against the pre-copy; the image
# restores to the moment of the freeze.
t_snapshot_shmem() {
    local stored
    need_cr || return $?
    start_prog shmdirty --mb 64 --dirty-mb 4 --step "$D/step" --mode child || return 1
    mkdir -p "$D/img"
    (cd "$D" && CRUST_TEST_PRECOPY_WAIT="$D/go" exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" dump -t "$PID" \
        -D "$D/img" -R -v4 -o dump.log) >"$D/dump.out" 2>&1 &
    local dumper=$! rc
    wait_file "$D/go.copied" 30 || { kill "$dumper" 2>/dev/null; fail "the pre-copy did not end" "$D/img/dump.log"; return 1; }
    predump_step 1 || { : >"$D/go"; wait "$dumper"; return 1; }
    : >"$D/go"
    wait "$dumper"
    rc=$?
    [ $rc = 0 ] || { fail "dump -R exited $rc: $(head -c 300 "$D/dump.out")" "$D/img/dump.log"; return 1; }
    # The freeze's store of the 64 MiB object: about 4 MiB of pages.
    stored=$(grep -o 'ino [0-9]* (67108864 bytes): [0-9]* pages stored in [0-9]* runs (.*written since' "$D/img/dump.log" |
        tail -1 | sed 's/.*: \([0-9]*\) pages stored.*/\1/')
    echo "    object pages stored while frozen: ${stored:-none}" >&2
    [ -n "$stored" ] && [ "$stored" -le 1280 ] ||
        { fail "the freeze did not store the object against the pre-copy" "$D/img/dump.log"; return 1; }
    kill_tree "$PID" "$BIN/shmdirty"
    wait_gone "$PID" 5 || { fail "shmdirty did not go"; return 1; }
    rm -f "$D/result"
    do_restore "$D/img" && expect_pass "$D/img/restore.log"
}
t_snapshot_shm() {
    local rc
    t_snapshot_shmem
    rc=$?
    kill_tree "$PID" "$BIN/shmdirty"
    return $rc
}

ALL_TESTS+=(snapshot-shm)

# The same between a pre-dump and the dump that ends its chain (separate
# runs): the pre-dump walks the guard regions once the tree runs again and
# hands them to the keeper with the tracking; the dump's freeze walks
# again only where tracking saw writes.
t_predump_guarded() {
    need_cr || return $?
    start_prog guards --toggled "$D/toggled" || return 1
    mkdir -p "$D/i1" "$D/i2"
    crust_run pd1 pre-dump -t "$PID" -D "$D/i1" -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump exited $RC: $(head -c 300 "$D/pd1.err")" "$D/i1/pd.log"; return 1; }
    grep -q 'guard regions of 1 processes noted' "$D/i1/pd.log" ||
        { fail "the pre-dump did not note the guard regions" "$D/i1/pd.log"; return 1; }
    kill -USR1 "$PID"
    wait_file "$D/toggled" 10 || { fail "guards did not change its guard regions"; return 1; }
    crust_run d2 dump -t "$PID" -D "$D/i2" --prev-images-dir ../i1 -v4 -o dump.log
    [ $RC = 0 ] || { fail "dump exited $RC: $(head -c 300 "$D/d2.err")" "$D/i2/dump.log"; return 1; }
    grep -q 'guard regions (.* known from the protection' "$D/i2/dump.log" ||
        { fail "the dump walked all memory for guard regions" "$D/i2/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "guards did not go"; return 1; }
    do_restore "$D/i2" && expect_pass "$D/i2/restore.log"
}

t_predump_guards() { guarded t_predump_guarded; }

ALL_TESTS+=(predump-guards)
