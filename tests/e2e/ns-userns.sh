# Tests of the tree's own user namespace (issue 13).
# Sourced by run.sh: uses its helpers (start_prog, crust_run, expect_pass,
# expect_error, fail, track...) and adds its tests to ALL_TESTS.
#
# The `userns` program (outer) clones the init of new user, pid, UTS and
# IPC namespaces (inner, the tree dumped) and writes its maps from outside.
# The inner drops to ids of the namespace: $D is made writable by all (and
# the run's directory above it searchable) so that it can write its ready
# and result files.

# Start `userns ARGS`; sets PID to the inner (the tree's root).
userns_start() {
    chmod o+x "$WORK"
    chmod 0777 "$D"
    start_prog userns "$@" || return 1
    local outer=$PID inner c
    inner=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$inner" ] || { fail "no inner process under userns $outer"; return 1; }
    track "$inner" "$BIN/userns"
    for c in $(cat /proc/"$inner"/task/*/children 2>/dev/null); do track "$c" "$BIN/userns"; done
    [ "$(readlink /proc/"$inner"/ns/user)" != "$(readlink /proc/self/ns/user)" ] ||
        { fail "the inner $inner is in crust's user namespace"; return 1; }
    PID=$inner
}

# Dump the inner, then restore it (a new pid namespace: the pidfile names
# the new root), with the options after $1 at both; sets PID to the
# restored root.
userns_cr() {
    local img=$1
    shift
    mkdir -p "$img"
    crust_run dump dump -t "$PID" -D "$img" -v4 -o dump.log "$@"
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump" "$img/dump.log"; return 1; }
    rm -f "$D/pidfile"
    crust_run restore restore -D "$img" -d --pidfile "$D/pidfile" -v4 -o restore.log "$@"
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/userns"
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/userns"; done
}

# The restored root's maps, setgroups and ids, seen from outside.
# $1: uid_map and gid_map, one line, as "first lower count"; $2: its uid
# outside.
userns_check_outside() {
    local want=$1 uid=$2 log=$3 f got
    [ "$(readlink /proc/"$PID"/ns/user)" != "$(readlink /proc/self/ns/user)" ] ||
        { fail "the restored tree is in crust's user namespace" "$log"; return 1; }
    for f in uid_map gid_map; do
        got=$(tr -s ' \n' ' ' </proc/"$PID"/$f | sed 's/^ //; s/ $//')
        [ "$got" = "$want" ] || { fail "restored $f is '$got', not '$want'" "$log"; return 1; }
    done
    got=$(cat /proc/"$PID"/setgroups)
    [ "$got" = allow ] || { fail "restored setgroups is '$got'" "$log"; return 1; }
    got=$(awk '/^Uid:/ {print $2}' /proc/"$PID"/status)
    [ "$got" = "$uid" ] || { fail "restored root's uid outside is $got, not $uid" "$log"; return 1; }
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status ||
        { fail "restored $PID is not pid 1 of a new pid namespace" "$log"; return 1; }
}

# Root inside is 100000 outside: userns-ID.img holds the maps, the core the
# credentials as seen inside (uid 0); the restored tree has the same maps,
# ids, groups, capabilities (bounding set without CAP_NET_RAW), host name
# and System V owner (checked by the program from inside).
t_userns_cr() {
    need_cr || return $?
    userns_start || return 1
    userns_cr "$D/img" || return 1
    local img
    img=$(cd "$D/img" && ls userns-*.img 2>/dev/null | head -1)
    [ -n "$img" ] || { fail "no userns-*.img written" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img/$img" | grep -q '"uid_map": \[{"first": 0, "lower_first": 100000, "count": 65536}\]' ||
        { fail "$img does not hold the uid map: $("$CRUST" image decode -i "$D/img/$img")" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img/core-1.img" | grep -q '"creds": {"uid": 0, "gid": 0, "euid": 0' ||
        { fail "core-1.img does not hold the credentials as seen inside" "$D/img/dump.log"; return 1; }
    userns_check_outside "0 100000 65536" 100000 "$D/img/restore.log" || return 1
    expect_pass "$D/img/restore.log"
}

# Only ids 1000..1009 mapped (root inside is not): the tasks run as 1000 and
# 1005 inside (200000 and 200005 outside) and come back so.
t_userns_nonroot_cr() {
    need_cr || return $?
    userns_start --map nonroot || return 1
    userns_cr "$D/img" || return 1
    userns_check_outside_nonroot || return 1
    expect_pass "$D/img/restore.log"
}

userns_check_outside_nonroot() {
    local log=$D/img/restore.log got
    got=$(tr -s ' \n' ' ' </proc/"$PID"/uid_map | sed 's/^ //; s/ $//')
    [ "$got" = "1000 200000 10" ] || { fail "restored uid_map is '$got'" "$log"; return 1; }
    got=$(tr -s ' \n' ' ' </proc/"$PID"/gid_map | sed 's/^ //; s/ $//')
    [ "$got" = "1000 300000 10" ] || { fail "restored gid_map is '$got'" "$log"; return 1; }
    got=$(awk '/^Uid:/ {print $2}' /proc/"$PID"/status)
    [ "$got" = 200000 ] || { fail "restored root's uid outside is $got, not 200000" "$log"; return 1; }
}

# One process alone in user, UTS and IPC namespaces (crust's pid
# namespace: crust makes it with its pid from outside): restored with its
# pid, maps, ids and the rest.
t_userns_single_cr() {
    need_cr || return $?
    userns_start --pidns 0 --child 0 || return 1
    local want=$PID got
    userns_cr "$D/img" || return 1
    [ "$PID" = "$want" ] || { fail "restored as $PID, not $want" "$D/img/restore.log"; return 1; }
    got=$(tr -s ' \n' ' ' </proc/"$PID"/uid_map | sed 's/^ //; s/ $//')
    [ "$got" = "0 100000 65536" ] || { fail "restored uid_map is '$got'" "$D/img/restore.log"; return 1; }
    [ "$(readlink /proc/"$PID"/ns/user)" != "$(readlink /proc/self/ns/user)" ] ||
        { fail "the restored process is in crust's user namespace" "$D/img/restore.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# A dump that must be refused, naming why ($1, a regex); the tree runs on.
userns_dump_must_fail() {
    local what=$1
    shift
    userns_start "$@" || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -qiE "$what" "$D/dump.err" ||
        { fail "the message does not say '$what': $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# setgroups denied in the namespace: CRIU 4.2's image cannot say so, and a
# restore would allow it: refused.
t_err_dump_userns_setgroups() { userns_dump_must_fail 'denies setgroups' --setgroups deny; }

# A user namespace without a pid namespace of its own, with a child: the
# child's pid could not be asked for from inside the namespace: refused.
t_err_dump_userns_nopidns() { userns_dump_must_fail 'pid namespace of its own' --pidns 0; }

# userns-ID.img edited to hold overlapping uid extents: the restore refuses
# it before making anything, naming the image; no namespace is left.
t_err_restore_userns_overlap() {
    need_cr || return $?
    userns_start || return 1
    local img=$D/img f before after
    mkdir -p "$img"
    crust_run dump dump -t "$PID" -D "$img" -v4 -o dump.log "$@"
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$img/dump.log"; return 1; }
    f=$(ls "$img"/userns-*.img | head -1)
    # One more uid extent: 5..14 inside, which 0..65535 already covers.
    python3 - "$f" <<'EOF' || { fail "cannot edit $f"; return 1; }
import struct, sys
p = sys.argv[1]
b = open(p, 'rb').read()
(n,) = struct.unpack('<I', b[8:12])
def varint(v):
    out = b''
    while True:
        c = v & 0x7f
        v >>= 7
        if v:
            out += bytes([c | 0x80])
        else:
            return out + bytes([c])
ext = b'\x08' + varint(5) + b'\x10' + varint(200000) + b'\x18' + varint(10)
msg = b[12:12 + n] + b'\x0a' + varint(len(ext)) + ext
open(p, 'wb').write(b[:8] + struct.pack('<I', len(msg)) + msg + b[12 + n:])
EOF
    before=$(lsns -n -t user 2>/dev/null | wc -l)
    crust_run restore restore -D "$img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    expect_error restore "$img/restore.log" || return 1
    grep -q "userns-.*overlap" "$D/restore.err" ||
        { fail "the message does not name the image and the overlap: $(head -c 300 "$D/restore.err")" "$img/restore.log"; return 1; }
    after=$(lsns -n -t user 2>/dev/null | wc -l)
    [ "$before" = "$after" ] || { fail "user namespaces before: $before, after: $after" "$img/restore.log"; return 1; }
    [ -s "$D/pidfile" ] && { fail "a pidfile was written" "$img/restore.log"; return 1; }
    return 0
}

ALL_TESTS+=(userns-cr userns-nonroot-cr userns-extra-cr userns-single-cr err-dump-userns-setgroups err-dump-userns-nopidns err-restore-userns-overlap)

# In the user namespace's own network namespace: an ICMP echo socket that
# net/ipv4/ping_group_range lets the namespace's root make (its gids are
# recorded as the namespace sees them, CRIU's form, and crust makes the
# socket as that root), a read lease on a file the namespace's root owns
# (taken with the task's fsuid the file's owner), shared hugetlb memory
# (whose map_files the task may not open: crust opens it and gives it).
t_userns_extra_cr() {
    need_cr || return $?
    hugetlb_need || { local rc=$?; hugetlb_put_back; return $rc; }
    userns_start --extra 1 || { hugetlb_put_back; return 1; }
    userns_cr "$D/img" --file-locks || { hugetlb_put_back; return 1; }
    local img
    img=$(cd "$D/img" && ls netns-*.img 2>/dev/null | head -1)
    "$CRUST" image decode -i "$D/img/$img" | grep -q '"sarg": "0\\t10"' ||
        { fail "$img does not hold ping_group_range as the namespace sees it" "$D/img/dump.log"; hugetlb_put_back; return 1; }
    expect_pass "$D/img/restore.log"
    local rc=$?
    hugetlb_put_back
    return $rc
}
