# Tests of file locks (--file-locks) and System V IPC (issue 4).
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# expect_pass, restore_fails_naming, dump_must_fail, fail, track...) and adds
# its tests to ALL_TESTS.

# Another process must be refused the locks `flocks` holds in $1: an
# exclusive flock on a, a shared one on d... and granted what is free.
locks_refused_outside() {
    local dir=$1 log=${2:-}
    flock -n -x "$dir/a" true 2>/dev/null && { fail "an outside process got flock(LOCK_EX) on a" "$log"; return 1; }
    flock -n -s "$dir/a" true 2>/dev/null && { fail "an outside process got flock(LOCK_SH) on a" "$log"; return 1; }
    flock -n -x "$dir/d" true 2>/dev/null && { fail "an outside process got flock(LOCK_EX) on d (held shared)" "$log"; return 1; }
    flock -n -s "$dir/d" true 2>/dev/null || { fail "an outside process was refused flock(LOCK_SH) on d (held shared)" "$log"; return 1; }
    "$PY" - "$dir" >"$D/outside.out" 2>&1 <<'EOF' || { fail "outside POSIX/OFD lock check: $(tail -c 300 "$D/outside.out")" "$log"; return 1; }
import fcntl, os, struct, sys
d = sys.argv[1]
def refused(path, cmd, ltype, start, length):
    fd = os.open(os.path.join(d, path), os.O_RDWR)
    try:
        fcntl.fcntl(fd, cmd, struct.pack("hhqqi4x", ltype, 0, start, length, 0))
        return False
    except OSError:
        return True
    finally:
        os.close(fd)
F_OFD_SETLK = 37
assert refused("b", fcntl.F_SETLK, fcntl.F_WRLCK, 0, 1), "POSIX write lock on b:0 granted"
assert refused("b", fcntl.F_SETLK, fcntl.F_WRLCK, 500, 1), "POSIX write lock on b:500 granted (read-locked to EOF)"
assert not refused("b", fcntl.F_SETLK, fcntl.F_RDLCK, 500, 1), "POSIX read lock on b:500 refused"
assert refused("c", F_OFD_SETLK, fcntl.F_WRLCK, 12, 1), "OFD write lock on c:12 granted"
assert not refused("c", F_OFD_SETLK, fcntl.F_WRLCK, 40, 1), "OFD write lock on c:40 refused"
EOF
}

# flock, POSIX and OFD locks held across dump and restore with --file-locks:
# the images have them, an outside process is refused them after restore,
# and the program checks them itself.
file_locks_cr() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog flocks --dir "$D/files" "$@" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/flocks"; done
    locks_refused_outside "$D/files" || { REASON="before the dump: $REASON"; return 1; }
    do_dump "$D/img" --file-locks || return 1
    "$CRUST" image decode -i "$D/img/filelocks.img" >"$D/locks.json" 2>&1 ||
        { fail "cannot decode filelocks.img: $(head -c 200 "$D/locks.json")"; return 1; }
    "$PY" - "$D/locks.json" "$PID" >"$D/check.out" 2>&1 <<'EOF' ||
import json, sys
e = json.load(open(sys.argv[1]))["entries"]
pid = int(sys.argv[2])
got = sorted((x["flag"], x["type"], x["fd"], x["start"], x["len"]) for x in e if x["pid"] == pid)
want = sorted([(2, 1, 3, 0, 0), (1, 1, 4, 0, 100), (1, 0, 4, 200, 0), (4, 1, 5, 10, 10), (2, 0, 6, 0, 0)])
assert got == want, "locks of %d: %s, expected %s" % (pid, got, want)
EOF
        { fail "filelocks.img: $(tail -c 300 "$D/check.out")"; return 1; }
    do_restore "$D/img" "" --file-locks || return 1
    locks_refused_outside "$D/files" "$D/img/restore.log" || { REASON="after restore: $REASON"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_file_locks() { file_locks_cr; }
# The same with a child holding its own POSIX lock (and the parent's flock
# descriptions inherited: each lock is recorded once).
t_file_locks_child() { file_locks_cr --child 1; }

# Without --file-locks a tree holding locks is refused, naming the option,
# and runs on untouched.
t_err_dump_file_locks() {
    mkdir -p "$D/files"
    dump_must_fail 'file-locks' flocks --dir "$D/files"
}

# A lock that an outside process took while the tree was dumped: the
# restore fails saying so, and nothing is left behind.
t_err_restore_lock_taken() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog flocks --dir "$D/files" || return 1
    do_dump "$D/img" --file-locks || return 1
    local holder py_exe n=0
    py_exe=$(readlink -f "$(command -v "$PY")")
    "$PY" -c 'import fcntl, sys, time
f = open(sys.argv[1])
fcntl.flock(f, fcntl.LOCK_EX)
time.sleep(30)' "$D/files/a" </dev/null >/dev/null 2>&1 &
    holder=$!
    track "$holder" "$py_exe"
    while flock -n "$D/files/a" true 2>/dev/null; do
        n=$((n + 1))
        [ $n -lt 100 ] || { kill "$holder"; fail "the outside holder did not take its lock"; return 1; }
        sleep 0.05
    done
    restore_fails_naming "$D/img" "$PID" "conflicting lock" "" --file-locks
    local rc=$?
    kill "$holder" 2>/dev/null
    wait "$holder" 2>/dev/null
    return $rc
}

ALL_TESTS+=(file-locks file-locks-child err-dump-file-locks err-restore-lock-taken)

# System V shared memory of crust's own IPC namespace, attached by the tree
# alone and marked for removal: dumped (beyond CRIU, which dumps System V
# objects only with an IPC namespace of the tree's own), gone with the tree,
# made again and marked for removal again at restore (see sysv.sh).
t_sysvshm() { cr_test sysvshm; }

ALL_TESTS+=(sysvshm)

# A tree with an IPC namespace of its own (sysvipc unshares one): its System
# V segments (one attached twice, one marked for removal, one shared with a
# child), semaphores and messages are dumped to ipcns-*-9.img and come back
# with the same ids, keys, contents, values and messages in order; parent
# and child still share the segment.
sysvipc_start() {
    start_prog sysvipc || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/sysvipc"; done
}
t_sysvipc_cr() {
    need_cr || return $?
    sysvipc_start || return 1
    do_dump "$D/img" || return 1
    local f
    for f in ipcns-var-9 ipcns-shm-9 ipcns-sem-9 ipcns-msg-9; do
        [ -s "$D/img/$f.img" ] || { fail "the dump wrote no $f.img" "$D/img/dump.log"; return 1; }
    done
    "$CRUST" image decode -i "$D/img/ipcns-shm-9.img" >"$D/shm.json" 2>&1 ||
        { fail "cannot decode ipcns-shm-9.img: $(head -c 200 "$D/shm.json")"; return 1; }
    "$PY" - "$D/shm.json" >"$D/check.out" 2>&1 <<'PYEOF' ||
import json, sys
e = json.load(open(sys.argv[1]))["entries"]
keys = sorted(x["desc"]["key"] for x in e)
assert keys == [0, 0x51570001, 0x51570004], "segment keys %s" % keys
assert all(x.get("in_pagemaps") for x in e), "contents not in pagemaps"
PYEOF
        { fail "ipcns-shm-9.img: $(tail -c 300 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A cut ipcns-shm image: the restore fails naming it and leaves nothing.
t_err_restore_sysvipc_truncated() {
    need_cr || return $?
    sysvipc_start || return 1
    do_dump "$D/img" || return 1
    truncate -s -5 "$D/img/ipcns-shm-9.img"
    restore_fails_naming "$D/img" "$PID" "ipcns-shm-9.img" ""
}

ALL_TESTS+=(sysvipc-cr err-restore-sysvipc-truncated)

# A POSIX message queue held open is refused, naming it; a child in an IPC
# namespace other than the root's is refused too. Both trees run on.
t_err_dump_mqueue() { dump_must_fail 'POSIX message queue' sysvipc --mqueue 1; }
t_err_dump_ipcns_child() { dump_must_fail 'another IPC namespace' sysvipc --child-ns 1; }

ALL_TESTS+=(err-dump-mqueue err-dump-ipcns-child)

# dump -R: the tree runs on with every object as it was (messages are copied,
# not received) and passes; the images restore too.
t_sysvipc_leave_running() {
    need_cr || return $?
    sysvipc_start || return 1
    dump_with "$D/img" -R || return 1
    expect_pass "$D/img/dump.log" || { REASON="after dump -R: $REASON"; return 1; }
    do_restore "$D/img" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/sysvipc"; done
    expect_pass "$D/img/restore.log"
}

# sysvipc as the init of a pid namespace of its own: its IPC namespace comes
# after the pid namespace (ipcns-*-10.img) and both are made again.
t_sysvipc_pidns() {
    need_cr || return $?
    rm -f "$D/ready" "$D/result"
    local outer inner c
    outer=$(setsid unshare -p -f "$BIN/sysvipc" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "sysvipc in a pid namespace did not become ready"; return 1; }
    rm -f "$D/ready"
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$inner" ] || { fail "no init under unshare $outer"; return 1; }
    track "$inner" "$BIN/sysvipc"
    for c in $(cat /proc/"$inner"/task/*/children 2>/dev/null); do track "$c" "$BIN/sysvipc"; done
    PID=$inner
    do_dump "$D/img" || return 1
    [ -s "$D/img/ipcns-shm-10.img" ] ||
        { fail "no ipcns-shm-10.img: $(cd "$D/img" && echo ipcns-*)" "$D/img/dump.log"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/sysvipc"
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/sysvipc"; done
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status 2>/dev/null ||
        { fail "restored $PID is not pid 1 of a new namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(sysvipc-leave-running sysvipc-pidns)
