#!/usr/bin/env bash
# Dump and restore time of issue 13's "container without a runtime" (the
# container-cr e2e test's): `unshare --fork --pid --mount --uts --ipc --net
# --mount-proc --time` running target/release/container pivoted into a
# small root filesystem, a veth to a host bridge with an address, a route
# and an iptables rule, a TCP client on the host connected to its echo
# server (--tcp-established). Prints ms, crust and CRIU 4.2 side by side
# (each tool restores its own images; CRIU has no POSIX queue image, so its
# container runs with --mq-may-vanish 1). crust's dump makes its images
# durable (fsync) before it kills the tree; CRIU does not: on a slow disk
# that is most of the difference (BENCH_IMG=/dev/shm puts the images on a
# tmpfs). BENCH_V=4 logs at -v4, BENCH_KEEP=1 keeps the work directory.
#
#   bench/container.sh [ROUNDS]      (default 3; the median is printed)
#
# CRIU is $CRIU_BIN, else what ../shared/criu/build.sh prints; without it
# only crust's column is filled. Needs root, ip, iptables, unshare and
# `cargo build --release -p crust -p crust-testprogs`. Kills every process
# it starts, removes its links and files.
set -euo pipefail

# The dumped init, killed by the dump, is reaped at once by a child
# subreaper (the restore would wait for its pid).
if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$(dirname "$0")/../tests/e2e/reaper" bash "$0" "$@"
fi

ROUNDS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
PROG=${CONTAINER_BIN:-$ROOT/target/release/container}
for b in "$CRUST" "$PROG"; do
    [[ -x $b ]] || { echo "missing $b: cargo build --release -p crust -p crust-testprogs" >&2; exit 1; }
done
CRIU=${CRIU_BIN:-}
if [[ -z $CRIU && -x $ROOT/../shared/criu/build.sh ]]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>/dev/null | tail -n 1) || CRIU=
fi

BR=crbc-br0 OUT=crbc-o0 IN=crbc-i0
WORK=$(mktemp -d /tmp/crust-bench-ctr.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    ip link del "$OUT" >/dev/null 2>&1 || true
    ip link del "$BR" >/dev/null 2>&1 || true
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$WORK" "${BENCH_IMG:-$WORK}/crust-bench-img"
}
trap cleanup EXIT

now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "-") }'; }
wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

# The root filesystem: the program, what it loads, its mount points.
R=$WORK/root
mkdir -p "$R"/{bin,dev,old,proc,tmp,data,bind,ro}
mknod -m 666 "$R/dev/null" c 1 3
cp "$PROG" "$R/bin/container"
echo data >"$R/data/data.txt"
for lib in $(ldd "$PROG" | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
done

ip link add "$BR" type bridge
ip addr add 10.81.0.1/24 dev "$BR"
ip link set "$BR" up

# Start the container and its client; sets PID.
start() {
    local u i
    rm -f "$R/ready" "$R/result"
    u=$(setsid unshare --fork --pid --mount --uts --ipc --net --mount-proc \
        --time --monotonic 864000 --boottime 1728000 \
        "$R/bin/container" --root "$R" --ready /ready --result /result "$@" \
        </dev/null >"$WORK/ctr.out" 2>&1 & echo $!)
    PIDS+=("$u")
    PID=
    for i in $(seq 100); do
        PID=$(cat /proc/"$u"/task/*/children 2>/dev/null | tr -s ' ' '\n' | head -1)
        [[ -n $PID ]] && break
        sleep 0.05
    done
    PIDS+=("$PID")
    wait_file "$R/ready" 20 || { echo "the container did not start: $(cat "$WORK/ctr.out")" >&2; exit 1; }
    ip link add "$OUT" type veth peer name "$IN" netns "/proc/$PID/ns/net"
    ip link set "$OUT" master "$BR" up
    nsenter -t "$PID" -n sh -c "ip link set lo up && ip addr add 10.81.0.2/24 dev $IN &&
        ip link set $IN up && ip route add 10.66.0.0/24 via 10.81.0.1 &&
        iptables -A INPUT -p tcp --dport 7778 -j REJECT"
    python3 -c '
import socket, sys, time
s = socket.create_connection(("10.81.0.2", 7777), timeout=5)
s.sendall(b"hello\n"); s.recv(6)
time.sleep(600)' </dev/null >/dev/null 2>&1 &
    CLIENT=$!
    disown "$CLIENT"
    PIDS+=("$CLIENT")
    sleep 0.3
}

# round TOOL: one dump and restore by TOOL; appends to D_TOOL and R_TOOL.
round() {
    local tool=$1 bin img=${BENCH_IMG:-$WORK}/crust-bench-img t0 t1 t1b t2 pid i
    bin=$CRUST
    [[ $tool == criu ]] && bin=$CRIU
    rm -rf "$img"
    mkdir -p "$img"
    if [[ $tool == criu ]]; then start --mq-may-vanish 1; else start; fi
    t0=$(now)
    "$bin" dump -t "$PID" -D "$img" -o dump.log -v"${BENCH_V:-2}" --tcp-established --external "veth[$IN]" \
        >"$WORK/dump.out" 2>&1 || { echo "$tool dump failed: $(grep -m3 Error "$img/dump.log")" >&2; exit 1; }
    t1=$(now)
    # The dead namespace's veth goes a moment later (kernel work, not the
    # tool's): wait for it outside the timing.
    for i in $(seq 100); do
        ip link show "$OUT" >/dev/null 2>&1 || break
        sleep 0.02
    done
    rm -f "$WORK/pid"
    t1b=$(now)
    "$bin" restore -D "$img" -d --pidfile "$WORK/pid" -o restore.log -v"${BENCH_V:-2}" --tcp-established \
        --root "$R" --external "veth[$IN]:$OUT@$BR" >"$WORK/restore.out" 2>&1 ||
        { echo "$tool restore failed: $(grep -m3 Error "$img/restore.log")" >&2; exit 1; }
    t2=$(now)
    pid=$(cat "$WORK/pid")
    PIDS+=("$pid")
    kill -TERM "$pid"
    wait_file "$R/result" 20 || { echo "$tool: no result from the restored container" >&2; exit 1; }
    [[ $(cat "$R/result") == PASS ]] || { echo "$tool: the container says $(cat "$R/result")" >&2; exit 1; }
    kill -KILL "$CLIENT" 2>/dev/null || true
    ip link del "$OUT" >/dev/null 2>&1 || true
    case $tool in
    crust) DC+=" $(ms "$t0" "$t1")" RC+=" $(ms "$t1b" "$t2")" ;;
    criu) DK+=" $(ms "$t0" "$t1")" RK+=" $(ms "$t1b" "$t2")" ;;
    esac
}

DC= RC= DK= RK=
for ((i = 0; i < ROUNDS; i++)); do
    round crust
    [[ -n $CRIU && -x $CRIU ]] && round criu
done

echo "container without a runtime (pid, mnt, uts, ipc, net, time namespaces; 2 processes; 1 TCP connection), median of $ROUNDS, images in $(df --output=fstype "${BENCH_IMG:-$WORK}" | tail -1)"
printf '  %-8s %8s %8s\n' "" crust "CRIU 4.2"
printf '  %-8s %8s %8s\n' dump "$(echo "$DC" | median) ms" "$(echo "$DK" | median) ms"
printf '  %-8s %8s %8s\n' restore "$(echo "$RC" | median) ms" "$(echo "$RK" | median) ms"
