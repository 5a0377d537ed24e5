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
