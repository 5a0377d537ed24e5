# podman 4.3 with crust installed as `criu` (issue 14): podman finds criu
# on its PATH (go-criu's version check over `criu swrk`), and so does the
# runc it runs (checkpoint directly, restore under conmon). Each test has
# a podman of its own in /tmp/crust-pm.XXXXXX: --root, --runroot, --tmpdir, a
# containers.conf (file locks, the event log and the network config there),
# a busybox image imported from a tarball of busybox-static (no image
# pull), containers under a cgroup parent of the test's own. Cleanup, pass
# or fail: containers removed, mounts under that dir unmounted, cgroups
# removed, what podman made outside (/var/lib/containers/cache,
# /run/containers/networks) removed when the test made it. Sourced by
# run.sh: uses its helpers and adds to ALL_TESTS.

PM_IMAGE=localhost/crust-e2e-busybox:1
# No CAP_SYS_RESOURCE here: podman's default rlimits (nofile 1048576) are
# above the hard limits and runc could not set them.
pm_lim() { local h=$1; [ "$h" = unlimited ] || [ "$h" -gt "$2" ] && h=$2; echo "$h"; }
PM_NOFILE=$(pm_lim "$(ulimit -Hn)" 1024)
PM_NPROC=$(pm_lim "$(ulimit -Hu)" 4096)
PM_ULIMITS=(--ulimit "nofile=$PM_NOFILE:$PM_NOFILE" --ulimit "nproc=$PM_NPROC:$PM_NPROC")
# overlay where the kernel has it, else vfs (slower, same results).
PM_DRIVER=vfs
grep -qw overlay /proc/filesystems 2>/dev/null && PM_DRIVER=overlay
# A counter that is never seen half written.
PM_COUNTER='i=0; while :; do i=$((i+1)); echo $i >/tmp/c.new; mv /tmp/c.new /tmp/count; sleep 0.1; done'

# pm ARGS...: this test's podman, with crust first on its PATH as `criu`.
pm() {
    CONTAINERS_CONF=$PM/containers.conf PATH=$PM/bin:$PATH timeout -k 5 120 podman \
        --root "$PM/root" --runroot "$PM/runroot" --tmpdir "$PM/tmp" --storage-driver "$PM_DRIVER" \
        --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}

# The podman of this test, its image, and the `criu` it finds: crust.
pm_setup() {
    need_cr || return $?
    local p ver
    for p in podman runc conmon; do
        command -v "$p" >/dev/null || { fail "$p is not installed (apt-get install podman runc conmon)"; return 1; }
    done
    [ -x /bin/busybox ] || { fail "busybox-static is not installed (apt-get install busybox-static)"; return 1; }
    # Short: podman refuses a runroot path over 50 characters.
    PM=$(mktemp -d /tmp/crust-pm.XXXXXX) || { fail "cannot make a temp dir"; return 1; }
    PM_CG=crust-e2e-pm-$$-$T
    PM_MADE=()
    [ -e /var/lib/containers ] || PM_MADE+=(/var/lib/containers)
    [ -e /var/lib/containers/cache ] || PM_MADE+=(/var/lib/containers/cache)
    [ -e /run/containers ] || PM_MADE+=(/run/containers)
    [ -e /run/containers/networks ] || PM_MADE+=(/run/containers/networks)
    mkdir -p "$PM/bin" "$PM/rootfs/bin" "$PM/rootfs/tmp" "$PM/rootfs/proc" "$PM/rootfs/sys" \
        "$PM/rootfs/dev" "$PM/rootfs/etc" || { fail "cannot make $PM"; return 1; }
    ln -s "$CRUST" "$PM/bin/criu"
    cat >"$PM/containers.conf" <<EOF
[engine]
lock_type = "file"
events_logger = "file"
events_logfile_path = "$PM/events.log"
tmp_dir = "$PM/tmp"
volume_path = "$PM/volumes"
static_dir = "$PM/root/libpod"
[network]
network_config_dir = "$PM/networks"
EOF
    cp /bin/busybox "$PM/rootfs/bin/" || { fail "cannot copy busybox"; return 1; }
    for p in sh sleep cat echo mv nc; do ln -s busybox "$PM/rootfs/bin/$p"; done
    tar -C "$PM/rootfs" -cf "$PM/rootfs.tar" . || { fail "cannot make the rootfs tarball"; return 1; }
    pm import "$PM/rootfs.tar" "$PM_IMAGE" >"$D/import.out" 2>&1 ||
        { fail "podman import: $(tail -c 300 "$D/import.out")" "$D/import.out"; return 1; }
    # What podman runs as criu: the first on its PATH, and it says crust.
    p=$(PATH=$PM/bin:$PATH command -v criu)
    ver=$(PATH=$PM/bin:$PATH criu --version 2>&1)
    [ "$p" = "$PM/bin/criu" ] && grep -q crust <<<"$ver" ||
        { fail "the criu podman finds is ${p:-none}, its --version says: $ver"; return 1; }
}

# pm_run NAME ARGS...: start a container of the image, detached.
pm_run() {
    local name=$1
    shift
    pm run -d --name "$name" --cgroup-parent "/$PM_CG" "${PM_ULIMITS[@]}" "$@" >"$D/run-$name.out" 2>&1 ||
        { fail "podman run $name: $(tail -c 300 "$D/run-$name.out")" "$D/run-$name.out"; return 1; }
}

# pm_count NAME: the counter of container NAME (empty if unreadable).
pm_count() {
    pm exec "$1" cat /tmp/count 2>/dev/null
}

# pm_counting NAME MIN: the counter of NAME is at least MIN and goes on.
pm_counting() {
    local name=$1 min=$2 a b n
    a=$(pm_count "$name")
    for n in 1 2 3 4 5 6 7 8 9 10; do
        sleep 0.3
        b=$(pm_count "$name")
        [ -n "$a" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] && break
    done
    [ -n "$a" ] && [ "$a" -ge "$min" ] && [ -n "$b" ] && [ "$b" -gt "$a" ] ||
        { fail "the counter of $name does not go on from $min ('$a' then '$b')"; return 1; }
}

# pm_wait_count NAME MIN: wait until the counter of NAME reaches MIN; prints it.
pm_wait_count() {
    local c n
    for n in $(seq 50); do
        c=$(pm_count "$1")
        [ -n "$c" ] && [ "$c" -ge "$2" ] && { echo "$c"; return 0; }
        sleep 0.1
    done
    return 1
}

# pm_state NAME: podman's state of the container (running, exited...).
pm_state() {
    pm inspect "$1" --format '{{.State.Status}}' 2>/dev/null
}

# pm_crust_log NAME FILE WHAT: FILE in the container's userdata directory is
# crust's log of WHAT (its first line names crust and the RPC request).
pm_crust_log() {
    local dir
    dir=$(pm inspect "$1" --format '{{.StaticDir}}' 2>/dev/null)
    [ -n "$dir" ] && [ -f "$dir/$2" ] || { fail "no $2 of $1 in '${dir:-?}'"; return 1; }
    cp "$dir/$2" "$D/$1-$2"
    head -n 1 "$dir/$2" | grep -q "crust .*(RPC $3" ||
        { fail "$2 of $1 is not crust's $3 log: $(head -n 1 "$dir/$2")" "$D/$1-$2"; return 1; }
}

# pm_checkpoint NAME ARGS...: podman container checkpoint; output in $D/ckpt-NAME.out.
pm_checkpoint() {
    local name=$1
    shift
    pm container checkpoint "$@" "$name" >"$D/ckpt-$name.out" 2>&1 ||
        { fail "podman container checkpoint $*: $(pm_why "$name" dump.log "$D/ckpt-$name.out")" "$D/ckpt-$name.out"; return 1; }
}

# pm_why NAME LOG OUT: why an operation failed: the first error of crust's
# LOG in the container's directory, else the end of podman's output OUT.
pm_why() {
    local dir err
    dir=$(pm inspect "$1" --format '{{.StaticDir}}' 2>/dev/null)
    err=$(grep -m1 'Error' "${dir:-/nonexistent}/$2" 2>/dev/null)
    [ -n "$err" ] && cp "$dir/$2" "$D/$1-$2"
    echo "${err:-$(tail -c 300 "$3")}"
}

# pm_restore NAME ARGS...: podman container restore; output in $D/rst-NAME.out.
pm_restore() {
    local name=$1
    shift
    pm container restore "$@" >"$D/rst-$name.out" 2>&1 ||
        { fail "podman container restore $*: $(pm_why "$name" restore.log "$D/rst-$name.out")" "$D/rst-$name.out"; return 1; }
}

# Everything the test made, pass or fail.
pm_cleanup() {
    [ -n "${PM:-}" ] || return 0
    local m i d p
    [ -d "$PM/root" ] && pm rm -fa -t 0 >/dev/null 2>&1
    # Processes left in the test's cgroups (conmon, a container whose
    # removal failed) are the test's own.
    for i in 1 2 3 4 5 6 7 8 9 10; do
        p=$(cat /sys/fs/cgroup/pids/"$PM_CG"/cgroup.procs /sys/fs/cgroup/pids/"$PM_CG"/*/cgroup.procs 2>/dev/null)
        [ -z "$p" ] && break
        [ "$i" -gt 4 ] && kill -KILL $p 2>/dev/null
        sleep 0.2
    done
    for i in 1 2 3 4 5 6 7 8 9 10; do
        find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path "*/$PM_CG*" 2>/dev/null | sort -r |
            while read -r d; do rmdir "$d" 2>/dev/null; done
        [ -z "$(find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name "$PM_CG" 2>/dev/null)" ] && break
        sleep 0.2
    done
    # Storage mounts (overlay, the storage root's private bind), deepest first.
    awk -v p="$PM/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    for ((i = ${#PM_MADE[@]} - 1; i >= 0; i--)); do
        rm -rf "${PM_MADE[$i]}"
    done
    rm -rf "$PM"
    PM=
}

# checkpoint and restore in place (--keep keeps crust's logs in the
# container's directory): the counter goes on from where it was; podman's
# --print-stats reads crust's stats-dump and stats-restore from the work
# directory.
t_podman_checkpoint() {
    local rc
    podman_checkpoint
    rc=$?
    pm_cleanup
    return $rc
}

podman_checkpoint() {
    pm_setup || return $?
    local a st pid
    pm_run pc --network none "$PM_IMAGE" sh -c "$PM_COUNTER" || return 1
    a=$(pm_wait_count pc 5) || { fail "the container does not count"; return 1; }
    pm_checkpoint pc --keep --print-stats || return 1
    grep -q '"frozen_time"' "$D/ckpt-pc.out" ||
        { fail "podman's checkpoint statistics lack crust's: $(head -c 300 "$D/ckpt-pc.out")" "$D/ckpt-pc.out"; return 1; }
    st=$(pm_state pc)
    [ "$st" = exited ] || { fail "the checkpointed container is '$st', not exited"; return 1; }
    pm_crust_log pc dump.log Dump || return 1
    pm_restore pc --keep --print-stats pc || return 1
    grep -q '"pages_restored"' "$D/rst-pc.out" ||
        { fail "podman's restore statistics lack crust's: $(head -c 300 "$D/rst-pc.out")" "$D/rst-pc.out"; return 1; }
    pm_crust_log pc restore.log Restore || return 1
    # runc puts crust into the container's cgroups before the restore.
    pid=$(pm inspect pc --format '{{.State.Pid}}' 2>/dev/null)
    grep -q "^[0-9]*:pids:/$PM_CG/libpod-" "/proc/${pid:-0}/cgroup" 2>/dev/null ||
        { fail "the restored container (pid ${pid:-?}) is not in its cgroup: $(grep pids "/proc/${pid:-0}/cgroup" 2>&1)"; return 1; }
    pm_counting pc "$a"
}

# --export to a gzip archive (podman's own layout: checkpoint/, stats-dump,
# config), then --import under a new name (-n): the copy counts on.
t_podman_export() {
    local rc
    podman_export
    rc=$?
    pm_cleanup
    return $rc
}

podman_export() {
    pm_setup || return $?
    local a f
    pm_run px --network none "$PM_IMAGE" sh -c "$PM_COUNTER" || return 1
    a=$(pm_wait_count px 5) || { fail "the container does not count"; return 1; }
    pm_checkpoint px --keep --export "$D/px.tar.gz" --compress gzip || return 1
    pm_crust_log px dump.log Dump || return 1
    tar -tzf "$D/px.tar.gz" >"$D/px.list" 2>&1 || { fail "the export is not a gzip tar archive" "$D/px.list"; return 1; }
    for f in stats-dump checkpoint/inventory.img checkpoint/pstree.img config.dump; do
        grep -qx "$f" "$D/px.list" || { fail "the export lacks $f" "$D/px.list"; return 1; }
    done
    pm_restore px2 --keep --import "$D/px.tar.gz" -n px2 || return 1
    pm_crust_log px2 restore.log Restore || return 1
    pm_counting px2 "$a"
}

# --leave-running: the container counts on through the checkpoint; its
# export restored under a new name counts from the checkpoint's count.
t_podman_leave_running() {
    local rc
    podman_leave_running
    rc=$?
    pm_cleanup
    return $rc
}

podman_leave_running() {
    pm_setup || return $?
    local a st
    pm_run pl --network none "$PM_IMAGE" sh -c "$PM_COUNTER" || return 1
    a=$(pm_wait_count pl 5) || { fail "the container does not count"; return 1; }
    pm_checkpoint pl --keep --leave-running --export "$D/pl.tar.gz" --compress gzip || return 1
    pm_crust_log pl dump.log Dump || return 1
    st=$(pm_state pl)
    [ "$st" = running ] || { fail "the container left running is '$st'"; return 1; }
    pm_counting pl "$a" || return 1
    pm_restore pl2 --keep --import "$D/pl.tar.gz" -n pl2 || return 1
    pm_crust_log pl2 restore.log Restore || return 1
    pm_counting pl2 "$a" || return 1
    pm_counting pl "$a"
}

# --tcp-established: an echo server in a container on the host's network
# (with --network none nothing outside could connect; a netns of the
# container's own would need a bridge, NAT and port mapping) and a client
# on the host holding its connection through checkpoint and restore.
t_podman_tcp_established() {
    local rc
    podman_tcp_established
    rc=$?
    [ -n "${NET_P:-}" ] && net_unlock_port "$NET_P"
    pm_cleanup
    return $rc
}

podman_tcp_established() {
    pm_setup || return $?
    local cl st py_exe
    NET_P=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    pm_run pt --network host "$PM_IMAGE" nc -l -p "$NET_P" -e cat || return 1
    cat >"$D/client.py" <<'EOF'
import os, socket, sys, time
port, go, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        time.sleep(0.05)
s.settimeout(20)
s.sendall(b"one\n")
open(out + ".1", "w").write(s.recv(100).decode())
while not os.path.exists(go):
    time.sleep(0.05)
s.sendall(b"two\n")
open(out, "w").write(s.recv(100).decode())
EOF
    "$PY" "$D/client.py" "$NET_P" "$D/go" "$D/client.out" >"$D/client.err" 2>&1 &
    cl=$!
    py_exe=$(readlink -f "$PY")
    track "$cl" "$py_exe"
    wait_file "$D/client.out.1" 10 || { fail "the client got no echo before the checkpoint" "$D/client.err"; return 1; }
    pm_checkpoint pt --keep --tcp-established || return 1
    pm_crust_log pt dump.log Dump || return 1
    st=$(pm_state pt)
    [ "$st" = exited ] || { fail "the checkpointed container is '$st', not exited"; return 1; }
    [ -e "/proc/$cl" ] || { fail "the client is gone after the checkpoint" "$D/client.err"; return 1; }
    pm_restore pt --keep --tcp-established pt || return 1
    pm_crust_log pt restore.log Restore || return 1
    touch "$D/go"
    wait_file "$D/client.out" 20 || { fail "no echo through the restored connection" "$D/client.err"; return 1; }
    [ "$(cat "$D/client.out")" = two ] ||
        { fail "the restored server echoed '$(cat "$D/client.out")', not 'two'" "$D/client.err"; return 1; }
    net_no_rules_left
}

# `podman run --init`: podman's catatonit, bind-mounted as a file at
# /run/podman-init (an external mount for runc), is the container's pid 1
# and runs from that file. Before, the dump refused its own images: the
# file's path through the mount was looked up as `/run/podman-init/`
# (ENOTDIR).
t_podman_init() {
    local rc
    podman_init
    rc=$?
    pm_cleanup
    return $rc
}

podman_init() {
    pm_setup || return $?
    local a pid
    pm_run pi --init --network none "$PM_IMAGE" sh -c "$PM_COUNTER" || return 1
    a=$(pm_wait_count pi 5) || { fail "the container does not count"; return 1; }
    pm_checkpoint pi --keep || return 1
    pm_crust_log pi dump.log Dump || return 1
    pm_restore pi --keep pi || return 1
    pm_crust_log pi restore.log Restore || return 1
    pid=$(pm inspect pi --format '{{.State.Pid}}' 2>/dev/null)
    # The same file as podman's catatonit (through the bind mount).
    [ "$(stat -L -c %d:%i "/proc/${pid:-0}/exe" 2>/dev/null)" = "$(stat -L -c %d:%i /usr/libexec/podman/catatonit)" ] ||
        { fail "the restored container's init (pid ${pid:-?}) runs $(readlink "/proc/${pid:-0}/exe" 2>&1), not catatonit"; return 1; }
    pm_counting pi "$a"
}

# --network ns:PATH (a network namespace made by the test, as a user wires
# one): runc names it to criu as external (`--external
# net[INO]:extRootNetNS` at checkpoint, the netns as inherit_fd
# `extRootNetNS` at restore); the restored container is in that netns. The
# same path as podman's default bridge network. A known bug until crust
# takes external network namespaces (the runc helper's work).
t_podman_netns() {
    local rc
    PM_NS=crust-e2e-pm-$$
    podman_netns
    rc=$?
    ip netns del "$PM_NS" 2>/dev/null
    pm_cleanup
    return $rc
}

podman_netns() {
    pm_setup || return $?
    command -v ip >/dev/null || { fail "ip is not installed (apt-get install iproute2)"; return 1; }
    local a pid want got
    ip netns add "$PM_NS" || { fail "cannot add netns $PM_NS"; return 1; }
    ip -n "$PM_NS" link set lo up
    want=$(stat -L -c %i "/run/netns/$PM_NS")
    pm_run pn --network "ns:/run/netns/$PM_NS" "$PM_IMAGE" sh -c "$PM_COUNTER" || return 1
    a=$(pm_wait_count pn 5) || { fail "the container does not count"; return 1; }
    pm_checkpoint pn --keep || return 1
    pm_crust_log pn dump.log Dump || return 1
    pm_restore pn --keep pn || return 1
    pm_crust_log pn restore.log Restore || return 1
    pid=$(pm inspect pn --format '{{.State.Pid}}' 2>/dev/null)
    got=$(stat -L -c %i "/proc/${pid:-0}/ns/net" 2>/dev/null)
    [ -n "$got" ] && [ "$got" = "$want" ] ||
        { fail "the restored container's netns is ${got:-?}, not $PM_NS's ($want)"; return 1; }
    pm_counting pn "$a"
}

# crust's own (what podman needed): stats-dump goes into the work
# directory (-W), as CRIU writes it, not into the images directory.
t_dump_stats_workdir() {
    need_cr || return
    start_prog loop || return 1
    mkdir -p "$D/img" "$D/wd"
    crust_run dump dump -t "$PID" -D "$D/img" -W "$D/wd" -v4 -o dump.log
    [ $RC -eq 0 ] || { fail "dump -W exited with $RC: $(head -c 300 "$D/dump.err")" "$D/wd/dump.log"; return 1; }
    [ -e "$D/img/stats-dump" ] && { fail "stats-dump was written into the images directory" "$D/wd/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/wd/stats-dump" >"$D/stats.json" 2>"$D/stats.err" ||
        { fail "no stats-dump in the work directory: $(head -c 300 "$D/stats.err")" "$D/wd/dump.log"; return 1; }
    grep -q '"frozen_time"' "$D/stats.json" || { fail "stats-dump has no frozen_time" "$D/stats.json"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump" "$D/wd/dump.log"; return 1; }
    crust_run restore restore -D "$D/img" -W "$D/wd" -d -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore -W exited with $RC: $(head -c 300 "$D/restore.err")" "$D/wd/restore.log"; return 1; }
    [ -f "$D/wd/stats-restore" ] || { fail "no stats-restore in the work directory" "$D/wd/restore.log"; return 1; }
    expect_pass "$D/wd/restore.log"
}

# crust's own (what podman needed): an RPC dump whose options crust
# refuses (EBADRQC) says why in the log file the request names, the one
# runc and podman point their user at (before, the reason went only to
# crust's stderr, which they drop, and dump.log stayed empty).
t_rpc_refused_logged() {
    need_pycriu || return $?
    start_prog loop || return 1
    mkdir -p "$D/img"
    rpc_ok bad-options "$RPC_RAW" "$CRUST" bad-options "$PID" "$D/img" || return 1
    grep -q 'Error.*lsm-profile' "$D/img/dump.log" 2>/dev/null ||
        { fail "the refused option is not named in dump.log: $(head -c 300 "$D/img/dump.log" 2>&1)" "$D/img/dump.log"; return 1; }
    sleep 0.2
    running_untouched bad-options || return 1
    no_images "$D/img" bad-options || return 1
    expect_pass
}

ALL_TESTS+=(podman-checkpoint podman-export podman-leave-running podman-tcp-established podman-init
    dump-stats-workdir rpc-refused-logged podman-netns)
