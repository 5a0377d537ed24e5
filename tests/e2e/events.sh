# Tests of event files: eventfd, signalfd, timerfd, epoll, inotify (issue 4).
# Sourced by run.sh after ipc.sh: uses its helpers (start_prog, do_dump,
# do_restore, expect_pass, restore_fails_naming, dump_must_fail, fail,
# skip...) and adds its tests to ALL_TESTS.

# An epoll loop over an eventfd (42), a periodic timerfd, a signalfd and a
# one-shot timerfd, and an inotify on two directories: after restore the
# loop keeps running, a SIGUSR1 sent after restore comes out of the
# signalfd, the one-shot fires at its due time (plus the time frozen), the
# counters are right and new inotify events arrive on the old watch numbers.
t_events() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog events --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    sleep 0.3
    kill -USR1 "$PID" 2>/dev/null
    expect_pass "$D/img/restore.log"
}

# The same loop without a restore in between (the program's own checks).
t_events_plain() {
    mkdir -p "$D/files"
    start_prog events --dir "$D/files" || return 1
    sleep 0.3
    kill -USR1 "$PID" 2>/dev/null
    expect_pass
}

# files.img holds the EVENTFD counter and semaphore bit, the SIGNALFD mask,
# the TIMERFD clock and interval, the EVENTPOLL targets, the INOTIFY watches
# with their handles, as CRIU writes them.
t_events_images() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog events --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 ||
        { fail "cannot decode files.img: $(head -c 200 "$D/files.json")"; return 1; }
    python3 - "$D/files.json" "$D/files" >"$D/check.out" 2>&1 <<'PYEOF' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
def of(t):
    return [f for f in files if f["type"] == t]
num = lambda v: int(str(v), 0)
efd = sorted((num(e["efd"]["counter"]), num(e["efd"]["flags"])) for e in of("EVENTFD"))
assert efd == [(3, 0o4000 | 2 | 1), (42, 0o4000 | 2)], "eventfds %s" % efd
sg = of("SIGNALFD")
assert len(sg) == 1 and num(sg[0]["sgfd"]["sigmask"]) == 1 << 9, "signalfd %s" % sg
tf = sorted((num(t["tfd"]["isec"]), num(t["tfd"]["insec"]), num(t["tfd"]["clockid"])) for t in of("TIMERFD"))
assert tf == [(0, 0, 1), (0, 50000000, 1)], "timerfds %s" % tf
ep = of("EVENTPOLL")
assert len(ep) == 1, "epolls %s" % ep
tfds = sorted((t["tfd"], num(t["events"])) for t in ep[0]["epfd"]["tfd"])
assert tfds == [(4, 0x80000019), (5, 0x19), (6, 0x19), (7, 0x19), (9, 0x19)], "epoll targets %s" % tfds
ify = of("INOTIFY")
assert len(ify) == 1, "inotify %s" % ify
wds = sorted((w["wd"], w["f_handle"].get("path")) for w in ify[0]["ify"]["wd"])
assert wds == [(3, sys.argv[2]), (5, sys.argv[2] + "/sub")], "watches %s" % wds
for w in ify[0]["ify"]["wd"]:
    assert num(w["f_handle"]["bytes"]) > 0 and len(w["f_handle"]["handle"]) >= 16, "handle %s" % w
PYEOF
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    kill -USR1 "$PID" 2>/dev/null
    expect_pass "$D/img/restore.log"
}

# An eventfd fd pointing to a files.img id that does not exist: a clear
# error naming it, no task left; the good images still restore.
t_err_restore_eventfd() {
    need_cr || return $?
    command -v python3 >/dev/null || { skip "python3 is needed to edit images"; return 2; }
    start_prog events || return 1
    do_dump "$D/img" || return 1
    rm -rf "$D/bad" && cp -r "$D/img" "$D/bad" || { fail "cannot copy images"; return 1; }
    local fdimg
    for fdimg in "$D"/bad/fdinfo-*.img; do
        python3 - "$fdimg" <<'PYEOF' || { fail "cannot edit ${fdimg##*/}"; return 1; }
import struct, sys
path = sys.argv[1]
b = open(path, "rb").read()
from imgedit import varint, enc
out, o = bytearray(b[:8]), 8
while o < len(b):
    n = struct.unpack_from("<I", b, o)[0]
    e, o = b[o + 4:o + 4 + n], o + 4 + n
    fields, p = [], 0
    while p < len(e):
        key, p = varint(e, p)
        v, p = varint(e, p)
        fields.append([key >> 3, v])
    if dict(fields).get(3) == 6:
        for x in fields:
            if x[0] == 1:
                x[1] = 999
    e = b"".join(enc(k << 3) + enc(v) for k, v in fields)
    out += struct.pack("<I", len(e)) + e
open(path, "wb").write(out)
PYEOF
    done
    restore_fails_naming "$D/bad" "$PID" "eventfd id 999" 1 || return 1
    do_restore "$D/img" 2 || { REASON="the good images: $REASON"; return 1; }
    kill -USR1 "$PID" 2>/dev/null
    expect_pass "$D/img/restore2.log"
}

ALL_TESTS+=(events events-plain events-images err-restore-eventfd)

# Two fanotify groups (issue 4): one with an inode mark (FAN_MODIFY |
# FAN_CLOSE_WRITE, O_NONBLOCK), one with a mount mark (FAN_OPEN) and an
# ignored mask on one file. files.img holds them as FANOTIFY entries; after
# restore the marks are back (fdinfo) and new events arrive.
t_fanotify_cr() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog fanotify --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 ||
        { fail "cannot decode files.img: $(head -c 200 "$D/files.json")"; return 1; }
    python3 - "$D/files.json" "$D/files" >"$D/check.out" 2>&1 <<'PYEOF' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
num = lambda v: int(str(v), 0)
fa = [f["ffy"] for f in files if f["type"] == "FANOTIFY"]
assert len(fa) == 2, "fanotify entries %s" % fa
fa.sort(key=lambda f: len(f["mark"]))
a, b = fa
assert num(a["faflags"]) & 3 == 3 and num(b["faflags"]) & 3 == 1, "faflags %s %s" % (a["faflags"], b["faflags"])
assert [m["type"] for m in a["mark"]] == ["INODE"], a
m = a["mark"][0]
assert num(m["mask"]) == 0xa and m["ie"]["f_handle"].get("path") == sys.argv[2] + "/marked", m
kinds = sorted((m["type"], num(m["mask"]), num(m["ignored_mask"]), num(m["mflags"])) for m in b["mark"])
assert kinds == [("INODE", 0, 0x20, 0x40), ("MOUNT", 0x20, 0, 0)], kinds
mm = [m for m in b["mark"] if m["type"] == "MOUNT"][0]
assert mm["me"].get("path", "").startswith("/"), mm
PYEOF
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# The marked file is gone after the dump (its handle is stale, its path
# missing): the restore fails naming the fanotify mark and the file, and
# leaves nothing; with a new file at that path it restores (by the path).
t_err_restore_fanotify() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog fanotify --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    rm -f "$D/files/marked"
    restore_fails_naming "$D/img" "$PID" "fanotify" 1 || return 1
    grep -qF -- "$D/files/marked" "$D/restore1.err" ||
        { fail "the message does not name the file: $(head -c 300 "$D/restore1.err")"; return 1; }
    echo x >"$D/files/marked"
    do_restore "$D/img" 2 || { REASON="with the file back: $REASON"; return 1; }
    expect_pass "$D/img/restore2.log"
}

ALL_TESTS+=(fanotify-cr err-restore-fanotify)
