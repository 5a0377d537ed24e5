# Tests of a tree with several mount namespaces (issue 13): a child that
# made a mount namespace of its own inside the tree's. Sourced by run.sh:
# uses its helpers (and ns-mnt.sh's) and adds its tests to ALL_TESTS.

# mntnssub: the root in a mount namespace of its own, its child in another
# one (unshared below it) with a tmpfs only it sees, a file open and its
# cwd there, and two children of its own, one in the root's namespace,
# one in a copy of it made before the tmpfs. Dump (three mountpoints-*.img), kill, restore: the child is back
# in a namespace of its own with its tmpfs, fd and cwd; the root does not
# see the tmpfs (both check).
t_mntns_sub() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntnssub --dir "$D/dir" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    # The root's, the child's, its child's.
    [ "$(ls "$D/img"/mountpoints-*.img 2>/dev/null | wc -l)" = 3 ] ||
        { fail "expected three mountpoints-*.img" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    grep -q "joined mount namespace" "$D/img/restore.log" ||
        { fail "the child did not join a mount namespace of its own" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-sub)

# mntnssub --pivot 1: the child's namespace is pivoted into its tmpfs with
# the old root kept under it at /old, a mount of the root's namespace that
# a pivoted namespace cannot hold (crust makes it from its own root): the
# dump is refused naming that mount, and both processes run on untouched.
t_err_dump_mntns_sub_pivot() {
    need_cr || return $?
    mkdir -p "$D/dir" "$D/img"
    start_prog mntnssub --dir "$D/dir" --pivot 1 || return 1
    local c children
    children=$(cat /proc/"$PID"/task/*/children 2>/dev/null)
    for c in $children; do track "$c" "$BIN/mntnssub"; done
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -qiE "mount [0-9]+ at /old " "$D/dump.err" ||
        { fail "the message does not name the old root: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    ls "$D/img"/*.img >/dev/null 2>&1 && { fail "the failed dump left images" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    for c in $children; do
        [ -e "/proc/$c" ] || { fail "child $c vanished after the failed dump" "$D/img/dump.log"; return 1; }
        expect_untouched "$c" || return 1
    done
    kill -KILL "$PID" $children 2>/dev/null
    wait_gone "$PID" 5
}

ALL_TESTS+=(err-dump-mntns-sub-pivot)

# mntnssub --deleted 1: a bind mount of a directory removed since (its
# mountinfo root ends in //deleted): dumped as a bind with a deleted root,
# restored from the directory made again for the moment and removed: the
# mount is back, its root deleted, and no directory is left behind.
t_mntns_deleted_root() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntnssub --dir "$D/dir" --deleted 1 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    [ -e "$D/dir/dsrc" ] && { fail "the restore left $D/dir/dsrc behind" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-deleted-root)

# mntnssub --shared 1: the tree's root mount is shared: the restore makes
# it shared once pivoted into (pivot_root refuses a shared new root, which
# is also where the old root goes); the program checks that / is shared.
t_mntns_shared_root() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntnssub --dir "$D/dir" --shared 1 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-shared-root)
