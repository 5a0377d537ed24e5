# Tests of a mount namespace of the tree pivoted into a root of its own
# (issue 13): a child that unshared its mount namespace and pivot_root'ed
# into a tmpfs. Sourced by run.sh: uses its helpers (and ns-mnt.sh's) and
# adds its tests to ALL_TESTS.

# Start mntpivot (more options after) and dump it with /dev external:
# two mountpoints-*.img (the root's, the child's) and the child's root
# archived.
pivot_dumped() {
    mkdir -p "$D/dir"
    start_prog mntpivot --dir "$D/dir" "$@" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntpivot"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    [ "$(ls "$D/img"/mountpoints-*.img 2>/dev/null | wc -l)" = 2 ] ||
        { fail "expected two mountpoints-*.img" "$D/img/dump.log"; return 1; }
    ls "$D/img"/tmpfs-dev-*.tar.gz.img >/dev/null 2>&1 ||
        { fail "the child's tmpfs root was not archived" "$D/img/dump.log"; return 1; }
}

# Dump, kill, restore: the child is back in its own namespace pivoted
# into its tmpfs (files, modes, symlink, the bind at /b, only those two
# mounts); both check.
pivot_cr() {
    pivot_dumped "$@" || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntpivot"; done
    grep -q "pivot_root\|joined mount namespace\|mount namespace [0-9]* (made by" "$D/img/restore.log" ||
        { fail "the child's namespace was not made" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

t_mntns_pivot() {
    need_cr || return $?
    pivot_cr
}

ALL_TESTS+=(mntns-pivot)

# The same, the child's root then remounted read-only (its superblock
# too): restored read-only, writing fails with EROFS.
t_mntns_pivot_ro() {
    need_cr || return $?
    pivot_cr --ro 1
}

ALL_TESTS+=(mntns-pivot-ro)

# The child's root a directory of the root's namespace bound on itself
# (--bind 1, what container runtimes do): restored as a bind of that
# directory, pivoted into; no archive.
t_mntns_pivot_bind() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntpivot --dir "$D/dir" --bind 1 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntpivot"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    [ "$(ls "$D/img"/mountpoints-*.img 2>/dev/null | wc -l)" = 2 ] ||
        { fail "expected two mountpoints-*.img" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntpivot"; done
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-pivot-bind)

# The archive of the pivoted root gone from the images: the restore is
# refused before anything is made, naming the file; no process, no
# staging directory left.
t_err_restore_mntns_pivot_noarchive() {
    need_cr || return $?
    pivot_dumped || return 1
    rm -f "$D/img"/tmpfs-dev-*.tar.gz.img
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --external 'mnt[dev]:/dev'
    expect_error restore "$D/img/restore.log" || return 1
    grep -q "tmpfs-dev-[0-9]*.tar.gz.img" "$D/restore.err" ||
        { fail "the message does not name the archive: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the refused restore" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log"
}

ALL_TESTS+=(err-restore-mntns-pivot-noarchive)

# Images for CRIU 4.2: crust's dump of a tree whose child is pivoted into a
# tmpfs (started by `unshare -m` with --unshare 0, so its binary and stdio
# are on the tree's mounts) restores with CRIU (given --root /).
t_mntns_pivot_to_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return; }
    mkdir -p "$D/dir"
    rm -f "$D/ready" "$D/result"
    PID=$(setsid unshare -m --propagation private sh -c \
        "exec '$BIN/mntpivot' --unshare 0 --dir '$D/dir' --ready '$D/ready' --result '$D/result' </dev/null >/dev/null 2>&1" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/mntpivot"
    wait_file "$D/ready" "$READY_TIMEOUT" || { fail "mntpivot did not become ready"; return 1; }
    rm -f "$D/ready"
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntpivot"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$D/img" -d -v4 -o criu-restore.log \
        --root / --external 'mnt[dev]:/dev' --pidfile "$D/criu-pid") >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of crust's images failed" "$D/img/criu-restore.log"; return 1; }
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntpivot"; done
    expect_pass "$D/img/criu-restore.log"
}

ALL_TESTS+=(mntns-pivot-to-criu)
