# Inet socket states at the edges, each a cause of CRIU's zdtm failing with
# crust (issue 12). Sourced by run.sh after net.sh: uses its helpers
# (net_pick_port, cr_net) and adds its tests to ALL_TESTS.

# UDP sockets never bound (a filter, SO_BROADCAST), UDP-Lite connected to
# 0.0.0.0:0 and shut down, IPv6 bound with IP_FREEBIND cleared since.
t_inet_edge_unbound() { net_pick_port; cr_net "" inetedge --mode unbound --port "$NET_P"; }
# Two listeners sharing a port, SO_REUSEPORT cleared on one since.
t_inet_edge_shared() { net_pick_port; cr_net "" inetedge --mode shared --port "$NET_P"; }
# A TCP connection closed both ways (a TIME_WAIT holds one end's port).
t_inet_edge_closed() { net_pick_port; cr_net "" inetedge --mode closed --port "$NET_P"; }
# An established connection dumped and restored with --tcp-close.
t_inet_edge_tcpclose() { net_pick_port; cr_net "--tcp-close" inetedge --mode tcpclose --port "$NET_P"; }
# A connection reset by its peer before its bytes were read: kept with
# --tcp-established; refused without (or dropped with --tcp-close).
t_inet_edge_reset() { net_pick_port; cr_net "--tcp-established" inetedge --mode reset --port "$NET_P"; }
t_err_dump_tcp_reset_unread() {
    need_cr || return $?
    net_pick_port
    start_prog inetedge --mode reset --port "$NET_P" || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    [ $RC -ne 0 ] || { fail "dump succeeded without --tcp-established" "$D/img/dump.log"; return 1; }
    grep -q -- 'unread byte(s); dump with --tcp-established' "$D/dump.err" ||
        { fail "no clear error: $(head -c 300 "$D/dump.err")"; return 1; }
    expect_pass
}
# A connection to a peer outside the tree that resets it (SO_LINGER 0)
# while the tree is dumped: the lock drops that reset, and the restored end
# learns of it only if the network is unlocked before repair mode ends (the
# window probe then draws a new reset; CRIU's order, zdtm socket-tcp-reseted).
t_inet_edge_peergone() {
    need_cr || return $?
    net_pick_port
    rm -f "$D/peer.up" "$D/peer.go"
    local peer
    peer=$(setsid python3 - "$NET_P" "$D/peer.up" "$D/peer.go" </dev/null >/dev/null 2>&1 <<'PYEOF' & echo $!
import os, socket, struct, sys, time
port, up, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen(1)
open(up, "w").close()
c, _ = l.accept()
l.close()
for _ in range(600):
    if os.path.exists(go):
        break
    time.sleep(0.05)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
PYEOF
)
    track "$peer" "$(readlink -f "$(command -v python3)")"
    wait_file "$D/peer.up" 5 || { fail "the peer does not listen"; return 1; }
    start_prog inetedge --mode peergone --port "$NET_P" || return 1
    if do_dump "$D/img" --tcp-established; then
        touch "$D/peer.go"
        if wait_gone "$peer" 5 && do_restore "$D/img" "" --tcp-established &&
            expect_pass "$D/img/restore.log"; then
            net_no_rules_left && return 0
        fi
    fi
    net_unlock_port "$NET_P"
    return 1
}
# SOCK_PACKET sockets (the obsolete packet interface), one bound to lo.
t_packet_spkt() { net_pick_port; cr_net "" inetedge --mode spkt --port "$NET_P"; }
# The programs' own checks without a restore in between (tcpclose's hold
# only after a restore with --tcp-close).
t_inet_edge_plain() {
    net_pick_port
    start_prog inetedge --mode closed --port "$NET_P" && expect_pass || return 1
    net_pick_port
    start_prog inetedge --mode shared --port "$NET_P" && expect_pass || return 1
    net_pick_port
    start_prog inetedge --mode unbound --port "$NET_P" && expect_pass || return 1
    start_prog inetedge --mode spkt --port "$NET_P" && expect_pass || return 1
    net_pick_port
    start_prog inetedge --mode reset --port "$NET_P" && expect_pass
}
ALL_TESTS+=(inet-edge-unbound inet-edge-shared inet-edge-closed inet-edge-tcpclose inet-edge-plain packet-spkt inet-edge-reset err-dump-tcp-reset-unread inet-edge-peergone)
