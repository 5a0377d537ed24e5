# Tests of covered tmpfs mounts in a tree whose user namespace owns its
# mount namespace (issue 13, zdtm's uns flavor of tempfs_overmounted).
# Sourced by run.sh: uses its helpers (and ns-container.sh's ct_init_of)
# and adds its tests to ALL_TESTS.
#
# `covered` (see its source) runs pivoted into a small root filesystem
# built here, in its own user (root inside is COV_UID outside), pid and
# mount namespaces, with a tmpfs and a tmpfs under it both covered by a
# third. A copy of its mount namespace made from crust's user namespace
# has every mount locked (MNT_LOCKED), so crust makes the copy it detaches
# the cover in from inside the tree's user namespace.

COV_UID=100000

# cov_rootfs DIR: the program, what it loads, the directories it mounts
# on; all of it the namespace root's.
cov_rootfs() {
    local r=$1 lib
    mkdir -p "$r"/{bin,dev,old,proc,bfm,cov/a} || return 1
    mknod -m 666 "$r/dev/null" c 1 3 || return 1
    cp "$BIN/covered" "$r/bin/" || return 1
    for lib in $(ldd "$BIN/covered" | grep -o '/[^ ]*'); do
        mkdir -p "$r$(dirname "$lib")" && cp -L "$lib" "$r$lib" || return 1
    done
    chown -R "$COV_UID:$COV_UID" "$r" && chmod o+x "$(dirname "$D")" "$D"
}

# cov_start DIR [ARGS]: a user namespace first (its maps written from
# outside), then `unshare` makes the rest as its root; sets PID (the init).
cov_start() {
    local r=$1 u
    shift
    rm -f "$r/ready" "$r/result" "$D/mapped"
    u=$(setsid unshare --user --keep-caps "$PY" -c '
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
os.setgroups([]); os.setgid(0); os.setuid(0)
os.execvp(sys.argv[2], sys.argv[2:])' "$D/mapped" unshare --fork --pid --mount --mount-proc \
        "$r/bin/covered" --root "$r" --ready /ready --result /result "$@" </dev/null >"$D/cov.out" 2>&1 & echo $!)
    track "$u" "$(readlink -f "$PY")"
    sleep 0.2
    { echo "0 $COV_UID 65536" >/proc/"$u"/uid_map && echo "0 $COV_UID 65536" >/proc/"$u"/gid_map; } 2>"$D/map.err" ||
        { fail "cannot write the user namespace's maps: $(cat "$D/map.err")"; return 1; }
    touch "$D/mapped"
    track "$u" "$(command -v unshare)"
    PID=$(ct_init_of "$u") || { fail "unshare started no init: $(head -c 300 "$D/cov.out")"; return 1; }
    wait_file "$r/ready" "$READY_TIMEOUT" || { fail "covered did not become ready: $(head -c 300 "$D/cov.out")"; return 1; }
    track "$PID" "$(exe_of "$PID")"
}

# SIGTERM the init; its verdict in $1/result.
cov_verdict() {
    local r=$1 log=$2
    kill -TERM "$PID"
    wait_file "$r/result" "$RESULT_TIMEOUT" || { fail "no result after SIGTERM" "$log"; return 1; }
    [ "$(cat "$r/result")" = PASS ] || { fail "covered says: $(cat "$r/result")" "$log"; return 1; }
    wait_gone "$PID" 5
}

# Build the root, start the tree (with the program's options $@) and dump
# it into $D/img.
cov_dumped() {
    need_cr || return $?
    command -v unshare >/dev/null || { skip "needs unshare"; return 2; }
    cov_rootfs "$D/root" || { fail "cannot build the root filesystem"; return 1; }
    cov_start "$D/root" "$@" || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the tree still runs after the dump" "$D/img/dump.log"; return 1; }
    local n
    n=$(ls "$D/img"/tmpfs-dev-*.tar.gz.img 2>/dev/null | wc -l)
    [ "$n" = 3 ] || { fail "$n tmpfs archives written, not 3" "$D/img/dump.log"; return 1; }
}

# Dump, kill, restore into new namespaces (--root): the covered tmpfs and
# the one under it come back with their files, under the cover.
t_unsover_covered_cr() {
    cov_dumped || return $?
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --root "$D/root"
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile" 2>/dev/null)
    [ -n "$PID" ] && [ -e "/proc/$PID" ] || { fail "no restored init (pidfile '$PID')" "$D/img/restore.log"; return 1; }
    track "$PID" "$(exe_of "$PID")"
    local k
    for k in user mnt pid; do
        [ "$(readlink /proc/"$PID"/ns/$k)" != "$(readlink /proc/self/ns/$k)" ] ||
            { fail "the restored tree is in the host's $k namespace" "$D/img/restore.log"; return 1; }
    done
    cov_verdict "$D/root" "$D/img/restore.log"
}

# crust's images of it restore with CRIU 4.2 (the archives of the covered
# mounts are CRIU's tmpfs-dev-N.tar.gz.img). Without binfmt_misc entries:
# CRIU 4.2 as built reads no binfmt-misc.img (its code for it is under
# CONFIG_BINFMT_MISC_VIRTUALIZED, which its build never defines), so it
# would restore the mount empty. Root inside is root outside
# here: the kernel shows a tmpfs's uid= and gid= options as the host sees
# them, which CRIU 4.2 gives back to a mount it makes from inside the
# user namespace, where 100000 has no name (EINVAL); crust mounts from
# outside.
t_unsover_covered_to_criu() {
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    local COV_UID=0
    cov_dumped || return $?
    rm -f "$D/criu-pid"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$D/img" -d -v4 -o criu-restore.log \
        --root "$D/root" --pidfile "$D/criu-pid") >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of crust's images failed: $(tail -c 300 "$D/criu-restore.out")" "$D/img/criu-restore.log"; return 1; }
    PID=$(cat "$D/criu-pid" 2>/dev/null)
    [ -n "$PID" ] && [ -e "/proc/$PID" ] || { fail "no init restored by CRIU" "$D/img/criu-restore.log"; return 1; }
    track "$PID" "$(exe_of "$PID")"
    cov_verdict "$D/root" "$D/img/criu-restore.log"
}

# Bad case: the archive of the covered tmpfs (the one holding `under`)
# is missing at restore: refused naming it, before anything is made (no
# restored tree, no yard left).
t_err_restore_unsover_noarchive() {
    cov_dumped || return $?
    local f gone=
    for f in "$D/img"/tmpfs-dev-*.tar.gz.img; do
        tar -tzf "$f" 2>/dev/null | grep -qE '^(\./)?under$' && { gone=$f; rm -f "$f"; }
    done
    [ -n "$gone" ] || { fail "no archive holds ./under" "$D/img/dump.log"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --root "$D/root"
    expect_error restore "$D/img/restore.log" || return 1
    grep -q "$(basename "$gone")" "$D/restore.err" ||
        { fail "the error does not name $(basename "$gone"): $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -s "$D/pidfile" ] && { fail "a pidfile was written" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log"
}

# Bad case: a file held open on the covered tmpfs: its path would open the
# cover's file at restore, so the dump is refused naming the mount; the
# tree runs on untouched and passes.
t_err_dump_unsover_held() {
    need_cr || return $?
    command -v unshare >/dev/null || { skip "needs unshare"; return 2; }
    cov_rootfs "$D/root" || { fail "cannot build the root filesystem"; return 1; }
    cov_start "$D/root" --hold 1 || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "/cov/a/under.*which other mounts cover" "$D/dump.err" ||
        { fail "the message does not refuse the fd on the covered /cov/a/under: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    cov_verdict "$D/root" "$D/img/dump.log"
}

# The tree mounts its user namespace's own binfmt_misc instance with two
# entries (one disabled): dumped to binfmt-misc.img, registered again in
# the restored namespace's new instance (the program checks they read as
# before); crust's own instance never gets them.
t_unsover_binfmt_cr() {
    need_cr || return $?
    command -v unshare >/dev/null || { skip "needs unshare"; return 2; }
    cov_rootfs "$D/root" || { fail "cannot build the root filesystem"; return 1; }
    cov_start "$D/root" --binfmt 1 || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the tree still runs after the dump" "$D/img/dump.log"; return 1; }
    local got
    got=$("$CRUST" image decode -i "$D/img/binfmt-misc.img" 2>&1)
    echo "$got" | grep -q '"name": "crust-e", "enabled": true' && echo "$got" | grep -q '"name": "crust-m", "enabled": false' ||
        { fail "binfmt-misc.img does not hold both entries: $got" "$D/img/dump.log"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --root "$D/root"
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile" 2>/dev/null)
    [ -n "$PID" ] && [ -e "/proc/$PID" ] || { fail "no restored init (pidfile '$PID')" "$D/img/restore.log"; return 1; }
    track "$PID" "$(exe_of "$PID")"
    got=$(unshare -m --propagation private sh -c 'mount -t binfmt_misc none /mnt && ls /mnt' 2>&1)
    echo "$got" | grep -q crust- && { fail "crust's binfmt_misc instance got the entries: $got" "$D/img/restore.log"; return 1; }
    cov_verdict "$D/root" "$D/img/restore.log"
}

# Bad case: binfmt-misc.img edited so that an entry's interpreter holds a
# ':' (the register line's separator): the restore refuses the image,
# naming the entry, before anything is made.
t_err_restore_unsover_binfmt_bad() {
    need_cr || return $?
    command -v unshare >/dev/null || { skip "needs unshare"; return 2; }
    cov_rootfs "$D/root" || { fail "cannot build the root filesystem"; return 1; }
    cov_start "$D/root" --binfmt 1 || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the tree still runs after the dump" "$D/img/dump.log"; return 1; }
    "$PY" -c 'import sys; p = sys.argv[1]; b = open(p, "rb").read(); open(p, "wb").write(b.replace(b"/bin/covered", b"/bin:covered", 1))' \
        "$D/img/binfmt-misc.img" || { fail "cannot edit binfmt-misc.img"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --root "$D/root"
    expect_error restore "$D/img/restore.log" || return 1
    grep -q "binfmt-misc.img.*crust-e.*interpreter" "$D/restore.err" ||
        { fail "the error does not name the image and the entry: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -s "$D/pidfile" ] && { fail "a pidfile was written" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log"
}

ALL_TESTS+=(unsover-binfmt-cr err-restore-unsover-binfmt-bad)

ALL_TESTS+=(unsover-covered-cr unsover-covered-to-criu err-restore-unsover-noarchive err-dump-unsover-held)
