# runc 1.1.5 in full with crust as its criu (issue 14): a busybox container
# with its own namespaces, a counter and a TCP server (its network
# namespace made by the test and named by path in config.json, so a veth
# wired beforehand reaches it: runc sends it as `--external
# net[INO]:extRootNetNS` at checkpoint and as an inherited fd at restore);
# --leave-running; --tcp-established with a client outside; one checkpoint
# restored twice under new names. Sourced by run.sh after rpc.sh (uses
# rpc_ok, RPC_CLIENT, RUNC_IDS and runc_cleanup).
#
# Every container (runc delete -f), network namespace and veth a test makes
# is removed pass or fail.

RUNC_NETNS=()

# Every test proves crust did the work: the checkpoint's log in the images
# directory is crust's, and the criu runc runs (crust) answers VERSION
# over the RPC with crust's name.
runc_need() {
    need_cr || return $?
    command -v runc >/dev/null && [ -x /bin/busybox ] && command -v ip >/dev/null ||
        { fail "runc, busybox-static or ip is not installed (apt-get install runc busybox-static iproute2)"; return 1; }
    rpc_ok version "$RPC_CLIENT" "$CRUST" swrk version || return 1
    grep -q '^version 4\.2 crust ' "$D/version.out" ||
        { fail "the criu given to runc answers VERSION with: $(cat "$D/version.out")"; return 1; }
}

# runc_net N: network namespace crust-rc-N (made here, named by path in
# the config), wired to the host by veth crcNh (10.251.N.1) / crcNc
# (10.251.N.2, inside).
runc_net() {
    local n=$1 ns=crust-rc-$1
    ip netns del "$ns" 2>/dev/null
    ip link del "crc${n}h" 2>/dev/null
    ip netns add "$ns" || { fail "ip netns add $ns failed"; return 1; }
    RUNC_NETNS+=("$n")
    ip link add "crc${n}h" type veth peer name "crc${n}c" &&
        ip link set "crc${n}c" netns "$ns" &&
        ip addr add "10.251.$n.1/24" dev "crc${n}h" &&
        ip link set "crc${n}h" up &&
        ip -n "$ns" addr add "10.251.$n.2/24" dev "crc${n}c" &&
        ip -n "$ns" link set "crc${n}c" up &&
        ip -n "$ns" link set lo up || { fail "cannot wire the veth of $ns"; return 1; }
}

# runc_bundle DIR NET SCRIPT: a bundle in DIR whose container runs `sh -c
# SCRIPT`; NET: a number N (network namespace crust-rc-N by path) or ""
# (a network namespace of runc's own). /tmp is a tmpfs of the container
# (dumped with it: containers restored from one checkpoint each have
# theirs); /www holds the page the server gives.
runc_bundle() {
    local b=$1 net=$2 script=$3 a
    mkdir -p "$b/rootfs/bin" "$b/rootfs/proc" "$b/rootfs/dev" "$b/rootfs/sys" "$b/rootfs/tmp" "$b/rootfs/www"
    cp /bin/busybox "$b/rootfs/bin/" || { fail "cannot build the root filesystem"; return 1; }
    for a in sh sleep cat httpd nc; do
        ln -sf busybox "$b/rootfs/bin/$a" || { fail "cannot build the root filesystem"; return 1; }
    done
    echo "crust-runc-page" >"$b/rootfs/www/index.html"
    (cd "$b" && runc spec) || { fail "runc spec failed"; return 1; }
    "$PY" - "$b/config.json" "$net" "$script" <<'PYEOF' || { fail "cannot write config.json"; return 1; }
import json, sys
path, net, script = sys.argv[1:4]
c = json.load(open(path))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", script]
c["root"]["readonly"] = False
c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "nodev", "mode=1777"]})
if net:
    ns = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
    ns.append({"type": "network", "path": "/var/run/netns/crust-rc-" + net})
    c["linux"]["namespaces"] = ns
json.dump(c, open(path, "w"))
PYEOF
}

# The counter and the web server of the container.
RUNC_COUNTER='i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done'
RUNC_SERVER="httpd -p 8080 -h /www; $RUNC_COUNTER"

# runc_start B ID: run the container of bundle B as ID, detached; wait
# until it counts.
runc_start() {
    local b=$1 id=$2 i
    # Its stdio /dev/null: a file of the host open in the container would
    # not be found in its mount namespace at dump.
    (cd "$b" && runc run -d "$id" </dev/null >/dev/null 2>&1) || { fail "runc run $id failed"; return 1; }
    RUNC_IDS+=("$id")
    for i in $(seq 50); do
        [ -n "$(runc_count "$b" "$id")" ] && return 0
        sleep 0.1
    done
    fail "container $id does not count"
}

runc_count() { (cd "$1" && read_nonempty runc exec "$2" cat /tmp/count); }

# runc_counts B ID WHAT: the container's count goes on.
runc_counts() {
    local a c
    a=$(runc_count "$1" "$2")
    sleep 0.5
    c=$(runc_count "$1" "$2")
    [ -n "$a" ] && [ -n "$c" ] && [ "$c" -gt "$a" ] ||
        { fail "$3: the count of $2 does not go on ('$a' then '$c')" "$D/img/restore.log"; return 1; }
}

# runc_serves N WHAT: the container's web server at 10.251.N.2 answers.
runc_serves() {
    local got
    got=$("$PY" -c 'import sys, urllib.request
print(urllib.request.urlopen("http://%s:8080/" % sys.argv[1], timeout=5).read().decode().strip())' \
        "10.251.$1.2" 2>"$D/http.err")
    [ "$got" = crust-runc-page ] ||
        { fail "$2: the container's server does not answer ('$got' $(head -c 200 "$D/http.err"))" "$D/img/restore.log"; return 1; }
}

# runc_checkpoint B ID IMG [ARGS...]: checkpoint with crust; crust's log.
runc_checkpoint() {
    local b=$1 id=$2 img=$3
    shift 3
    mkdir -p "$img"
    (cd "$b" && timeout -k 5 "$CR_TIMEOUT" runc --criu "$CRUST" checkpoint --image-path "$img" "$@" "$id") \
        >"$D/checkpoint.out" 2>&1 ||
        { fail "runc checkpoint $*: $(head -c 300 "$D/checkpoint.out")" "$img/dump.log"; return 1; }
    grep -q '^([0-9. ]*) crust .*(RPC Dump' "$img/dump.log" 2>/dev/null || { fail "runc's dump log is not crust's" "$img/dump.log"; return 1; }
}

# runc_restore B ID IMG [ARGS...]: restore -d with crust; crust's log.
runc_restore() {
    local b=$1 id=$2 img=$3
    shift 3
    (cd "$b" && timeout -k 5 "$CR_TIMEOUT" runc --criu "$CRUST" restore -d --image-path "$img" "$@" "$id" \
        </dev/null >/dev/null 2>"$D/restore-$id.err") ||
        { fail "runc restore $id: $(head -c 300 "$D/restore-$id.err")" "$img/restore.log"; return 1; }
    RUNC_IDS+=("$id")
    grep -q '^([0-9. ]*) crust .*(RPC Restore' "$img/restore.log" 2>/dev/null ||
        { fail "runc's restore log is not crust's" "$img/restore.log"; return 1; }
}

# runc_gone ID: the container's tasks are gone (runc says stopped or
# knows it no more).
runc_gone() {
    local st
    st=$(runc state "$1" 2>/dev/null | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null)
    [ -z "$st" ] || [ "$st" = stopped ] || { fail "container $1 is $st after the checkpoint"; return 1; }
}

# Remove the containers, then the network namespaces and veths.
runc_full_cleanup() {
    local n
    runc_cleanup
    for n in "${RUNC_NETNS[@]+"${RUNC_NETNS[@]}"}"; do
        ip netns del "crust-rc-$n" 2>/dev/null
        ip link del "crc${n}h" 2>/dev/null
    done
    RUNC_NETNS=()
}

# Run test body $1 and clean up after it, pass or fail.
runc_wrap() {
    local rc
    "$@"
    rc=$?
    runc_full_cleanup
    return $rc
}

t_runc_netns() { runc_wrap runc_netns; }
runc_netns() {
    runc_need || return $?
    local b=$D/bundle id=crust-rc-netns-$$
    runc_net 1 || return 1
    runc_bundle "$b" 1 "$RUNC_SERVER" || return 1
    runc_start "$b" "$id" || return 1
    runc_serves 1 "before the checkpoint" || return 1
    runc_checkpoint "$b" "$id" "$D/img" || return 1
    grep -q 'network namespace .* is external (extRootNetNS)' "$D/img/dump.log" ||
        { fail "the container's network namespace was not dumped as external" "$D/img/dump.log"; return 1; }
    runc_gone "$id" || return 1
    runc delete -f "$id" >/dev/null 2>&1
    runc_restore "$b" "$id" "$D/img" || return 1
    runc_counts "$b" "$id" "after restore" || return 1
    runc_serves 1 "after restore"
}

# A container in a network namespace given by path, with no socket: the
# namespace (which outlives the container) is locked by the checkpoint and
# must be unlocked by the restore all the same (CRIU unlocks a tree's
# namespace whatever its sockets): the host pings it after the restore.
t_runc_netns_quiet() { runc_wrap runc_netns_quiet; }
runc_netns_quiet() {
    runc_need || return $?
    local b=$D/bundle id=crust-rc-quiet-$$
    runc_net 4 || return 1
    runc_bundle "$b" 4 "$RUNC_COUNTER" || return 1
    runc_start "$b" "$id" || return 1
    /bin/busybox ping -c 1 -W 2 10.251.4.2 >/dev/null 2>&1 || { fail "set-up: the container's namespace does not answer ping"; return 1; }
    runc_checkpoint "$b" "$id" "$D/img" || return 1
    runc_gone "$id" || return 1
    runc delete -f "$id" >/dev/null 2>&1
    runc_restore "$b" "$id" "$D/img" || return 1
    runc_counts "$b" "$id" "after restore" || return 1
    /bin/busybox ping -c 1 -W 2 10.251.4.2 >/dev/null 2>&1 ||
        { fail "the container's network namespace is still locked after the restore (no ping answer)" "$D/img/restore.log"; return 1; }
}

t_runc_leave_running() { runc_wrap runc_leave_running; }
runc_leave_running() {
    runc_need || return $?
    local b=$D/bundle id=crust-rc-leave-$$
    runc_net 2 || return 1
    runc_bundle "$b" 2 "$RUNC_SERVER" || return 1
    runc_start "$b" "$id" || return 1
    runc_checkpoint "$b" "$id" "$D/img" --leave-running || return 1
    runc_counts "$b" "$id" "after checkpoint --leave-running" || return 1
    runc_serves 2 "after checkpoint --leave-running" || return 1
    runc kill "$id" KILL >/dev/null 2>&1
    runc delete -f "$id" >/dev/null 2>&1 || { fail "runc delete -f $id failed"; return 1; }
    runc_restore "$b" "$id" "$D/img" || return 1
    runc_counts "$b" "$id" "after restore" || return 1
    runc_serves 2 "after restore"
}

# One checkpoint restored twice, under two new names; the images are not
# changed by a restore. The container has a network namespace of runc's
# own (each restore makes an empty one: runc gives empty_ns) and /tmp a
# tmpfs of its own, so both count apart.
t_runc_restore_twice() { runc_wrap runc_restore_twice; }
runc_restore_twice() {
    runc_need || return $?
    local b=$D/bundle id=crust-rc-twice-$$ sum0 sum1 sum2
    runc_bundle "$b" "" "$RUNC_COUNTER" || return 1
    runc_start "$b" "$id" || return 1
    runc_checkpoint "$b" "$id" "$D/img" || return 1
    runc_gone "$id" || return 1
    runc delete -f "$id" >/dev/null 2>&1
    sum0=$(cd "$D/img" && cat ./*.img | md5sum)
    runc_restore "$b" "$id-a" "$D/img" || return 1
    sum1=$(cd "$D/img" && cat ./*.img | md5sum)
    runc_restore "$b" "$id-b" "$D/img" || return 1
    sum2=$(cd "$D/img" && cat ./*.img | md5sum)
    [ "$sum0" = "$sum1" ] && [ "$sum1" = "$sum2" ] || { fail "a restore changed the images"; return 1; }
    runc_counts "$b" "$id-a" "first restore" || return 1
    runc_counts "$b" "$id-b" "second restore" || return 1
    local pa pb
    pa=$(runc state "$id-a" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
    pb=$(runc state "$id-b" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
    [ -n "$pa" ] && [ -n "$pb" ] && [ "$pa" != "$pb" ] || { fail "both restores name pid '$pa' / '$pb'"; return 1; }
    [ "$(readlink "/proc/$pa/ns/pid")" != "$(readlink "/proc/$pb/ns/pid")" ] ||
        { fail "both restored containers share a pid namespace"; return 1; }
}

# --tcp-established: a client outside the container holds a connection to
# the container's echo server (busybox nc -e cat) across checkpoint and
# restore; after restore the same connection carries data both ways.
t_runc_tcp_established() { runc_wrap runc_tcp_established; }
runc_tcp_established() {
    runc_need || return $?
    local b=$D/bundle id=crust-rc-tcp-$$ client py_exe
    runc_net 3 || return 1
    runc_bundle "$b" 3 "nc -l -p 9000 -e cat & $RUNC_COUNTER" || return 1
    runc_start "$b" "$id" || return 1
    py_exe=$(readlink -f "$(command -v "$PY")")
    rm -f "$D/go" "$D/client.out"
    "$PY" - "10.251.3.2" "$D/go" "$D/client.out" <<'PYEOF' &
import os, socket, sys, time
host, go, out = sys.argv[1:4]
def say(m):
    with open(out, "a") as f:
        f.write(m + "\n")
s = None
for _ in range(50):
    try:
        s = socket.create_connection((host, 9000), timeout=1)
        break
    except OSError:
        time.sleep(0.1)
if s is None:
    say("FAIL connect")
    sys.exit(1)
s.settimeout(10)
def echo(m):
    s.sendall(m)
    got = b""
    while len(got) < len(m):
        d = s.recv(100)
        if not d:
            break
        got += d
    return got == m
say("before " + ("ok" if echo(b"before-checkpoint\n") else "bad"))
while not os.path.exists(go):
    time.sleep(0.05)
say("after " + ("ok" if echo(b"after-restore\n") else "bad"))
s.close()
PYEOF
    client=$!
    track "$client" "$py_exe"
    wait_file "$D/client.out" 10 || { fail "the client did not connect"; return 1; }
    grep -q '^before ok' "$D/client.out" || { fail "no echo before the checkpoint: $(cat "$D/client.out")"; return 1; }
    runc_checkpoint "$b" "$id" "$D/img" --tcp-established || return 1
    ls "$D/img"/tcp-stream-*.img >/dev/null 2>&1 ||
        { fail "no TCP connection in the images" "$D/img/dump.log"; return 1; }
    runc_gone "$id" || return 1
    runc delete -f "$id" >/dev/null 2>&1
    runc_restore "$b" "$id" "$D/img" --tcp-established || return 1
    touch "$D/go"
    wait "$client" 2>/dev/null
    grep -q '^after ok' "$D/client.out" ||
        { fail "the connection does not carry data after restore: $(tr '\n' ' ' <"$D/client.out")" "$D/img/restore.log"; return 1; }
    runc_counts "$b" "$id" "after restore"
}

# A container with a terminal (`terminal: true`, runc run --console-socket):
# its shell's stdio is the slave of a pty whose master runc handed to the
# console socket's receiver, outside the tree. runc asks for
# orphan_pts_master: the checkpoint takes the slave alone; the restore
# makes a new master and gives it to runc (RPC notify orphan-pts-master),
# which passes it to the new console socket. The shell set a variable
# before the checkpoint and echoes it through the new master after.
t_runc_terminal() { runc_wrap runc_terminal; }
runc_terminal() {
    runc_need || return $?
    local b=$D/bundle id=crust-rc-tty-$$ recv recv2 py_exe
    runc_bundle "$b" "" "" || return 1
    "$PY" - "$b/config.json" <<'PYEOF' || { fail "cannot write config.json"; return 1; }
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = True
c["process"]["args"] = ["sh"]
json.dump(c, open(sys.argv[1], "w"))
PYEOF
    py_exe=$(readlink -f "$(command -v "$PY")")
    rm -f "$D/console.sock" "$D/console2.sock" "$D/tty.out" "$D/tty2.out" "$D/go"
    # console_recv SOCK OUT CMD WANT [GO]: take the master from runc, send
    # CMD, wait for WANT, then hold the master until GO exists.
    cat >"$D/recv.py" <<'PYEOF'
import os, select, socket, sys, time
path, out, cmd, want = sys.argv[1:5]
go = sys.argv[5] if len(sys.argv) > 5 else None
def say(m):
    with open(out, "a") as f:
        f.write(m + "\n")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(1)
say("listening")
c, _ = s.accept()
_, fds, _, _ = socket.recv_fds(c, 1024, 1)
master = fds[0]
os.write(master, cmd.encode() + b"\n")
got, end = b"", time.time() + 10
while want.encode() not in got and time.time() < end:
    r, _, _ = select.select([master], [], [], 0.5)
    if r:
        try:
            got += os.read(master, 4096)
        except OSError:
            break
say(("ok " if want.encode() in got else "bad ") + repr(got[-200:]))
while go and not os.path.exists(go):
    time.sleep(0.05)
PYEOF
    "$PY" "$D/recv.py" "$D/console.sock" "$D/tty.out" 'X=kept-$((6*7)); echo set-$X' set-kept-42 "$D/go" &
    recv=$!
    track "$recv" "$py_exe"
    wait_file "$D/tty.out" 10 || { fail "the console socket receiver did not start"; return 1; }
    (cd "$b" && runc run -d --console-socket "$D/console.sock" "$id" </dev/null >/dev/null 2>&1) ||
        { fail "runc run --console-socket failed"; return 1; }
    RUNC_IDS+=("$id")
    for _ in $(seq 100); do grep -q '^ok\|^bad' "$D/tty.out" && break; sleep 0.1; done
    grep -q '^ok' "$D/tty.out" || { fail "the container's shell does not answer on its terminal: $(tr '\n' ' ' <"$D/tty.out")"; return 1; }
    mkdir -p "$D/img"
    (cd "$b" && timeout -k 5 "$CR_TIMEOUT" runc --criu "$CRUST" checkpoint --image-path "$D/img" "$id") \
        >"$D/checkpoint.out" 2>&1 ||
        { fail "runc checkpoint of a container with a terminal: $(head -c 300 "$D/checkpoint.out")" "$D/img/dump.log"; return 1; }
    runc_gone "$id" || return 1
    touch "$D/go"
    wait "$recv" 2>/dev/null
    "$PY" "$D/recv.py" "$D/console2.sock" "$D/tty2.out" 'echo got-$X' got-kept-42 &
    recv2=$!
    track "$recv2" "$py_exe"
    wait_file "$D/tty2.out" 10 || { fail "the second console socket receiver did not start"; return 1; }
    runc_restore "$b" "$id" "$D/img" --console-socket "$D/console2.sock" || return 1
    for _ in $(seq 150); do grep -q '^ok\|^bad' "$D/tty2.out" && break; sleep 0.1; done
    grep -q '^ok' "$D/tty2.out" ||
        { fail "the restored shell does not answer on the new master: $(tr '\n' ' ' <"$D/tty2.out")" "$D/img/restore.log"; return 1; }
    grep -q 'orphan-pts-master' "$D/img/restore.log" ||
        { fail "the restore log does not show the orphan-pts-master notify" "$D/img/restore.log"; return 1; }
    wait "$recv2" 2>/dev/null
    return 0
}

ALL_TESTS+=(runc-netns runc-netns-quiet runc-leave-running runc-restore-twice runc-tcp-established runc-terminal)
