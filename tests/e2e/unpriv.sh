# Unprivileged use (issue 10, part 3): a caller that is not root needs
# CAP_CHECKPOINT_RESTORE and --unprivileged, and restores only what it
# could have created itself. Sourced by run.sh: uses its helpers and adds
# its tests to ALL_TESTS.
#
# The caller is `nobody` (uid 65534) running a copy of crust that has the
# file capability cap_checkpoint_restore (setcap), made in the test's dir.

UNPRIV_UID=65534

# unpriv_setup: $D made nobody's, a capable copy of crust in it ($UCRUST)
# and the command prefix that runs as nobody ($AS_NOBODY).
unpriv_setup() {
    command -v setcap >/dev/null || { fail "setcap is missing (apt-get install libcap2-bin)"; return 1; }
    command -v setpriv >/dev/null || { fail "setpriv is missing (apt-get install util-linux)"; return 1; }
    UCRUST=$D/crust
    # Copies in $D, which nobody can reach (the work dir is made passable).
    cp "$CRUST" "$UCRUST" && cp "$BIN/loop" "$D/loop" && chmod 755 "$D" "$UCRUST" "$D/loop" &&
        chmod o+x "$WORK" || { fail "cannot copy crust and loop"; return 1; }
    chown "$UNPRIV_UID:$UNPRIV_UID" "$D" || { fail "cannot chown $D"; return 1; }
    AS_NOBODY=(setpriv --reuid="$UNPRIV_UID" --regid="$UNPRIV_UID" --clear-groups --inh-caps=-all)
}

# start_nobody PROG: like start_prog, the program (copied into $D by
# unpriv_setup) running as nobody.
start_nobody() {
    local prog=$1
    rm -f "$D/ready" "$D/result"
    PID=$(setsid "${AS_NOBODY[@]}" "$D/$prog" --ready "$D/ready" --result "$D/result" </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$D/$prog"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "$prog did not become ready as nobody"; return 1; }
    rm -f "$D/ready"
}

# as_nobody NAME ARGS...: run the capable crust as nobody from $D; output
# in $D/NAME.out and $D/NAME.err, exit code in RC.
as_nobody() {
    local name=$1
    shift
    (cd "$D" && exec "${AS_NOBODY[@]}" "$UCRUST" "$@") >"$D/$name.out" 2>"$D/$name.err"
    RC=$?
}

# Without the capability: an error at start that names it.
t_unpriv_needs_cap() {
    need_cr || return
    unpriv_setup || return 1
    (cd "$D" && exec "${AS_NOBODY[@]}" "$CRUST" check) >"$D/check.out" 2>"$D/check.err"
    [ $? -ne 0 ] || { fail "crust check without the capability succeeded"; return 1; }
    grep -q CAP_CHECKPOINT_RESTORE "$D/check.err" ||
        { fail "the error does not name CAP_CHECKPOINT_RESTORE: $(head -c 300 "$D/check.err")"; return 1; }
}
ALL_TESTS+=(unpriv-needs-cap)

# With the capability, dump and restore of one's own process work with
# --unprivileged, and are refused without it.
t_unpriv_cr() {
    need_cr || return
    unpriv_setup || return 1
    setcap cap_checkpoint_restore+eip "$UCRUST" || { fail "setcap failed"; return 1; }
    start_nobody loop || return 1
    "${AS_NOBODY[@]}" mkdir -m 700 "$D/img" || { fail "cannot make the images dir as nobody"; return 1; }
    as_nobody dump0 dump -t "$PID" -D img -o dump0.log
    [ $RC -ne 0 ] && grep -q -- --unprivileged "$D/dump0.err" ||
        { fail "a dump as nobody without --unprivileged did not fail naming it (rc $RC): $(head -c 300 "$D/dump0.err")"; return 1; }
    as_nobody dump dump -t "$PID" -D img -o dump.log -v4 --unprivileged
    [ $RC -eq 0 ] || { fail "dump --unprivileged failed (rc $RC): $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the dumped process is still there"; return 1; }
    as_nobody restore restore -D img -d -o restore.log -v4 --unprivileged
    [ $RC -eq 0 ] || { fail "restore --unprivileged failed (rc $RC): $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    grep -q "^Uid:.$UNPRIV_UID" "/proc/$PID/status" || { fail "the restored process is not nobody's"; return 1; }
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(unpriv-cr)

# nobody's images edited to say uid 0: refused before anything is
# created, naming the core image; no process is left.
t_unpriv_refuses_root_creds() {
    need_cr || return
    command -v crit >/dev/null || { fail "crit is missing (apt-get install criu)"; return 1; }
    unpriv_setup || return 1
    setcap cap_checkpoint_restore+eip "$UCRUST" || { fail "setcap failed"; return 1; }
    start_nobody loop || return 1
    "${AS_NOBODY[@]}" mkdir -m 700 "$D/img" || { fail "cannot make the images dir as nobody"; return 1; }
    as_nobody dump dump -t "$PID" -D img -o dump.log --unprivileged
    [ $RC -eq 0 ] || { fail "dump --unprivileged failed: $(head -c 300 "$D/dump.err")"; return 1; }
    wait_gone "$PID" 5 || { fail "the dumped process is still there"; return 1; }
    local core=$D/img/core-$PID.img
    crit decode -i "$core" | python3 -c '
import json, sys
d = json.load(sys.stdin)
c = d["entries"][0]["thread_core"]["creds"]
for k in ("uid", "euid", "suid", "fsuid", "gid", "egid", "sgid", "fsgid"):
    c[k] = 0
c["cap_eff"] = c["cap_prm"] = [0xffffffff, 0x1ff]
json.dump(d, sys.stdout)' | crit encode -o "$D/core.new" && cp "$D/core.new" "$core" ||
        { fail "cannot edit $core"; return 1; }
    chown "$UNPRIV_UID:$UNPRIV_UID" "$core"
    as_nobody restore restore -D img -d -o restore.log --unprivileged
    [ $RC -ne 0 ] || { fail "the restore of images asking for uid 0 succeeded"; kill -9 "$PID" 2>/dev/null; return 1; }
    grep -q "core-$PID.img" "$D/restore.err" ||
        { fail "the error does not name core-$PID.img: $(head -c 300 "$D/restore.err")"; return 1; }
    [ -z "$(pstate "$PID")" ] || { fail "a process $PID is left after the refused restore"; return 1; }
}
ALL_TESTS+=(unpriv-refuses-root-creds)
