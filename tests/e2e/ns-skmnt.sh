# Tests of unix sockets bound in another mount namespace of the tree
# (issue 13, zdtm sk-unix-mntns). Sourced by run.sh: uses its helpers and
# adds its tests to ALL_TESTS.

# The program runs on as is (both pairs deliver, through the kept and a
# new connection).
t_skmntns_run() {
    mkdir -p "$D/dir"
    start_prog skmntns --dir "$D/dir" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/skmntns"; done
    expect_pass
}

ALL_TESTS+=(skmntns-run)

# skmntns dumped with /dev external: its children tracked.
skmnt_dumped() {
    mkdir -p "$D/dir"
    start_prog skmntns --dir "$D/dir" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/skmntns"; done
    do_dump "$D/img" --external 'mnt[/dev]:dev'
}

# The mount ids (UnixSkEntry mnt_id) of the bound sockets of IMG's
# files.img, one a line, sorted.
skmnt_ids() {
    "$CRUST" image decode -i "$1/files.img" 2>"$D/decode.err" | "$PY" -c '
import json, sys
for e in json.load(sys.stdin)["entries"]:
    u = e.get("usk")
    if u and u.get("name"):
        print(u.get("mnt_id", "none"))' | sort
}

# The mount id of the child's tmpfs at DIR/sub in IMG's mountpoints images.
skmnt_tmpfs() {
    local f
    for f in "$1"/mountpoints-*.img; do
        "$CRUST" image decode -i "$f" 2>>"$D/decode.err" | "$PY" -c '
import json, sys
for e in json.load(sys.stdin)["entries"]:
    if e.get("mountpoint", "").endswith(sys.argv[1]):
        print(e["mnt_id"])' "$D/dir/sub"
    done | head -1
}

# A child binds a socket on a tmpfs only its own mount namespace has, the
# parent one at the same path in the root's namespace. The images record
# each socket's mount (mnt_id: two mounts, one of each namespace's
# mountpoints image); the restore binds the child's socket in the child's
# namespace through its root, the parent's in the root's: both deliver
# through the kept and a new connection by the path (the program checks),
# and the root's namespace sees the parent's socket file at the path.
t_skmntns_cr() {
    need_cr || return $?
    skmnt_dumped || return 1
    local ids
    ids=$(skmnt_ids "$D/img")
    [ "$(printf '%s\n' "$ids" | grep -cE '^[0-9]+$')" = 2 ] ||
        { fail "expected the two bound sockets to record a mount: $(echo $ids)" "$D/img/dump.log"; return 1; }
    [ "$(printf '%s\n' "$ids" | sort -u | wc -l)" = 2 ] ||
        { fail "expected the two sockets on two mounts: $(echo $ids)" "$D/img/dump.log"; return 1; }
    printf '%s\n' "$ids" | grep -qx "$(skmnt_tmpfs "$D/img")" ||
        { fail "no socket records the child's tmpfs ($(skmnt_tmpfs "$D/img")): $(echo $ids)" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --external 'mnt[dev]:/dev' || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/skmntns"; done
    grep -q "in another mount namespace of the tree" "$D/img/restore.log" ||
        { fail "the child's socket was not bound in its own namespace" "$D/img/restore.log"; return 1; }
    [ -S "/proc/$PID/root$D/dir/sub/s" ] ||
        { fail "the root's namespace has no socket file at $D/dir/sub/s" "$D/img/restore.log"; return 1; }
    mnt_no_yard "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(skmntns-cr)

# The images edited so the child's socket names mount 99999, which no
# mountpoints image has: the restore fails naming the socket's mount,
# leaves no process and no socket file changed; the good images restore.
t_err_restore_skmntns_mnt() {
    need_cr || return $?
    skmnt_dumped || return 1
    local want before
    want=$(skmnt_tmpfs "$D/img")
    [ -n "$want" ] || { fail "no mountpoints image has the child's tmpfs" "$D/img/dump.log"; return 1; }
    rm -rf "$D/bad" && cp -r "$D/img" "$D/bad" || { fail "cannot copy images"; return 1; }
    python3 - "$D/bad/files.img" "$want" <<'PYEOF' || { fail "cannot edit files.img"; return 1; }
import struct, sys
from imgedit import varint, enc
path, want = sys.argv[1], int(sys.argv[2])
zig = lambda v: (v << 1) ^ (v >> 63)
b = open(path, "rb").read()
def fields(e):
    out, p = [], 0
    while p < len(e):
        key, p = varint(e, p)
        wt = key & 7
        if wt == 0:
            v, p = varint(e, p)
        elif wt == 1:
            v, p = e[p:p + 8], p + 8
        elif wt == 5:
            v, p = e[p:p + 4], p + 4
        else:
            n, p = varint(e, p)
            v, p = e[p:p + n], p + n
        out.append([key, v])
    return out
def build(fs):
    out = bytearray()
    for key, v in fs:
        out += enc(key)
        wt = key & 7
        if wt == 0:
            out += enc(v)
        elif wt == 2:
            out += enc(len(v)) + v
        else:
            out += v
    return bytes(out)
out, o, done = bytearray(b[:8]), 8, 0
while o < len(b):
    n = struct.unpack_from("<I", b, o)[0]
    e, o = b[o + 4:o + 4 + n], o + 4 + n
    fs = fields(e)
    if dict((k >> 3, v) for k, v in fs).get(1) == 5:  # UNIXSK
        for x in fs:
            if x[0] >> 3 == 16:  # usk
                inner = fields(x[1])
                for y in inner:
                    if y[0] >> 3 == 17 and y[1] == zig(want):  # mnt_id
                        y[1] = zig(99999)
                        done += 1
                x[1] = build(inner)
        e = build(fs)
    out += struct.pack("<I", len(e)) + e
assert done >= 1, "found no socket on mount %d" % want
open(path, "wb").write(out)
PYEOF
    before=$(stat -c %i "$D/dir/sub/s" 2>/dev/null)
    restore_fails_naming "$D/bad" "$PID" "mount 99999" 1 --external 'mnt[dev]:/dev' || return 1
    [ "$(stat -c %i "$D/dir/sub/s" 2>/dev/null)" = "$before" ] ||
        { fail "the failed restore changed $D/dir/sub/s" "$D/bad/restore1.log"; return 1; }
    mnt_no_yard "$D/bad/restore1.log" || return 1
    do_restore "$D/img" 2 --external 'mnt[dev]:/dev' || { REASON="the good images: $REASON"; return 1; }
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/skmntns"; done
    expect_pass "$D/img/restore2.log"
}

ALL_TESTS+=(err-restore-skmntns-mnt)

# skmntns --orphan 1: the child passes its bound socket to the parent and
# exits, its mount namespace gone with it: the socket's file is on a mount
# no namespace of the tree has (and the root's namespace finds the
# parent's socket at the path). The dump is refused naming the socket's
# mount; the parent runs on untouched and passes.
t_err_dump_skmntns_orphan() {
    need_cr || return $?
    mkdir -p "$D/dir" "$D/img"
    start_prog skmntns --dir "$D/dir" --orphan 1 || return 1
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -qE "on mount [0-9]+, which neither the tree's mount namespace" "$D/dump.err" ||
        { fail "the message does not name the mount: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

ALL_TESTS+=(err-dump-skmntns-orphan)
