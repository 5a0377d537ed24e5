# Mount propagation between mount namespaces of one tree (issue 13, helper
# mntshare). Sourced by run.sh: uses its helpers (and ns-mnt.sh's
# mnt_no_yard) and adds its tests to ALL_TESTS.

# mntshare: the root in a mount namespace of its own with two shared tmpfs
# (a, m); its child in another one (unshared below it) whose a is a peer of
# the root's a, with a bind of a/x (b, a peer too), and whose m is a slave
# of the root's m. Dump, kill, restore: the program compares the peer
# groups and master in both mountinfos, then mounts on each side: the
# root's mounts reach the child's a, b and m; the child's on a reach the
# root, its mount on m (a slave) does not. The child and its child hold one
# description of a file on a tmpfs only the child's namespace has: crust
# opens it late through the child's root; a seek by one shows in the other.
t_mntshare_cr() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog mntshare --dir "$D/dir" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntshare"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    [ "$(ls "$D/img"/mountpoints-*.img 2>/dev/null | wc -l)" = 2 ] ||
        { fail "expected two mountpoints-*.img" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/mntshare"; done
    grep -q "propagation: SetGroup" "$D/img/restore.log" ||
        { fail "no peer group was joined" "$D/img/restore.log"; return 1; }
    grep -q "opened in the mount namespace of process" "$D/img/restore.log" ||
        { fail "the file on the child's own tmpfs was not opened in its namespace" "$D/img/restore.log"; return 1; }
    grep -q " $D/dir/" /proc/self/mountinfo && { fail "the restored mounts show in the host's namespace"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(mntshare-cr)

# mntshare --narrow 1: the peer group's only mount in the root's namespace
# is a bind of a part of the child's a (the root made its own a private): crust
# makes the root's namespace first and cannot make the child's wider mount
# join a narrower one, so the dump is refused naming the peer group, and
# both processes run on untouched.
t_err_dump_mntshare_narrow() {
    need_cr || return $?
    mkdir -p "$D/dir" "$D/img"
    start_prog mntshare --dir "$D/dir" --narrow 1 || return 1
    local c children
    children=$(cat /proc/"$PID"/task/*/children 2>/dev/null)
    for c in $children; do track "$c" "$BIN/mntshare"; done
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "mount [0-9]* at $D/dir/a .* is in peer group [0-9]* with mounts of the tree root's namespace (mount [0-9]* at $D/dir/bx" "$D/dump.err" ||
        { fail "the message does not name the peer group: $(head -c 400 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    ls "$D/img"/*.img >/dev/null 2>&1 && { fail "the failed dump left images" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    for c in $children; do
        [ -e "/proc/$c" ] || { fail "child $c vanished after the failed dump" "$D/img/dump.log"; return 1; }
        expect_untouched "$c" || return 1
    done
    kill -KILL "$PID" $children 2>/dev/null
    wait_gone "$PID" 5
}

ALL_TESTS+=(err-dump-mntshare-narrow)
