# Tests of inotify watches and files on a mount only another mount
# namespace of the tree has (issue 13, helper "ino01"). Sourced by run.sh:
# uses its helpers (and ns-mnt.sh's) and adds its tests to ALL_TESTS.

# mntnssub --inotify 1: the root (in a mount namespace of its own) holds a
# file on the tmpfs only its child's namespace mounts, and inotify watches
# on that file and the tmpfs's root (zdtm inotify01's layout). The dump
# finds the watches' handles through the child's namespace (recording the
# mount, FhEntry.mnt_id); the restore opens the file, and puts the
# watches, through that namespace. The root checks the file is on the
# tmpfs and that closing it is seen by both watches.
t_mntns_inotify() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntnssub --dir "$D/dir" --inotify 1 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntns-inotify)
