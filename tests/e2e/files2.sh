# Files deleted while open (ghost files), memfds, directories and O_PATH fds
# (issue 4). Sourced by run.sh after ipc.sh: uses its helpers (cr_test,
# start_prog, do_dump, do_restore, expect_pass, dump_must_fail, fail...) and
# adds its tests to ALL_TESTS.

# A deleted file with 10 MiB of content, three fds on two descriptions:
# saved as a ghost file (over the default 1 MiB limit, so --ghost-limit 16M),
# recreated, opened with its flags and offsets, unlinked again.
t_ghost_big() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog files2 --mode ghost --dir "$D/files" --kb 10240 || return 1
    do_dump "$D/img" --ghost-limit 16M || return 1
    [ -f "$D/img/ghost-file-1.img" ] && [ -f "$D/img/remap-fpath.img" ] ||
        { fail "no ghost-file-1.img / remap-fpath.img in the images" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    ls "$D/files" | grep -q ghost &&
        { fail "the restore left $(ls "$D/files" | tr '\n' ' ') behind" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# A small deleted file under the default limit, images checked: the REG entry
# has the path without " (deleted)", remap-fpath says GHOST, the ghost holds
# the content (in chunks, as CRIU stores files of 12 KiB and more).
t_ghost_images() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog files2 --mode ghost --dir "$D/files" --kb 64 || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/remap-fpath.img" >"$D/remap.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/ghost-file-1.img" >"$D/ghost.json" 2>&1 ||
        { fail "cannot decode the images: $(head -c 200 "$D/files.json" "$D/remap.json" "$D/ghost.json")"; return 1; }
    python3 - "$D/files.json" "$D/remap.json" "$D/ghost.json" "$D/files/ghost.dat" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
remap = json.load(open(sys.argv[2]))["entries"]
ghost = json.load(open(sys.argv[3]))["entries"]
regs = [f for f in files if f.get("reg", {}).get("name") == sys.argv[4]]
assert len(regs) == 2, "expected 2 REG entries named %s, got %d" % (sys.argv[4], len(regs))
assert all(r["reg"]["size"] == 65536 for r in regs), regs
assert len(remap) == 2, remap
assert {r["orig_id"] for r in remap} == {r["id"] for r in regs}, remap
assert all(r["remap_id"] == 1 and r["remap_type"] in ("GHOST", 1) for r in remap), remap
assert ghost[0]["mode"] == 0o100640, ghost
# From 12 KiB on, CRIU's chunks: the size in the entry, then {len, off} runs.
assert ghost[0].get("chunks") and ghost[0].get("size") == 65536, ghost[0]
assert sum(c["len"] for c in ghost[1:]) == 65536, [(c["off"], c["len"]) for c in ghost[1:]]
PY
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
    [ "$(stat -c %s "$D/img/ghost-file-1.img")" -gt 65536 ] || { fail "ghost-file-1.img is too small"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A deleted file of 2 MiB is over the default limit: the dump fails naming
# the file and the limit; the program runs on untouched.
t_err_dump_ghost_limit() {
    mkdir -p "$D/files"
    dump_must_fail 'ghost\.dat.*limit' files2 --mode ghost --dir "$D/files" --kb 2048
}

# A ghost image whose content is shorter than the file was: refused before
# any task exists, nothing left in the directory.
t_err_restore_ghost_short() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog files2 --mode ghost --dir "$D/files" --kb 64 || return 1
    do_dump "$D/img" || return 1
    truncate -s -100 "$D/img/ghost-file-1.img"
    restore_fails_naming "$D/img" "$PID" ghost 1 || return 1
    [ -z "$(ls "$D/files")" ] || { fail "the failed restore left $(ls "$D/files" | tr '\n' ' ')"; return 1; }
}

ALL_TESTS+=(ghost-big ghost-images err-dump-ghost-limit err-restore-ghost-short)

# A sealed memfd (F_SEAL_SHRINK|F_SEAL_GROW) of 1 MiB with a hole, two
# descriptions (one opened through /proc/self/fd): name, content, offsets,
# flags and seals back; the images hold a MEMFD entry and its memfd.img inode.
t_memfd_seals() {
    need_cr || return $?
    start_prog files2 --mode memfd || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/memfd.img" >"$D/memfd.json" 2>&1 ||
        { fail "cannot decode memfd.img: $(head -c 200 "$D/memfd.json")"; return 1; }
    python3 - "$D/memfd.json" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
m = json.load(open(sys.argv[1]))["entries"]
assert len(m) == 1, m
e = m[0]
assert e["name"] == "crust-test-memfd" and e["size"] == 1 << 20, e
s = e["seals"]
assert s == 6 or ("SHRINK" in str(s) and "GROW" in str(s)), s
PY
        { fail "$(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# Directory fds and O_PATH fds keep their flags; a file opened through
# /proc/self/fd is restored as the file itself.
t_dir_opath() {
    need_cr || return $?
    mkdir -p "$D/files"
    cr_test files2 --mode dirs --dir "$D/files"
}

# memfd.img names an inode the fd's MEMFD entry does not match: refused
# before any task exists.
t_err_restore_memfd_inode() {
    need_cr || return $?
    start_prog files2 --mode memfd || return 1
    do_dump "$D/img" || return 1
    python3 - "$D/img/memfd.img" <<'PY' || { fail "cannot edit memfd.img"; return 1; }
import struct, sys
# memfd_inode_entry field 7 (inode_id, varint 1) -> 9.
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack_from("<I", b, 8)[0]
e = b[12:12 + n]
i = e.find(bytes([7 << 3, 1]))
assert i >= 0
e[i + 1] = 9
b[12:12 + n] = e
open(p, "wb").write(b)
PY
    restore_fails_naming "$D/img" "$PID" "inode 1" 1
}

ALL_TESTS+=(memfd-seals dir-opath err-restore-memfd-inode)

# Owners of open files (F_SETOWN_EX thread/process/group, F_SETSIG) on a
# regular file, a pipe, a unix socketpair and an eventfd: files.img has
# them in CRIU's fown_entry (pid_type, pid, signum, uid/euid: one owner
# was set as uid 1000, euid 65534), the program
# reads them back after restore and gets the I/O signals of its O_ASYNC
# pipe and sockets.
t_fown_cr() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog fowner --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 ||
        { fail "cannot decode files.img: $(head -c 200 "$D/files.json")"; return 1; }
    python3 - "$D/files.json" "$PID" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
pid = int(sys.argv[2])
owners = []
for f in files:
    for k, v in f.items():
        if isinstance(v, dict) and "fown" in v and v["fown"]["pid"]:
            o = v["fown"]
            owners.append((k, o["pid_type"], o["pid"] == pid, o["signum"], o["uid"], o["euid"]))
kinds = sorted(o[0] for o in owners)
assert kinds == ["efd", "pipe", "pipe", "reg", "usk", "usk"], owners
assert ("reg", 0, False, 35, 0, 0) in owners, owners  # the helper thread
assert ("pipe", 1, True, 36, 0, 0) in owners and ("pipe", 2, True, 0, 0, 0) in owners, owners
assert ("usk", 1, True, 37, 0, 0) in owners and ("usk", 2, True, 0, 0, 0) in owners, owners
assert ("efd", 0, True, 38, 1000, 65534) in owners, owners
PY
        { fail "files.img: $(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# A read lease and a write lease (F_SETLEASE) across dump and restore with
# --file-locks: filelocks.img has them as CRIU's FL_LEASE entries, the
# program reads them back with F_GETLEASE; an outside open for writing of
# the read-leased file is then held off (it breaks the lease).
t_leases_cr() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog fowner --dir "$D/files" --leases 1 || return 1
    do_dump "$D/img" --file-locks || return 1
    "$CRUST" image decode -i "$D/img/filelocks.img" >"$D/locks.json" 2>&1 ||
        { fail "cannot decode filelocks.img: $(head -c 200 "$D/locks.json")"; return 1; }
    python3 - "$D/locks.json" "$PID" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
e = json.load(open(sys.argv[1]))["entries"]
got = sorted((x["flag"], x["type"], x["pid"], x["fd"]) for x in e)
pid = int(sys.argv[2])
assert got == [(32, 0, pid, 10), (32, 1, pid, 11)], got
PY
        { fail "filelocks.img: $(tail -n 1 "$D/check.out")"; return 1; }
    do_restore "$D/img" "" --file-locks || return 1
    expect_pass "$D/img/restore.log"
}

# A lease on a file opened elsewhere too: the restore of the lease is
# refused (the write lease cannot be taken again), naming the lease.
t_err_restore_lease_open() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog fowner --dir "$D/files" --leases 1 || return 1
    do_dump "$D/img" --file-locks || return 1
    local holder rc
    sleep 30 <"$D/files/wlease" >/dev/null 2>&1 &
    holder=$!
    track "$holder" "$(readlink -f "$(command -v sleep)")"
    restore_fails_naming "$D/img" "$PID" 'lease' 1 --file-locks
    rc=$?
    kill "$holder" 2>/dev/null
    return $rc
}

ALL_TESTS+=(fown-cr leases-cr err-restore-lease-open)

# A file deleted from the name it was opened by but still linked elsewhere:
# refused without --link-remap (naming it); with it, linked back as
# link_remap.N for the restore, which reopens it (the same file as the
# other name) and removes the link.
t_link_remap() {
    need_cr || return $?
    mkdir -p "$D/files"
    start_prog files2 --mode linked --dir "$D/files" || return 1
    mkdir -p "$D/img0"
    crust_run dump0 dump -t "$PID" -D "$D/img0" -v4 -o dump.log
    [ $RC -ne 0 ] && grep -q -- "--link-remap" "$D/dump0.err" ||
        { fail "without --link-remap: rc $RC, $(head -c 300 "$D/dump0.err")"; return 1; }
    [ -e "/proc/$PID" ] || { fail "the tree is gone after a refused dump"; return 1; }
    do_dump "$D/img" --link-remap || return 1
    ls "$D/files" | grep -q '^link_remap\.' || { fail "no link_remap file after the dump" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(link-remap)

# pidfds (pidfd_open): on the process's child (two descriptions, one of
# them PIDFD_NONBLOCK, and a dup), on itself, and on a child already
# reaped. After restore they name the same processes, keep their flags and
# sharing, and a signal and waitid(P_PIDFD) through one reach the child.
t_pidfd_cr() {
    need_cr || return $?
    start_prog pidfds || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

t_pidfd_plain() {
    start_prog pidfds || return 1
    expect_pass
}

# files.img holds PIDFD entries as CRIU 4.2 writes them: the tree's pid in
# nspid (-1 for the reaped child), the flags without the access mode.
t_pidfd_images() {
    need_cr || return $?
    start_prog pidfds || return 1
    local child
    child=$(cat "/proc/$PID/task/$PID/children" | tr -d ' ')
    do_dump "$D/img" || return 1
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 ||
        { fail "cannot decode files.img: $(head -c 200 "$D/files.json")"; return 1; }
    python3 - "$D/files.json" "$PID" "$child" >"$D/check.out" 2>&1 <<'PYEOF' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
me, child = int(sys.argv[2]), int(sys.argv[3])
num = lambda v: int(str(v), 0)
p = sorted((num(f["pidfd"]["nspid"]), num(f["pidfd"]["flags"])) for f in files if f["type"] == "PIDFD")
assert p == sorted([(child, 0), (child, 0o4000), (me, 0), (-1, 0)]), "pidfds %s" % p
PYEOF
        { fail "files.img: $(tail -c 300 "$D/check.out")"; return 1; }
    kill -9 "$PID" 2>/dev/null
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(pidfd-cr pidfd-plain pidfd-images)
