# A tree in two network namespaces (issue 13, netsub): the root's own and
# a child's, joined by a veth pair with an address at each end; the child
# listens on TCP and holds an abstract unix name in its namespace (testprog
# netsub). Sourced by run.sh: uses its helpers and adds its tests to
# ALL_TESTS. The namespaces go with the processes: nothing is made on the
# host.

NS_R=crsub-r        # veth end in the root's namespace, 10.78.0.1/24
NS_C=crsub-c        # its peer in the child's, 10.78.0.2/24
NS_PORT=47100

# The child of process $1 (the tree's second process).
netsub_child() { cat /proc/"$1"/task/*/children 2>/dev/null | awk '{print $1; exit}'; }

# netsub running, the veth between its two namespaces set up; sets PID and
# NS_CHILD.
netsub_setup() {
    command -v ip >/dev/null && command -v nsenter >/dev/null || { skip "needs ip and nsenter"; return 2; }
    start_prog netsub --reach 10.78.0.2 --port $NS_PORT || return 1
    NS_CHILD=$(netsub_child "$PID")
    [ -n "$NS_CHILD" ] || { fail "netsub has no child"; return 1; }
    {
        ip link add "$NS_R" netns "/proc/$PID/ns/net" type veth peer name "$NS_C" netns "/proc/$NS_CHILD/ns/net" &&
            nsenter -t "$PID" -n ip addr add 10.78.0.1/24 dev "$NS_R" &&
            nsenter -t "$PID" -n ip link set "$NS_R" up &&
            nsenter -t "$NS_CHILD" -n ip addr add 10.78.0.2/24 dev "$NS_C" &&
            nsenter -t "$NS_CHILD" -n ip link set "$NS_C" mtu 1400 up
    } >"$D/setup.out" 2>&1 || { fail "cannot set up the veth: $(head -c 300 "$D/setup.out")"; return 1; }
}

# "INDEX NAME" of link $2 in the namespace of process $1.
netsub_link() { nsenter -t "$1" -n ip -o link show dev "$2" 2>/dev/null | awk '{print $1 $2}'; }

t_ns_netsub_cr() {
    need_cr || return $?
    netsub_setup || return $?
    local r c img got ids
    r=$(netsub_link "$PID" "$NS_R")
    c=$(netsub_link "$NS_CHILD" "$NS_C")
    do_dump "$D/img" || return 1
    ids=$(cd "$D/img" && ls netns-*.img 2>/dev/null | wc -l)
    [ "$ids" = 2 ] || { fail "$ids netns-*.img written, not 2 (the root's and the child's)" "$D/img/dump.log"; return 1; }
    got=$(for f in "$D"/img/netdev-*.img; do "$CRUST" image decode -i "$f"; done 2>&1)
    [[ $got == *'"peer_nsid"'* && $got == *"\"$NS_R\""* && $got == *"\"$NS_C\""* ]] ||
        { fail "the netdev images lack the veth ends or their peer namespace: $(echo "$got" | head -c 300)" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    NS_CHILD=$(netsub_child "$PID")
    local host root kid
    host=$(readlink /proc/self/ns/net)
    root=$(readlink /proc/"$PID"/ns/net)
    kid=$(readlink /proc/"$NS_CHILD"/ns/net 2>/dev/null)
    [ "$root" != "$host" ] && [ -n "$kid" ] && [ "$kid" != "$host" ] && [ "$kid" != "$root" ] ||
        { fail "the restored processes are not in two new network namespaces (host $host, root $root, child $kid)" "$D/img/restore.log"; return 1; }
    [ "$(netsub_link "$PID" "$NS_R")" = "$r" ] && [ "$(netsub_link "$NS_CHILD" "$NS_C")" = "$c" ] ||
        { fail "the veth ends are not back at their indexes ($r $c): $(netsub_link "$PID" "$NS_R") $(netsub_link "$NS_CHILD" "$NS_C")" "$D/img/restore.log"; return 1; }
    got=$(nsenter -t "$NS_CHILD" -n ip -o addr show dev "$NS_C" 2>&1)
    [[ $got == *"10.78.0.2/24"* ]] || { fail "$NS_C lacks 10.78.0.2/24: $got" "$D/img/restore.log"; return 1; }
    got=$(nsenter -t "$NS_CHILD" -n ip -o link show dev "$NS_C" 2>&1)
    [[ $got == *"mtu 1400"* ]] || { fail "$NS_C lost its mtu: $got" "$D/img/restore.log"; return 1; }
    nsenter -t "$PID" -n ip -o addr show dev "$NS_R" 2>&1 | grep -q '10.78.0.1/24' ||
        { fail "$NS_R lacks 10.78.0.1/24" "$D/img/restore.log"; return 1; }
    # The root reaches the child's listener across the veth; the child
    # finds its listener and its abstract name in its own namespace.
    expect_pass "$D/img/restore.log"
}

# The root in crust's network namespace, a child in one of its own: refused
# naming it (crust dumps other namespaces of a tree whose root has its
# own); the tree runs on.
t_err_dump_netsub_root() { dump_must_fail 'own network namespace' netsub --root-ns 0 --port $NS_PORT; }

# The images of ns-netsub-cr restored with --join-ns net (one namespace
# for a tree that had two): refused, naming the option. Then with the
# child's veth end renamed (crit) to "lo", a name its new namespace has
# already: the restore fails naming the veth. No process is left.
t_err_restore_netsub_taken() {
    need_cr || return $?
    [ "$CRIT_ON" = 1 ] || { skip "no crit ($CRIT)"; return 2; }
    netsub_setup || return $?
    do_dump "$D/img" || return 1
    restore_fails_naming "$D/img" "$PID" "--join-ns net" 1 --join-ns net:/proc/self/ns/net || return 1
    local f n=0
    for f in "$D"/img/netdev-*.img; do
        "$CRIT_PY" "$CRIT" decode -i "$f" -o "$D/nd.json" 2>"$D/crit.err" ||
            { fail "crit decode $f: $(head -c 300 "$D/crit.err")"; return 1; }
        grep -q "\"$NS_C\"" "$D/nd.json" || continue
        sed -i "s/\"$NS_C\"/\"lo\"/" "$D/nd.json"
        "$CRIT_PY" "$CRIT" encode -i "$D/nd.json" -o "$f" 2>"$D/crit.err" ||
            { fail "crit encode $f: $(head -c 300 "$D/crit.err")"; return 1; }
        n=$((n + 1))
    done
    [ $n = 1 ] || { fail "$NS_C is in $n netdev images, not 1" "$D/img/dump.log"; return 1; }
    restore_fails_naming "$D/img" "$PID" "$NS_R" "" || return 1
    grep -q 'File exists' "$D/restore.err" ||
        { fail "the message does not say the name is taken: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
}

ALL_TESTS+=(ns-netsub-cr err-dump-netsub-root err-restore-netsub-taken)
