# tun/tap links and their files in the tree's own network namespace
# (issue 13): `tunfds` holds a file attached to nothing, one on tun
# tunk0, two on multiqueue tun tunk1 (one queue detached), one on tap tapk0,
# and made tap ptapk0 persistent with no file left. Sourced by run.sh.
# Every link is in the test's namespaces: they go with its processes.

# index name flags mtu [mac] of the tun/tap links of the namespace of $1.
tk_links() {
    nsenter -t "$1" -n ip -o link show 2>&1 | grep -E ': (tunk|tapk|ptapk)' |
        sed -E 's/^([0-9]+): ([^:@]+)[^<]*<([^>]*)>.* mtu ([0-9]+).*link\/(ether|none) ?([0-9a-f:]*).*/\1 \2 \3 \4 \6/' | sort
}

tk_tools() {
    command -v ip >/dev/null && command -v nsenter >/dev/null || { skip "needs ip and nsenter"; return 2; }
    [ -c /dev/net/tun ] || { skip "no /dev/net/tun"; return 2; }
}

# The holder of the files: the process itself, or its child (--where sub).
tk_holder() {
    if [ "$1" = sub ]; then
        cut -d' ' -f1 "/proc/$PID/task/$PID/children" 2>/dev/null
    else
        echo "$PID"
    fi
}

# Dump, restore, compare the links of the holder's namespace; $1: where,
# the rest: more options of tunfds.
tunsk_cr() {
    need_cr || return $?
    tk_tools || return $?
    start_prog tunfds --where "$@" || return 1
    local h before after
    h=$(tk_holder "$1")
    [ -n "$h" ] || { fail "no holder process"; return 1; }
    nsenter -t "$h" -n ip link set tapk0 address 02:7a:00:00:00:05 mtu 1400 up
    before=$(tk_links "$h")
    [ "$(echo "$before" | wc -l)" = 4 ] || { fail "expected 4 tun/tap links, got: $before"; return 1; }
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" 2>&1 | grep -q '"tunf"' ||
        { fail "files.img has no tun file entry" "$D/img/dump.log"; return 1; }
    local n
    n=$(cat "$D"/img/netdev-*.img | wc -c)
    [ "$n" -gt 0 ] || { fail "no netdev image"; return 1; }
    do_restore "$D/img" || return 1
    h=$(tk_holder "$1")
    after=$(tk_links "$h")
    [ "$before" = "$after" ] || { fail "the links differ: before '$before' after '$after'" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_ns_tunsk_tun() { tunsk_cr own; }
t_ns_tunsk_sub() { tunsk_cr sub; }

# A tun file whose link the images do not have (files.img edited with
# crit): the restore fails naming the link and leaves nothing running.
t_err_restore_tunsk_nolink() {
    need_cr || return $?
    tk_tools || return $?
    [ -x "$CRIT" ] || { skip "needs $CRIT to edit files.img"; return 2; }
    start_prog tunfds || return 1
    do_dump "$D/img" || return 1
    "$CRIT" decode -i "$D/img/files.img" -o "$D/files.json" 2>"$D/crit.err" ||
        { fail "crit decode: $(head -c 300 "$D/crit.err")"; return 1; }
    sed -i 's/"tunk0"/"nosuchk0"/' "$D/files.json"
    grep -q nosuchk0 "$D/files.json" || { fail "no tunk0 in files.img"; return 1; }
    "$CRIT" encode -i "$D/files.json" -o "$D/img/files.img" 2>"$D/crit.err" ||
        { fail "crit encode: $(head -c 300 "$D/crit.err")"; return 1; }
    crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    expect_error restore "$D/img/restore.log" || return 1
    grep -q "nosuchk0" "$D/restore.err" ||
        { fail "the error does not name the link: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ ! -e "/proc/$PID" ] || { fail "pid $PID runs after the failed restore" "$D/img/restore.log"; return 1; }
    ! ip link show ptapk0 >/dev/null 2>&1 || { fail "ptapk0 was made in crust's namespace"; return 1; }
}

# Restored into a joined network namespace (--join-ns net:PATH) that has
# a bridge named tunk0: the tree's links are not made there, so the tun
# files are refused before anything is made, naming the file's link; the
# joined namespace is left as it was.
t_err_restore_tunsk_joined() {
    need_cr || return $?
    tk_tools || return $?
    local ns=crtk-join
    ip netns del $ns >/dev/null 2>&1
    ip netns add $ns || { fail "cannot make netns $ns"; return 1; }
    ip -n $ns link add tunk0 type bridge || { ip netns del $ns; fail "cannot add a bridge tunk0 in $ns"; return 1; }
    local rc=0 before after
    before=$(ip -n $ns -o link show | sed 's/^[0-9]*: //' | sort)
    {
        start_prog tunfds &&
            do_dump "$D/img" &&
            crust_run restore restore -D "$D/img" -d -v4 -o restore.log --join-ns "net:/run/netns/$ns" &&
            expect_error restore "$D/img/restore.log" &&
            { grep -q "link tunk" "$D/restore.err" ||
                fail "the error does not name the link: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; } &&
            { [ ! -e "/proc/$PID" ] || fail "pid $PID runs after the failed restore" "$D/img/restore.log"; }
    } || rc=1
    after=$(ip -n $ns -o link show | sed 's/^[0-9]*: //' | sort)
    [ $rc = 0 ] && [ "$before" != "$after" ] && { fail "the joined namespace changed: '$before' -> '$after'"; rc=1; }
    ip netns del $ns
    return $rc
}

# The same as ns-tunsk-sub with a UDP socket in the child's namespace too:
# made again there (main's sockets of the tree's other namespaces).
t_ns_tunsk_subsock() { tunsk_cr sub --sock 1; }

ALL_TESTS+=(ns-tunsk-tun ns-tunsk-sub ns-tunsk-subsock err-restore-tunsk-nolink err-restore-tunsk-joined)
