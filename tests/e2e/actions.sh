# Action scripts (--action-script), --status-fd and crust installed as
# `criu` (issue 14). Sourced by run.sh: uses its helpers (start_prog,
# dump_with, do_restore, expect_pass, fail, skip...) and adds to ALL_TESTS.

ALL_TESTS+=(actions-order actions-netns actions-pre-dump-fails actions-post-dump-fails
    actions-post-restore-fails actions-status-fd actions-as-criu)

# act_script FILE TAG [EXIT_ON_ACTION]: a script that appends
# "TAG ACTION INIT_PID IMAGE_DIR" to $D/actions.txt and says "script TAG
# ACTION" on stdout (which goes to crust's log); it exits 7 at the action
# EXIT_ON_ACTION.
act_script() {
    cat >"$1" <<EOF
#!/bin/sh
dir=\$(cd "\$CRTOOLS_IMAGE_DIR" 2>/dev/null && pwd -P)
echo "$2 \$CRTOOLS_SCRIPT_ACTION \${CRTOOLS_INIT_PID:-none} \${dir:-none}" >>"$D/actions.txt"
echo "script $2 \$CRTOOLS_SCRIPT_ACTION"
[ "\$CRTOOLS_SCRIPT_ACTION" = "${3:-none}" ] && exit 7
exit 0
EOF
    chmod 0755 "$1"
}

# Each action of a dump and a restore of a task in crust's namespaces, in
# CRIU's order, with CRIU's variables; both scripts run at each, the one
# given last first (CRIU's list); their output lands in the log. No
# setup-namespaces or network actions: the tree has no namespace of its
# own.
t_actions_order() {
    need_cr || return
    act_script "$D/a.sh" a
    act_script "$D/b.sh" b
    start_prog loop || return 1
    act_check_order pre-restore post-restore pre-resume post-resume
}

# act_check_order RESTORE_ACTIONS...: dump $PID with the scripts a and b
# (dump's actions in $DUMP_ACTS, default pre-dump post-dump), check them,
# restore, check RESTORE_ACTIONS, expect PASS.
act_check_order() {
    local want got img a
    dump_with "$D/img" --action-script "$D/a.sh" --action-script "$D/b.sh" || return 1
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump" "$D/img/dump.log"; return 1; }
    img=$(cd "$D/img" && pwd -P)
    want=""
    for a in ${DUMP_ACTS:-pre-dump post-dump}; do
        want+="b $a $PID $img
a $a $PID $img
"
    done
    want=${want%$'\n'}
    got=$(cat "$D/actions.txt" 2>/dev/null)
    [ "$got" = "$want" ] || { fail "dump's actions: $(echo "$got" | tr '\n' '|')" "$D/img/dump.log"; return 1; }
    grep -q "script a post-dump" "$D/img/dump.log" ||
        { fail "the scripts' output is not in the dump's log" "$D/img/dump.log"; return 1; }
    rm -f "$D/actions.txt"
    do_restore "$D/img" "" --action-script "$D/a.sh" --action-script "$D/b.sh" || return 1
    want=""
    for a in "$@"; do
        local p=$PID
        [ $a = pre-restore ] && p=none
        want+="b $a $p $img
a $a $p $img
"
    done
    got=$(cat "$D/actions.txt" 2>/dev/null)
    [ "$got" = "${want%$'\n'}" ] || { fail "restore's actions: $(echo "$got" | tr '\n' '|')" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# A task with a network namespace of its own (unshare -n): network-lock at
# dump, setup-namespaces, post-setup-namespaces and network-unlock at
# restore, in CRIU's order.
t_actions_netns() {
    need_cr || return
    command -v unshare >/dev/null || { skip "no unshare"; return 2; }
    act_script "$D/a.sh" a
    act_script "$D/b.sh" b
    PID=$(setsid unshare -n "$BIN/loop" --ready "$D/ready" --result "$D/result" </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/loop"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "loop under unshare -n did not become ready"; return 1; }
    rm -f "$D/ready"
    DUMP_ACTS="pre-dump network-lock post-dump" act_check_order pre-restore setup-namespaces \
        post-setup-namespaces post-restore network-unlock pre-resume post-resume
}

# A pre-dump script that fails refuses the dump: the task runs on
# untouched, no image is left.
t_actions_pre_dump_fails() {
    need_cr || return
    act_script "$D/s.sh" s pre-dump
    start_prog loop || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --action-script "$D/s.sh"
    expect_error dump "$D/img/dump.log" || return 1
    grep -q "s.sh exited with 7" "$D/dump.err" ||
        { fail "the error does not name the script: $(head -c 300 "$D/dump.err")"; return 1; }
    act_running "pre-dump failure" || return 1
    act_no_images "$D/img" || return 1
    expect_pass
}

# A post-dump script that fails: the dump fails (exit 255, as criu) and the
# tree runs on (CRIU lets the caller decide what to do with it).
t_actions_post_dump_fails() {
    need_cr || return
    act_script "$D/s.sh" s post-dump
    start_prog loop || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --action-script "$D/s.sh"
    # CRIU returns the scripts' status from its dump: exit code 255.
    [ $RC -eq 255 ] || { fail "dump exited with $RC, expected 255 as criu" "$D/img/dump.log"; return 1; }
    act_running "post-dump failure" || return 1
    expect_pass
}

# A post-restore script that fails: the restore fails, what it made is
# killed, no pidfile.
t_actions_post_restore_fails() {
    need_cr || return
    act_script "$D/s.sh" s post-restore
    start_prog loop || return 1
    dump_with "$D/img" || return 1
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump" "$D/img/dump.log"; return 1; }
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log --action-script "$D/s.sh"
    expect_error restore "$D/img/restore.log" || return 1
    [ -e "$D/pidfile" ] && { fail "a failed restore wrote its pidfile" "$D/img/restore.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID exists after a failed restore" "$D/img/restore.log"; return 1; }
    # The same images restore once the script agrees.
    do_restore "$D/img" 2 || return 1
    expect_pass "$D/img/restore2.log"
}

act_running() {
    local st tracer
    st=$(pstate "$PID")
    tracer=$(awk '/^TracerPid:/ {print $2}' "/proc/$PID/status" 2>/dev/null)
    case $st in R | S | D) ;; *) fail "$1: pid $PID is in state '$st'" "$D/img/dump.log"; return 1 ;; esac
    [ "$tracer" = 0 ] || { fail "$1: pid $PID is still traced by $tracer" "$D/img/dump.log"; return 1; }
}

act_no_images() {
    local left
    left=$(find "$1" -name '*.img' 2>/dev/null | head -n 3)
    [ -z "$left" ] || { fail "images left behind: $left" "$1/dump.log"; return 1; }
}

# `service --status-fd N`: the status-ready action scripts run, then one
# '\0' is written to N, which is closed (CRIU's status_ready()); the
# service then answers.
t_actions_status_fd() {
    need_cr || return
    act_script "$D/s.sh" s
    "$PY" - "$CRUST" "$D" "$D/s.sh" >"$D/status.out" 2>&1 <<'EOF'
import os, select, socket, subprocess, sys, time
crust, d, script = sys.argv[1:4]
r, w = os.pipe()
sock = os.path.join(d, "svc.sock")
p = subprocess.Popen([crust, "service", "--address", sock, "--status-fd", str(w),
                      "-W", d, "-o", "service.log", "-v4", "--action-script", script],
                     pass_fds=[w], stdin=subprocess.DEVNULL)
os.close(w)
try:
    ready, _, _ = select.select([r], [], [], 20)
    if not ready:
        sys.exit("nothing on the status fd in 20s")
    b = os.read(r, 16)
    if b != b"\0":
        sys.exit("status fd gave %r, expected one NUL byte" % b)
    ready, _, _ = select.select([r], [], [], 5)
    if not ready or os.read(r, 16) != b"":
        sys.exit("the status fd was not closed after the NUL byte")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(sock)
    s.close()
    with open(os.path.join(d, "actions.txt")) as f:
        got = f.read().split()
    if got[:2] != ["s", "status-ready"]:
        sys.exit("status-ready script: %r" % got)
finally:
    p.kill()
    p.wait()
    try:
        os.unlink(sock)
    except OSError:
        pass
EOF
    [ $? -eq 0 ] || { fail "$(tail -c 300 "$D/status.out")" "$D/service.log"; return 1; }
}

# crust installed as `criu` (a symlink of that name): `criu --version`
# and `-V` print CRIU's "Version: 4.2" first (what LXC and scripts parse)
# and crust's own version after it; check, dump and restore work through
# that name, and the log shows crust did them.
t_actions_as_criu() {
    need_cr || return
    mkdir -p "$D/bin"
    ln -s "$CRUST" "$D/bin/criu"
    local opt first
    for opt in --version -V; do
        "$D/bin/criu" $opt >"$D/version.out" 2>&1 || { fail "criu $opt exited with $?"; return 1; }
        first=$(head -n1 "$D/version.out")
        [ "$first" = "Version: 4.2" ] || { fail "criu $opt first line: '$first'"; return 1; }
        grep -q '^crust: ' "$D/version.out" || { fail "criu $opt does not name crust: $(cat "$D/version.out")"; return 1; }
    done
    "$D/bin/criu" check >"$D/check.out" 2>&1 || { fail "criu check: $(head -c 300 "$D/check.out")"; return 1; }
    start_prog loop || return 1
    local saved=$CRUST
    CRUST=$D/bin/criu
    do_dump "$D/img" && do_restore "$D/img"
    local rc=$?
    CRUST=$saved
    [ $rc -eq 0 ] || return 1
    grep -q "^(.*) crust .*(dump)" "$D/img/dump.log" ||
        { fail "the dump's log does not show crust" "$D/img/dump.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
