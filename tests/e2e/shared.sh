# Open file descriptions shared between processes, and shared memory of
# ordinary programs (issue 11, items 3 and 4). Sourced by run.sh: uses its
# helpers (cr_tree, start_prog, do_restore, expect_pass, fail, skip...) and
# adds its tests to ALL_TESTS.

# CRIU 4.2's binary (../shared/criu/build.sh builds it once, cached), or
# nothing: CRIU_BIN wins.
criu_bin() {
    if [ -n "${CRIU_BIN:-}" ]; then
        echo "$CRIU_BIN"
        return
    fi
    local b=$ROOT/../shared/criu/build.sh
    [ -x "$b" ] || return 1
    "$b" 2>/dev/null | tail -n 1
}

# A parent and two children write in turn to one description of a file
# (no O_APPEND; the children's stdout too): after restore the lines follow
# each other, the offset is shared and kcmp says one description.
t_sharedreg() {
    mkdir -p "$D/files"
    cr_tree sharedreg --dir "$D/files"
}

# cr_from_criu PROG [ARGS...]: PROG (and its children) dumped by CRIU 4.2,
# restored by crust, SIGTERM, expect PASS; the tree is killed after.
cr_from_criu() {
    need_cr || return $?
    local criu prog=$1 rc
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return; }
    mkdir -p "$D/img"
    start_prog "$@" || return 1
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" dump -t "$PID" -D "$D/img" -v4 -o dump.log) \
        >"$D/criu-dump.out" 2>&1 ||
        { kill_tree "$PID" "$BIN/$prog"; fail "CRIU's dump failed" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after CRIU's dump"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    rc=$?
    kill_tree "$PID" "$BIN/$prog"
    return $rc
}

# The same tree dumped by CRIU 4.2, restored by crust.
t_sharedreg_criu() {
    mkdir -p "$D/files"
    cr_from_criu sharedreg --dir "$D/files"
}

ALL_TESTS+=(sharedreg sharedreg-criu)

# A named memfd mapped twice with its fd closed (Erlang's JIT), and a
# /dev/shm file (shm_open) mapped shared: contents, sharing, names back.
t_shmfiles() {
    local name=crust-e2e-shmfiles-$$ rc
    cr_test shmfiles --name "$name"
    rc=$?
    rm -f "/dev/shm/$name"
    return $rc
}

# The same, dumped by CRIU 4.2 (its memfd.img and VMAs), restored by crust.
t_shmfiles_criu() {
    local name=crust-e2e-shmfiles-$$ rc
    cr_from_criu shmfiles --name "$name"
    rc=$?
    rm -f "/dev/shm/$name"
    return $rc
}

ALL_TESTS+=(shmfiles shmfiles-criu)

# Files made with O_TMPFILE (MariaDB's temporary files), one unlinked (a
# ghost), one linked since (its fd still reads "(deleted)": --link-remap, as
# CRIU wants too): reopened without O_TMPFILE.
t_tmpfile() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog tmpfile --dir "$D/files" || return 1
    do_dump "$D/img" --link-remap || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(tmpfile)

# A deleted file mapped private and shared, its fd closed: saved as a ghost,
# recreated and mapped again from it.
t_delmap() {
    mkdir -p "$D/files"
    cr_test delmap --dir "$D/files"
}

ALL_TESTS+=(delmap)
