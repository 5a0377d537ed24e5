# Docker 20.10 (Debian's docker.io 20.10.24, its containerd 1.6 and runc
# 1.1.5) with crust installed as `criu` (issue 14): `docker checkpoint
# create` / `docker start --checkpoint` of a busybox container imported
# from a tarball (busybox-static; no image pull). dockerd runs only for
# the test, experimental, all of its state in temp dirs (vfs storage, no
# bridge, no iptables, cgroups under a parent of its own), with crust
# first in its PATH as `criu`: containerd's runc shim runs runc, which runs
# `criu swrk`. Sourced by run.sh after lxc.sh (uses crust_as_criu_dir,
# crust_freezes_cgroups, crust_log_of).

DOCKER_CLI=/usr/bin/docker
DK_X=
DK_NS=
DK_PRE=()

# The client of the test's daemon; output in $D/NAME.out.
dk() {
    local name=$1
    shift
    DOCKER_HOST=unix://$DK_X/d.sock DOCKER_CONFIG=$D/dkcfg \
        timeout -k 5 "$CR_TIMEOUT" "$DOCKER_CLI" "$@" </dev/null >"$D/$name.out" 2>&1 ||
        { fail "docker $*: $(head -c 300 "$D/$name.out")" "$D/dockerd.log"; return 1; }
}

# dk_count: the container's count into $D/count.out, read again while the
# counter's file is empty (it is, for an instant, after each truncation).
dk_count() {
    local n
    for n in $(seq 20); do
        dk count exec crust-e2e cat /tmp/count || return 1
        grep -q '[0-9]' "$D/count.out" && return 0
        sleep 0.02
    done
}

t_docker() {
    local rc
    docker_round_trip
    rc=$?
    docker_cleanup
    return $rc
}

docker_round_trip() {
    need_cr || return $?
    command -v dockerd >/dev/null && command -v containerd >/dev/null && [ -x "$DOCKER_CLI" ] &&
        command -v runc >/dev/null && [ -x /bin/busybox ] ||
        { fail "docker.io, runc or busybox-static is not installed (apt-get install docker.io runc busybox-static)"; return 1; }
    local bin id r a b c n
    bin=$(crust_as_criu_dir) || { fail "criu --version through a symlink to crust does not say crust"; return 1; }
    # containerd pauses the container (freezer FROZEN) before it has runc
    # checkpoint it, and runc sends the freezer cgroup.
    crust_freezes_cgroups ||
        { skip "crust does not take --freeze-cgroup yet (containerd freezes the container before runc checkpoint)"; return 2; }
    docker_start "$bin" || return 1
    r=$D/rootfs
    mkdir -p "$r"/{bin,proc,sys,dev,tmp,etc}
    cp /bin/busybox "$r/bin/" && ln -s busybox "$r/bin/sh" && ln -s busybox "$r/bin/sleep" &&
        ln -s busybox "$r/bin/cat" && tar -C "$r" -cf "$D/rootfs.tar" . ||
        { fail "cannot build the root filesystem"; return 1; }
    dk import import "$D/rootfs.tar" crust-e2e-bb:1 || return 1
    dk run run -d --name crust-e2e --network none crust-e2e-bb:1 \
        /bin/sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done' || return 1
    id=$(cat "$D/run.out")
    # Counted for a second at least: a container started afresh rather
    # than restored would show a smaller count.
    for n in $(seq 50); do
        dk count exec crust-e2e cat /tmp/count && [ "$(cat "$D/count.out")" -ge 10 ] 2>/dev/null && break
        sleep 0.1
    done
    a=$(cat "$D/count.out")
    dk checkpoint checkpoint create crust-e2e ck1 || return 1
    dk inspect inspect -f '{{.State.Running}}' crust-e2e || return 1
    [ "$(cat "$D/inspect.out")" = false ] || { fail "the container still runs after docker checkpoint create" "$D/dockerd.log"; return 1; }
    if ! dk start start --checkpoint ck1 crust-e2e; then
        # Docker 20.10 uploads the checkpoint dir to containerd's content
        # store and fails when the same blob is still there from the
        # checkpoint ("commit failed: content sha256:...: already exists";
        # seen once in four runs): new mtimes make another blob.
        grep -q 'already exists' "$D/start.out" || return 1
        find "$D/docker/containers/$id/checkpoints/ck1" -exec touch -d '1 minute ago' {} + &&
            dk start start --checkpoint ck1 crust-e2e || return 1
    fi
    crust_log_of "$D/docker/containerd/daemon/io.containerd.runtime.v2.task/$DK_NS/$id/restore.log" restore || return 1
    sleep 0.3
    dk_count || return 1
    b=$(cat "$D/count.out")
    sleep 0.5
    dk_count || return 1
    c=$(cat "$D/count.out")
    [ "$b" -ge "$a" ] 2>/dev/null && [ "$c" -gt "$b" ] ||
        { fail "the restored container's count does not go on ($a before the checkpoint, then $b, $c)" "$D/dockerd.log"; return 1; }
}

# Start dockerd with BIN first in its PATH; wait until it answers.
docker_start() {
    local bin=$1 pid n
    DK_X=$(mktemp -d /tmp/crust-dk.XXXXXX) || { fail "cannot make a temp dir"; return 1; }
    DK_NS=crust-e2e-$$
    # What the daemon makes outside its dirs, removed after unless it was
    # there before.
    DK_PRE=()
    for n in /etc/docker/key.json /run/docker /run/containerd; do
        [ -e "$n" ] && DK_PRE+=("$n")
    done
    echo '{}' >"$D/daemon.json"
    mkdir -p "$D/docker" "$D/dkcfg"
    PATH=$bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin setsid dockerd \
        --experimental --config-file "$D/daemon.json" --storage-driver vfs \
        --iptables=false --ip-masq=false --bridge=none \
        --data-root "$D/docker" --exec-root "$DK_X/x" --pidfile "$DK_X/dockerd.pid" \
        -H "unix://$DK_X/d.sock" --cgroup-parent "$DK_NS" \
        --containerd-namespace "$DK_NS" --containerd-plugins-namespace "$DK_NS-p" \
        </dev/null >"$D/dockerd.log" 2>&1 &
    pid=$!
    track "$pid" "$(readlink -f "$(command -v dockerd)")"
    for n in $(seq 150); do
        DOCKER_HOST=unix://$DK_X/d.sock DOCKER_CONFIG=$D/dkcfg timeout 5 "$DOCKER_CLI" version \
            >/dev/null 2>&1 && return 0
        [ -e "/proc/$pid" ] || break
        sleep 0.1
    done
    fail "dockerd did not start: $(grep -m1 -i 'level=\(error\|fatal\)' "$D/dockerd.log" | head -c 300)" "$D/dockerd.log"
}

# Remove the container, stop the daemon (and its containerd and shims),
# and what they left outside the test's dir: mounts, cgroups, files.
docker_cleanup() {
    local pid p n m keep
    [ -n "$DK_X" ] || return 0
    if [ -S "$DK_X/d.sock" ]; then
        DOCKER_HOST=unix://$DK_X/d.sock DOCKER_CONFIG=$D/dkcfg timeout 30 "$DOCKER_CLI" rm -f crust-e2e \
            >/dev/null 2>&1
    fi
    pid=$(cat "$DK_X/dockerd.pid" 2>/dev/null)
    if [ -n "$pid" ] && [ "$(exe_of "$pid")" = "$(readlink -f "$(command -v dockerd)")" ]; then
        kill -TERM "$pid" 2>/dev/null
        wait_gone "$pid" 15 || kill -KILL "$pid" 2>/dev/null
    fi
    # containerd and the shims of the test's namespace.
    for p in /proc/[0-9]*; do
        { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null | grep -q -e "$DK_X/" -e "-namespace $DK_NS " &&
            kill -KILL "${p#/proc/}" 2>/dev/null
    done
    sleep 0.2
    for m in $(awk -v a="$DK_X/" -v b="$D/docker/" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' \
        /proc/self/mountinfo | sort -r); do
        umount -l "$m" 2>/dev/null
    done
    for p in /sys/fs/cgroup/*/"$DK_NS" /sys/fs/cgroup/"$DK_NS"; do
        [ -d "$p" ] || continue
        find "$p" -depth -mindepth 1 -type d -exec rmdir {} + 2>/dev/null
        rmdir "$p" 2>/dev/null
    done
    for n in /etc/docker/key.json /run/docker /run/containerd; do
        keep=0
        for p in "${DK_PRE[@]+"${DK_PRE[@]}"}"; do [ "$p" = "$n" ] && keep=1; done
        [ $keep = 1 ] || rm -rf "$n"
    done
    rm -rf "$DK_X"
    DK_X=
}

ALL_TESTS+=(docker)
