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

# A child in another network namespace than the root's: dumped with it,
# and made again in a namespace of its own (see ns-netsub.sh).
t_netns_child_cr() {
    need_cr || return $?
    start_prog netnssk --child-ns 1 || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# The images of netns-sk-cr with the bound UDP socket moved (crit) to an
# address the restored namespace does not have: the restore fails naming
# the socket and the address, and leaves nothing (no process, no lock
# chain on the host).
t_err_restore_netns_sk_addr() {
    need_cr || return $?
    [ "$CRIT_ON" = 1 ] || { skip "no crit ($CRIT)"; return 2; }
    start_prog netnssk || return 1
    do_dump "$D/img" --tcp-established || return 1
    "$CRIT_PY" "$CRIT" decode -i "$D/img/files.img" -o "$D/files.json" 2>"$D/crit.err" ||
        { fail "crit decode: $(head -c 300 "$D/crit.err")"; return 1; }
    "$PY" - "$D/files.json" <<'PYEOF' || { fail "no bound UDP socket in files.img"; return 1; }
import json, sys
p = sys.argv[1]
d = json.load(open(p))
n = 0
for e in d["entries"]:
    s = e.get("isk")
    if s and s.get("proto") == 17 and s.get("src_port") == 47000:
        s["src_addr"] = ["10.213.9.1"]
        n += 1
json.dump(d, open(p, "w"))
sys.exit(0 if n == 1 else 1)
PYEOF
    "$CRIT_PY" "$CRIT" encode -i "$D/files.json" -o "$D/img/files.img" 2>"$D/crit.err" ||
        { fail "crit encode: $(head -c 300 "$D/crit.err")"; return 1; }
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --tcp-established
    expect_error restore "$D/img/restore.log" || return 1
    sleep 0.2
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the failed restore" "$D/img/restore.log"; return 1; }
    grep -q '10.213.9.1' "$D/restore.err" ||
        { fail "the error does not name the address: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    ! iptables -w -S 2>/dev/null | grep -q -- '-j CRIU' ||
        { fail "a CRIU lock chain was left on the host" "$D/img/restore.log"; return 1; }
}

ALL_TESTS+=(netns-sk-cr netns-child-cr err-restore-netns-sk-addr)
