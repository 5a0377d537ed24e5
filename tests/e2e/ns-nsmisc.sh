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

# (A tree in a cgroup namespace of its own is dumped now: cgns.sh.)
ALL_TESTS+=(timens-cr err-dump-timens-child)

# A process holding new UTS, IPC and time namespaces (host name
# crust-joined, monotonic clock +1 day): HOLDER.
joinns_holder() {
    HOLDER=$(setsid unshare --uts --ipc --time --monotonic 86400 --fork sh -c \
        'hostname crust-joined; exec sleep 600' </dev/null >/dev/null 2>&1 & echo $!)
    track "$HOLDER" "$(command -v unshare)"
    local i
    for i in $(seq 50); do
        HOLDER_NS=$(cat /proc/"$HOLDER"/task/*/children 2>/dev/null | tr -s ' ' '\n' | head -1)
        [ -n "$HOLDER_NS" ] && [ "$(exe_of "$HOLDER_NS")" = "$(command -v sleep)" ] && break
        sleep 0.1
    done
    [ -n "$HOLDER_NS" ] || { fail "the namespace holder did not start"; return 1; }
    track "$HOLDER_NS" "$(command -v sleep)"
}

# --join-ns uts/ipc (by pid and by path) and time: a tree dumped in the
# host's namespaces is restored into the prepared ones, taken as they are
# (the host name is the holder's).
t_joinns_cr() {
    need_cr || return $?
    joinns_holder || return 1
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" "" --join-ns uts:"$HOLDER_NS" --join-ns ipc:/proc/"$HOLDER_NS"/ns/ipc \
        -J time:"$HOLDER_NS" || return 1
    local k
    for k in uts ipc time; do
        [ "$(readlink /proc/"$PID"/ns/$k)" = "$(readlink /proc/"$HOLDER_NS"/ns/$k)" ] ||
            { fail "the restored tree is not in the joined $k namespace" "$D/img/restore.log"; return 1; }
    done
    [ "$(nsenter -t "$PID" -u hostname)" = crust-joined ] ||
        { fail "the joined UTS namespace's host name changed" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# --join-ns with a file that is not a namespace, a namespace of another
# kind, pid: refused naming it, nothing restored.
t_err_restore_joinns() {
    need_cr || return $?
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    restore_fails_naming "$D/img" "$PID" "not a namespace file" 1 --join-ns uts:/etc/hostname || return 1
    restore_fails_naming "$D/img" "$PID" "not a UTS namespace" 2 --join-ns uts:/proc/self/ns/ipc || return 1
    restore_fails_naming "$D/img" "$PID" "pid namespace is not supported" 3 --join-ns pid:1 || return 1
    restore_fails_naming "$D/img" "$PID" "/nonexistent" 4 --join-ns net:/nonexistent || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(joinns-cr err-restore-joinns)

# --join-ns user (with ,UID,GID) and mnt: a tree dumped in the host's
# namespaces restored into a user namespace mapping root to root and a
# mount namespace it owns (the user namespace is joined last, as CRIU
# does); the mount namespace is taken as it is (a tmpfs only it has is
# seen by the restored task).
t_joinns_user_mnt_cr() {
    need_cr || return $?
    local h hn i
    h=$(setsid unshare --user --map-root-user --mount --fork sh -c \
        'mount -t tmpfs crust-joined /mnt && exec sleep 600' </dev/null >/dev/null 2>&1 & echo $!)
    track "$h" "$(command -v unshare)"
    for i in $(seq 50); do
        hn=$(cat /proc/"$h"/task/*/children 2>/dev/null | tr -s ' ' '\n' | head -1)
        [ -n "$hn" ] && [ "$(exe_of "$hn")" = "$(command -v sleep)" ] && break
        sleep 0.1
    done
    [ -n "$hn" ] || { fail "the namespace holder did not start"; return 1; }
    track "$hn" "$(command -v sleep)"
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" "" --join-ns user:"$hn",0,0 --join-ns mnt:/proc/"$hn"/ns/mnt || return 1
    for i in user mnt; do
        [ "$(readlink /proc/"$PID"/ns/$i)" = "$(readlink /proc/"$hn"/ns/$i)" ] ||
            { fail "the restored tree is not in the joined $i namespace" "$D/img/restore.log"; return 1; }
    done
    grep -q '^crust-joined /mnt tmpfs' /proc/"$PID"/mounts ||
        { fail "the restored tree does not see the joined mount namespace's tmpfs" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(joinns-user-mnt-cr)
