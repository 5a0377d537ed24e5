# Tests of unix sockets (issue 4). Sourced by run.sh after ipc.sh: uses its
# helpers (cr_test, cr_tree, start_prog, do_dump, do_restore, expect_pass,
# dump_must_fail, fail, need_cr...) and adds its tests to ALL_TESTS.

# One process: stream, datagram and seqpacket pairs with data both ways,
# a shut-down stream, datagram sockets bound to a path and to an abstract
# name with a datagram queued, listeners on a path and an abstract name.
t_unix_all() { mkdir -p "$D/files" && cr_test unixsk --mode all --dir "$D/files"; }
# A stream and a seqpacket pair split between parent and child.
t_unix_child() { cr_tree unixsk --mode child; }

# A message carrying an fd crust cannot dump (a userfaultfd, SCM_RIGHTS) is
# refused, the process untouched (the message and its fd are still there).
t_err_dump_unix_rights() { dump_must_fail 'SCM_RIGHTS' unixsk --mode rights-uffd; }
# A connection waiting to be accepted that already sent data (queued on
# the embryonic socket, which crust cannot reach) is refused.
t_err_dump_unix_pending() {
    mkdir -p "$D/files" && dump_must_fail 'accept queue' unixsk --mode pending-data --dir "$D/files"
}

# The images of `unixsk --mode all`: UNIXSK entries with CRIU's fields, and
# sk-queues.img holding the queued messages by socket id.
t_unix_images() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog unixsk --mode all --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/sk-queues.img" >"$D/q.json" 2>&1 ||
        { fail "cannot decode files.img / sk-queues.img: $(head -c 200 "$D/files.json" "$D/q.json")"; return 1; }
    python3 - "$D/files.json" "$D/q.json" "$D/files" >"$D/check.out" 2>&1 <<'EOF' ||
import base64, json, quopri, sys
files = json.load(open(sys.argv[1]))["entries"]
q = json.load(open(sys.argv[2]))["entries"]
sk = {f["id"]: f["usk"] for f in files if f["type"] in ("UNIXSK", 5)}
assert len(sk) == 12, "expected 12 unix sockets, got %d" % len(sk)
by_ino = {u["ino"]: u for u in sk.values()}
for u in sk.values():
    if u["peer"]:
        assert by_ino[u["peer"]]["peer"] == u["ino"], "socket %d: peer not mutual" % u["id"]
def name(u):
    # crit's unix_name conversion: quoted-printable text.
    return quopri.decodestring(u["name"].encode()) if u["name"] else b""
listen = [u for u in sk.values() if u["state"] in ("LISTEN", 10)]
assert len(listen) == 2, "listeners: %d" % len(listen)
path = [u for u in listen if name(u).endswith(b"/listen.sock\0")]
assert path and path[0]["backlog"] == 5, "listener on a path: %s" % path
assert "file_perms" in path[0], "no file_perms on the bound listener"
shut = [u for u in sk.values() if u.get("shutdown") not in (None, "NONE", 0)]
assert len(shut) == 2, "shutdown sockets: %s" % shut
kinds = {u["type"] for u in sk.values()}
assert kinds >= {1, 2, 5} or kinds >= {"STREAM", "DGRAM", "SEQPACKET"}, kinds
assert any(name(u).startswith(b"\0crust-unixsk-dgram-") for u in sk.values()), "no abstract name"
payloads = [base64.b64decode(e["extra"]) if "extra" in e else b"" for e in q]
assert all(e["id_for"] in sk for e in q), "a message for a non-socket"
assert b"to the bound path" in payloads and b"dgram one" in payloads and b"" in payloads, payloads[:6]
assert sum(e["length"] for e in q) >= 60000
EOF
        { fail "$(tail -n 1 "$D/check.out")" "$D/check.out"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A bad sk-queues.img (a message for a socket files.img lacks): a clear
# error, no task left.
t_err_restore_unix_queue() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog unixsk --mode all --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    python3 - "$D/img/sk-queues.img" <<'EOF' || { fail "cannot patch sk-queues.img"; return 1; }
import struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
# magic (8 bytes), then u32 length, then the entry: field 1 (id_for) first.
assert b[12] == 0x08
b[13] = 0x7f  # id 127: no such file
open(p, "wb").write(b)
EOF
    crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    expect_error restore "$D/img/restore.log" || return 1
    grep -q 'not a unix socket' "$D/restore.err" ||
        { fail "the message does not say it: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the failed restore"; return 1; }
    return 0
}

# A datagram server outside the tree, bound to $D/files/ext.sock; it appends
# every datagram it gets to $D/files/ext.log. Sets SRV.
ext_server() {
    mkdir -p "$D/files"
    rm -f "$D/files/ext.sock" "$D/files/ext.log" "$D/files/ext.ready"
    SRV=$(setsid python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[2] + ".ready", "w").close()
while True:
    m = s.recv(256)
    with open(sys.argv[2], "ab") as f:
        f.write(m + b"\n")
' "$D/files/ext.sock" "$D/files/ext.log" </dev/null >/dev/null 2>&1 & echo $!)
    track "$SRV" "$(readlink -f /usr/bin/python3)"
    wait_file "$D/files/ext.log.ready" 5 || { fail "the outside server did not start"; return 1; }
}

# Connected to a socket outside the tree: the dump is refused without
# --ext-unix-sk, naming the option.
t_err_dump_unix_ext() {
    ext_server || return 1
    dump_must_fail 'ext-unix-sk' unixsk --mode ext --dir "$D/files"
    local rc=$?
    kill -KILL "$SRV" 2>/dev/null
    return $rc
}

# With --ext-unix-sk the datagram socket is reconnected to the outside
# server's name on restore (which also needs the option), and what it sends
# after restore arrives.
t_unix_ext() {
    need_cr || return $?
    ext_server || return 1
    start_prog unixsk --mode ext --dir "$D/files" || return 1
    do_dump "$D/img" --ext-unix-sk || return 1
    crust_run restore0 restore -D "$D/img" -d -v4 -o restore0.log
    expect_error restore0 "$D/img/restore0.log" || return 1
    grep -q 'ext-unix-sk' "$D/restore0.err" ||
        { fail "restore without --ext-unix-sk: $(head -c 300 "$D/restore0.err")" "$D/img/restore0.log"; return 1; }
    do_restore "$D/img" "" --ext-unix-sk || return 1
    expect_pass "$D/img/restore.log" || return 1
    sleep 0.2
    grep -qx 'after restore' "$D/files/ext.log" ||
        { fail "the outside server got: $(head -c 200 "$D/files/ext.log" | tr '\n' '|')"; return 1; }
    kill -KILL "$SRV" 2>/dev/null
    return 0
}

ALL_TESTS+=(unix-ext err-dump-unix-ext)
ALL_TESTS+=(unix-all unix-child err-dump-unix-rights err-dump-unix-pending unix-images
    err-restore-unix-queue)

# A listener with two connections waiting in its accept queue: after
# restore both are accepted, in order, and talk both ways.
t_unix_pending() { mkdir -p "$D/files" && cr_test unixsk --mode pending --dir "$D/files"; }
ALL_TESTS+=(unix-pending)

# Messages in flight carrying a pipe, a regular file and a socket
# (SCM_RIGHTS): after restore each comes with a working fd.
t_unix_rights() { mkdir -p "$D/files" && cr_test unixsk --mode rights --dir "$D/files"; }
ALL_TESTS+=(unix-rights)

# A bad sk-queues.img (a message carrying a file files.img lacks): a clear
# error, no task left.
t_err_restore_unix_rights() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog unixsk --mode rights --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    python3 - "$D/img/sk-queues.img" <<'PY' || { fail "cannot patch sk-queues.img"; return 1; }
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
# magic (8 bytes), u32 length, then the entry: id_for, length, then the
# scm entry (field 4) holding type (1) and rights (2).
assert b[12] == 0x08 and b[14] == 0x10 and b[16] == 0x22 and b[18] == 0x08 and b[20] == 0x10, b[8:24].hex()
b[21] = 0x7f  # file 127: no such file
open(p, "wb").write(b)
PY
    crust_run restore restore -D "$D/img" -d -v4 -o restore.log
    expect_error restore "$D/img/restore.log" || return 1
    grep -q 'carries file 127' "$D/restore.err" ||
        { fail "the message does not say it: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the failed restore"; return 1; }
    return 0
}
ALL_TESTS+=(err-restore-unix-rights)

# Sockets whose bound file was unlinked (CRIU's `deleted`): a listener
# with an accepted connection and a datagram socket with a message queued;
# bound to the same names after restore, the files gone again.
t_unix_deleted() { mkdir -p "$D/files" && cr_test unixsk --mode deleted --dir "$D/files"; }
ALL_TESTS+=(unix-deleted)

# Messages in flight on sockets that pass credentials (SO_PASSCRED): sent
# back after restore with their senders' pid, uid and gid (one from the
# process, one from its child).
t_unix_creds() { cr_tree unixsk --mode creds; }
ALL_TESTS+=(unix-creds)
