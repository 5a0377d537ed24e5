# Tests of cgroups (issue 14): cgroup.img, membership of tasks and threads,
# --manage-cgroups modes, --cgroup-root.
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# dump_with, crust_run, expect_pass, expect_error, restore_fails_naming,
# fail, skip, track, kill_tracked, wait_gone...) and adds its tests to
# ALL_TESTS.
#
# Each test mounts a named cgroup v1 hierarchy of its own on $D/v1 and
# makes a cgroup v2 directory of its own under the machine's cgroup2 mount;
# the program `cgroups` makes its cgroups in both. Everything is removed
# (tasks killed first), pass or fail.

# Set CG_NAME, CG_V1, CG_V2 and mount/make them.
cg_setup() {
    local v2root
    need_cr || return $?
    CG_NAME=crust-e2e-$$-$RANDOM
    CG_V1=$D/v1
    CG_V2=
    v2root=$(findmnt -n -t cgroup2 -o TARGET 2>/dev/null | head -1)
    [ -n "$v2root" ] || { skip "no cgroup2 mount"; return 2; }
    mkdir -p "$CG_V1"
    mount -t cgroup -o "none,name=$CG_NAME" none "$CG_V1" 2>"$D/mount.err" ||
        { rmdir "$CG_V1"; skip "cannot mount a named cgroup v1 hierarchy: $(cat "$D/mount.err")"; return 2; }
    CG_V2=$v2root/$CG_NAME
    mkdir "$CG_V2" || { fail "cannot make $CG_V2"; cg_teardown; return 1; }
}

# Kill the test's tasks, remove every cgroup made, unmount.
cg_teardown() {
    local n
    [ -n "${PID:-}" ] && kill_tracked "$PID" "$BIN/cgroups"
    for d in "$CG_V1" "$CG_V2"; do
        [ -n "$d" ] && [ -d "$d" ] || continue
        # The killed tasks leave their cgroups once reaped.
        for n in 1 2 3 4 5 6 7 8 9 10; do
            find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
            [ -z "$(find "$d" -mindepth 1 -type d 2>/dev/null)" ] && break
            sleep 0.2
        done
    done
    if mountpoint -q "$CG_V1" 2>/dev/null; then umount "$CG_V1"; fi
    [ -d "$CG_V1" ] && rmdir "$CG_V1"
    [ -n "$CG_V2" ] && [ -d "$CG_V2" ] && rmdir "$CG_V2"
    return 0
}

# Run test body $1 between cg_setup and cg_teardown.
cg_run() {
    local rc
    cg_setup || return $?
    "$@"
    rc=$?
    cg_teardown
    return $rc
}

# Start `cgroups` and dump it; then remove its cgroups (the restore makes them).
cg_start_dump() {
    local child
    start_prog cgroups --v1 "$CG_V1" --v2 "$CG_V2" "$@" || return 1
    for child in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$child" "$BIN/cgroups"; done
    do_dump "$D/img" || return 1
    [ -f "$D/img/cgroup.img" ] || { fail "no cgroup.img written" "$D/img/dump.log"; return 1; }
    sleep 0.2
    rmdir "$CG_V1/top/sub/empty.0" "$CG_V1/top/sub" "$CG_V1/top" "$CG_V1/thr" "$CG_V1/kid" "$CG_V2/a" ||
        { fail "cannot remove the dumped tree's cgroups"; return 1; }
}

# The cgroups of the process, a thread and a child (v1 named + v2) come
# back, made again by the restore, empty directories too.
cg_cr() {
    cg_start_dump || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_cgroup_cr() { cg_run cg_cr; }

# --cgroup-root NAME:/moved: the dumped top cgroups are made at /moved.
cg_root() {
    cg_start_dump --check 0 || return 1
    do_restore "$D/img" "" --cgroup-root "name=$CG_NAME:/moved" || return 1
    grep -qx "[0-9]*:name=$CG_NAME:/moved" /proc/"$PID"/cgroup ||
        { fail "the restored process is not in /moved: $(grep "name=$CG_NAME" /proc/"$PID"/cgroup)" "$D/img/restore.log"; return 1; }
    [ -d "$CG_V1/moved/empty.0" ] || { fail "no $CG_V1/moved/empty.0" "$D/img/restore.log"; return 1; }
    [ -e "$CG_V1/top" ] && { fail "$CG_V1/top was made" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_cgroup_root() { cg_run cg_root; }

# --manage-cgroups=ignore: the tree stays in crust's cgroups, nothing made.
cg_ignore() {
    cg_start_dump --check 0 || return 1
    do_restore "$D/img" "" --manage-cgroups=ignore || return 1
    grep -qx "[0-9]*:name=$CG_NAME:/" /proc/"$PID"/cgroup ||
        { fail "the restored process is not in crust's cgroup: $(grep "name=$CG_NAME" /proc/"$PID"/cgroup)" "$D/img/restore.log"; return 1; }
    [ -e "$CG_V1/top" ] && { fail "$CG_V1/top was made" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_cgroup_ignore() { cg_run cg_ignore; }

# --cgroup-root naming no cgroup at dump: refused, the tree runs on.
cg_err_dump_root() {
    start_prog cgroups --v1 "$CG_V1" --v2 "$CG_V2" || return 1
    local child
    for child in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$child" "$BIN/cgroups"; done
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --cgroup-root "name=$CG_NAME:/nonexistent"
    expect_error dump "$D/img/dump.log" || return 1
    grep -qF "/nonexistent" "$D/dump.err" ||
        { fail "the message does not name /nonexistent: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_pass "$D/img/dump.log"
}
t_err_cgroup_dump_root() { cg_run cg_err_dump_root; }

# A set path with ".." in cgroup.img: refused before anything is made.
cg_err_dotdot() {
    cg_start_dump || return 1
    python3 - "$D/img/cgroup.img" <<'EOF' || { fail "cannot edit cgroup.img"; return 1; }
import sys
p = sys.argv[1]
b = open(p, "rb").read()
assert b.count(b"/thr") == 1, b
open(p, "wb").write(b.replace(b"/thr", b"/../"))
EOF
    restore_fails_naming "$D/img" "$PID" ".." 1 || return 1
    [ -e "$CG_V1/top" ] && { fail "$CG_V1/top was made by the refused restore" "$D/img/restore1.log"; return 1; }
    return 0
}
t_err_cgroup_dotdot() { cg_run cg_err_dotdot; }

# --manage-cgroups=none with the cgroups gone: refused naming the missing
# cgroup; nothing made.
cg_err_none() {
    cg_start_dump || return 1
    restore_fails_naming "$D/img" "$PID" "does not exist" 1 --manage-cgroups=none || return 1
    [ -e "$CG_V1/top" ] && { fail "$CG_V1/top was made by the refused restore" "$D/img/restore1.log"; return 1; }
    return 0
}
t_err_cgroup_none() { cg_run cg_err_none; }

# A restore that fails after making the cgroups (pstree.img gone) removes
# the ones it made.
cg_err_rollback() {
    cg_start_dump || return 1
    mv "$D/img/pstree.img" "$D/pstree.img.away"
    restore_fails_naming "$D/img" "$PID" "pstree" 1 || return 1
    [ -e "$CG_V1/top" ] || [ -e "$CG_V1/kid" ] || [ -e "$CG_V2/a" ] &&
        { fail "the failed restore left cgroups: $(ls "$CG_V1" "$CG_V2" | tr '\n' ' ')" "$D/img/restore1.log"; return 1; }
    return 0
}
t_err_cgroup_rollback() { cg_run cg_err_rollback; }

# Directory counts per hierarchy of cgroup.img ("CNAMES DIRS" lines):
# CgroupEntry.controllers (2) of CgControllerEntry {cnames 1, dirs 2}.
cg_img_dirs() {
    python3 - "$1" <<'EOF'
import struct, sys
b = open(sys.argv[1], "rb").read()
def varint(b, o):
    v = s = 0
    while True:
        c = b[o]; o += 1; v |= (c & 0x7f) << s; s += 7
        if c < 0x80: return v, o
def fields(b):
    o = 0
    while o < len(b):
        k, o = varint(b, o)
        if k & 7 == 0: v, o = varint(b, o)
        elif k & 7 == 2:
            n, o = varint(b, o); v = b[o:o + n]; o += n
        else: raise SystemExit("unexpected wire type")
        yield k >> 3, v
(n,) = struct.unpack_from("<I", b, 8)
for f, c in fields(b[12:12 + n]):
    if f == 2:
        names = [v.decode() for g, v in fields(c) if g == 1]
        print(",".join(names) or "-", sum(1 for g, _ in fields(c) if g == 2))
EOF
}

# --cgroup-dump-controller NAME: only that hierarchy's directories are in
# cgroup.img (the others are listed, without directories, as CRIU does);
# the tree restores into its cgroups, which are left in place.
cg_dump_controller() {
    start_prog cgroups --v1 "$CG_V1" --v2 "$CG_V2" || return 1
    local child out
    for child in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$child" "$BIN/cgroups"; done
    dump_with "$D/img" --cgroup-dump-controller "name=$CG_NAME" || return 1
    out=$(cg_img_dirs "$D/img/cgroup.img") || { fail "cannot read cgroup.img"; return 1; }
    echo "$out" | grep -qx "name=$CG_NAME [1-9][0-9]*" ||
        { fail "no directories of name=$CG_NAME in cgroup.img: $out" "$D/img/dump.log"; return 1; }
    echo "$out" | grep -v "^name=$CG_NAME " | grep -qv " 0$" &&
        { fail "directories of another hierarchy in cgroup.img: $out" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_cgroup_dump_controller() { cg_run cg_dump_controller; }

ALL_TESTS+=(cgroup-cr cgroup-root cgroup-ignore cgroup-dump-controller err-cgroup-dump-root err-cgroup-dotdot
    err-cgroup-none err-cgroup-rollback)
