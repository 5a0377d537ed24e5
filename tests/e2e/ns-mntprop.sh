# Mount propagation in the tree's own mount namespace (issue 13, helper
# mntprop). Sourced by run.sh: uses its helpers (start_prog, do_dump,
# do_restore, expect_pass, crust_run, expect_error, expect_untouched,
# fail...) and adds its tests to ALL_TESTS.

# mntprop in a mount namespace of its own: a shared tmpfs with a peer of a
# narrower root, a slave, a slave-and-shared pair, an unbindable and a
# private tmpfs, and a mount propagated under a peer that covers it; dump,
# kill, restore: the same mounts with the same peer groups and masters
# (the program compares its mountinfo) that propagate as before.
t_mntprop_cr() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntprop --dir "$D/dir" || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    grep -q " $D/dir/" /proc/self/mountinfo && { fail "the restored mounts show in the host's namespace"; return 1; }
    [ -z "$(ls -d /tmp/.crust-mnt-* 2>/dev/null)" ] || { fail "the restore left a yard in /tmp" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# Two peers whose roots do not nest (binds of sibling directories of a
# shared mount gone since): the peer group cannot be rebuilt, so the dump
# is refused naming both mounts, and the tree runs on untouched.
t_err_dump_mntprop_peers() {
    need_cr || return $?
    mkdir -p "$D/dir" "$D/img"
    start_prog mntprop --dir "$D/dir" --bad 1 || return 1
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "at $D/dir/g1 .*at $D/dir/g2 .*one peer group" "$D/dump.err" ||
        { fail "the message does not name both peers: $(head -c 400 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# mntprop started by `unshare -m` (--unshare 0, as CRIU's dump wants);
# sets PID.
mntprop_start_unshared() {
    mkdir -p "$D/dir"
    rm -f "$D/ready" "$D/result"
    PID=$(setsid unshare -m --propagation private sh -c \
        "exec '$BIN/mntprop' --unshare 0 --dir '$D/dir' --ready '$D/ready' --result '$D/result' </dev/null >/dev/null 2>&1" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/mntprop"
    wait_file "$D/ready" "$READY_TIMEOUT" || { fail "mntprop did not become ready"; return 1; }
    rm -f "$D/ready"
}

# Images both ways with CRIU 4.2: CRIU's dump of the propagating mounts
# restores with crust ...
t_mntprop_from_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return; }
    mntprop_start_unshared || return 1
    mkdir -p "$D/img"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev') \
        >"$D/criu-dump.out" 2>&1 || { fail "CRIU's dump failed" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after CRIU's dump"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    expect_pass "$D/img/restore.log"
}

# ... and crust's dump restores with CRIU 4.2 (--root /, as mntns-to-criu).
t_mntprop_to_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return; }
    mntprop_start_unshared || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$D/img" -d -v4 -o criu-restore.log \
        --root / --external 'mnt[dev]:/dev' --pidfile "$D/criu-pid") >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of crust's images failed" "$D/img/criu-restore.log"; return 1; }
    expect_pass "$D/img/criu-restore.log"
}

# An unbindable tmpfs with a mount on one of its directories: crust cannot
# read what that mount covers, so the dump is refused naming it; the tree
# runs on untouched.
t_err_dump_mntprop_unbindable() {
    need_cr || return $?
    mkdir -p "$D/dir" "$D/img"
    start_prog mntprop --dir "$D/dir" --bad 2 || return 1
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "at $D/dir/u .*is unbindable and has mounts on its directories" "$D/dump.err" ||
        { fail "the message does not name the unbindable mount: $(head -c 400 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

ALL_TESTS+=(mntprop-cr mntprop-from-criu mntprop-to-criu err-dump-mntprop-peers err-dump-mntprop-unbindable)
