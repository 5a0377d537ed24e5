# crust's built-in crit (issue 17). Sourced by run.sh after net.sh: uses
# its helpers (start_prog, do_dump, do_restore, expect_pass, fail, skip,
# net_pick_port...) and adds its tests to ALL_TESTS.

# A scripted edit, as a migration tool would do one: dump a TCP server
# (tcpfleet), `crust crit decode` files.img, move its listening socket to
# another port in the JSON (python3's json), `crust crit encode` it back,
# restore: the server answers a request on the new port, the old port is
# closed, and the server's own checks pass at SIGTERM.
t_crit_edit_port() {
    need_cr || return $?
    command -v python3 >/dev/null || { skip "python3 is needed to edit the JSON"; return 2; }
    local old new
    net_pick_port
    old=$NET_P
    new=$old
    while [ "$new" = "$old" ]; do net_pick_port; new=$NET_P; done
    start_prog tcpfleet --mode server --listen "127.0.0.1:$old" || return 1
    do_dump "$D/img" || return 1
    "$CRUST" crit decode -i "$D/img/files.img" -o "$D/files.json" 2>"$D/crit.err" ||
        { fail "crust crit decode files.img: $(head -c 300 "$D/crit.err")"; return 1; }
    python3 - "$D/files.json" "$old" "$new" >"$D/edit.out" 2>&1 <<'PYEOF' ||
import json, sys
path, old, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
img = json.load(open(path))
moved = 0
for f in img["entries"]:
    isk = f.get("isk")
    if isk and isk["state"] in ("LISTEN", 10) and isk["src_port"] == old:
        isk["src_port"] = new
        moved += 1
assert moved == 1, "listening sockets on port %d: %d" % (old, moved)
json.dump(img, open(path, "w"))
PYEOF
        { fail "cannot edit the JSON: $(tail -n 1 "$D/edit.out")"; return 1; }
    "$CRUST" crit encode -i "$D/files.json" -o "$D/img/files.img" 2>"$D/crit.err" ||
        { fail "crust crit encode: $(head -c 300 "$D/crit.err")"; return 1; }
    do_restore "$D/img" || return 1
    python3 - "$new" "$old" >"$D/talk.out" 2>&1 <<'PYEOF' ||
import socket, struct, sys
new, old = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", new), timeout=10)
req = struct.pack("<IIQ", 7, 0, 0)  # connection 7, no payload, request 0
s.sendall(req)
ans = b""
while len(ans) < 16:
    got = s.recv(16 - len(ans))
    assert got, "the server closed the connection"
    ans += got
h = 0xcbf29ce484222325
for b in req:
    h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
assert struct.unpack("<QQ", ans) == (0, h), "answer %r" % ans
s.close()
try:
    socket.create_connection(("127.0.0.1", old), timeout=2).close()
    raise SystemExit("the old port %d still accepts" % old)
except ConnectionRefusedError:
    pass
PYEOF
        { fail "on the new port: $(tail -n 1 "$D/talk.out")" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(crit-edit-port)
