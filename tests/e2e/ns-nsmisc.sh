# Tests of the tree's own time namespace, --join-ns and the other smaller
# namespace kinds (issue 13). Sourced by run.sh: uses its helpers
# (start_prog, do_dump, do_restore, expect_pass, dump_must_fail, fail,
# track...) and adds its tests to ALL_TESTS.

# timens in a time namespace of its own (clocks shifted by days), with a
# child in it: timens-ID.img holds the clocks inside; restored after a
# pause longer than the program allows between two readings, the clocks
# inside go on from where they were (no jump, offsets kept), in a new time
# namespace.
t_timens_cr() {
    need_cr || return $?
    start_prog timens --max-gap-ms 2500 || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/timens"; done
    do_dump "$D/img" || return 1
    local img
    img=$(cd "$D/img" && ls timens-*.img 2>/dev/null | grep -v '^timens-0.img$' | head -1)
    [ -n "$img" ] || { fail "no timens-ID.img written" "$D/img/dump.log"; return 1; }
    [ ! -e "$D/img/timens-0.img" ] || { fail "timens-0.img written for a tree in its own time namespace" "$D/img/dump.log"; return 1; }
    sleep 4
    do_restore "$D/img" || return 1
    [ "$(readlink /proc/"$PID"/ns/time)" != "$(readlink /proc/self/ns/time)" ] ||
        { fail "the restored tree is in the host's time namespace" "$D/img/restore.log"; return 1; }
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do
        track "$c" "$BIN/timens"
        [ "$(readlink /proc/"$c"/ns/time)" = "$(readlink /proc/"$PID"/ns/time)" ] ||
            { fail "child $c is not in the root's time namespace" "$D/img/restore.log"; return 1; }
    done
    expect_pass "$D/img/restore.log"
}

# A child in a time namespace other than the root's: refused, naming it;
# the tree runs on.
t_err_dump_timens_child() { dump_must_fail 'another time namespace than the root' timens --child-ns 1; }

ALL_TESTS+=(timens-cr err-dump-timens-child)
