# Ptys of a devpts instance of the tree's own, as zdtm's ns flavor has
# them (issue 13). Sourced by run.sh after ns-ttyns.sh (uses its
# start_pidns_init) and shared.sh (criu_bin); adds its tests to ALL_TESTS.

# ptyns as the init of a pid namespace, in a mount namespace of its own
# with a new devpts instance on /dev/pts: a pair opened on /dev/ptmx with
# bytes queued both ways, a pair opened on /dev/pts/ptmx that is the
# controlling terminal of the init's session (held through /dev/tty only),
# the first slave's file bound on /dev/shm/console (the restore makes that pair
# with the mount tree, as for zdtm pty-console).
# The images record both masters (5:2) and the session as the namespace
# sees it (1); restored, the slaves have their indexes on the tree's
# devpts, the bytes are there, the terminal is the session's.
t_ns_pts() {
    need_cr || return $?
    start_pidns_init ptyns --console /dev/shm/console || return 1
    do_dump "$D/img" --external 'mnt[/dev]:dev' || return 1
    "$CRUST" image decode -i "$D/img/tty-info.img" >"$D/tty-info.json" 2>&1 ||
        { fail "cannot decode tty-info.img: $(head -c 200 "$D/tty-info.json")"; return 1; }
    python3 - "$D/tty-info.json" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
infos = json.load(open(sys.argv[1]))["entries"]
masters = [i for i in infos if i["type"] == "PTY" and i["rdev"] == (5 << 8 | 2)]
assert len(masters) == 2, "expected 2 masters, got %s" % infos
ctty = [i for i in infos if i.get("sid")]
assert ctty and all(i["sid"] == 1 and i["pgrp"] == 1 for i in ctty), "session not as the namespace sees it: %s" % ctty
PY
        { fail "images: $(tail -n 3 "$D/check.out" | tr '\n' ' ')"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --external 'mnt[dev]:/dev'
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/ptyns"
    rm -f "$D/ready"
    expect_pass "$D/img/restore.log"
}

# CRIU 4.2 restores crust's images of pty pairs (ptypair: a master and
# two slave descriptions, raw mode, window size, packet mode, the slave
# locked): every TTY file has its REG entry (regf_id), without which CRIU
# refuses the images ("TTY w/o regfile"). (A tree in a mount namespace of
# its own restored by CRIU without --root hits a BUG of CRIU 4.2's mount
# code, whatever its files: not tested here.)
t_pty_to_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    start_prog ptypair || return 1
    do_dump "$D/img" || return 1
    rm -f "$D/criu-pid"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$criu" restore -D "$D/img" -d -v4 -o criu-restore.log \
        --pidfile "$D/criu-pid") >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of crust's images failed: $(tail -c 300 "$D/criu-restore.out")" "$D/img/criu-restore.log"; return 1; }
    PID=$(cat "$D/criu-pid")
    track "$PID" "$BIN/ptypair"
    expect_pass "$D/img/criu-restore.log"
}

# A bad case: the tree also holds a pty of the host's devpts (opened
# before it left the host's mounts), which its /dev/ptmx does not lead
# to: the dump refuses, naming the pty and both devpts instances, and the
# tree runs on.
t_err_ns_pts_host() {
    need_cr || return $?
    start_pidns_init ptyns --host-pty 1 || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    [ $RC -ne 0 ] || { fail "the dump of a pty of the host's devpts succeeded" "$D/img/dump.log"; return 1; }
    grep -q "is on the devpts instance [0-9]*:[0-9]*, but the tree's /dev/ptmx leads to the devpts instance" "$D/dump.err" ||
        { fail "unclear error: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    [ "$(pstate "$PID")" != "" ] || { fail "the tree is gone after a refused dump"; return 1; }
    rm -f "$D/ready"
    expect_pass "$D/img/dump.log"
}

ALL_TESTS+=(ns-pts pty-to-criu err-ns-pts-host)
