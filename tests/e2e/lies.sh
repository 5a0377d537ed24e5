# Images that lie (issue 10): the restore checks what the images say and
# leaves nothing behind when it fails. Sourced by run.sh: uses its helpers
# (err_images, restore_fails_naming, start_prog, do_dump, fail, need_cr...)
# and adds its tests to ALL_TESTS.

# pstree.img's root lists thread 0 (what a zombie lists): the restore
# fails naming the root, writes no pidfile, leaves no process.
t_lies_root_thread0() {
    need_cr || return
    err_images || return 1
    cp -r "$ERR_IMG" "$D/img" || { fail "cannot copy images"; return 1; }
    python3 -c 'import sys, imgedit; imgedit.set_varint_field(sys.argv[1], 5, 0)' \
        "$D/img/pstree.img" || { fail "cannot patch pstree.img"; return 1; } # threads: [0]
    restore_fails_naming "$D/img" "$ERR_PID" "root process $ERR_PID" ""
}
ALL_TESTS+=(lies-root-thread0)

# fdinfo-N.img is gone: not "a task without fds" but an error naming it.
t_lies_missing_fdinfo() {
    need_cr || return
    err_images || return 1
    cp -r "$ERR_IMG" "$D/img" || { fail "cannot copy images"; return 1; }
    local f
    f=$(cd "$D/img" && ls fdinfo-*.img 2>/dev/null | head -n 1)
    [ -n "$f" ] || { fail "no fdinfo-N.img in the dump of loop"; return 1; }
    rm -f "$D/img/$f"
    restore_fails_naming "$D/img" "$ERR_PID" "$f" ""
}
ALL_TESTS+=(lies-missing-fdinfo)

# An image replaced by a symbolic link (to a copy of itself) is refused,
# naming it; the same file in its place restores.
t_lies_symlink_image() {
    need_cr || return
    err_images || return 1
    cp -r "$ERR_IMG" "$D/img" || { fail "cannot copy images"; return 1; }
    local core=core-$ERR_PID.img
    mv "$D/img/$core" "$D/$core" && ln -s "$D/$core" "$D/img/$core" ||
        { fail "cannot link $core"; return 1; }
    restore_fails_naming "$D/img" "$ERR_PID" "symbolic link" 1 || return 1
    grep -qF "$core" "$D/restore1.err" ||
        { fail "the message does not name $core: $(head -c 300 "$D/restore1.err")"; return 1; }
    rm -f "$D/img/$core"
    mv "$D/$core" "$D/img/$core"
    mv "$D/img/pages-1.img" "$D/pages-1.img" && ln -s "$D/pages-1.img" "$D/img/pages-1.img" ||
        { fail "cannot link pages-1.img"; return 1; }
    restore_fails_naming "$D/img" "$ERR_PID" "pages-1.img" 2
}
ALL_TESTS+=(lies-symlink-image)

# A restore that fails late (mm-PID.img's code ends before it starts:
# prctl(PR_SET_MM_MAP) refuses it once the sockets are made and the task
# is built) leaves none of the socket files it bound.
t_lies_unix_bound_cleanup() {
    need_cr || return
    mkdir -p "$D/files"
    start_prog unixsk --mode all --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    local socks
    socks=$(find "$D/files" -type s | sort)
    [ -n "$socks" ] || { fail "the dump of unixsk left no socket file to check"; return 1; }
    # shellcheck disable=SC2086 # one path a line, no blanks in $D
    rm -f $socks
    python3 -c 'import sys, imgedit; imgedit.set_varint_field(sys.argv[1], 2, 1)' \
        "$D/img/mm-$PID.img" || { fail "cannot patch mm-$PID.img"; return 1; } # mm_end_code
    restore_fails_naming "$D/img" "$PID" "PR_SET_MM" "" || return 1
    socks=$(find "$D/files" -type s)
    [ -z "$socks" ] || { fail "the failed restore left socket files: $socks" "$D/img/restore.log"; return 1; }
    return 0
}
ALL_TESTS+=(lies-unix-bound-cleanup)
