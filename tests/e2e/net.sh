# Tests of inet sockets and network locking (issue 5). Sourced by run.sh:
# uses its helpers (start_prog, do_dump, do_restore, expect_pass,
# dump_must_fail, fail, skip, track, need_cr...) and adds its tests to
# ALL_TESTS.
#
# A TCP test runs `tcpstream` twice: the dumped side (started as every test
# program) and its peer, a process outside the dumped tree (on loopback, or
# in a second network namespace joined by a veth pair). Both exchange a
# checked stream; at dump time data sits unread and unsent in both
# directions. Every rule, namespace and link a test adds is removed after
# it, pass or fail.

# NET_P: a free TCP/UDP port in 20000-39999 for this test.
NET_P=""
net_pick_port() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        NET_P=$((20000 + RANDOM % 20000))
        ss -Htanu "sport = :$NET_P" 2>/dev/null | grep -q . || return 0
    done
}

# Lock rules crust may have left for this test's connections (port
# $NET_P; other lock rules on the machine are not this test's business).
net_no_rules_left() {
    local left
    left=$({
        iptables -w -S 2>/dev/null
        ip6tables -w -S 2>/dev/null
        local t
        for t in $(nft list tables inet 2>/dev/null | awk '$3 ~ /^CRIU-crust-netlock/ { print $3 }'); do
            nft list table inet "$t" 2>/dev/null
        done
    } | grep -iE "c114|crust-netlock|elements" | grep -E -- "(port|, |\. )$NET_P([ ,}]|$)")
    [ -z "$left" ] || { fail "network lock rules are left over: $(head -c 300 <<<"$left")"; return 1; }
}

# Remove the lock rules of connections on port $1 a failed test left.
net_unlock_port() {
    local p=$1 t r
    for t in iptables ip6tables; do
        $t -w -S 2>/dev/null | grep -i c114 | grep -E -- "--(s|d)port $p( |$)" | sed 's/^-A /-D /' |
            while read -r r; do
                # shellcheck disable=SC2086
                $t -w $r 2>/dev/null
            done
    done
    # crust's nftables lock tables that hold this port.
    for t in $(nft list tables inet 2>/dev/null | awk '$3 ~ /^CRIU-crust-netlock/ { print $3 }'); do
        nft list table inet "$t" 2>/dev/null | grep -qE "\. $p( |,|$)" && nft delete table inet "$t" 2>/dev/null
    done
    return 0
}

# Start the peer: start_peer [ip netns exec NS] PROG ARGS...; sets PEER.
start_peer() {
    local exe=$BIN/tcpstream
    rm -f "$D/peer.ready" "$D/peer.result"
    PEER=$(setsid "$@" --ready "$D/peer.ready" --result "$D/peer.result" </dev/null >"$D/peer.err" 2>&1 & echo $!)
    track "$PEER" "$exe"
}

wait_peer_ready() {
    wait_file "$D/peer.ready" $READY_TIMEOUT || { fail "the peer did not become ready: $(head -c 300 "$D/peer.err") $(cat "$D/peer.result" 2>/dev/null)"; return 1; }
}

expect_peer_pass() {
    kill -TERM "$PEER" 2>/dev/null
    wait_file "$D/peer.result" $RESULT_TIMEOUT || { fail "the peer gave no result"; return 1; }
    local res
    res=$(cat "$D/peer.result")
    [ "$res" = PASS ] || { fail "the peer says: $res" "${1:-}"; return 1; }
}

# tcp_cr "DUMPED ARGS" "PEER ARGS" [NETNS] [-- CRUST ARGS]: the stream
# across dump and restore of the dumped side.
tcp_cr() {
    local dargs=$1 pargs=$2 ns=${3:-}
    shift 3 2>/dev/null || shift $#
    need_cr || return $?
    local pre=()
    [ -n "$ns" ] && pre=(ip netns exec "$ns")
    # shellcheck disable=SC2086
    start_peer "${pre[@]}" "$BIN/tcpstream" --role peer $pargs
    # shellcheck disable=SC2086
    start_prog tcpstream --role dumped $dargs || return 1
    wait_peer_ready || return 1
    if do_dump "$D/img" --tcp-established "$@" &&
        do_restore "$D/img" "" --tcp-established "$@" &&
        expect_peer_ok "$D/img/restore.log"; then
        net_no_rules_left && return 0
    fi
    net_unlock_port "$NET_P"
    return 1
}

# A pair over loopback on a fresh $NET_P: the peer (outside the tree)
# listens, the dumped side connects (or the reverse with "server").
tcp_pair_up() {
    net_pick_port
    if [ "${1:-}" = server ]; then
        start_peer "$BIN/tcpstream" --role peer --connect 127.0.0.1:$NET_P
        start_prog tcpstream --role dumped --listen 127.0.0.1:$NET_P || return 1
    else
        start_peer "$BIN/tcpstream" --role peer --listen 127.0.0.1:$NET_P
        start_prog tcpstream --role dumped --connect 127.0.0.1:$NET_P || return 1
    fi
    wait_peer_ready
}

# Both sides finish the exchange and say PASS.
expect_peer_ok() {
    kill -TERM "$PEER" 2>/dev/null
    expect_pass "$1" || return 1
    expect_peer_pass "$1"
}

t_tcp_v4_client() { net_pick_port; tcp_cr "--connect 127.0.0.1:$NET_P" "--listen 127.0.0.1:$NET_P"; }
t_tcp_v4_server() { net_pick_port; tcp_cr "--listen 127.0.0.1:$NET_P" "--connect 127.0.0.1:$NET_P"; }
t_tcp_v6() { net_pick_port; tcp_cr "--connect [::1]:$NET_P" "--listen [::1]:$NET_P"; }
t_tcp_v4mapped() { net_pick_port; tcp_cr "--listen [::ffff:127.0.0.1]:$NET_P" "--connect 127.0.0.1:$NET_P"; }
t_tcp_sockopts() { net_pick_port; tcp_cr "--connect 127.0.0.1:$NET_P --sockopts 1" "--listen 127.0.0.1:$NET_P"; }
t_tcp_nftables() {
    command -v nft >/dev/null || { skip "no nft"; return; }
    net_pick_port
    tcp_cr "--connect 127.0.0.1:$NET_P" "--listen 127.0.0.1:$NET_P" "" --network-lock nftables
}

# A second network namespace joined by a veth pair: NETNS, VETH set.
NETNS=""
VETH=""
net_ns_up() {
    NETNS=crust-e2e-$$
    VETH=crv$$
    ip netns add "$NETNS" || { fail "ip netns add failed"; return 1; }
    ip link add "${VETH}a" type veth peer name "${VETH}b" &&
        ip link set "${VETH}b" netns "$NETNS" &&
        ip addr add 10.213.7.1/24 dev "${VETH}a" &&
        ip -6 addr add fd00:213:7::1/64 dev "${VETH}a" nodad &&
        ip link set "${VETH}a" up &&
        ip netns exec "$NETNS" ip addr add 10.213.7.2/24 dev "${VETH}b" &&
        ip netns exec "$NETNS" ip -6 addr add fd00:213:7::2/64 dev "${VETH}b" nodad &&
        ip netns exec "$NETNS" ip link set "${VETH}b" up &&
        ip netns exec "$NETNS" ip link set lo up ||
        { fail "cannot set up the veth pair"; net_ns_down; return 1; }
}
net_ns_down() {
    [ -n "$VETH" ] && ip link del "${VETH}a" 2>/dev/null
    [ -n "$NETNS" ] && ip netns del "$NETNS" 2>/dev/null
    NETNS=""
    VETH=""
    return 0
}

# The peer in another network namespace, over a veth pair.
veth_cr() {
    local rc
    net_ns_up || return 1
    tcp_cr "$@" "$NETNS"
    rc=$?
    [ -n "$PEER" ] && kill -KILL "$PEER" 2>/dev/null
    net_ns_down
    return $rc
}
t_tcp_veth_v4() { net_pick_port; veth_cr "--connect 10.213.7.2:$NET_P" "--listen 10.213.7.2:$NET_P"; }
t_tcp_veth_v6() { net_pick_port; veth_cr "--listen [fd00:213:7::1]:$NET_P" "--connect [fd00:213:7::1]:$NET_P"; }

# Without --tcp-established an established connection is refused, the
# tree left running, and no rule left behind.
t_err_dump_tcp_noflag() {
    need_cr || return $?
    tcp_pair_up || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -ne 0 ] || { fail "dump succeeded without --tcp-established" "$D/img/dump.log"; return 1; }
    grep -q -- '--tcp-established' "$D/dump.err" || { fail "the error does not name --tcp-established: $(head -c 300 "$D/dump.err")"; return 1; }
    [ -e "/proc/$PID" ] || { fail "the tree is gone after a failed dump"; return 1; }
    net_no_rules_left || return 1
    # Still a working connection.
    expect_peer_ok ""
}

# dump -R: the connection goes on at once; the lock is gone.
t_tcp_leave_running() {
    need_cr || return $?
    tcp_pair_up || return 1
    dump_with "$D/img" --tcp-established -R || return 1
    net_no_rules_left || return 1
    expect_peer_ok "$D/img/dump.log"
}

# The listening port is taken by someone else at restore time: a clear
# error naming the address, nothing left behind; the lock stays for a
# retry, which works once the port is free.
t_err_restore_port_taken() {
    need_cr || return $?
    tcp_pair_up server || return 1
    do_dump "$D/img" --tcp-established || return 1
    # Hold the port.
    local holder
    # (Listening once its ready file is there: a fixed sleep was too short
    # on a loaded machine, and the restore then took the port.)
    rm -f "$D/holder.ready"
    holder=$(setsid python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $NET_P)); s.listen(1); open('$D/holder.ready', 'w').close(); time.sleep(60)" </dev/null >/dev/null 2>&1 & echo $!)
    track "$holder" "$(readlink -f "$(command -v python3)")"
    wait_file "$D/holder.ready" $READY_TIMEOUT || { fail "the port holder did not listen"; return 1; }
    crust_run restore restore -D "$D/img" -d --tcp-established -v4 -o restore.log
    kill -KILL "$holder" 2>/dev/null
    [ $RC -ne 0 ] || { fail "restore succeeded with the port taken" "$D/img/restore.log"; return 1; }
    grep -q "127.0.0.1:$NET_P" "$D/restore.err" && grep -qi "in use" "$D/restore.err" ||
        { fail "the error does not name the address in use: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after a failed restore"; return 1; }
    sleep 0.2
    do_restore "$D/img" "" --tcp-established || return 1
    kill -TERM "$PEER" 2>/dev/null
    expect_pass "$D/img/restore.log" || return 1
    expect_peer_pass "$D/img/restore.log" || return 1
    net_no_rules_left
}

# Full queues, megabytes of buffers (zdtm's socket-tcpbuf): the dumped
# side has megabytes unsent and megabytes unread, its window still open to
# a peer (outside the tree) that keeps sending a trickle, and reading one,
# both dropped by the lock while dumped. Once restored, the dumped side
# (reading nothing yet) must not offer to hold more than the original
# could: until it takes in new data, its queue plus the window the peer is
# given stay within its recorded receive buffer or the window it had
# offered (from the image), give or take 256 KiB. crust used to leave the
# receive buffer it makes big enough for the restored queue (about twice
# the queue) until after repair mode: the window sent with the unsent tail
# was computed from it, past the recorded buffer (by 1.1 MiB here); the
# peer sent into it, the buffer was cut back, the kernel dropped what it
# had invited, and zdtm's server could end up never hearing its peer's
# window open again. Once data comes in the kernel decides alone, and it
# goes past the buffer by itself at times (6.18: by 17 KiB most runs, by
# 344 to 665 KiB in about one run of eight, the peer's segments then
# dropped and sent again): from then on 1 MiB of spare is allowed, which
# the fault above still goes past (the samples may all come after new
# data, since the peer sends into the window at once). zdtm's
# socket-tcpbuf checks the same from the peer's side. Then every byte is
# checked both ways.
tcp_queue_bound() { # IMG: the restored queue's recorded length, the window it had offered, its buffer
    "$CRUST" image show -i "$1/files.img" >"$D/files.json" &&
        "$CRUST" image show -i "$(ls "$1"/tcp-stream-*.img | head -1)" | python3 -c '
import json, sys
e = json.load(sys.stdin)["entries"][0]
files = json.load(open(sys.argv[1]))["entries"]
rcvbuf = max(f["isk"]["opts"]["so_rcvbuf"] for f in files if "isk" in f)
promise = e["inq_len"] + ((e["rcv_wup"] + e["rcv_wnd"] - e["inq_seq"]) % 2**32)
print(e["inq_len"], promise, rcvbuf)' "$D/files.json"
}

t_tcp_full_queues() {
    need_cr || return $?
    net_pick_port
    local bufs=(--bufs 4194304 --bytes 268435456) inq promise rcvbuf base i ss_out got=0 wnd offered
    local first=0 first_at= most=0 most_at= prev=-1 same=0
    start_peer "$BIN/tcpstream" --role peer --listen 127.0.0.1:$NET_P "${bufs[@]}" \
        --prefill 6291456 --trickle 65536 --drain 1048576
    start_prog tcpstream --role dumped --connect 127.0.0.1:$NET_P "${bufs[@]}" --trickle 1048576 || return 1
    wait_peer_ready || return 1
    if do_dump "$D/img" --tcp-established && do_restore "$D/img" "" --tcp-established; then
        read -r inq promise rcvbuf < <(tcp_queue_bound "$D/img") && [ -n "$rcvbuf" ] ||
            { fail "cannot read the images"; net_unlock_port "$NET_P"; return 1; }
        base=$((promise > rcvbuf ? promise : rcvbuf))
        # What the restored side has offered to hold unread: its receive
        # queue (it reads nothing yet) plus the window the peer was last
        # given, both from one ss call (taken from two calls, data that
        # came in between was counted twice: the sum went over by up to
        # what the peer sent meanwhile); sampled for up to 5 s, or until
        # the queue stays the same for 1 s. The samples with the queue as
        # restored are those before any new data came in.
        for i in $(seq 50); do
            ss_out=$(ss -Htinm state established "( dport = :$NET_P or sport = :$NET_P )")
            got=$(awk -v p="127.0.0.1:$NET_P" '$4 == p { print $1; exit }' <<<"$ss_out")
            wnd=$(grep -A1 "127.0.0.1:$NET_P *127" <<<"$ss_out" | grep -o "snd_wnd:[0-9]*" | cut -d: -f2)
            offered=$((${got:-0} + ${wnd:-0}))
            if [ "${got:-0}" = "$inq" ] && [ "$offered" -gt "$first" ]; then
                first=$offered first_at="queue $got, window $wnd"
                echo "$ss_out" >"$D/img/ss-first.txt"
            fi
            if [ "$offered" -gt "$most" ]; then
                most=$offered most_at="queue $got, window $wnd"
                echo "$ss_out" >"$D/img/ss-most.txt"
            fi
            [ "$first" -gt $((base + 262144)) ] || [ "$most" -gt $((base + 1048576)) ] && break
            if [ "$got" = "$prev" ]; then same=$((same + 1)); else same=0; fi
            prev=$got
            [ "$same" -ge 10 ] && break
            sleep 0.1
        done
        local what="its recorded buffer ($rcvbuf) or the window it had offered ($promise) allow"
        if [ "$first" -gt $((base + 262144)) ]; then
            fail "before taking in new data, the restored connection offered to hold $first bytes unread ($first_at), more than $what with 256 KiB to spare (both ends in ss-first.txt)" "$D/img/restore.log"
            net_unlock_port "$NET_P"
            return 1
        fi
        if [ "$most" -gt $((base + 1048576)) ]; then
            fail "the restored connection offered to hold $most bytes unread ($most_at), more than $what with 1 MiB to spare (both ends in ss-most.txt)" "$D/img/restore.log"
            net_unlock_port "$NET_P"
            return 1
        fi
        expect_peer_ok "$D/img/restore.log" && net_no_rules_left && return 0
    fi
    net_unlock_port "$NET_P"
    return 1
}

ALL_TESTS+=(tcp-v4-client tcp-v4-server tcp-v6 tcp-v4mapped tcp-sockopts tcp-nftables
    tcp-veth-v4 tcp-veth-v6 err-dump-tcp-noflag tcp-leave-running err-restore-port-taken
    tcp-full-queues)

# CRIU 4.2's golden `tcp` set: a listener, a loopback connection with data
# unread and unsent both ways (both ends in the process), a UDP socket.
# CRIU's dump left its lock (iptables DROP rules for the connection, both
# directions, packets marked 0xC114 excepted) in place: the test puts the
# same rules back first; the restore must remove them.
golden_tcp_rules() { # -I or -D
    local op=$1 a b
    for a in 47011 47013; do
        b=$((a == 47011 ? 47013 : 47011))
        for ch in INPUT OUTPUT; do
            iptables -w -t filter "$op" "$ch" --protocol tcp -m mark ! --mark 0xC114 \
                --source 127.0.0.1 --sport "$a" --destination 127.0.0.1 --dport "$b" -j DROP 2>/dev/null
        done
    done
    return 0
}
t_golden_tcp() {
    need_cr || return $?
    [ -e /proc/1695 ] && { skip "pid 1695 is in use"; return 2; }
    ss -Htan '( sport = :47011 or sport = :47013 or sport = :47012 )' 2>/dev/null | grep -q . &&
        { skip "ports 47011-47013 are in use"; return 2; }
    command -v iptables >/dev/null || { skip "no iptables"; return 2; }
    golden_place tcp || return $?
    golden_images tcp || return 1
    golden_cpu_ok "$D/img" || return $?
    golden_tcp_rules -I
    PID=1695
    track 1695 $G/bin/tcp
    do_restore "$D/img" "" --tcp-established
    local rc=$? log=$D/img/restore.log
    if [ $rc -ne 0 ]; then
        golden_tcp_rules -D
        return 1
    fi
    local left
    left=$(iptables -w -S 2>/dev/null | grep -ci c114)
    [ "$left" = 0 ] || { golden_tcp_rules -D; fail "the restore left $left lock rules" "$log"; return 1; }
    # Both ends established again, with what was queued: 2048 unread each,
    # 17952 (47013) and 9952 (47011) unsent. The network is unlocked before
    # repair mode ends, so queued bytes may already have crossed: each
    # direction's unsent + the other end's unread must still add up
    # (20000 and 12000), once no segment is in flight.
    local i ok=
    for i in 1 2 3 4 5 6 7 8 9 10; do
        ss -Htn state established '( sport = :47013 )' >"$D/ss.out" 2>&1
        ss -Htn state established '( sport = :47011 )' >>"$D/ss.out" 2>&1
        awk 'NR==1{ar=$1;as=$2} NR==2{br=$1;bs=$2} END{exit !(NR==2 && as+br==20000 && bs+ar==12000)}' \
            "$D/ss.out" && { ok=1; break; }
        sleep 0.2
    done
    [ -n "$ok" ] ||
        { fail "the connection's queues are not back: $(tr '\n' ';' <"$D/ss.out")" "$log"; return 1; }
    ss -Hltn '( sport = :47011 )' | grep -q LISTEN || { fail "nothing listens on 47011" "$log"; return 1; }
    ss -Huan '( sport = :47012 )' | grep -q . || { fail "no UDP socket on 47012" "$log"; return 1; }
    local c1 c2
    c1=$(peek_u64 1695 $((0x4a60e0))) && sleep 0.3 && c2=$(peek_u64 1695 $((0x4a60e0))) ||
        { fail "cannot read the counter" "$log"; return 1; }
    [ "$c1" -ge 21 ] && [ "$c2" -gt "$c1" ] || { fail "counter $c1 then $c2 (dumped at 21)" "$log"; return 1; }
    kill -KILL 1695
    wait_gone 1695 5 || { fail "pid 1695 survived SIGKILL"; return 1; }
}

ALL_TESTS+=(golden-tcp)

# cr_net "CRUST ARGS" PROG ARGS...: cr_test with crust arguments for both
# dump and restore; removes the lock rules of $NET_P on failure.
cr_net() {
    local cargs=$1
    shift
    need_cr || return $?
    start_prog "$@" || return 1
    # shellcheck disable=SC2086
    if do_dump "$D/img" $cargs && do_restore "$D/img" "" $cargs && expect_pass "$D/img/restore.log"; then
        net_no_rules_left && return 0
    fi
    net_unlock_port "$NET_P"
    return 1
}
t_inet_udp() { net_pick_port; cr_net "" inetsk --mode udp --port "$NET_P"; }
t_inet_opts() { net_pick_port; cr_net "" inetsk --mode opts --port "$NET_P"; }
t_inet_states() { net_pick_port; cr_net "--tcp-established" inetsk --mode states --port "$NET_P"; }
t_inet_raw() { net_pick_port; cr_net "" inetsk --mode raw --port "$NET_P"; }
ALL_TESTS+=(inet-udp inet-opts inet-states inet-raw)

# Clients outside the tree connect to `inetsk --mode listen` on $NET_P and
# send "hello"; they are not accepted yet at dump time. Sets CLIENTS (pid).
net_clients() { # N
    rm -f "$D/clients.out"
    CLIENTS=$(setsid python3 - "$NET_P" "$1" "$D/clients.out" </dev/null >/dev/null 2>&1 <<'PYEOF' & echo $!
import socket, sys, time
port, n, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"hello")
    socks.append(s)
open(out + ".tmp", "w").write("connected\n")
import os; os.rename(out + ".tmp", out)
res = []
for s in socks:
    s.settimeout(30)
    try:
        b = s.recv(5)
        res.append("world" if b == b"world" else "got %r" % b)
    except Exception as e:
        res.append(type(e).__name__)
open(out + ".tmp", "w").write(" ".join(res) + "\n")
os.rename(out + ".tmp", out)
time.sleep(1)
PYEOF
)
    track "$CLIENTS" "$(readlink -f "$(command -v python3)")"
    wait_file "$D/clients.out" 5 || { fail "the clients did not connect"; return 1; }
    sleep 0.2
}

# A listener with connections not yet accepted is refused without
# --tcp-established (naming it and --skip-in-flight); the tree runs on.
t_err_dump_tcp_inflight() {
    need_cr || return $?
    net_pick_port
    start_prog inetsk --mode listen --port "$NET_P" --expect 2 --data 1 || return 1
    net_clients 2 || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -ne 0 ] || { fail "dump succeeded with connections in the accept queue" "$D/img/dump.log"; return 1; }
    grep -q -- '--skip-in-flight' "$D/dump.err" || { fail "the error does not name --skip-in-flight: $(head -c 300 "$D/dump.err")"; return 1; }
    [ -e "/proc/$PID" ] || { fail "the tree is gone after a failed dump"; return 1; }
    # Untouched: both connections are still there to accept.
    expect_pass || return 1
    wait_file "$D/clients.out" 1
    net_no_rules_left
}
t_tcp_skip_in_flight() {
    need_cr || return $?
    net_pick_port
    start_prog inetsk --mode listen --port "$NET_P" --expect 0 || return 1
    net_clients 2 || return 1
    if do_dump "$D/img" --tcp-established --skip-in-flight &&
        do_restore "$D/img" "" --tcp-established && expect_pass "$D/img/restore.log"; then
        net_no_rules_left
        return
    fi
    net_unlock_port "$NET_P"
    return 1
}
# The two outside clients of net_clients each got "world" back.
clients_answered() {
    local n=0
    while [ $n -lt 40 ] && ! grep -q 'world world' "$D/clients.out" 2>/dev/null; do
        sleep 0.1
        n=$((n + 1))
    done
    grep -q '^world world$' "$D/clients.out" || { fail "the clients got: $(cat "$D/clients.out")" "$D/img/restore.log"; return 1; }
}

# accept_queue_cr CHECK_CLIENTS INETSK-ARGS...: two outside clients wait in
# the accept queue of `inetsk --port $NET_P ...` at dump time; after
# restore the program accepts them (and, with CHECK_CLIENTS 1, its answer
# reaches them).
accept_queue_cr() {
    local check=$1
    shift
    need_cr || return $?
    net_pick_port
    start_prog inetsk --port "$NET_P" "$@" || return 1
    net_clients 2 || return 1
    if do_dump "$D/img" --tcp-established && do_restore "$D/img" "" --tcp-established &&
        expect_pass "$D/img/restore.log"; then
        if [ "$check" = 1 ]; then
            clients_answered || return 1
        fi
        net_no_rules_left
        return
    fi
    net_unlock_port "$NET_P"
    return 1
}

# Connections waiting in the accept queue at dump time (clients outside the
# tree, each sent "hello"): accepted after restore, their data there, and
# the answer reaches the clients.
t_tcp_accept_queue() { accept_queue_cr 1 --mode listen --expect 2 --data 1; }
ALL_TESTS+=(err-dump-tcp-inflight tcp-skip-in-flight tcp-accept-queue)

# A connection in SYN_SENT (its SYNs dropped by a rule this test adds):
# after restore, with a listener there and the rule gone, it completes.
t_tcp_syn_sent() {
    need_cr || return $?
    net_pick_port
    local rule=(INPUT -p tcp -d 127.0.0.1 --dport "$NET_P" --tcp-flags SYN,ACK SYN -j DROP)
    iptables -w -I "${rule[@]}" || { fail "cannot add the DROP rule"; return 1; }
    local ok=1
    if start_prog inetsk --mode synsent --port "$NET_P" && do_dump "$D/img" --tcp-established; then
        local srv
        srv=$(setsid python3 -c "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $NET_P)); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(10)
assert c.recv(4) == b'ping'; c.sendall(b'pong')
import time; time.sleep(1)" </dev/null >"$D/srv.out" 2>&1 & echo $!)
        track "$srv" "$(readlink -f "$(command -v python3)")"
        sleep 0.2
        if do_restore "$D/img" "" --tcp-established; then
            iptables -w -D "${rule[@]}"
            expect_pass "$D/img/restore.log" && ok=0
        fi
    fi
    iptables -w -D "${rule[@]}" 2>/dev/null
    [ $ok = 0 ] || { net_unlock_port "$NET_P"; return 1; }
    net_no_rules_left
}

# A process crust cannot carry over (here: it lives in the namespaces of
# `ip netns exec`, whose mount namespace crust does not dump yet): the
# dump says why, and the tree runs on.
t_err_dump_tcp_other_netns() {
    need_cr || return $?
    net_ns_up || return 1
    net_pick_port
    local rc=1
    start_peer "$BIN/tcpstream" --role peer --listen 10.213.7.1:$NET_P
    # The dumped program itself runs in the second namespace.
    rm -f "$D/ready" "$D/result"
    PID=$(setsid ip netns exec "$NETNS" "$BIN/tcpstream" --role dumped --connect 10.213.7.1:$NET_P \
        --ready "$D/ready" --result "$D/result" </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/tcpstream"
    if wait_file "$D/ready" $READY_TIMEOUT && wait_peer_ready; then
        rm -f "$D/ready"
        mkdir -p "$D/img"
        crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --tcp-established
        if [ $RC -eq 0 ]; then
            fail "dump succeeded" "$D/img/dump.log"
        elif ! grep -q "namespace" "$D/dump.err"; then
            fail "the error does not say why: $(head -c 300 "$D/dump.err")"
        elif [ ! -e "/proc/$PID" ]; then
            fail "the tree is gone after a failed dump"
        else
            kill -TERM "$PEER"
            expect_pass && expect_peer_pass && rc=0
        fi
    else
        fail "the programs did not become ready"
    fi
    kill -KILL "$PID" "$PEER" 2>/dev/null
    net_ns_down
    return $rc
}

# iptables missing (hidden in a mount namespace where both the program
# and crust run): the dump refuses with a message naming the tool and the
# other methods; the tree runs on and nothing is locked.
t_err_dump_netlock_missing() {
    need_cr || return $?
    command -v unshare >/dev/null || { skip "no unshare"; return 2; }
    net_pick_port
    start_peer "$BIN/tcpstream" --role peer --listen 127.0.0.1:$NET_P
    mkdir -p "$D/img"
    local hide="" t
    for t in iptables iptables-restore ip6tables ip6tables-restore; do
        [ -e "/usr/sbin/$t" ] && hide="$hide mount --bind /dev/null $(readlink -f /usr/sbin/$t);"
    done
    rm -f "$D/ready" "$D/result" "$D/pid"
    # One mount namespace: hide the tools, start the program, dump it.
    (cd "$D" && timeout 60 unshare -m --propagation private sh -c "
        $hide
        setsid '$BIN/tcpstream' --role dumped --connect 127.0.0.1:$NET_P --ready '$D/ready' --result '$D/result' </dev/null >/dev/null 2>&1 &
        echo \$! >'$D/pid'
        n=0; while [ ! -e '$D/ready' ] && [ \$n -lt 200 ]; do sleep 0.05; n=\$((n + 1)); done
        exec '$CRUST' dump -t \$(cat '$D/pid') -D '$D/img' -v4 -o dump.log --tcp-established") \
        >"$D/dump.out" 2>"$D/dump.err"
    local rc=$?
    PID=$(cat "$D/pid" 2>/dev/null)
    [ -n "$PID" ] || { fail "the program did not start"; return 1; }
    track "$PID" "$BIN/tcpstream"
    [ -e "$D/ready" ] || { fail "the program did not become ready"; return 1; }
    rm -f "$D/ready"
    [ $rc -ne 0 ] || { fail "dump succeeded without iptables" "$D/img/dump.log"; return 1; }
    grep -q "iptables" "$D/dump.err" && grep -q -- "--network-lock" "$D/dump.err" ||
        { fail "the error does not name iptables and --network-lock: $(head -c 300 "$D/dump.err")"; return 1; }
    [ -e "/proc/$PID" ] || { fail "the tree is gone after a failed dump"; return 1; }
    net_no_rules_left || return 1
    wait_peer_ready || return 1
    expect_peer_ok ""
}

t_tcp_veth_v4mapped() { net_pick_port; veth_cr "--connect [::ffff:10.213.7.2]:$NET_P" "--listen 10.213.7.2:$NET_P"; }

ALL_TESTS+=(tcp-syn-sent err-dump-tcp-other-netns err-dump-netlock-missing tcp-veth-v4mapped)

# --tcp-close: the connection is not carried over (no lock, no repair);
# the restored process gets a closed TCP socket at the same fd.
t_tcp_close() {
    need_cr || return $?
    tcp_pair_up || return 1
    local fd
    fd=$(for f in /proc/$PID/fd/*; do readlink "$f"; done | grep -c socket)
    do_dump "$D/img" --tcp-close || return 1
    net_no_rules_left || return 1
    do_restore "$D/img" "" --tcp-close || return 1
    [ "$(for f in /proc/$PID/fd/*; do readlink "$f"; done | grep -c socket)" = "$fd" ] ||
        { fail "the restored process does not hold its $fd socket(s)" "$D/img/restore.log"; return 1; }
    ss -Htn state established "( sport = :$NET_P or dport = :$NET_P )" | grep -q . &&
        { fail "a connection on port $NET_P is still established"; return 1; }
    kill -KILL "$PID"
    wait_gone "$PID" 5
}
ALL_TESTS+=(tcp-close)

# ICMP ping sockets (IPv4 and IPv6), bound with an ident: still answered
# after restore. Ping sockets need net.ipv4.ping_group_range to include
# root's group: the test opens it and puts the old range back.
t_inet_ping() {
    need_cr || return $?
    local f=/proc/sys/net/ipv4/ping_group_range old rc
    old=$(cat $f) || { skip "no $f"; return 2; }
    echo "0 0" >$f || { skip "cannot set $f"; return 2; }
    net_pick_port
    cr_net "" inetsk --mode ping --port "$NET_P"
    rc=$?
    echo "$old" >$f
    return $rc
}
ALL_TESTS+=(inet-ping)

# A dump that fails once the connection is locked and in repair mode
# (CRUST_FAULT=after-netlock): the connection leaves repair mode, the lock
# goes, and the tree runs on with its connection intact.
t_err_dump_tcp_after_lock() {
    need_cr || return $?
    tcp_pair_up || return 1
    mkdir -p "$D/img"
    CRUST_FAULT=after-netlock crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --tcp-established
    [ $RC -ne 0 ] || { fail "the dump did not fail" "$D/img/dump.log"; return 1; }
    grep -q "Locked 1 TCP" "$D/img/dump.log" || { fail "the dump failed before locking" "$D/img/dump.log"; return 1; }
    [ -e "/proc/$PID" ] || { fail "the tree is gone after a failed dump"; return 1; }
    net_no_rules_left || return 1
    expect_peer_ok "$D/img/dump.log"
}
ALL_TESTS+=(err-dump-tcp-after-lock)

# The accept queue restored without -d: crust stays, hands the connections over,
# and exits with the program's status once it ends.
t_tcp_accept_queue_attached() {
    need_cr || return $?
    net_pick_port
    start_prog inetsk --mode listen --port "$NET_P" --expect 2 --data 1 || return 1
    net_clients 2 || return 1
    do_dump "$D/img" --tcp-established || { net_unlock_port "$NET_P"; return 1; }
    rm -f "$D/pidfile"
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" restore -D "$D/img" --tcp-established \
        --pidfile "$D/pidfile" -v4 -o restore.log) </dev/null >"$D/restore.out" 2>"$D/restore.err" &
    local cpid=$!
    track "$cpid" "$TIMEOUT_EXE"
    wait_file "$D/pidfile" 20 || { wait_rc "$cpid" 5; net_unlock_port "$NET_P"; fail "no pidfile; restore: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log" || return 1
    wait_rc "$cpid" 10
    [ "$RC" = 0 ] || { fail "crust restore exited with $RC, not the program's 0" "$D/img/restore.log"; return 1; }
    clients_answered || return 1
    net_no_rules_left
}
ALL_TESTS+=(tcp-accept-queue-attached)

# The accept queue with an epoll loop and accept4(SOCK_NONBLOCK |
# SOCK_CLOEXEC, address): the listener is readable after restore, and the
# handed-over connections carry those flags and their real peer address.
t_tcp_accept_queue_epoll() { accept_queue_cr 0 --mode listen-epoll --expect 2; }
ALL_TESTS+=(tcp-accept-queue-epoll)

# The accept queue taken over by a child the process forks after restore
# (late workers): the child is traced from its birth and gets the
# connections.
t_tcp_accept_queue_fork() { accept_queue_cr 1 --mode listen-fork --expect 2; }
ALL_TESTS+=(tcp-accept-queue-fork)
