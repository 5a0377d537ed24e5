# POSIX message queues of the tree's own IPC namespace (crust's own image
# crust-mqueue-N.img) and the "container without a runtime" of issue 13.
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# expect_pass, dump_must_fail, fail, track...) and adds its tests to
# ALL_TESTS.

# posixmq: two queues (messages of several priorities; an empty one owned
# by another uid) in the tree's IPC namespace, closed: dumped to
# crust-mqueue-ID.img, made again in the new namespace with their limits,
# modes, owners and messages in order.
t_posixmq_cr() {
    need_cr || return $?
    start_prog posixmq || return 1
    do_dump "$D/img" || return 1
    ls "$D/img"/crust-mqueue-*.img >/dev/null 2>&1 ||
        { fail "no crust-mqueue-ID.img written" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img"/crust-mqueue-*.img >"$D/mq.json" 2>"$D/mq.err" ||
        { fail "crust cannot decode its crust-mqueue image: $(head -c 300 "$D/mq.err")"; return 1; }
    grep -q '"crust-mq-a"' "$D/mq.json" || { fail "the image does not name /crust-mq-a" "$D/mq.json"; return 1; }
    do_restore "$D/img" || return 1
    [ "$(readlink /proc/"$PID"/ns/ipc)" != "$(readlink /proc/self/ns/ipc)" ] ||
        { fail "the restored tree is in the host's IPC namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# Reading a queue takes its messages: a dump that leaves the tree running
# puts every one back, in order (the program checks them after).
t_posixmq_leave() {
    need_cr || return $?
    start_prog posixmq || return 1
    dump_with "$D/img" --leave-running || return 1
    expect_pass "$D/img/dump.log"
}

# A queue held open by the tree: refused naming it; the queues are intact.
t_err_dump_posixmq_held() { dump_must_fail 'POSIX message queue' posixmq --held 1; }

# A crust-mqueue image whose message is longer than its queue takes (a
# message of /crust-mq-a, msgsize 64, made 65 bytes by hand is out of reach
# in shell: the file cut short instead): the restore fails naming the
# file, nothing restored.
t_err_restore_posixmq_bad() {
    need_cr || return $?
    start_prog posixmq || return 1
    do_dump "$D/img" || return 1
    local f
    f=$(ls "$D/img"/crust-mqueue-*.img 2>/dev/null | head -1)
    [ -n "$f" ] || { fail "no crust-mqueue-ID.img written" "$D/img/dump.log"; return 1; }
    truncate -s -7 "$f"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    [ $RC -ne 0 ] || { fail "the restore of a cut crust-mqueue image succeeded" "$D/img/restore.log"; return 1; }
    grep -q 'crust-mqueue' "$D/restore.err" "$D/img/restore.log" ||
        { fail "the error does not name the crust-mqueue image: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    sleep 0.2
    [ ! -e "/proc/$PID" ] || { fail "pid $PID exists after the failed restore" "$D/img/restore.log"; return 1; }
}

# CRIU 4.2 removes an image it wrote nothing into: a dump by CRIU of an
# IPC namespace without System V objects has no ipcns-shm/sem/msg files.
# crust's images with those removed restore (the namespace's queues too).
t_posixmq_no_sysv_images() {
    need_cr || return $?
    start_prog posixmq || return 1
    do_dump "$D/img" || return 1
    local f n=0
    for f in "$D/img"/ipcns-shm-*.img "$D/img"/ipcns-sem-*.img "$D/img"/ipcns-msg-*.img; do
        [ -f "$f" ] && rm -f "$f" && n=$((n + 1))
    done
    [ $n -eq 3 ] || { fail "expected 3 empty ipcns-shm/sem/msg images, removed $n" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(posixmq-cr posixmq-leave err-dump-posixmq-held err-restore-posixmq-bad posixmq-no-sysv-images)

# ---------------------------------------------------------------------
# The "container without a runtime": `unshare --fork --pid --mount --uts
# --ipc --net --mount-proc --time` running `container` (see its source)
# pivoted into a small root filesystem built here (the program and the
# libraries it loads), a veth to a host bridge (addresses, a route, an
# iptables rule inside) and a TCP client on the host connected to its
# echo server. Dump, kill, restore into new namespaces (--tcp-established,
# --external veth[...], --root: CRIU's rule for a mount namespace):
# everything is back and the client, which kept
# exchanging lines, never noticed. Restored again from the same images
# (the connection closed: the client moved on) and once with --root into
# a copy of the root filesystem. Host links are removed pass or fail.

CT_BR=crct-br0    # host bridge, 10.79.0.1/24
CT_OUT=crct-o0    # outer veth end (host)
CT_IN=crct-i0     # inner veth end, 10.79.0.2/24
CT_MONO=864000    # time namespace offsets (s)
CT_BOOT=1728000

ct_clean() {
    [ -n "${CT_CLIENT:-}" ] && kill "$CT_CLIENT" 2>/dev/null
    local l
    for l in $CT_OUT $CT_BR; do ip link del "$l" >/dev/null 2>&1; done
    return 0
}

# ct_rootfs DIR: a small root filesystem holding the program and what it
# loads (ldd), the directories it mounts on, and /data/data.txt.
ct_rootfs() {
    local r=$1 lib
    mkdir -p "$r"/{bin,dev,old,proc,tmp,data,bind,ro} || return 1
    mknod -m 666 "$r/dev/null" c 1 3 || return 1
    cp "$BIN/container" "$r/bin/" || return 1
    echo data >"$r/data/data.txt"
    for lib in $(ldd "$BIN/container" | grep -o '/[^ ]*'); do
        mkdir -p "$r$(dirname "$lib")" && cp -L "$lib" "$r$lib" || return 1
    done
}

# The host pid of the namespace's init, child of unshare $1.
ct_init_of() {
    local i c
    for i in $(seq 100); do
        c=$(cat /proc/"$1"/task/*/children 2>/dev/null | tr -s ' ' '\n' | head -1)
        [ -n "$c" ] && { echo "$c"; return 0; }
        sleep 0.05
    done
    return 1
}

ct_net() {
    local in="nsenter -t $PID -n"
    {
        ip link add "$CT_BR" type bridge &&
            ip addr add 10.79.0.1/24 dev "$CT_BR" &&
            ip link set "$CT_BR" up &&
            ip link add "$CT_OUT" type veth peer name "$CT_IN" netns "/proc/$PID/ns/net" &&
            ip link set "$CT_OUT" master "$CT_BR" up &&
            $in ip link set lo up &&
            $in ip addr add 10.79.0.2/24 dev "$CT_IN" &&
            $in ip link set "$CT_IN" up &&
            $in ip route add 10.66.0.0/24 via 10.79.0.1 &&
            $in iptables -A INPUT -p tcp --dport 7778 -j REJECT
    } >"$D/net.out" 2>&1 || { fail "cannot set up the network: $(head -c 300 "$D/net.out")"; return 1; }
}

# The TCP client on the host: sends a numbered line every 50 ms and wants
# it echoed; $D/client.n counts the lines; $D/client.stop ends it, which
# writes OK or the failure to $D/client.res.
ct_client() {
    rm -f "$D/client.res" "$D/client.stop" "$D/client.n"
    "$PY" -c '
import os, socket, sys, time
d = sys.argv[1]
def res(t):
    open(d + "/client.res", "w").write(t + "\n"); sys.exit(0)
try:
    s = socket.create_connection(("10.79.0.2", 7777), timeout=5)
    s.settimeout(120)
    n = 0
    while not os.path.exists(d + "/client.stop"):
        line = b"line %d\n" % n
        s.sendall(line)
        got = b""
        while len(got) < len(line):
            c = s.recv(len(line) - len(got))
            if not c:
                res("FAIL: closed by the server after %d lines" % n)
            got += c
        if got != line:
            res("FAIL: line %d came back as %r" % (n, got))
        n += 1
        open(d + "/client.n", "w").write("%d\n" % n)
        time.sleep(0.05)
    res("OK %d" % n)
except Exception as e:
    res("FAIL: %s" % e)
' "$D" </dev/null >/dev/null 2>&1 &
    CT_CLIENT=$!
}

ct_count() {
    local n
    n=$(cat "$D/client.n" 2>/dev/null)
    echo "${n:-0}"
}

# Wait until the client sent more than $1 lines (10 s at most).
ct_client_moves() {
    local i
    for i in $(seq 200); do
        [ "$(ct_count)" -gt "$1" ] && return 0
        [ -e "$D/client.res" ] && break
        sleep 0.05
    done
    fail "the client stopped at $(ct_count) lines: $(cat "$D/client.res" 2>/dev/null)" "$D/img/restore.log"
    return 1
}

# Start the container in root filesystem $1; sets PID (its init).
ct_start() {
    local r=$1 u
    rm -f "$r/ready" "$r/result"
    local cmd=(unshare --fork --pid --mount --uts --ipc --net --mount-proc
        --time --monotonic "$CT_MONO" --boottime "$CT_BOOT"
        "$r/bin/container" --root "$r" --ready /ready --result /result ${CT_ARGS:-})
    if [ -z "$CT_USER" ]; then
        u=$(setsid "${cmd[@]}" </dev/null >"$D/ctr.out" 2>&1 & echo $!)
        track "$u" "$(command -v unshare)"
    else
        # A user namespace first (no newuidmap here: the maps are written
        # from outside), then the rest of the container made by its root.
        rm -f "$D/mapped"
        # Root of the namespace before the exec, or the exec drops the
        # capabilities the namespace gave.
        u=$(setsid unshare --user --keep-caps "$PY" -c '
import os, sys, time
while not os.path.exists(sys.argv[1]):
    time.sleep(0.05)
os.setgroups([]); os.setgid(0); os.setuid(0)
os.execvp(sys.argv[2], sys.argv[2:])' "$D/mapped" "${cmd[@]}" </dev/null >"$D/ctr.out" 2>&1 & echo $!)
        track "$u" "$(readlink -f "$PY")"
        sleep 0.2
        { echo "0 $CT_UID 65536" >/proc/"$u"/uid_map && echo "0 $CT_UID 65536" >/proc/"$u"/gid_map; } 2>"$D/map.err" ||
            { fail "cannot write the user namespace's maps: $(cat "$D/map.err")"; return 1; }
        touch "$D/mapped"
        track "$u" "$(command -v unshare)"
    fi
    PID=$(ct_init_of "$u") || { fail "unshare started no init: $(head -c 300 "$D/ctr.out")"; return 1; }
    wait_file "$r/ready" $READY_TIMEOUT || { fail "the container did not become ready: $(head -c 300 "$D/ctr.out")"; return 1; }
    track "$PID" "$(exe_of "$PID")"
}

# Everything of the container seen from outside, in the restored tree.
ct_check() {
    local log=$1 got
    [ "$(nsenter -t "$PID" -u hostname)" = crust-ctr ] || { fail "host name is $(nsenter -t "$PID" -u hostname)" "$log"; return 1; }
    got=$(nsenter -t "$PID" -n ip -o -4 addr show dev "$CT_IN" 2>&1)
    echo "$got" | grep -q '10.79.0.2/24' || { fail "the veth lost its address: $got" "$log"; return 1; }
    got=$(nsenter -t "$PID" -n ip route show 10.66.0.0/24 2>&1)
    echo "$got" | grep -q 'via 10.79.0.1' || { fail "the route is gone: $got" "$log"; return 1; }
    # iptables here is iptables-nft: the rule is dumped and restored as
    # nftables (iptables -S cannot read back what nft -f made of it).
    got=$(nsenter -t "$PID" -n sh -c 'nft list ruleset 2>/dev/null || iptables-save' 2>&1)
    echo "$got" | grep -q 'dport 7778.* reject\|--dport 7778 -j REJECT' ||
        { fail "the iptables rule is gone: $got" "$log"; return 1; }
    if [ -n "$CT_USER" ]; then
        got=$(cat /proc/"$PID"/uid_map)
        echo "$got" | grep -q "^ *0 *$CT_UID *65536" || { fail "uid map is: $got" "$log"; return 1; }
        [ "$(stat -c %u /proc/"$PID")" = "$CT_UID" ] || { fail "the init runs as uid $(stat -c %u /proc/"$PID") outside" "$log"; return 1; }
    fi
    # The offsets are set again so the clocks inside go on from where they
    # were (no jump): smaller than the first ones by the time the tree was
    # down, a few seconds.
    got=$(cat /proc/"$PID"/timens_offsets 2>&1)
    echo "$got" | awk -v m="$CT_MONO" -v b="$CT_BOOT" '
        $1 == "monotonic" { d = m - $2; if (d >= 0 && d < 60) ok++ }
        $1 == "boottime" { d = b - $2; if (d >= 0 && d < 60) ok++ }
        END { exit ok == 2 ? 0 : 1 }' ||
        { fail "time namespace offsets are: $got" "$log"; return 1; }
    got=$(cat /proc/"$PID"/mountinfo)
    echo "$got" | grep -q ' /tmp .* - tmpfs ' || { fail "no tmpfs on /tmp: $got" "$log"; return 1; }
    echo "$got" | grep -q ' /ro ro,' || { fail "/ro is not read-only: $got" "$log"; return 1; }
    local k
    for k in pid mnt uts ipc net time ${CT_USER:+user}; do
        [ "$(readlink /proc/"$PID"/ns/$k)" != "$(readlink /proc/self/ns/$k)" ] ||
            { fail "the restored tree is in the host's $k namespace" "$log"; return 1; }
    done
}

# ct_restore IMG SFX [ARGS]: restore detached; sets PID from the pidfile.
ct_restore() {
    local img=$1 sfx=$2
    shift 2
    rm -f "$D/pidfile$sfx"
    crust_run "restore$sfx" restore -D "$img" -d --pidfile "$D/pidfile$sfx" -v4 -o "restore$sfx.log" \
        --external "veth[$CT_IN]:$CT_OUT@$CT_BR" "$@"
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore$sfx.err")" "$img/restore$sfx.log"; return 1; }
    PID=$(cat "$D/pidfile$sfx" 2>/dev/null)
    [ -n "$PID" ] && [ -e "/proc/$PID" ] || { fail "no restored init (pidfile '$PID')" "$img/restore$sfx.log"; return 1; }
    track "$PID" "$(exe_of "$PID")"
}

# SIGTERM the init; its verdict in $1/result.
ct_verdict() {
    local r=$1 log=$2
    rm -f "$r/ready"
    kill -TERM "$PID"
    wait_file "$r/result" $RESULT_TIMEOUT || { fail "no result after SIGTERM" "$log"; return 1; }
    [ "$(cat "$r/result")" = PASS ] || { fail "container says: $(cat "$r/result")" "$log"; return 1; }
    wait_gone "$PID" 5 && ct_veth_gone
}

ct_run() {
    local r=$D/root img=$D/img n
    ct_rootfs "$r" || { fail "cannot build the root filesystem"; return 1; }
    cp -a "$r" "$D/rootcopy" || return 1
    # With a user namespace, root inside is CT_UID outside: the root
    # filesystem is its, and it must be able to reach it.
    if [ -n "$CT_USER" ]; then
        chown -R "$CT_UID:$CT_UID" "$r" "$D/rootcopy" && chmod o+x "$(dirname "$D")" "$D" || return 1
    fi
    ct_start "$r" || return 1
    ct_net || return 1
    ct_client
    ct_client_moves 3 || return 1
    mkdir -p "$img"
    # --external veth[IN] alone, as CRIU's dump takes it: names no outer end.
    crust_run dump dump -t "$PID" -D "$img" -v4 -o dump.log --tcp-established --external "veth[$CT_IN]"
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the container still runs after the dump" "$img/dump.log"; return 1; }
    n=$(ct_count)
    sleep 1
    ct_veth_gone || return 1
    [ "$(ct_count)" = "$n" ] || { fail "the client went on while the container was dumped" "$img/dump.log"; return 1; }
    ct_restore "$img" "" --tcp-established --root "$r" || return 1
    ct_client_moves "$((n + 5))" || return 1
    ct_check "$img/restore.log" || return 1
    touch "$D/client.stop"
    wait_file "$D/client.res" 10
    case $(cat "$D/client.res" 2>/dev/null) in
    OK*) ;;
    *) fail "the client noticed: $(cat "$D/client.res" 2>/dev/null)" "$img/restore.log"; return 1 ;;
    esac
    ct_verdict "$r" "$img/restore.log" || return 1
    # Again from the same images (the client is gone: the connection is
    # restored closed).
    ct_restore "$img" 2 --tcp-close --root "$r" || return 1
    ct_check "$img/restore2.log" || return 1
    ct_verdict "$r" "$img/restore2.log" || return 1
    # And into a copy of the root filesystem.
    ct_restore "$img" 3 --tcp-close --root "$D/rootcopy" || return 1
    ct_check "$img/restore3.log" || return 1
    ct_verdict "$D/rootcopy" "$img/restore3.log"
}

# Images both ways with CRIU 4.2 (`criu_bin`): $1 = from (CRIU dumps,
# crust restores) or to (crust dumps, CRIU restores); one restore, with
# the client kept (--tcp-established). CRIU 4.2 has no image for POSIX
# queues: the restored container has none (`container --mq-may-vanish 1`
# accepts that), the rest is whole.
# The dumped container's network namespace goes away in the kernel's own
# time (cleanup_net runs from a workqueue once its last process is gone),
# and its veth's outer end with it: wait for that before a restore makes
# the end again under the same name.
ct_veth_gone() {
    local i
    for i in $(seq 100); do
        ip link show "$CT_OUT" >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    fail "the dumped container's veth end $CT_OUT is still there 10 s after the dump"
    return 1
}

ct_interop() {
    local way=$1 r=$D/root img=$D/img n criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    ct_rootfs "$r" || { fail "cannot build the root filesystem"; return 1; }
    CT_ARGS="--mq-may-vanish 1" ct_start "$r" || return 1
    ct_net || return 1
    ct_client
    ct_client_moves 3 || return 1
    mkdir -p "$img"
    if [ "$way" = from ]; then
        (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" dump -t "$PID" -D "$img" -v4 -o dump.log \
            --tcp-established --external "veth[$CT_IN]") >"$D/criu-dump.out" 2>&1 ||
            { fail "CRIU's dump failed: $(tail -c 300 "$D/criu-dump.out")" "$img/dump.log"; return 1; }
    else
        crust_run dump dump -t "$PID" -D "$img" -v4 -o dump.log --tcp-established
        [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$img/dump.log"; return 1; }
    fi
    wait_gone "$PID" 5 || { fail "the container still runs after the dump" "$img/dump.log"; return 1; }
    ct_veth_gone || return 1
    n=$(ct_count)
    if [ "$way" = from ]; then
        ct_restore "$img" "" --tcp-established --root "$r" || return 1
    else
        rm -f "$D/criu-pid"
        (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$img" -d -v4 -o criu-restore.log \
            --tcp-established --root "$r" --external "veth[$CT_IN]:$CT_OUT@$CT_BR" --pidfile "$D/criu-pid") \
            >"$D/criu-restore.out" 2>&1 ||
            { fail "CRIU's restore of crust's images failed: $(tail -c 300 "$D/criu-restore.out")" "$img/criu-restore.log"; return 1; }
        PID=$(cat "$D/criu-pid" 2>/dev/null)
        [ -n "$PID" ] && [ -e "/proc/$PID" ] || { fail "no init restored by CRIU" "$img/criu-restore.log"; return 1; }
        track "$PID" "$(exe_of "$PID")"
    fi
    ct_client_moves "$((n + 5))" || return 1
    ct_check "$img/restore.log" || return 1
    touch "$D/client.stop"
    wait_file "$D/client.res" 10
    case $(cat "$D/client.res" 2>/dev/null) in
    OK*) ;;
    *) fail "the client noticed: $(cat "$D/client.res" 2>/dev/null)" "$img/restore.log"; return 1 ;;
    esac
    ct_verdict "$r" "$img/restore.log"
}

t_container_from_criu() {
    ct_clean
    need_cr || return $?
    ct_interop from
    local rc=$?
    ct_clean
    return $rc
}

t_container_to_criu() {
    ct_clean
    need_cr || return $?
    ct_interop to
    local rc=$?
    ct_clean
    return $rc
}

CT_USER=          # 1: the container has a user namespace of its own
CT_UID=100000

ct_test() {
    need_cr || return $?
    command -v ip >/dev/null && command -v nsenter >/dev/null && command -v iptables >/dev/null &&
        command -v unshare >/dev/null || { skip "needs ip, nsenter, iptables and unshare"; return 2; }
    ct_clean
    ct_run
    local rc=$?
    ct_clean
    return $rc
}

t_container_cr() { CT_USER='' ct_test; }

# The same container in a user namespace of its own mapping its root to
# the unprivileged uid and gid CT_UID (65536 ids), which owns its other
# namespaces.
t_container_userns_cr() {
    CT_USER=1 ct_test
}

ALL_TESTS+=(container-cr container-userns-cr container-from-criu container-to-criu)
