# Tests of a tree in a mount namespace of its own as zdtm's ns flavor runs
# them (issue 13): what crust opens, during the restore, by a path of the
# tree's. Sourced by run.sh: uses its helpers (and ns-mnt.sh's) and adds
# its tests to ALL_TESTS.

# mntns --child 1: its fd on a file of its own tmpfs is held by its child
# too, so crust opens that one description itself during the restore: in
# the restored mount namespace (through the root's /proc/PID/root), where
# the file is, not in crust's, where it is not; so is its FIFO on a tmpfs
# of its own, with its queued bytes.
t_mntns_shared_file() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntns --dir "$D/dir" --child 1 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntns"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntns"; done
    grep -q "held by several processes" "$D/img/restore.log" ||
        { fail "the fd on t/hello was not restored as one description of two processes" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-shared-file)

# mntns --over 1: a tmpfs over a directory of its tmpfs t, which holds a
# file: the dump archives t without the mount over it (a copy of that one
# mount), so the file is there once the restored tree unmounts it.
t_mntns_overmounted() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntns --dir "$D/dir" --over 1 || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-overmounted)
