# More link kinds of the tree's own network namespace (issue 13): a macvlan
# on a host link (--external macvlan[IN]:LOWER) and a veth end made
# beforehand on the host and moved in at restore (--external
# netdev[IN]:ORIG, with its dumped index). Sourced by run.sh. Every link a
# test makes on the host is removed pass or fail (netmisc_clean).

NM_BR=crnm-br0   # host bridge, the macvlan's lower link
NM_MV=crnm-mv0   # macvlan in the namespace, 10.79.0.2/24
NM_C0=crnm-c0    # veth end in the namespace, 10.79.1.2/24 (its peer NM_H0 on the host)
NM_H0=crnm-h0
NM_C1=crnm-c1    # the pair made on the host before the restore: NM_C1 moves in as NM_C0
NM_H1=crnm-h1

netmisc_clean() {
    local l
    for l in $NM_MV $NM_C0 $NM_H0 $NM_C1 $NM_H1 $NM_BR; do
        ip link del "$l" >/dev/null 2>&1
    done
    return 0
}

nm_in() { nsenter -t "$PID" -n "$@"; }

# Name, MTU, MAC, UP of link $1 in the namespace, and its index.
nm_link() {
    nm_in ip -o link show dev "$1" 2>&1 | sed -E 's/^([0-9]+): ([^:@]+)[^<]*<([^>]*)>.* mtu ([0-9]+).*link\/ether ([0-9a-f:]+).*/\1 \2 mtu=\4 mac=\5 flags=\3/'
}

nm_tools() {
    command -v ip >/dev/null && command -v nsenter >/dev/null || { skip "needs ip and nsenter"; return 2; }
}

# A namespace with macvlan NM_MV (mode bridge) on host bridge NM_BR.
netmisc_mv_setup() {
    nm_tools || return $?
    netmisc_clean
    start_prog netns --link "$NM_MV" --qlen 10 || return 1
    {
        ip link add "$NM_BR" type bridge && ip link set "$NM_BR" up &&
            ip link add "$NM_MV" link "$NM_BR" type macvlan mode bridge &&
            ip link set "$NM_MV" netns "/proc/$PID/ns/net" &&
            nm_in ip link set "$NM_MV" address 02:79:00:00:00:02 mtu 1400 &&
            nm_in ip addr add 10.79.0.2/24 dev "$NM_MV" &&
            nm_in ip link set "$NM_MV" up
    } >"$D/setup.out" 2>&1 || {
        if grep -qi 'unknown\|not supported' "$D/setup.out"; then
            skip "no macvlan links here: $(head -c 200 "$D/setup.out")"
            return 2
        fi
        fail "cannot set up the macvlan: $(head -c 300 "$D/setup.out")"
        return 1
    }
}

netmisc_mv() {
    need_cr || return $?
    netmisc_mv_setup || return $?
    local before after
    before=$(nm_link "$NM_MV")
    do_dump "$D/img" || return 1
    local img
    img=$(cd "$D/img" && ls netdev-*.img 2>/dev/null | head -1)
    [ -n "$img" ] && "$CRUST" image decode -i "$D/img/$img" 2>&1 | grep -q '"macvlan"' || { fail "the netdev image has no macvlan entry" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --external "macvlan[$NM_MV]:$NM_BR" || return 1
    after=$(nm_link "$NM_MV")
    [ "$before" = "$after" ] || { fail "$NM_MV differs: before '$before' after '$after'" "$D/img/restore.log"; return 1; }
    nm_in ip -d -o link show dev "$NM_MV" | grep -q 'macvlan mode bridge' ||
        { fail "$NM_MV is not a macvlan in mode bridge: $(nm_in ip -d -o link show dev "$NM_MV")" "$D/img/restore.log"; return 1; }
    nm_in ip -o addr show dev "$NM_MV" | grep -q '10.79.0.2/24' || { fail "$NM_MV lacks 10.79.0.2/24" "$D/img/restore.log"; return 1; }
    ! ip link show "$NM_MV" >/dev/null 2>&1 || { fail "$NM_MV was left in crust's namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_ns_netmisc_macvlan() { netmisc_mv; local rc=$?; netmisc_clean; return $rc; }

# No macvlan[...] external, then a lower link that does not exist: each
# restore fails naming what is missing and makes no link anywhere.
netmisc_mv_bad() {
    need_cr || return $?
    netmisc_mv_setup || return $?
    do_dump "$D/img" || return 1
    restore_fails_naming "$D/img" "$PID" "--external macvlan[$NM_MV]" "" || return 1
    restore_fails_naming "$D/img" "$PID" "crnm-none" 2 --external "macvlan[$NM_MV]:crnm-none" || return 1
    ! ip link show "$NM_MV" >/dev/null 2>&1 || { fail "a failed restore left $NM_MV in crust's namespace"; return 1; }
    [ -z "$(ip -o link show | grep -F "@$NM_BR")" ] || { fail "a failed restore left a link on $NM_BR"; return 1; }
}
t_err_restore_netmisc_macvlan() { netmisc_mv_bad; local rc=$?; netmisc_clean; return $rc; }

# A macvlan on a bridge of the namespace itself: made there again on it,
# no --external needed. The bridge's MAC is set: an empty bridge whose
# MAC was set has no carrier, as the restored one (its MAC restored) has.
t_ns_netmisc_macvlan_inner() {
    need_cr || return $?
    nm_tools || return $?
    start_prog netns --link crnm-imv --qlen 10 || return 1
    nm_in sh -c 'ip link add crnm-ibr address 02:79:00:00:00:aa type bridge && ip link set crnm-ibr up &&
        ip link add crnm-imv link crnm-ibr type macvlan mode vepa &&
        ip link set crnm-imv address 02:79:00:00:00:03 up && ip addr add 10.79.2.2/24 dev crnm-imv' \
        >"$D/setup.out" 2>&1 || { fail "cannot set up: $(head -c 300 "$D/setup.out")"; return 1; }
    local before after
    before=$(nm_link crnm-imv)
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    after=$(nm_link crnm-imv)
    [ "$before" = "$after" ] || { fail "crnm-imv differs: before '$before' after '$after'" "$D/img/restore.log"; return 1; }
    nm_in ip -d -o link show dev crnm-imv | grep -q 'crnm-imv@crnm-ibr.*macvlan mode vepa' ||
        { fail "crnm-imv is not a vepa macvlan on crnm-ibr: $(nm_in ip -d -o link show dev crnm-imv)" "$D/img/restore.log"; return 1; }
    nm_in ip -o addr show dev crnm-imv | grep -q '10.79.2.2/24' || { fail "crnm-imv lacks 10.79.2.2/24" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# A namespace with veth end NM_C0 (peer NM_H0 on the host), dumped; the
# host end gone with the namespace.
netmisc_nd_dumped() {
    need_cr || return $?
    nm_tools || return $?
    netmisc_clean
    start_prog netns --link "$NM_C0" --qlen 10 || return 1
    {
        ip link add "$NM_C0" type veth peer name "$NM_H0" && ip link set "$NM_H0" up &&
            ip link set "$NM_C0" netns "/proc/$PID/ns/net" &&
            nm_in ip link set "$NM_C0" mtu 1450 &&
            nm_in ip addr add 10.79.1.2/24 dev "$NM_C0" &&
            nm_in ip link set "$NM_C0" up
    } >"$D/setup.out" 2>&1 || { fail "cannot set up the veth: $(head -c 300 "$D/setup.out")"; return 1; }
    NM_BEFORE=$(nm_link "$NM_C0")
    do_dump "$D/img" || return 1
    local n=100
    while ip link show "$NM_H0" >/dev/null 2>&1 && [ $n -gt 0 ]; do sleep 0.05; n=$((n - 1)); done
    ! ip link show "$NM_H0" >/dev/null 2>&1 || { fail "$NM_H0 outlived the dumped namespace"; return 1; }
}

# --external netdev[IN]:ORIG: the pair made on the host moves in, renamed,
# at the dumped index, with the dumped MTU, flags and addresses.
netmisc_nd() {
    netmisc_nd_dumped || return $?
    # Its host end up, as NM_H0 was: the same carrier, the same flags.
    ip link add "$NM_C1" type veth peer name "$NM_H1" && ip link set "$NM_H1" up || { fail "cannot make $NM_C1"; return 1; }
    do_restore "$D/img" "" --external "netdev[$NM_C0]:$NM_C1" || return 1
    local after mac
    after=$(nm_link "$NM_C0")
    mac=$(echo "$NM_BEFORE" | grep -o 'mac=[^ ]*')
    # The moved link keeps the MAC the kernel gave it unless the image has
    # one: it has (CRIU's move sets IFLA_ADDRESS too).
    [ "$NM_BEFORE" = "$after" ] || { fail "$NM_C0 differs: before '$NM_BEFORE' after '$after' ($mac)" "$D/img/restore.log"; return 1; }
    nm_in ip -o addr show dev "$NM_C0" | grep -q '10.79.1.2/24' || { fail "$NM_C0 lacks 10.79.1.2/24" "$D/img/restore.log"; return 1; }
    ! ip link show "$NM_C1" >/dev/null 2>&1 || { fail "$NM_C1 is still in crust's namespace" "$D/img/restore.log"; return 1; }
    ip link show "$NM_H1" >/dev/null 2>&1 || { fail "the host end $NM_H1 is gone" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_ns_netmisc_netdev() { netmisc_nd; local rc=$?; netmisc_clean; return $rc; }

# netdev[IN]:ORIG where crust's namespace has no ORIG: the restore fails
# naming it, and makes no link.
netmisc_nd_bad() {
    netmisc_nd_dumped || return $?
    restore_fails_naming "$D/img" "$PID" "crnm-none" "" --external "netdev[$NM_C0]:crnm-none" || return 1
    ! ip link show "$NM_C0" >/dev/null 2>&1 || { fail "the failed restore left $NM_C0 in crust's namespace"; return 1; }
}
t_err_restore_netmisc_netdev() { netmisc_nd_bad; local rc=$?; netmisc_clean; return $rc; }

# A process holding a tun file attached to a tun link: the dump is refused
# naming the fd and /dev/net/tun (reopening the path would give a file
# attached to nothing), and the process runs on untouched.
t_err_dump_netmisc_tunfd() {
    need_cr || return $?
    [ -c /dev/net/tun ] || { skip "no /dev/net/tun"; return 2; }
    rm -f "$D/ready"
    PID=$(setsid "$PY" -c '
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"crnm-tun0", 0x1001))  # TUNSETIFF, IFF_TUN|IFF_NO_PI
open(sys.argv[1], "w").write(str(fd))
time.sleep(600)
' "$D/ready" </dev/null >/dev/null 2>&1 & echo $!)
    wait_file "$D/ready" 5 || { kill -9 "$PID" 2>/dev/null; fail "the tun holder did not start"; return 1; }
    track "$PID" "$(exe_of "$PID")"
    local fd
    fd=$(cat "$D/ready")
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "fd $fd open on /dev/net/tun" "$D/dump.err" ||
        { fail "the message does not name fd $fd and /dev/net/tun: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    ip link show crnm-tun0 >/dev/null 2>&1 || { fail "crnm-tun0 is gone: its holder lost its fd"; return 1; }
    kill -9 "$PID"
}

# Whether the lock of method $1 is in the namespace of $PID.
nm_locked() {
    case $1 in
        iptables) nm_in iptables -w -S CRIU >/dev/null 2>&1 || nm_in iptables -w -S INPUT 2>/dev/null | grep -q -- '-j CRIU' ;;
        nftables) nm_in nft list table inet CRIU-crust-netns >/dev/null 2>&1 ;;
    esac
}

# Whether a lock watchdog still runs.
# -q: a match counts even when some /proc file vanished meanwhile (grep -l
# would exit 2 for that error, whatever it found)
nm_watchdog() { grep -qas crust-netns-watchdog /proc/[0-9]*/cmdline 2>/dev/null; }

# A dump killed (SIGKILL to its front end's process group and to its
# worker) while the tree's network namespace is locked
# (CRUST_FAULT=stall-after-netlock holds it there): the lock's watchdog
# lifts it, the tree runs on.
netmisc_kill_one() {
    local method=$1 cpid n worker
    start_prog netns --link lo --qlen 10 || return 1
    nm_in ip link set lo up || { fail "cannot bring lo up"; return 1; }
    rm -rf "$D/img" && mkdir -p "$D/img"
    # setsid: crust leads a process group of its own, killed whole below.
    (cd "$D" && CRUST_FAULT=stall-after-netlock exec setsid "$CRUST" dump -t "$PID" -D "$D/img" -v4 -o dump.log \
        --network-lock "$method" >"$D/dump.out" 2>"$D/dump.err") &
    cpid=$!
    n=200
    until nm_locked "$method"; do
        n=$((n - 1))
        [ $n -gt 0 ] && [ -e "/proc/$cpid" ] || { kill -9 -- -"$cpid" 2>/dev/null; fail "$method: the namespace was never locked" "$D/img/dump.log"; return 1; }
        sleep 0.05
    done
    # The worker that does the dump (a child of the front end, in a
    # session of its own: it outlives its front end to roll back).
    worker=$(cat /proc/"$cpid"/task/*/children 2>/dev/null | tr -s ' ' '\n' | head -1)
    nm_watchdog || { kill -9 -- -"$cpid"; fail "$method: no lock watchdog runs while the namespace is locked" "$D/img/dump.log"; return 1; }
    [ -n "$worker" ] || { kill -9 -- -"$cpid"; fail "$method: no dump worker found under crust $cpid"; return 1; }
    kill -9 -- -"$cpid" "$worker"
    wait "$cpid" 2>/dev/null
    n=100
    while nm_locked "$method" && [ $n -gt 0 ]; do sleep 0.05; n=$((n - 1)); done
    ! nm_locked "$method" || { fail "$method: the lock is still in the tree's namespace 5s after the dump was killed" "$D/img/dump.log"; return 1; }
    # It goes on with ip6tables after the IPv4 lock is gone: up to 20 s on
    # a loaded machine.
    n=400
    while nm_watchdog && [ $n -gt 0 ]; do sleep 0.05; n=$((n - 1)); done
    ! nm_watchdog || { fail "$method: the lock watchdog outlived its work (20 s)"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

netmisc_kill() {
    need_cr || return $?
    command -v iptables >/dev/null && command -v nsenter >/dev/null || { skip "needs iptables and nsenter"; return 2; }
    netmisc_kill_one iptables || return 1
    command -v nft >/dev/null || return 0
    netmisc_kill_one nftables
}
t_kill_netmisc_netlock() { netmisc_kill; }

ALL_TESTS+=(ns-netmisc-macvlan ns-netmisc-macvlan-inner err-restore-netmisc-macvlan ns-netmisc-netdev err-restore-netmisc-netdev err-dump-netmisc-tunfd kill-netmisc-netlock)
