# Tests of the tree's own namespaces (issue 13): UTS so far.
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# expect_pass, dump_must_fail, fail, track...) and adds its tests to
# ALL_TESTS.

# utsns in a UTS namespace of its own, with a child in it: utsns-ID.img has
# its names, and the restored tree is in a new UTS namespace with them.
t_utsns_cr() {
    need_cr || return $?
    start_prog utsns || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/utsns"; done
    do_dump "$D/img" || return 1
    local img
    img=$(cd "$D/img" && ls utsns-*.img 2>/dev/null | head -1)
    [ -n "$img" ] || { fail "no utsns-*.img written" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img/$img" 2>&1 | grep -q '"crust-uts-test"' ||
        { fail "$img does not hold the host name" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    [ "$(readlink /proc/"$PID"/ns/uts)" != "$(readlink /proc/self/ns/uts)" ] ||
        { fail "the restored tree is in the host's UTS namespace" "$D/img/restore.log"; return 1; }
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/utsns"; done
    expect_pass "$D/img/restore.log"
}

# A child in a UTS namespace other than the root's: refused, naming it; the
# tree runs on.
t_err_dump_utsns_child() { dump_must_fail 'another UTS namespace than the root' utsns --child-ns 1; }

ALL_TESTS+=(utsns-cr err-dump-utsns-child)

# A tree in a network namespace of its own with no connection: the dump
# locks the namespace as a whole (an iptables chain CRIU inside it, as
# CRIU does), and a restore with --join-ns net:FILE (a bind mount of the
# namespace, as /run/netns/NAME is) puts the tree back in that namespace
# and lifts the lock (zdtm netns_lock_iptables).
netns_lock_join_steps() {
    local ns=$1 c
    do_dump "$D/img" || return 1
    nsenter --net="$ns" iptables -w -S CRIU >/dev/null 2>&1 ||
        { fail "the namespace is not locked after the dump (no CRIU chain in it)" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --join-ns net:"$ns" || return 1
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/utsns"; done
    [ "$(stat -L -c %i /proc/"$PID"/ns/net)" = "$(stat -L -c %i "$ns")" ] ||
        { fail "the restored tree is not in the joined network namespace" "$D/img/restore.log"; return 1; }
    if nsenter --net="$ns" iptables -w -S CRIU >/dev/null 2>&1; then
        fail "the CRIU chain is still in the namespace after the restore" "$D/img/restore.log"
        return 1
    fi
    expect_pass "$D/img/restore.log"
}

t_netns_lock_join() {
    need_cr || return $?
    command -v nsenter >/dev/null || { fail "nsenter (util-linux) is missing"; return 1; }
    rm -f "$D/ready" "$D/result"
    PID=$(setsid unshare -n "$BIN/utsns" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/utsns"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "utsns in a network namespace did not become ready"; return 1; }
    rm -f "$D/ready"
    local c ns=$D/netns rc
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/utsns"; done
    touch "$ns" && mount --bind /proc/"$PID"/ns/net "$ns" ||
        { fail "cannot bind-mount the tree's network namespace"; return 1; }
    netns_lock_join_steps "$ns"
    rc=$?
    umount "$ns" 2>/dev/null
    rm -f "$ns"
    return $rc
}

ALL_TESTS+=(netns-lock-join)
