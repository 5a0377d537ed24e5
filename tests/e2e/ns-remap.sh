# Tests of link remaps and ghosts in the tree's own namespaces (issue 13,
# helper "remap"). Sourced by run.sh: uses its helpers (and ns-userns.sh's
# userns_cr) and adds its tests to ALL_TESTS.

# Start `nsremap --dir $D/t`: the inner (tree root, in user and pid
# namespaces of its own) holds a file deleted while still linked on a
# tmpfs its user namespace owns, attached at $D/t. Sets PID to the inner.
remap_start() {
    chmod o+x "$WORK"
    chmod 0777 "$D"
    mkdir -p "$D/t"
    start_prog nsremap --dir "$D/t" || return 1
    local outer=$PID inner
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$inner" ] || { fail "no inner process under nsremap $outer"; return 1; }
    track "$inner" "$BIN/nsremap"
    PID=$inner
}

# The tmpfs the test attached goes, pass or fail.
remap_cleanup() {
    umount -l "$D/t" 2>/dev/null
    return 0
}

# --link-remap of a tree with a user namespace of its own, the file on a
# file system that namespace owns: the link back is made as the
# namespace's root (crust's own root is an id the namespace cannot map:
# EOVERFLOW, zdtm uns unlink_regular00), and so is the original name
# linked again at restore: the fd reads `t/f (deleted)` again, one link.
remap_userns_cr() {
    need_cr || return $?
    remap_start || return 1
    userns_cr "$D/img" --link-remap || return 1
    grep -q "linked back as $D/t/link_remap\." "$D/img/dump.log" ||
        { fail "the dump did not link the file back on the tmpfs" "$D/img/dump.log"; return 1; }
    [ -z "$(ls "$D/t" | grep link_remap)" ] ||
        { fail "a link_remap file is left in $D/t: $(ls "$D/t")" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_remap_userns_cr() { remap_userns_cr; local rc=$?; remap_cleanup; return $rc; }

# Bad case: the same tree dumped without --link-remap is refused, naming
# the file and the option; the tree runs on, untouched.
remap_err_dump_nolink() {
    need_cr || return $?
    remap_start || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q -- "--link-remap" "$D/dump.err" && grep -q "$D/t/f" "$D/dump.err" ||
        { fail "the message does not name the file and --link-remap: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}
t_err_dump_remap_nolink() { remap_err_dump_nolink; local rc=$?; remap_cleanup; return $rc; }

# mntnssub --lent 1: the child's mount namespace binds a part (x) of a
# tmpfs of the root's (at dir/l) at dir/lx and unmounts the tmpfs (zdtm
# mntns_link_remap's layout): dumped as a bind of a mount of the root's
# namespace, restored from a clone of that part made in the copy before the
# tmpfs is detached from it; the child sees lx and not l, the root l and
# not lx, both read the file.
t_mntns_lent_part() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntnssub --dir "$D/dir" --lent 1 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' --link-remap || return 1
    [ "$(ls "$D/img"/ghost-file-*.img 2>/dev/null | wc -l)" = 1 ] ||
        { fail "expected one ghost (gh, held on two mounts)" "$D/img/dump.log"; return 1; }
    [ "$(grep -c 'linked back as' "$D/img/dump.log")" = 2 ] ||
        { fail "expected lk linked back twice, once on each mount" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

# Bad case, mntnssub --lent 2: the root unmounts the tmpfs too, so the
# child's bind is a part of a file system no mount of the tree holds whole:
# the dump is refused naming that mount, the tree runs on untouched.
t_err_dump_mntns_lent_gone() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntnssub --dir "$D/dir" --lent 2 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntnssub"; done
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "at $D/dir/lx .*neither a copy" "$D/dump.err" ||
        { fail "the error does not name the mount: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

ALL_TESTS+=(remap-userns-cr err-dump-remap-nolink mntns-lent-part err-dump-mntns-lent-gone)
