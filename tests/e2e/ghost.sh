# Deleted files that are not plain files, sparse ghosts, deleted and
# chrooted working directories (issue 12). Sourced by run.sh: uses its
# helpers (start_prog, do_dump, do_restore, expect_pass, fail...) and adds
# its tests to ALL_TESTS.

# A sparse deleted file (64 MiB, 8 KiB of data: kept in chunks, under the
# default ghost limit by blocks), a deleted FIFO with only a reader (the
# dump must not wait on it), a deleted directory whose parent is gone, a
# deleted device, a deleted symlink (O_PATH fd) and a deleted cwd with an
# fd on it: all back, the same kinds with the same content, nothing left
# in the directory.
t_ghost_nodes() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog ghostnodes --mode nodes --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    [ "$(du -sk "$D/img" | cut -f1)" -lt 1024 ] ||
        { fail "the images take $(du -sh "$D/img" | cut -f1): the sparse file's holes were saved" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    [ -z "$(ls "$D/files")" ] ||
        { fail "the restore left $(ls "$D/files" | tr '\n' ' ') behind" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# A child chrooted into a directory, its cwd outside the new root, a file
# of the root open: after restore the root, the cwd and the file are the
# same (the cwd is entered by its host path before the chroot).
t_ghost_chroot() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog ghostnodes --mode chroot --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# The cwd and an fd in /proc/N of a child killed since (zdtm's
# unhashed_proc): a helper of pid N holds /proc/N while the restore enters
# it, then is reaped; getcwd fails with ENOENT again, the links read the
# same, /proc/N is gone.
t_ghost_deadproc() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog ghostnodes --mode deadproc --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    grep -q "dead process" "$D/img/dump.log" || { fail "the dump did not see the dead process" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(ghost-nodes ghost-chroot ghost-deadproc)
