# Tests of pipes, FIFOs and other IPC (issue 4).
# Sourced by run.sh after trees.sh: uses their helpers (start_prog, cr_test,
# cr_tree, do_dump, do_restore, expect_pass, restore_fails_naming, fail,
# skip, track, golden_make_dir, peek_u64...) and adds its tests to ALL_TESTS.

# One process: 50000 bytes queued in a 1 MiB pipe (also read through a dup),
# a non-blocking pipe with a message, FD_CLOEXEC on one end.
t_pipe_single() { cr_test pipes --mode single; }
# The same with a full-size pipe: 1000000 bytes queued.
t_pipe_big() { cr_test pipes --mode single --bytes 1000000; }
# Parent holds the write end, child the read end, a message queued; after
# restore the child reads it then end-of-file once the parent closes its end.
t_pipe_child() { cr_tree pipes --mode child; }
# One pipe in three processes: parent (both ends), A (read), B (write).
t_pipe_three() { cr_tree pipes --mode three; }
# A named FIFO open at both ends with a message queued.
t_fifo() { mkdir -p "$D/files" && cr_test pipes --mode fifo --dir "$D/files"; }

# Restored without -d, crust stays as the tree's parent: it must hold none of
# the pipes (the child waits for end-of-file once the parent closes its end).
t_pipe_attached() {
    need_cr || return $?
    start_prog pipes --mode child || return 1
    local child crust_pid pipe
    child=$(cat /proc/"$PID"/task/*/children 2>/dev/null | awk '{print $1}')
    track "$child" "$BIN/pipes"
    do_dump "$D/img" || return 1
    restore_attached_start 1 || return 1
    crust_pid=$(ppid_of "$PID")
    pipe=$(readlink /proc/"$PID"/fd/4)
    case $pipe in pipe:*) ;; *) fail "the restored parent's fd 4 is '$pipe'" "$D/img/restore1.log"; return 1 ;; esac
    ls -l /proc/"$crust_pid"/fd 2>/dev/null | grep -qF "$pipe" &&
        { fail "crust $crust_pid still holds $pipe" "$D/img/restore1.log"; return 1; }
    expect_pass "$D/img/restore1.log" || return 1
    wait_rc "$CPID" 10
    [ $RC = 0 ] || { fail "crust exited with $RC after its task exited 0" "$D/img/restore1.log"; return 1; }
}

# dump -R: the pipes' bytes are copied, not consumed: the program still
# finds them all; then the images restore and it finds them again.
t_pipe_leave_running() {
    need_cr || return $?
    start_prog pipes --mode single || return 1
    dump_with "$D/img" -R || return 1
    expect_pass "$D/img/dump.log" || { REASON="after dump -R: $REASON"; return 1; }
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A pipe in packet mode (O_DIRECT) is refused, naming the fd; the process
# runs on untouched.
t_err_dump_packet_pipe() { dump_must_fail 'fd 4\b.*O_DIRECT' pipes --mode packet; }

# The dump of `pipes --mode child` has a PIPE entry per end, one
# pipes-data.img entry with the message, PIPE fds in both fdinfo images.
t_pipe_images() {
    need_cr || return $?
    start_prog pipes --mode child || return 1
    local child
    child=$(cat /proc/"$PID"/task/*/children 2>/dev/null | awk '{print $1}')
    track "$child" "$BIN/pipes"
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/pipes-data.img" >"$D/pipes-data.json" 2>&1 ||
        { fail "cannot decode files.img / pipes-data.img: $(head -c 200 "$D/files.json" "$D/pipes-data.json")"; return 1; }
    python3 - "$D/files.json" "$D/pipes-data.json" >"$D/check.out" 2>&1 <<'EOF' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
data = json.load(open(sys.argv[2]))["entries"]
pipes = [f for f in files if f["type"] in ("PIPE", 2)]
assert len(pipes) == 2, "expected 2 PIPE entries, got %d" % len(pipes)
ids = {p["pipe"]["pipe_id"] for p in pipes}
assert len(ids) == 1, "the two ends name different pipes: %s" % ids
flags = sorted(int(str(p["pipe"]["flags"]), 0) for p in pipes)
assert flags == [0, 1], "flags %s, expected O_RDONLY and O_WRONLY" % flags
assert len(data) == 1, "expected one pipes-data entry, got %d" % len(data)
d = data[0]
assert d["pipe_id"] in ids, "data for pipe %s" % d["pipe_id"]
assert d["bytes"] == 60, "bytes %s" % d["bytes"]
assert d.get("size") == 65536, "size %s" % d.get("size")
EOF
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
    kill_tree "$PID" "$BIN/pipes"
}

# Rewrite an image with python: varint-only messages, each entry maybe
# followed by raw bytes (pipes-data). MODE: unknown-pipe (the data names
# another pipe), bad-fd (the PIPE fd of fdinfo points to id 999).
img_edit() {
    python3 - "$1" "$2" <<'EOF'
import struct, sys
path, mode = sys.argv[1], sys.argv[2]
b = open(path, "rb").read()
from imgedit import varint, enc
out, o = bytearray(b[:8]), 8
while o < len(b):
    n = struct.unpack_from("<I", b, o)[0]
    e, o = b[o + 4:o + 4 + n], o + 4 + n
    fields, p = [], 0
    while p < len(e):
        key, p = varint(e, p)
        assert key & 7 == 0, "only varint fields"
        v, p = varint(e, p)
        fields.append([key >> 3, v])
    f = dict(fields)
    raw = b""
    if mode == "unknown-pipe":
        raw, o = b[o:o + f[2]], o + f[2]
        for x in fields:
            if x[0] == 1:
                x[1] += 1000
    elif mode == "bad-fd" and f.get(3) == 2:
        for x in fields:
            if x[0] == 1:
                x[1] = 999
    e = b"".join(enc(k << 3) + enc(v) for k, v in fields)
    out += struct.pack("<I", len(e)) + e + raw
open(path, "wb").write(out)
EOF
}

# Bad pipe images: data for a pipe no file has, data cut short, a PIPE fd
# pointing to a missing file id: each fails naming the problem, no task
# left; the untouched images still restore.
t_err_restore_pipe() {
    need_cr || return $?
    command -v python3 >/dev/null || { skip "python3 is needed to edit images"; return 2; }
    start_prog pipes --mode child || return 1
    local child fdimg
    child=$(cat /proc/"$PID"/task/*/children 2>/dev/null | awk '{print $1}')
    track "$child" "$BIN/pipes"
    do_dump "$D/img" || return 1
    wait_gone "$child" 5
    rm -rf "$D/bad" && cp -r "$D/img" "$D/bad" || { fail "cannot copy images"; return 1; }
    img_edit "$D/bad/pipes-data.img" unknown-pipe || { fail "cannot edit pipes-data.img"; return 1; }
    restore_fails_naming "$D/bad" "$PID" "pipes-data.img" 1 || { REASON="data of an unknown pipe: $REASON"; return 1; }
    [ -e "/proc/$child" ] && { fail "child $child exists after the failed restore"; return 1; }
    rm -rf "$D/bad" && cp -r "$D/img" "$D/bad"
    truncate -s -10 "$D/bad/pipes-data.img"
    restore_fails_naming "$D/bad" "$PID" "pipes-data.img" 2 || { REASON="pipe data cut short: $REASON"; return 1; }
    rm -rf "$D/bad" && cp -r "$D/img" "$D/bad"
    for fdimg in "$D"/bad/fdinfo-*.img; do
        img_edit "$fdimg" bad-fd || { fail "cannot edit ${fdimg##*/}"; return 1; }
    done
    restore_fails_naming "$D/bad" "$PID" "999" 3 || { REASON="fd to a missing pipe id: $REASON"; return 1; }
    do_restore "$D/img" 4 || { REASON="the good images: $REASON"; return 1; }
    expect_pass "$D/img/restore4.log"
    kill_tree "$PID" "$BIN/pipes"
}

# A FIFO whose path is gone by restore time: a clear error naming it.
t_err_restore_fifo_gone() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog pipes --mode fifo --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    rm -f "$D/files/fifo"
    restore_fails_naming "$D/img" "$PID" "$D/files/fifo" 1
}

# CRIU 4.2's images of the golden `tree` (five processes, a zombie, a pipe
# with 40 queued bytes from P to B) restore with crust: the pipe joins P's
# fd 4 and B's fd 3 and holds the 40 bytes.
GOLDEN_TREE_PIDS="1166 1169 1170 1171 1172"
GOLDEN_TREE_LIVE="1166 1170 1171 1172"
GOLDEN_TREE_MSG="tree: 40 unread bytes from parent to B."
GOLDEN_TREE_COUNTER=$((0x4c4100 + 0x18))
t_golden_tree() {
    [ "$NO_CR" = 1 ] && { skip "CRUST_E2E_NO_CR is set"; return 2; }
    compgen -G "$GOLDEN_SRC/tree/*.img" >/dev/null || { skip "no images in $GOLDEN_SRC/tree"; return 2; }
    [ -f "$GOLDEN_SRC/bin/tree" ] || { skip "no $GOLDEN_SRC/bin/tree"; return 2; }
    command -v python3 >/dev/null || { skip "python3 is needed to look into the pipe"; return 2; }
    local p g=/tmp/crust-golden
    for p in $GOLDEN_TREE_PIDS; do
        [ -e /proc/$p ] && { skip "pid $p is in use"; return 2; }
    done
    need_crust || return 1
    (cd "$GOLDEN_SRC/bin" && sha256sum -c --quiet SHA256SUMS >/dev/null 2>&1) ||
        { fail "$GOLDEN_SRC/bin does not match its SHA256SUMS"; return 1; }
    if [ -e $g/bin/tree ] && ! cmp -s $g/bin/tree "$GOLDEN_SRC/bin/tree"; then
        skip "$g/bin/tree exists and differs from the fixture"
        return 2
    fi
    golden_make_dir $g $g/bin || { fail "cannot create $g"; return 1; }
    if [ ! -e $g/bin/tree ]; then
        cp "$GOLDEN_SRC/bin/tree" $g/bin/tree && chmod 0755 $g/bin/tree || { fail "cannot copy tree"; return 1; }
        GOLDEN_MADE+=($g/bin/tree)
    fi
    mkdir -p "$D/img" && cp "$GOLDEN_SRC"/tree/*.img "$D/img/" || { fail "cannot copy the images"; return 1; }
    golden_cpu_ok "$D/img" || return $?
    for p in $GOLDEN_TREE_LIVE; do track "$p" $g/bin/tree; done
    PID=1166
    do_restore "$D/img" || return 1
    local log=$D/img/restore.log st
    for p in $GOLDEN_TREE_LIVE; do
        [ "$(exe_of "$p")" = $g/bin/tree ] || { fail "pid $p runs '$(exe_of "$p")', not $g/bin/tree" "$log"; return 1; }
    done
    st=$(pstate 1169)
    [ "$st" = Z ] || { fail "1169 is in state '$st', not a zombie" "$log"; return 1; }
    local l4 l3
    l4=$(readlink /proc/1166/fd/4)
    l3=$(readlink /proc/1171/fd/3)
    case $l4 in pipe:*) ;; *) fail "P's fd 4 is '$l4', not a pipe" "$log"; return 1 ;; esac
    [ "$l3" = "$l4" ] || { fail "B's fd 3 is '$l3', P's fd 4 '$l4': not one pipe" "$log"; return 1; }
    [ -e /proc/1166/fd/3 ] && { fail "P has an fd 3 ($(readlink /proc/1166/fd/3))" "$log"; return 1; }
    [ -e /proc/1171/fd/4 ] && { fail "B has an fd 4 ($(readlink /proc/1171/fd/4))" "$log"; return 1; }
    grep -q '^flags:[[:space:]]*0*1$' /proc/1166/fdinfo/4 || { fail "P's fd 4 is not O_WRONLY: $(grep flags /proc/1166/fdinfo/4)" "$log"; return 1; }
    # Open B's read end again (another reader of the same pipe): the 40
    # bytes are there, and nothing else.
    python3 - "$GOLDEN_TREE_MSG" >"$D/pipe.out" 2>&1 <<'EOF' ||
import fcntl, os, struct, sys, termios
fd = os.open("/proc/1171/fd/3", os.O_RDONLY | os.O_NONBLOCK)
n = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
assert n == 40, "FIONREAD says %d bytes are queued, not 40" % n
size = fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ
assert size == 65536, "pipe capacity %d, not 65536" % size
data = os.read(fd, 4096)
assert data == (sys.argv[1] + "\n").encode(), "queued bytes are %r" % data
EOF
        { fail "$(tail -n 1 "$D/pipe.out")" "$log"; return 1; }
    local c1 c2
    c1=$(peek_u64 1171 $GOLDEN_TREE_COUNTER 2>"$D/peek.err") ||
        { fail "cannot read /proc/1171/mem: $(head -c 200 "$D/peek.err")" "$log"; return 1; }
    sleep 0.3
    c2=$(peek_u64 1171 $GOLDEN_TREE_COUNTER 2>/dev/null)
    [ "$c1" -ge 23 ] && [ "$c2" -gt "$c1" ] || { fail "B's counter: $c1 then $c2 (dumped at 23)" "$log"; return 1; }
    for p in $GOLDEN_TREE_LIVE; do kill -KILL "$p" 2>/dev/null; done
    for p in $GOLDEN_TREE_PIDS; do wait_gone "$p" 5 || { fail "pid $p survived SIGKILL"; return 1; }; done
}

ALL_TESTS+=(pipe-single pipe-big pipe-child pipe-three fifo pipe-attached pipe-leave-running
    err-dump-packet-pipe pipe-images err-restore-pipe
    err-restore-fifo-gone golden-tree)
