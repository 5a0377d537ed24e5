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
