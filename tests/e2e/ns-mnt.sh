# Tests of the tree's own mount namespace (issue 13, mnt part).
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# No yard directory of a restore may stay behind in /tmp.
mnt_no_yard() {
    local left
    left=$(ls -d /tmp/.crust-mnt-* 2>/dev/null | head -1)
    [ -z "$left" ] || { fail "the restore left $left behind" "${1:-}"; return 1; }
}

# Start mntns under $D/dir and dump it with /dev external.
mnt_dumped() {
    mkdir -p "$D/dir"
    start_prog mntns --dir "$D/dir" || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    ls "$D/img"/mountpoints-*.img >/dev/null 2>&1 || { fail "no mountpoints-*.img written" "$D/img/dump.log"; return 1; }
    ls "$D/img"/tmpfs-dev-*.tar.gz.img >/dev/null 2>&1 || { fail "no tmpfs-dev-*.tar.gz.img written" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$(ls "$D/img"/mountpoints-*.img | head -1)" 2>&1 | grep -q '"ext_key": *"dev"' ||
        { fail "the /dev mount is not recorded as external with key dev" "$D/img/dump.log"; return 1; }
}

# mntns in a mount namespace of its own (a tmpfs with files, a bind of a
# part of it, a read-only tmpfs, a shared and a private one, its own proc,
# /dev external): dump, kill, restore into a new mount namespace; all of
# it comes back (the program checks), the fd on the tmpfs file and the cwd
# in it too.
t_mntns_cr() {
    need_cr || return $?
    mnt_dumped || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    [ "$(readlink /proc/"$PID"/ns/mnt)" != "$(readlink /proc/self/ns/mnt)" ] ||
        { fail "the restored tree is in the host's mount namespace" "$D/img/restore.log"; return 1; }
    grep -q " $D/dir/t " /proc/self/mountinfo && { fail "the restored tmpfs shows in the host's namespace"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

# Restore must fail clearly, nothing left: $1 message pattern, then args.
mnt_restore_fails() {
    local pat=$1
    shift
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log "$@"
    expect_error restore "$D/img/restore.log" || return 1
    grep -qi -- "$pat" "$D/restore.err" || { fail "the error does not say '$pat': $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    sleep 0.2
    [ -e "/proc/$PID" ] && [ "$(exe_of "$PID")" = "$BIN/mntns" ] && { fail "pid $PID exists after the failed restore" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log"
}

# An external mount not given at restore: refused, naming its key.
t_err_restore_mnt_noext() {
    need_cr || return $?
    mnt_dumped || return 1
    mnt_restore_fails 'mnt\[dev\]'
}

# The source of an external mount gone at restore: refused, naming it.
t_err_restore_mnt_gone() {
    need_cr || return $?
    mnt_dumped || return 1
    mnt_restore_fails "$D/gone.*does not exist" --external "mnt[dev]:$D/gone"
}

# A --root that does not exist: refused, naming it.
t_err_restore_mnt_noroot() {
    need_cr || return $?
    mnt_dumped || return 1
    mnt_restore_fails "--root $D/noroot" --external 'mnt[dev]:/dev' --root "$D/noroot"
}

# mntns started by `unshare -m` (--unshare 0: its binary and stdio are then
# on mounts of its own namespace, as CRIU's dump wants); sets PID.
mnt_start_unshared() {
    mkdir -p "$D/dir"
    rm -f "$D/ready" "$D/result"
    PID=$(setsid unshare -m --propagation private sh -c \
        "exec '$BIN/mntns' --unshare 0 --dir '$D/dir' --ready '$D/ready' --result '$D/result' </dev/null >/dev/null 2>&1" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/mntns"
    wait_file "$D/ready" "$READY_TIMEOUT" || { fail "mntns did not become ready"; return 1; }
    rm -f "$D/ready"
}

# Images both ways with CRIU 4.2: CRIU's dump of the mount namespace
# (its tmpfs archives made by GNU tar) restores with crust.
t_mntns_from_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return; }
    mnt_start_unshared || return 1
    mkdir -p "$D/img"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev') \
        >"$D/criu-dump.out" 2>&1 || { fail "CRIU's dump failed" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after CRIU's dump"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    expect_pass "$D/img/restore.log"
}

# ... and crust's dump restores with CRIU 4.2 (given --root /: without it
# CRIU 4.2 itself hits a BUG_ON in its mount code).
t_mntns_to_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return; }
    mnt_start_unshared || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$D/img" -d -v4 -o criu-restore.log \
        --root / --external 'mnt[dev]:/dev' --pidfile "$D/criu-pid") >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of crust's images failed" "$D/img/criu-restore.log"; return 1; }
    expect_pass "$D/img/criu-restore.log"
}

ALL_TESTS+=(mntns-cr mntns-from-criu mntns-to-criu err-restore-mnt-noext err-restore-mnt-gone err-restore-mnt-noroot)
