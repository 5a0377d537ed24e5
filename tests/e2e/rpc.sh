# CRIU's RPC (issue 14): crust driven by CRIU 4.2's own Python client,
# pycriu (read at test time from $PYCRIU_LIB, default
# /var/cache/criu-4.2-clean/lib: nothing of CRIU is in this repository),
# over `crust swrk` and over `crust service`; raw packets for bad input,
# the notify callbacks and clients that go away. Sourced by run.sh: uses
# its helpers (start_prog, expect_pass, wait_file, fail, skip, track...) and
# adds to ALL_TESTS.

# Without PYCRIU_LIB: the clean tree if a machine has one, else the tree
# ../shared/criu/build.sh makes (built on first use by need_pycriu).
if [ -z "${PYCRIU_LIB:-}" ]; then
    PYCRIU_LIB=/var/cache/criu-4.2/lib
    [ -f /var/cache/criu-4.2-clean/lib/pycriu/criu.py ] && PYCRIU_LIB=/var/cache/criu-4.2-clean/lib
    PYCRIU_BUILD=$ROOT/../shared/criu/build.sh
fi
export PYCRIU_LIB
RPC_CLIENT=$ROOT/tests/e2e/rpc-client
RPC_RAW=$ROOT/tests/e2e/rpc-raw

# pycriu and its protobuf runtime must be there: the tests fail (not skip)
# with a clear message otherwise.
need_pycriu() {
    need_cr || return $?
    if [ ! -f "$PYCRIU_LIB/pycriu/criu.py" ] && [ -x "${PYCRIU_BUILD:-}" ]; then
        "$PYCRIU_BUILD" >"$D/criu-build.out" 2>&1 || true
    fi
    [ -f "$PYCRIU_LIB/pycriu/criu.py" ] ||
        { fail "pycriu not found in $PYCRIU_LIB (CRIU 4.2's lib/: ../shared/criu/build.sh builds it, or set PYCRIU_LIB)" "$D/criu-build.out"; return 1; }
    "$PY" -c 'import google.protobuf' 2>/dev/null ||
        { fail "python3-protobuf is not installed (apt-get install python3-protobuf)"; return 1; }
}

# rpc_run NAME PROGRAM ARGS...: a client run, its output in $D/NAME.out.
rpc_run() {
    local name=$1
    shift
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$PY" "$@") >"$D/$name.out" 2>"$D/$name.err"
    RC=$?
}

# rpc_ok NAME PROGRAM ARGS...: the client run must succeed.
rpc_ok() {
    local name=$1
    rpc_run "$@"
    [ $RC -eq 0 ] || { fail "$name: $(head -c 400 "$D/$name.err")" "$D/$name.err"; return 1; }
}

# The task PID runs on untouched: not stopped, not traced.
running_untouched() {
    local st tracer
    st=$(pstate "$PID")
    tracer=$(awk '/^TracerPid:/ {print $2}' "/proc/$PID/status" 2>/dev/null)
    case $st in R | S | D) ;; *) fail "$1: pid $PID is in state '$st'"; return 1 ;; esac
    [ "$tracer" = 0 ] || { fail "$1: pid $PID is still traced by $tracer"; return 1; }
}

# No image left in DIR (a failed dump removes what it wrote).
no_images() {
    local left
    left=$(find "$1" -name '*.img' 2>/dev/null | head -n 3)
    [ -z "$left" ] || { fail "$2: images left behind: $left"; return 1; }
}

# The standard round trip over the transport VIA (swrk or a socket path):
# version, check, feature check, dump leaving the task running, dump, restore.
rpc_round_trip() {
    local via=$1 out
    rpc_ok version "$RPC_CLIENT" "$CRUST" "$via" version || return 1
    grep -q '^version 4\.2 crust ' "$D/version.out" || { fail "VERSION says: $(cat "$D/version.out")"; return 1; }
    rpc_ok check "$RPC_CLIENT" "$CRUST" "$via" check || return 1
    rpc_ok features "$RPC_CLIENT" "$CRUST" "$via" features || return 1
    grep -q 'mem_track=True lazy_pages=True' "$D/features.out" ||
        { fail "FEATURE_CHECK says: $(cat "$D/features.out")"; return 1; }
    start_prog loop || return 1
    mkdir -p "$D/img1" "$D/img2"
    rpc_ok dump1 "$RPC_CLIENT" "$CRUST" "$via" dump "$PID" "$D/img1" leave-running || return 1
    [ -s "$D/img1/dump.log" ] || { fail "no crust log in the images directory"; return 1; }
    grep -q 'RPC Dump' "$D/img1/dump.log" || { fail "the dump's log is not crust's" "$D/img1/dump.log"; return 1; }
    [ -f "$D/img1/inventory.img" ] || { fail "leave_running: no images" "$D/img1/dump.log"; return 1; }
    running_untouched "leave_running" || return 1
    rpc_ok dump2 "$RPC_CLIENT" "$CRUST" "$via" dump "$PID" "$D/img2" || return 1
    wait_gone "$PID" 5 || { fail "pid $PID still exists after the dump" "$D/img2/dump.log"; return 1; }
    rpc_ok restore "$RPC_CLIENT" "$CRUST" "$via" restore "$D/img2" || return 1
    out=$(cat "$D/restore.out")
    [ "$out" = "restore pid $PID" ] || { fail "RESTORE answered '$out', expected pid $PID" "$D/img2/restore.log"; return 1; }
    expect_pass "$D/img2/restore.log"
}

t_rpc_swrk() {
    need_pycriu || return $?
    rpc_round_trip swrk
}

# `crust service --daemon`: the socket made (mode 0666), the pidfile names
# the daemon; every request over a connection of its own.
t_rpc_service() {
    need_pycriu || return $?
    local sk=$D/svc.sock svc mode
    crust_run service service --address "$sk" --daemon --pidfile "$D/svc.pid" -W "$D"
    [ $RC -eq 0 ] || { fail "crust service --daemon exited with $RC: $(head -c 300 "$D/service.err")"; return 1; }
    wait_file "$D/svc.pid" 5 || { fail "no pidfile from crust service"; return 1; }
    svc=$(cat "$D/svc.pid")
    track "$svc" "$CRUST"
    [ "$(exe_of "$svc")" = "$CRUST" ] || { fail "pidfile names $svc, not a crust"; return 1; }
    mode=$(stat -c %a "$sk" 2>/dev/null)
    [ "$mode" = 666 ] || { fail "service socket mode '$mode', expected 666"; return 1; }
    rpc_round_trip "$sk" || return 1
    kill -KILL "$svc"
    wait_gone "$svc" 5
}

# notify_scripts: the callbacks come in CRIU's order, with the root's pid
# where CRIU gives it, and the client's answers are waited for.
t_rpc_notify() {
    need_pycriu || return $?
    local want got
    start_prog loop || return 1
    mkdir -p "$D/img1" "$D/img2"
    rpc_ok notify-dump "$RPC_RAW" "$CRUST" notify-dump "$PID" "$D/img1" || return 1
    got=$(cat "$D/notify-dump.out")
    [ "$got" = "pre-dump query-ext-files post-dump" ] || { fail "dump notifies: '$got'" "$D/img1/dump.log"; return 1; }
    running_untouched "after a notified dump" || return 1
    rpc_ok dump "$RPC_CLIENT" "$CRUST" swrk dump "$PID" "$D/img2" || return 1
    wait_gone "$PID" 5 || { fail "pid $PID still exists after the dump" "$D/img2/dump.log"; return 1; }
    rpc_ok notify-restore "$RPC_RAW" "$CRUST" notify-restore "$D/img2" || return 1
    got=$(cat "$D/notify-restore.out")
    # No setup-namespaces for a tree in crust's namespaces, as in CRIU.
    want="pid=$PID pre-restore post-restore=$PID pre-resume post-resume"
    [ "$got" = "$want" ] || { fail "restore notifies: '$got', expected '$want'" "$D/img2/restore.log"; return 1; }
    expect_pass "$D/img2/restore.log"
}

# Bad input: a CRIU-shaped error response (type EMPTY for what is not a
# request) and crust exits; keep_open as CRIU allows it; requests crust
# does not serve yet answered with CRIU's errors.
t_rpc_bad_input() {
    need_pycriu || return $?
    local op
    for op in malformed oversized unknown keep-open-check keep-open-seq not-built; do
        rpc_ok "$op" "$RPC_RAW" "$CRUST" "$op" || return 1
    done
    mkdir -p "$D/cpu"
    rpc_ok cpuinfo "$RPC_RAW" "$CRUST" cpuinfo "$D/cpu" || return 1
}

# A dump that cannot go on leaves the tree running untouched and no image
# behind: a pre-dump notify answered with failure, a client gone when told
# post-dump, a client gone at once (no notify), options crust cannot
# honour (EBADRQC), a pid that does not exist (ESRCH).
t_rpc_dump_refused() {
    need_pycriu || return $?
    local op
    start_prog loop || return 1
    for op in notify-fails gone-at-post-dump gone-at-once bad-options; do
        rm -rf "$D/img" && mkdir -p "$D/img"
        rpc_ok "$op" "$RPC_RAW" "$CRUST" "$op" "$PID" "$D/img" || return 1
        # The worker may still be letting go of the tree.
        sleep 0.2
        running_untouched "$op" || return 1
        no_images "$D/img" "$op" || return 1
    done
    rpc_ok dump-missing "$RPC_CLIENT" "$CRUST" swrk dump-missing "$(free_pid)" "$D/img" || return 1
    expect_pass
}

# --restore-sibling (what runc's restore asks for) of a tree heading its
# own pid namespace: the root, an untraced init, ignores its own SIGSTOP;
# crust stops it from outside once its trampoline is written.
t_restore_sibling_pidns() {
    need_cr || return $?
    rm -f "$D/ready" "$D/result"
    local outer inner shell ppid
    outer=$(setsid unshare -p -f "$BIN/loop" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "loop in a pid namespace did not become ready"; return 1; }
    rm -f "$D/ready"
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$inner" ] || { fail "no init under unshare $outer"; return 1; }
    PID=$inner
    do_dump "$D/img" || return 1
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" bash -c \
        '"$0" restore -D img -d --restore-sibling --pidfile "$PWD/pidfile" -v4 -o restore.log || exit 1
         echo "shell $$ ppid $(awk "/^PPid:/ {print \$2}" /proc/$(cat pidfile)/status)"' \
        "$CRUST") >"$D/sibling.out" 2>"$D/restore.err"
    RC=$?
    [ $RC -eq 0 ] || { fail "restore --restore-sibling exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/loop"
    read -r _ shell _ ppid <"$D/sibling.out"
    [ -n "$shell" ] && [ "$shell" = "$ppid" ] ||
        { fail "restored root's parent is ${ppid:-?}, not the shell ${shell:-?} that ran crust" "$D/img/restore.log"; return 1; }
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status ||
        { fail "restored $PID is not pid 1 of a new namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# runc 1.1.5 (Debian's runc and busybox-static) with crust as its criu: a
# busybox container counting in a file, checkpointed (runc sends every
# device as an external mount, a freezer cgroup, notify scripts) and
# restored (rst_sibling, cg_root, a new pid namespace): the count goes on.
t_rpc_runc() {
    local rc
    rpc_runc
    rc=$?
    runc_cleanup
    return $rc
}

rpc_runc() {
    need_cr || return $?
    command -v runc >/dev/null && [ -x /bin/busybox ] ||
        { fail "runc or busybox-static is not installed (apt-get install runc busybox-static)"; return 1; }
    local b=$D/bundle id=crust-e2e-$$ a c
    mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/dev" "$b/rootfs/sys" "$b/rootfs/tmp" "$D/img"
    cp /bin/busybox "$b/rootfs/bin/" && ln -s busybox "$b/rootfs/bin/sh" && ln -s busybox "$b/rootfs/bin/sleep" &&
        ln -s busybox "$b/rootfs/bin/cat" || { fail "cannot build the root filesystem"; return 1; }
    (cd "$b" && runc spec) || { fail "runc spec failed"; return 1; }
    "$PY" - "$b/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"]
c["root"]["readonly"] = False
json.dump(c, open(sys.argv[1], "w"))
PYEOF
    # Its stdio /dev/null: a file of the host open in the container would
    # not be found in its mount namespace at dump.
    (cd "$b" && runc run -d "$id" </dev/null >/dev/null 2>&1) || { fail "runc run failed"; return 1; }
    RUNC_IDS+=("$id")
    sleep 0.5
    (cd "$b" && runc --criu "$CRUST" checkpoint --image-path "$D/img" "$id") >"$D/checkpoint.out" 2>&1 ||
        { fail "runc checkpoint: $(head -c 300 "$D/checkpoint.out")" "$D/img/dump.log"; return 1; }
    grep -q 'RPC Dump' "$D/img/dump.log" || { fail "runc's dump log is not crust's" "$D/img/dump.log"; return 1; }
    (cd "$b" && runc --criu "$CRUST" restore -d --image-path "$D/img" "$id" </dev/null >/dev/null 2>"$D/restore.err") ||
        { fail "runc restore: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    a=$(cd "$b" && read_nonempty runc exec "$id" cat /tmp/count)
    sleep 0.5
    c=$(cd "$b" && read_nonempty runc exec "$id" cat /tmp/count)
    [ -n "$a" ] && [ -n "$c" ] && [ "$c" -gt "$a" ] ||
        { fail "the restored container's count does not go on ('$a' then '$c')" "$D/img/restore.log"; return 1; }
}

RUNC_IDS=()
# Remove the containers a test made, pass or fail.
runc_cleanup() {
    local id
    for id in "${RUNC_IDS[@]+"${RUNC_IDS[@]}"}"; do
        runc kill "$id" KILL >/dev/null 2>&1
        runc delete -f "$id" >/dev/null 2>&1
    done
    RUNC_IDS=()
}

ALL_TESTS+=(rpc-swrk rpc-service rpc-notify rpc-bad-input rpc-dump-refused restore-sibling-pidns rpc-runc)
