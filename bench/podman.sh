#!/usr/bin/env bash
# podman 4.3 checkpoint and restore wall time of a busybox container (a
# shell counting into a file, --network none), with crust installed as
# `criu` vs CRIU 4.2 installed the same way: a PATH dir whose `criu` is a
# symlink to the tool; podman (go-criu's version check) and the runc it runs
# find it there. Times are of the whole `podman container checkpoint` and
# `podman container restore` commands (podman, runc, conmon and the tool).
# The podman is private, as in the e2e tests (tests/e2e/podman.sh): its
# root, runroot, tmpdir and containers.conf in a temp dir, the image
# imported from a tarball of busybox-static. Prints ms, crust and CRIU 4.2
# side by side.
#
#   bench/podman.sh [ROUNDS]      (default 5; the median is printed)
#
# CRIU is $CRIU_BIN, else what ../shared/criu/build.sh prints; without it
# only crust's column is filled. Needs root, podman, runc, conmon,
# busybox-static and `cargo build --release -p crust`. Removes its
# containers, mounts, cgroups and files.
set -euo pipefail

# conmon double-forks: a child subreaper reaps it.
if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$(dirname "$0")/../tests/e2e/reaper" bash "$0" "$@"
fi

ROUNDS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
[[ -x $CRUST ]] || { echo "missing $CRUST: cargo build --release -p crust" >&2; exit 1; }
for p in podman runc conmon; do
    command -v "$p" >/dev/null || { echo "$p is not installed" >&2; exit 1; }
done
[[ -x /bin/busybox ]] || { echo "busybox-static is not installed" >&2; exit 1; }
CRIU=${CRIU_BIN:-}
if [[ -z $CRIU && -x $ROOT/../shared/criu/build.sh ]]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>/dev/null | tail -n 1) || CRIU=
fi

WORK=$(mktemp -d /tmp/crust-bench-podman.XXXXXX)
CG=crust-bench-podman-$$
MADE=()
for d in /var/lib/containers /var/lib/containers/cache /run/containers /run/containers/networks; do
    [[ -e $d ]] || MADE+=("$d")
done
TOOL_BIN=$WORK/bin-crust

pm() {
    CONTAINERS_CONF=$WORK/containers.conf PATH=$TOOL_BIN:$PATH podman \
        --root "$WORK/root" --runroot "$WORK/runroot" --tmpdir "$WORK/tmp" --storage-driver overlay \
        --cgroup-manager cgroupfs --events-backend file --runtime runc "$@"
}

cleanup() {
    local i d m p
    set +e
    [[ -d $WORK/root ]] && pm rm -fa -t 0 >/dev/null 2>&1
    for i in $(seq 10); do
        p=$(cat /sys/fs/cgroup/pids/"$CG"/cgroup.procs /sys/fs/cgroup/pids/"$CG"/*/cgroup.procs 2>/dev/null)
        [[ -z $p ]] && break
        # shellcheck disable=SC2086
        ((i > 4)) && kill -KILL $p 2>/dev/null
        sleep 0.2
    done
    for i in $(seq 10); do
        find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path "*/$CG*" 2>/dev/null | sort -r |
            while read -r d; do rmdir "$d" 2>/dev/null; done
        [[ -z $(find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name "$CG" 2>/dev/null) ]] && break
        sleep 0.2
    done
    awk -v p="$WORK/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    for ((i = ${#MADE[@]} - 1; i >= 0; i--)); do rm -rf "${MADE[$i]}"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "-") }'; }

mkdir -p "$WORK"/{bin-crust,bin-criu} "$WORK"/rootfs/{bin,tmp,proc,sys,dev,etc}
ln -s "$CRUST" "$WORK/bin-crust/criu"
[[ -n $CRIU && -x $CRIU ]] && ln -s "$CRIU" "$WORK/bin-criu/criu"
cat >"$WORK/containers.conf" <<EOF
[engine]
lock_type = "file"
events_logger = "file"
events_logfile_path = "$WORK/events.log"
tmp_dir = "$WORK/tmp"
volume_path = "$WORK/volumes"
static_dir = "$WORK/root/libpod"
[network]
network_config_dir = "$WORK/networks"
EOF
cp /bin/busybox "$WORK/rootfs/bin/"
for p in sh sleep cat mv; do ln -s busybox "$WORK/rootfs/bin/$p"; done
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
pm import "$WORK/rootfs.tar" localhost/crust-bench-busybox:1 >/dev/null 2>&1

count() { pm exec "$1" cat /tmp/count 2>/dev/null || true; }

# round TOOL: one checkpoint and restore with TOOL as criu; appends to the
# tool's lists.
round() {
    local tool=$1 name=bench-$1-$2 t0 t1 t2 a b i
    TOOL_BIN=$WORK/bin-$tool
    pm run -d --name "$name" --cgroup-parent "/$CG" --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
        --network none localhost/crust-bench-busybox:1 sh -c \
        'i=0; while :; do i=$((i+1)); echo $i >/tmp/c.new; mv /tmp/c.new /tmp/count; sleep 0.1; done' >/dev/null
    for i in $(seq 50); do
        a=$(count "$name")
        [[ -n $a ]] && break
        sleep 0.1
    done
    t0=$(now)
    pm container checkpoint "$name" >"$WORK/ckpt.out" 2>&1 || { echo "$tool: checkpoint failed: $(cat "$WORK/ckpt.out")" >&2; exit 1; }
    t1=$(now)
    pm container restore "$name" >"$WORK/rst.out" 2>&1 || { echo "$tool: restore failed: $(cat "$WORK/rst.out")" >&2; exit 1; }
    t2=$(now)
    sleep 0.3
    b=$(count "$name")
    [[ -n $a && -n $b && $b -ge $a ]] || { echo "$tool: the restored container does not count on ('$a' then '$b')" >&2; exit 1; }
    pm rm -f -t 0 "$name" >/dev/null
    case $tool in
    crust) CC+=" $(ms "$t0" "$t1")" RC+=" $(ms "$t1" "$t2")" ;;
    criu) CK+=" $(ms "$t0" "$t1")" RK+=" $(ms "$t1" "$t2")" ;;
    esac
}

CC= RC= CK= RK=
for ((i = 0; i < ROUNDS; i++)); do
    round crust "$i"
    [[ -n $CRIU && -x $CRIU ]] && round criu "$i"
done

echo "podman $(podman --version | awk '{print $3}') with runc: busybox container (a shell counting), median of $ROUNDS"
printf '  %-11s %8s %8s\n' "" crust "CRIU 4.2"
printf '  %-11s %8s %8s\n' checkpoint "$(echo "$CC" | median) ms" "$(echo "$CK" | median) ms"
printf '  %-11s %8s %8s\n' restore "$(echo "$RC" | median) ms" "$(echo "$RK" | median) ms"
