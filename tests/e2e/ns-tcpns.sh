# Sockets of a tree in a network (and mount) namespace of its own whose
# restore needs the namespace (issue 13, tcpns). Sourced by run.sh: uses
# its helpers and adds its tests to ALL_TESTS. Every link a test makes on
# the host is removed pass or fail (tcpns_clean).

TN_BR=crtn-br0     # host bridge, 10.78.0.1/24
TN_OUT=crtn-o0     # outer veth end (host)
TN_IN=crtn-i0      # inner veth end, 10.78.0.2/24
TN_PORT=47100

tcpns_clean() {
    local l
    for l in $TN_OUT $TN_BR; do
        ip link del "$l" >/dev/null 2>&1
    done
    return 0
}

# tcpns --mode states: a half-closed TCP connection on the namespace's lo
# (CLOSE_WAIT with bytes and the FIN unread, FIN_WAIT2 with bytes unread)
# and unix listeners bound by a relative and an absolute name on a tmpfs
# only the tree's mount namespace has. The restore replays the FIN and
# the ACK through a raw socket of the restored namespace, and binds the
# names in the restored mount namespace (not in crust's: nothing appears
# in the host's directory).
# $1=fw: the tree's own iptables drop the server's port, as zdtm's
# socket-tcp-closed-last-ack does; the replayed FIN to the server gets past
# it (the restore lets crust's marked segments through a moment), the rule
# is back and nothing of crust's is left in the namespace's iptables.
tcpns_halfclosed() {
    need_cr || return $?
    mkdir -p "$D/dir"
    start_prog tcpns --mode states --dir "$D/dir" --port "$TN_PORT" || return 1
    if [ "${1:-}" = fw ]; then
        command -v iptables >/dev/null || { skip "needs iptables"; return 2; }
        nsenter -t "$PID" -n iptables -w -A INPUT -p tcp --dport "$TN_PORT" -j DROP 2>"$D/ipt.err" ||
            { fail "cannot add the rule: $(head -c 300 "$D/ipt.err")"; return 1; }
    fi
    do_dump "$D/img" --tcp-established --external 'mnt[/dev]:dev' || return 1
    "$CRUST" image decode -i "$D/img/files.img" 2>&1 | grep -q '"deleted": *true' &&
        { fail "a unix socket is recorded as deleted: its file was looked up outside the tree's mount namespace" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --tcp-established --external 'mnt[dev]:/dev' || return 1
    [ "$(readlink /proc/"$PID"/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
        { fail "the restored tree is in crust's network namespace" "$D/img/restore.log"; return 1; }
    [ -z "$(ls -A "$D/dir")" ] || { fail "the restore made files in the host's $D/dir: $(ls -A "$D/dir")" "$D/img/restore.log"; return 1; }
    if [ "${1:-}" = fw ]; then
        nsenter -t "$PID" -n iptables -w -S INPUT 2>/dev/null | grep -q -- "--dport $TN_PORT -j DROP" ||
            { fail "the tree's rule is gone" "$D/img/restore.log"; return 1; }
        ! nsenter -t "$PID" -n iptables -w -S CRIU >/dev/null 2>&1 ||
            { fail "a CRIU chain is left in the namespace" "$D/img/restore.log"; return 1; }
    fi
    expect_pass "$D/img/restore.log"
}
t_ns_tcp_halfclosed_cr() { tcpns_halfclosed; }
t_ns_tcp_halfclosed_fw_cr() { tcpns_halfclosed fw; }

# The echo server of tcpns --mode server in the tree's namespace, reached
# from the host across a veth plugged into a host bridge, a client on the
# host connected to it. Dump --tcp-established (the tree and its veth go),
# restore with --external veth[IN]:OUT@BRIDGE: the client's connection
# carries on (its next bytes are echoed) without its noticing.
tcpns_host_peer() {
    need_cr || return $?
    command -v ip >/dev/null && command -v nsenter >/dev/null ||
        { skip "needs ip and nsenter"; return 2; }
    tcpns_clean
    start_prog tcpns --mode server --port "$TN_PORT" || return 1
    {
        ip link add "$TN_BR" type bridge &&
            ip addr add 10.78.0.1/24 dev "$TN_BR" &&
            ip link set "$TN_BR" up &&
            ip link add "$TN_OUT" type veth peer name "$TN_IN" netns "/proc/$PID/ns/net" &&
            ip link set "$TN_OUT" master "$TN_BR" up &&
            nsenter -t "$PID" -n ip addr add 10.78.0.2/24 dev "$TN_IN" &&
            nsenter -t "$PID" -n ip link set "$TN_IN" up
    } >"$D/setup.out" 2>&1 || { fail "cannot set up the veth: $(head -c 300 "$D/setup.out")"; return 1; }
    rm -f "$D/client.up" "$D/client.go" "$D/client.res"
    local client
    client=$(setsid python3 - "$TN_PORT" "$D" </dev/null >"$D/client.out" 2>&1 <<'PYEOF' & echo $!
import os, socket, sys, time
port, d = int(sys.argv[1]), sys.argv[2]
def say(s):
    open(d + "/client.res.tmp", "w").write(s + "\n")
    os.rename(d + "/client.res.tmp", d + "/client.res")
try:
    c = socket.create_connection(("10.78.0.2", port), timeout=5)
    c.sendall(b"hello")
    got = c.recv(5)
    if got != b"hello":
        say("FAIL: echo before the dump is %r" % got); sys.exit(1)
    open(d + "/client.up", "w").close()
    for _ in range(1200):
        if os.path.exists(d + "/client.go"):
            break
        time.sleep(0.05)
    c.settimeout(20)
    c.sendall(b"again")
    got = c.recv(5)
    say("PASS" if got == b"again" else "FAIL: echo after the restore is %r" % got)
except OSError as e:
    say("FAIL: %s" % e)
PYEOF
)
    track "$client" "$(readlink -f "$(command -v python3)")"
    wait_file "$D/client.up" 10 || { fail "the host client got no echo before the dump: $(cat "$D/client.res" "$D/client.out" 2>/dev/null | head -c 300)"; return 1; }
    do_dump "$D/img" --tcp-established || return 1
    do_restore "$D/img" "" --tcp-established --external "veth[$TN_IN]:$TN_OUT@$TN_BR" || return 1
    touch "$D/client.go"
    wait_file "$D/client.res" 25 || { fail "the host client has no verdict 25 s after the restore" "$D/img/restore.log"; return 1; }
    [ "$(cat "$D/client.res")" = PASS ] || { fail "host client: $(cat "$D/client.res")" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_ns_tcp_host_peer_cr() { tcpns_host_peer; local rc=$?; tcpns_clean; return $rc; }

ALL_TESTS+=(ns-tcp-halfclosed-cr ns-tcp-halfclosed-fw-cr ns-tcp-host-peer-cr)
