# Tests of the cgroup namespace (issue 14): a tree whose root made its
# cgroup namespace in a nested cgroup (cgroup.img's cgns_prefix).
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# restore_fails_naming, expect_pass, fail, skip, track, kill_tracked...)
# and adds its tests to ALL_TESTS.
#
# Each test mounts a named cgroup v1 hierarchy of its own on $D/cgns; the
# program `cgns` makes its cgroups there. Everything is removed (tasks
# killed first), pass or fail.

cgns_setup() {
    need_cr || return $?
    [ -e /proc/self/ns/cgroup ] || { skip "no cgroup namespaces in this kernel"; return 2; }
    CGNS_NAME=crust-e2e-cgns-$$-$RANDOM
    CGNS_V1=$D/cgns
    mkdir -p "$CGNS_V1"
    mount -t cgroup -o "none,name=$CGNS_NAME" none "$CGNS_V1" 2>"$D/mount.err" ||
        { rmdir "$CGNS_V1"; skip "cannot mount a named cgroup v1 hierarchy: $(cat "$D/mount.err")"; return 2; }
}

cgns_teardown() {
    local n child
    if [ -n "${PID:-}" ]; then
        for child in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do kill -9 "$child" 2>/dev/null; done
        kill_tracked "$PID" "$BIN/cgns"
        kill_tracked "$PID" "$BIN/mntns"
    fi
    for n in 1 2 3 4 5 6 7 8 9 10; do
        find "$CGNS_V1" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
        [ -z "$(find "$CGNS_V1" -mindepth 1 -type d 2>/dev/null)" ] && break
        sleep 0.2
    done
    if mountpoint -q "$CGNS_V1" 2>/dev/null; then umount "$CGNS_V1"; fi
    [ -d "$CGNS_V1" ] && rmdir "$CGNS_V1"
    return 0
}

cgns_run() {
    local rc
    cgns_setup || return $?
    "$@"
    rc=$?
    cgns_teardown
    return $rc
}

# Start `cgns`, dump it (cgroup.img with its prefix), remove its cgroups.
cgns_start_dump() {
    local child
    start_prog cgns --v1 "$CGNS_V1" || return 1
    for child in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$child" "$BIN/cgns"; done
    do_dump "$D/img" || return 1
    [ -f "$D/img/cgroup.img" ] || { fail "no cgroup.img written" "$D/img/dump.log"; return 1; }
    sleep 0.2
    rmdir "$CGNS_V1/ns/inner" "$CGNS_V1/ns/kid" "$CGNS_V1/ns" ||
        { fail "cannot remove the dumped tree's cgroups"; return 1; }
}

# Dump and restore: the root is again in a cgroup namespace of its own
# rooted at /ns (inside, both tasks see /inner and /kid as before).
cgns_cr() {
    local mine theirs
    cgns_start_dump || return 1
    do_restore "$D/img" || return 1
    grep -qx "[0-9]*:name=$CGNS_NAME:/ns/inner" /proc/"$PID"/cgroup ||
        { fail "the restored process is not in /ns/inner: $(grep "name=$CGNS_NAME" /proc/"$PID"/cgroup)" "$D/img/restore.log"; return 1; }
    mine=$(readlink /proc/self/ns/cgroup)
    theirs=$(readlink /proc/"$PID"/ns/cgroup)
    [ -n "$theirs" ] && [ "$mine" != "$theirs" ] ||
        { fail "the restored process is not in a cgroup namespace of its own ($theirs)" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_cgns_cr() { cgns_run cgns_cr; }

# A cgns_prefix that does not end at a directory of the task's path (2:
# "/n" of "/ns/inner"): refused before anything is made, nothing left.
cgns_err_prefix() {
    cgns_start_dump || return 1
    python3 - "$D/img/cgroup.img" <<'EOF' || { fail "cannot edit cgroup.img"; return 1; }
import sys
p = sys.argv[1]
b = open(p, "rb").read()
# CgMemberEntry: path (field 2) then cgns_prefix (field 3, varint 3).
old = b"/ns/inner\x18\x03"
assert b.count(old) == 1, b
open(p, "wb").write(b.replace(old, b"/ns/inner\x18\x02"))
EOF
    restore_fails_naming "$D/img" "$PID" "cgroup namespace prefix" 1 || return 1
    [ -e "$CGNS_V1/ns" ] && { fail "$CGNS_V1/ns was made by the refused restore" "$D/img/restore1.log"; return 1; }
    return 0
}
t_err_cgns_prefix() { cgns_run cgns_err_prefix; }

ALL_TESTS+=(cgns-cr err-cgns-prefix)

# A tree in a mount namespace of its own where the test's named cgroup v1
# hierarchy is mounted (`mntns --cgroup`, at $D/dir/cg): the cgroup mount
# is mounted afresh at restore (CRIU's fs type 12, root /).
cgns_mnt() {
    mkdir -p "$D/dir"
    start_prog mntns --dir "$D/dir" --cgroup "$CGNS_NAME" || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    expect_pass "$D/img/restore.log"
}
t_cgns_mnt() { cgns_run cgns_mnt; }

ALL_TESTS+=(cgns-mnt)
