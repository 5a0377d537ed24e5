# Tests of the tree's own network namespace (issue 13): links, addresses,
# routes, rules, iptables, sysctls; a veth to the host plugged back into a
# host bridge with --external veth[IN]:OUT@BRIDGE. Sourced by run.sh.
# Every link a test makes on the host is removed pass or fail
# (netdev_clean); what is inside the namespace goes with it.

ND_BR=crnd-br0     # host bridge, 10.77.0.1/24
ND_OUT=crnd-o0     # outer veth end (host)
ND_IN=crnd-i0      # inner veth end, 10.77.0.2/24
ND_TAKEN=crnd-x0   # the other end of a veth that takes ND_OUT's name
ND_QLEN=77

netdev_clean() {
    local l
    for l in $ND_OUT $ND_TAKEN $ND_BR; do
        ip link del "$l" >/dev/null 2>&1
    done
    return 0
}

# Wait until link $1 is gone from crust's namespace ($2 seconds at most):
# a dead namespace's veth pairs go a moment later.
netdev_wait_gone() {
    local n=$(($2 * 20))
    while [ $n -gt 0 ]; do
        ip link show "$1" >/dev/null 2>&1 || return 0
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

in_ns() { nsenter -t "$PID" -n "$@"; }

# nd_reach PORT [SECS]: a TCP connect from the host to 10.77.0.2:PORT gets
# an answer (accepted or refused) within SECS (default 3): the veth carries
# packets (no ping binary here). A port the namespace's iptables drops
# times out.
nd_reach() {
    "$PY" -c '
import socket, sys
s = socket.socket()
s.settimeout(float(sys.argv[2]))
try:
    s.connect(("10.77.0.2", int(sys.argv[1])))
except ConnectionRefusedError:
    pass
except OSError:
    sys.exit(1)
' "$1" "${2:-3}"
}

# netns with a veth to the host bridge and the namespace filled; sets PID.
netdev_setup() {
    command -v ip >/dev/null && command -v nsenter >/dev/null && command -v iptables >/dev/null ||
        { skip "needs ip, nsenter and iptables"; return 2; }
    netdev_clean
    start_prog netns --link "$ND_IN" --qlen "$ND_QLEN" || return 1
    {
        ip link add "$ND_BR" type bridge &&
            ip addr add 10.77.0.1/24 dev "$ND_BR" &&
            ip link set "$ND_BR" up &&
            ip link add "$ND_OUT" type veth peer name "$ND_IN" netns "/proc/$PID/ns/net" &&
            ip link set "$ND_OUT" master "$ND_BR" up &&
            in_ns ip link set lo up &&
            in_ns ip addr add 10.77.0.2/24 dev "$ND_IN" &&
            in_ns ip link set "$ND_IN" mtu 1400 up &&
            in_ns ip route add 10.66.0.0/24 via 10.77.0.1 &&
            in_ns iptables -A INPUT -p tcp --dport 4444 -j DROP &&
            in_ns sysctl -qw net.ipv4.conf.all.forwarding=1 &&
            in_ns sysctl -qw net.ipv4.conf."$ND_IN".rp_filter=2 &&
            in_ns sysctl -qw net.unix.max_dgram_qlen=$ND_QLEN
    } >"$D/setup.out" 2>&1 || { fail "cannot set up the namespace: $(head -c 300 "$D/setup.out")"; return 1; }
    nd_reach 4445 || { fail "10.77.0.2 cannot be reached across the veth before the dump"; return 1; }
}

# Everything netdev_setup made, seen again in the restored namespace.
netdev_check() {
    local log=$1 got
    got=$(in_ns ip -o addr show dev lo 2>&1)
    [[ $got == *"127.0.0.1/8"* && $got == *"::1/128"* ]] || { fail "lo lacks its addresses: $got" "$log"; return 1; }
    got=$(in_ns ip -o link show dev "$ND_IN" 2>&1)
    [[ $got == *"mtu 1400"* && $got == *",UP"* ]] || { fail "$ND_IN is not up with mtu 1400: $got" "$log"; return 1; }
    in_ns ip -o addr show dev "$ND_IN" | grep -q '10.77.0.2/24' || { fail "$ND_IN lacks 10.77.0.2/24" "$log"; return 1; }
    in_ns ip route | grep -q '10.66.0.0/24 via 10.77.0.1' || { fail "the route to 10.66.0.0/24 is gone" "$log"; return 1; }
    in_ns iptables -S INPUT 2>/dev/null | grep -q -- '--dport 4444 -j DROP' || { fail "the iptables rule is gone" "$log"; return 1; }
    [ "$(in_ns sysctl -n net.ipv4.conf.all.forwarding)" = 1 ] || { fail "net.ipv4.conf.all.forwarding is not 1" "$log"; return 1; }
    [ "$(in_ns sysctl -n net.ipv4.conf."$ND_IN".rp_filter)" = 2 ] || { fail "rp_filter of $ND_IN is not 2" "$log"; return 1; }
    got=$(ip -o link show dev "$ND_OUT" 2>&1)
    [[ $got == *"master $ND_BR"* && $got == *",UP"* ]] || { fail "$ND_OUT is not up in bridge $ND_BR: $got" "$log"; return 1; }
    nd_reach 4445 || { fail "10.77.0.2 cannot be reached across the veth after the restore" "$log"; return 1; }
    ! nd_reach 4444 1 || { fail "port 4444 answers: the restored iptables rule does not drop it" "$log"; return 1; }
}

netdev_cr() {
    need_cr || return $?
    netdev_setup || return $?
    do_dump "$D/img" || return 1
    local img
    img=$(cd "$D/img" && ls netdev-*.img 2>/dev/null | head -1)
    [ -n "$img" ] || { fail "no netdev-*.img written" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img/$img" 2>&1 | grep -q "\"$ND_IN\"" ||
        { fail "$img does not hold $ND_IN" "$D/img/dump.log"; return 1; }
    netdev_wait_gone "$ND_OUT" 5 || { fail "$ND_OUT outlived the dumped namespace"; return 1; }
    do_restore "$D/img" "" --external "veth[$ND_IN]:$ND_OUT@$ND_BR" || return 1
    [ "$(readlink /proc/"$PID"/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
        { fail "the restored tree is in the host's network namespace" "$D/img/restore.log"; return 1; }
    netdev_check "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}
t_ns_netdev_cr() { netdev_cr; local rc=$?; netdev_clean; return $rc; }

# netdev_dumped: set up, dump; the outer end gone.
netdev_dumped() {
    need_cr || return $?
    netdev_setup || return $?
    do_dump "$D/img" || return 1
    netdev_wait_gone "$ND_OUT" 5 || { fail "$ND_OUT outlived the dumped namespace"; return 1; }
}

# The outer end's name is taken in crust's namespace: the restore fails
# naming it, and leaves the link that took it (and nothing else).
netdev_taken() {
    netdev_dumped || return $?
    ip link add "$ND_OUT" type veth peer name "$ND_TAKEN" || { fail "cannot take the name $ND_OUT"; return 1; }
    restore_fails_naming "$D/img" "$PID" "$ND_OUT" "" --external "veth[$ND_IN]:$ND_OUT@$ND_BR" || return 1
    grep -q 'already has a link' "$D/restore.err" || { fail "the message does not say the name is taken: $(head -c 300 "$D/restore.err")"; return 1; }
    ip link show "$ND_TAKEN" >/dev/null 2>&1 || { fail "the failed restore removed the link that took the name" "$D/img/restore.log"; return 1; }
    [ -z "$(ip -o link show master "$ND_BR")" ] || { fail "something is left in $ND_BR: $(ip -o link show master "$ND_BR")"; return 1; }
}
t_err_restore_netdev_taken() { netdev_taken; local rc=$?; netdev_clean; return $rc; }

# No --external veth[...] for the veth: the restore fails naming the link
# and the option, and makes no link on the host.
netdev_noext() {
    netdev_dumped || return $?
    restore_fails_naming "$D/img" "$PID" "--external veth[$ND_IN]" "" || return 1
    ! ip link show "$ND_OUT" >/dev/null 2>&1 || { fail "the failed restore left $ND_OUT" "$D/img/restore.log"; return 1; }
    # A bridge that does not exist: the outer end made is removed again.
    restore_fails_naming "$D/img" "$PID" "crnd-nobr" "2" --external "veth[$ND_IN]:$ND_OUT@crnd-nobr" || return 1
    netdev_wait_gone "$ND_OUT" 2 || { fail "the failed restore left $ND_OUT" "$D/img/restore2.log"; return 1; }
}
t_err_restore_netdev_noext() { netdev_noext; local rc=$?; netdev_clean; return $rc; }

# A link of a kind crust cannot restore (vxlan) in the namespace: the dump
# is refused naming it, and the tree runs on.
netdev_kind() {
    need_cr || return $?
    start_prog netns --link crnd-t0 --qlen 10 || return 1
    in_ns ip link add crnd-t0 type vxlan id 5 dstport 4789 >"$D/setup.out" 2>&1 || { skip "cannot add a vxlan link: $(head -c 200 "$D/setup.out")"; return 2; }
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q 'crnd-t0' "$D/dump.err" && grep -q '"vxlan"' "$D/dump.err" ||
        { fail "the message does not name crnd-t0 and its kind: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}
t_err_dump_netdev_kind() { netdev_kind; }

# --empty-ns net: the dump writes nothing of the namespace, the restore
# gives the tree a new empty one (lo down, the kernel's sysctls).
t_ns_netdev_emptyns() {
    need_cr || return $?
    start_prog netns --link lo --qlen 10 || return 1
    in_ns ip link set lo up || { fail "cannot bring lo up"; return 1; }
    do_dump "$D/img" --empty-ns net || return 1
    ! ls "$D/img"/netdev-*.img >/dev/null 2>&1 || { fail "netdev-*.img written with --empty-ns net" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --empty-ns net || return 1
    [ "$(readlink /proc/"$PID"/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
        { fail "the restored tree is in the host's network namespace" "$D/img/restore.log"; return 1; }
    in_ns ip -o link show lo | grep -q 'state DOWN' ||
        { fail "lo of the new namespace is not down (not empty?): $(in_ns ip -o link show lo)" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# The links of a namespace, compared: name, MAC, MTU, master, UP flag.
netdev_links() {
    in_ns ip -o link show | sed -E 's/^[0-9]+: ([^:@]+)[^<]*<([^>]*)>.* mtu ([0-9]+).*link\/[a-z]+ ([0-9a-f:]+).*/\1 \3 \4 \2/' |
        while read -r n m a f; do
            printf '%s mtu=%s mac=%s up=%s master=%s\n' "$n" "$m" "$a" "$([[ ,$f, == *,UP,* ]] && echo 1 || echo 0)" \
                "$(in_ns ip -o link show dev "$n" | grep -o 'master [^ ]*')"
        done | sort
}

# A veth pair with both ends in the namespace, one plugged into a bridge of
# the namespace, a MAC set: the same links after restore, no --external.
t_ns_netdev_inpair() {
    need_cr || return $?
    start_prog netns --link crnd-a --qlen 10 || return 1
    in_ns sh -c 'ip link set lo up && ip link add crnd-a type veth peer name crnd-b &&
        ip link add crnd-br type bridge && ip link set crnd-b master crnd-br &&
        ip link set crnd-a address 02:11:22:33:44:55 mtu 1300 &&
        ip addr add 10.88.0.1/24 dev crnd-a && ip link set crnd-a up && ip link set crnd-b up &&
        ip link set crnd-br up' >"$D/setup.out" 2>&1 || { fail "cannot set up: $(head -c 300 "$D/setup.out")"; return 1; }
    netdev_links >"$D/links.before"
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    netdev_links >"$D/links.after"
    cmp -s "$D/links.before" "$D/links.after" ||
        { fail "links differ: $(diff "$D/links.before" "$D/links.after" | tr '\n' ' ' | head -c 300)" "$D/img/restore.log"; return 1; }
    in_ns ip -o addr show dev crnd-a | grep -q '10.88.0.1/24' || { fail "crnd-a lacks 10.88.0.1/24" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(ns-netdev-inpair ns-netdev-emptyns ns-netdev-cr err-restore-netdev-taken err-restore-netdev-noext err-dump-netdev-kind)
