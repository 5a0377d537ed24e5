# POSIX message queues of the tree's own IPC namespace (crust's own image
# crust-mqueue-N.img) and the "container without a runtime" of issue 13.
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# expect_pass, dump_must_fail, fail, track...) and adds its tests to
# ALL_TESTS.

# posixmq: two queues (messages of several priorities; an empty one owned
# by another uid) in the tree's IPC namespace, closed: dumped to
# crust-mqueue-ID.img, made again in the new namespace with their limits,
# modes, owners and messages in order.
t_posixmq_cr() {
    need_cr || return $?
    start_prog posixmq || return 1
    do_dump "$D/img" || return 1
    ls "$D/img"/crust-mqueue-*.img >/dev/null 2>&1 ||
        { fail "no crust-mqueue-ID.img written" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img"/crust-mqueue-*.img >"$D/mq.json" 2>"$D/mq.err" ||
        { fail "crust cannot decode its crust-mqueue image: $(head -c 300 "$D/mq.err")"; return 1; }
    grep -q '"crust-mq-a"' "$D/mq.json" || { fail "the image does not name /crust-mq-a" "$D/mq.json"; return 1; }
    do_restore "$D/img" || return 1
    [ "$(readlink /proc/"$PID"/ns/ipc)" != "$(readlink /proc/self/ns/ipc)" ] ||
        { fail "the restored tree is in the host's IPC namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# Reading a queue takes its messages: a dump that leaves the tree running
# puts every one back, in order (the program checks them after).
t_posixmq_leave() {
    need_cr || return $?
    start_prog posixmq || return 1
    dump_with "$D/img" --leave-running || return 1
    expect_pass "$D/img/dump.log"
}

# A queue held open by the tree: refused naming it; the queues are intact.
t_err_dump_posixmq_held() { dump_must_fail 'POSIX message queue' posixmq --held 1; }

# A crust-mqueue image whose message is longer than its queue takes (a
# message of /crust-mq-a, msgsize 64, made 65 bytes by hand is out of reach
# in shell: the file cut short instead): the restore fails naming the
# file, nothing restored.
t_err_restore_posixmq_bad() {
    need_cr || return $?
    start_prog posixmq || return 1
    do_dump "$D/img" || return 1
    local f
    f=$(ls "$D/img"/crust-mqueue-*.img 2>/dev/null | head -1)
    [ -n "$f" ] || { fail "no crust-mqueue-ID.img written" "$D/img/dump.log"; return 1; }
    truncate -s -7 "$f"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    [ $RC -ne 0 ] || { fail "the restore of a cut crust-mqueue image succeeded" "$D/img/restore.log"; return 1; }
    grep -q 'crust-mqueue' "$D/restore.err" "$D/img/restore.log" ||
        { fail "the error does not name the crust-mqueue image: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    sleep 0.2
    [ ! -e "/proc/$PID" ] || { fail "pid $PID exists after the failed restore" "$D/img/restore.log"; return 1; }
}

ALL_TESTS+=(posixmq-cr posixmq-leave err-dump-posixmq-held err-restore-posixmq-bad)
