# Sockets of a tree in a network namespace of its own (issue 13, netsk).
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# netnssk in its own network namespace with TCP (listener, connection with
# both ends in it), UDP with a queued datagram, unix (abstract listener,
# pair), netlink and packet sockets: every socket is dumped from inside the
# namespace and made again inside the restored one.
t_netns_sk_cr() {
    need_cr || return $?
    start_prog netnssk || return 1
    do_dump "$D/img" --tcp-established || return 1
    do_restore "$D/img" "" --tcp-established || return 1
    [ "$(readlink /proc/"$PID"/ns/net)" != "$(readlink /proc/self/ns/net)" ] ||
        { fail "the restored tree is in crust's network namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(netns-sk-cr)
