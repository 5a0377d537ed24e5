# Memory tests of issue 11: copy-on-write runs across adjacent VMAs,
# reservations nobody touched, a real nginx after a reload.
# Sourced by run.sh.

# Copy-on-write pages shared by parent and child across the boundary of two
# adjacent anonymous VMAs with identical flags: the dump must write images
# the restore takes, and the tree must come back.
t_cow_split_vmas() {
    need_cr || return $?
    start_prog cowsplit --kb 256 || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/cowsplit"
    return $rc
}

ALL_TESTS+=(cow-split-vmas)

# A dump whose images would not restore (spoilt on purpose with
# CRUST_FAULT=unrestorable-images once they are written) fails, says so,
# removes its images and leaves the whole tree running as it was.
t_err_dump_unrestorable() {
    need_cr || return $?
    start_prog cowsplit --kb 64 || return 1
    proc_snapshot "$PID" >"$D/before"
    mkdir -p "$D/img"
    CRUST_FAULT=unrestorable-images crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "would not restore" "$D/dump.err" ||
        { fail "the error does not say the images would not restore: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    expect_untouched "$PID" || return 1
    ls "$D"/img/*.img >/dev/null 2>&1 && { fail "the failed dump left images: $(ls "$D/img")" "$D/img/dump.log"; return 1; }
    expect_pass "$D/img/dump.log"
    local rc=$?
    kill_tree "$PID" "$BIN/cowsplit"
    return $rc
}

ALL_TESTS+=(err-dump-unrestorable)
