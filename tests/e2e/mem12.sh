# Memory tests of issue 12 (zdtm's memory group): VMA flags (mlock,
# MADV_SEQUENTIAL/RANDOM, MAP_DROPPABLE), private mappings of shared
# memory objects, a memfd both open and mapped (and executed through its
# fd), an empty memfd, a shared object a child moved with mremap.
# Sourced by run.sh.

t_memkinds() {
    need_cr || return $?
    start_prog memkinds || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/memkinds"
    return $rc
}

ALL_TESTS+=(memkinds)

# A process that dropped root for nobody, with a child: still dumpable
# after restore (the uid change at restore reset it), and it reads its
# child's /proc/PID/maps (zdtm's vdso02).
t_dumpable_nobody() {
    need_cr || return $?
    chmod 1777 "$D"
    start_prog dumpable || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    local rc=$?
    kill_tree "$PID" "$BIN/dumpable"
    return $rc
}

ALL_TESTS+=(dumpable-nobody)
