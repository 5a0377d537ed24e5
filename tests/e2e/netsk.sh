# Tests of packet (AF_PACKET) and netlink (AF_NETLINK) sockets (issue 5).
# Sourced by run.sh: uses its helpers (start_prog, do_dump, do_restore,
# expect_pass, restore_fails_naming, fail, skip...) and adds its tests to
# ALL_TESTS.

# Decode files.img of $1 and check the PACKETSK / NETLINKSK entries of
# `rawsocks` (pid $2) as CRIU writes them.
netsk_check_images() {
    local img=$1 pid=$2
    "$CRUST" image decode -i "$img/files.img" >"$D/files.json" 2>&1 ||
        { fail "cannot decode files.img: $(head -c 200 "$D/files.json")"; return 1; }
    python3 - "$D/files.json" "$pid" >"$D/check.out" 2>&1 <<'PYEOF' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
pid = int(sys.argv[2])
num = lambda v: int(str(v), 0)
psk = sorted((f["psk"] for f in files if f["type"] == "PACKETSK"), key=lambda p: num(p["type"]))
assert len(psk) == 2, "packet sockets %s" % psk
dg, raw = psk
assert (num(dg["type"]), num(dg["protocol"]), num(dg["ifindex"]), dg["opts"].get("so_bound_dev")) == (2, 0, 0, "lo"), "SOCK_DGRAM one %s" % dg
assert (num(raw["type"]), num(raw["protocol"]), num(raw["ifindex"])) == (3, 0x0300, 1), "SOCK_RAW one %s" % raw
assert (num(raw["version"]), num(raw["reserve"]), num(raw["timestamp"]), num(raw["copy_thresh"])) == (1, 64, 16, 1), "options %s" % raw
assert raw["aux_data"] and raw["orig_dev"] and raw["loss"] and not raw["vnet_hdr"], "flags %s" % raw
assert num(raw["fanout"]) == pid & 0xffff, "fanout %s" % raw.get("fanout")
assert [(num(m["index"]), num(m["type"])) for m in raw["mclist"]] == [(1, 0)], "mclist %s" % raw["mclist"]
assert num(raw["flags"]) & 0o4000, "O_NONBLOCK lost: %s" % raw["flags"]
assert num(raw["opts"]["so_priority"]) == 3 and len(raw["opts"]["so_filter"]) == 1, "opts %s" % raw["opts"]
nl = sorted((f["nlsk"] for f in files if f["type"] == "NETLINKSK"), key=lambda n: (num(n["protocol"]), num(n["state"])))
assert [num(n["protocol"]) for n in nl] == [0, 2, 2, 16], "netlink sockets %s" % nl
rt, conn, peer, gen = nl
assert num(rt["portid"]) == 0x7e570000 | (pid & 0xffff), "port %s" % rt["portid"]
assert [num(g) for g in rt["groups"]] == [1, 1], "groups %s" % rt["groups"]
assert num(gen["portid"]) == 0 and not gen.get("groups"), "generic %s" % gen
assert num(conn["state"]) == 1 and num(conn["dst_portid"]) == 0x7e580000 | (pid & 0xffff), "connected %s" % conn
assert num(peer["portid"]) == 0x7e580000 | (pid & 0xffff) and num(peer["state"]) != 1, "peer %s" % peer
PYEOF
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
}

# `rawsocks`: a SOCK_RAW packet socket bound to lo with options, a
# membership, a fanout group and a filter; an unbound SOCK_DGRAM one; a
# NETLINK_ROUTE socket bound to its own port with groups 1 and 33; an
# unbound NETLINK_GENERIC one; a NETLINK_USERSOCK socket bound to a port
# and another connected to it. The images hold them as CRIU writes them;
# after restore every option and binding reads back, the packet socket
# sees a UDP datagram crossing lo, rtnetlink answers RTM_GETLINK and a
# message goes from the connected usersock to its peer.
t_packet_netlink_cr() {
    need_cr || return $?
    command -v python3 >/dev/null || { skip "python3 is needed to check images"; return 2; }
    start_prog rawsocks || return 1
    do_dump "$D/img" || return 1
    netsk_check_images "$D/img" "$PID" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# The same checks without a restore in between.
t_packet_netlink_plain() {
    start_prog rawsocks || return 1
    expect_pass
}

# A packet socket bound to an interface index that does not exist (999999,
# written into files.img): a clear error naming it, no task left; the good
# images still restore.
t_err_restore_packet_ifindex() {
    need_cr || return $?
    command -v python3 >/dev/null || { skip "python3 is needed to edit images"; return 2; }
    start_prog rawsocks || return 1
    do_dump "$D/img" || return 1
    rm -rf "$D/bad" && cp -r "$D/img" "$D/bad" || { fail "cannot copy images"; return 1; }
    python3 - "$D/bad/files.img" <<'PYEOF' || { fail "cannot edit files.img"; return 1; }
import struct, sys
path = sys.argv[1]
b = open(path, "rb").read()
from imgedit import varint, enc
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
    if dict((k >> 3, v) for k, v in fs).get(1) == 10:  # PACKETSK
        for x in fs:
            if x[0] >> 3 == 6:  # psk
                inner = fields(x[1])
                for y in inner:
                    if y[0] >> 3 == 5 and y[1] == 1:  # ifindex of lo
                        y[1] = 999999
                        done += 1
                x[1] = build(inner)
        e = build(fs)
    out += struct.pack("<I", len(e)) + e
assert done == 1, "found %d packet sockets on lo" % done
open(path, "wb").write(out)
PYEOF
    restore_fails_naming "$D/bad" "$PID" "interface index 999999" 1 || return 1
    do_restore "$D/img" 2 || { REASON="the good images: $REASON"; return 1; }
    expect_pass "$D/img/restore2.log"
}

# A netlink socket with an unread answer (fd 5): the dump is refused
# naming the fd, the process runs on.
t_err_dump_netlink_pending() { dump_must_fail 'fd 5\b.*unread' rawsocks --pending 1; }

# Packet socket rings, mapped: fd 3's TPACKET_V2 rx ring, fd 9's TPACKET_V3
# rx and tx rings. The images keep the ring parameters and the mappings as
# VMA_AREA_SOCKET VMAs naming the sockets' files.img ids; after restore the
# mappings are at their places, are the sockets' rings, and get packets.
t_packet_ring_cr() {
    need_cr || return $?
    command -v python3 >/dev/null || { skip "python3 is needed to check images"; return 2; }
    start_prog rawsocks --ring 1 || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/mm-$PID.img" >"$D/mm.json" 2>&1 ||
        { fail "cannot decode files.img or mm-$PID.img"; return 1; }
    python3 - "$D/files.json" "$D/mm.json" >"$D/check.out" 2>&1 <<'PYEOF' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
vmas = json.load(open(sys.argv[2]))["entries"][0]["vmas"]
num = lambda v: int(str(v), 0)
ring = lambda r: r and [num(r[k]) for k in ("block_size", "block_nr", "frame_size", "frame_nr", "retire_tmo", "sizeof_priv", "features")]
psk = {f["id"]: f["psk"] for f in files if f["type"] == "PACKETSK"}
rings = {i: (num(p["version"]), ring(p.get("rx_ring")), ring(p.get("tx_ring"))) for i, p in psk.items() if p.get("rx_ring")}
assert sorted(rings.values(), key=str) == sorted([
    (1, [4096, 4, 2048, 8, 0, 0, 0], None),
    (2, [8192, 2, 2048, 8, 10, 0, 0], [4096, 1, 2048, 2, 0, 0, 0])], key=str), "rings %s" % rings
# VMA_AREA_REGULAR | VMA_AREA_SOCKET, MAP_SHARED, shmid: the files.img id.
sk = sorted((v for v in vmas if num(v["status"]) & (1 << 11)), key=lambda v: num(v["shmid"]))
assert [num(v["status"]) for v in sk] == [0x801, 0x801] and [num(v["flags"]) for v in sk] == [1, 1], "socket VMAs %s" % sk
got = sorted((rings[num(v["shmid"])][0], num(v["end"]) - num(v["start"]), num(v["pgoff"])) for v in sk)
assert got == [(1, 16384, 0), (2, 20480, 0)], "socket VMAs (version, length, pgoff) %s" % got
PYEOF
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A packet socket whose rx ring stays mapped after its fd was closed: no
# fd names the socket, the dump is refused, the process runs on.
t_err_dump_packet_ring() { dump_must_fail 'maps socket [0-9]+ .*no fd of the tree' rawsocks --ring 2; }

ALL_TESTS+=(packet-netlink-cr packet-netlink-plain err-restore-packet-ifindex
    err-dump-netlink-pending packet-ring-cr err-dump-packet-ring)
