#!/usr/bin/env bash
# Dump and restore a process holding N established TCP connections to an
# outside peer over loopback; print dump and restore times.
#
#   bench/tcp-conns.sh [N]                           (default 1000)
#   NETLOCK=nftables bench/tcp-conns.sh 1000         (--network-lock method)
#   CRIU_BIN=/usr/local/sbin/criu bench/tcp-conns.sh (also run CRIU)
#   LOG_LEVEL=4 KEEP_WORK=1 bench/tcp-conns.sh 100   (keep the images and
#                                                     -v4 logs to look at)
#
# The dumped process (tcpmany) is an echo server holding N connections; the
# peer (tcpmanypeer, not dumped) checks an echo on every connection before
# the dump and again after the restore. The dump locks the connections
# (iptables/nftables rules) and the restore unlocks them: the script prints
# how many lock rules there were at each step, and removes any left over.
#
# Needs root and `cargo build --release --workspace` (target/release/crust,
# tcpmany, tcpmanypeer). Kills every process it starts and removes its files.
set -euo pipefail

N=${1:-1000}
NETLOCK=${NETLOCK:-iptables}
LOG_LEVEL=${LOG_LEVEL:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
SERVER=${TCPMANY_BIN:-$ROOT/target/release/tcpmany}
PEER=${TCPMANYPEER_BIN:-$ROOT/target/release/tcpmanypeer}

for b in "$CRUST" "$SERVER" "$PEER"; do
    [[ -x $b ]] || { echo "missing $b: run cargo build --release --workspace" >&2; exit 1; }
done
# Both programs hold N sockets, and so does crust for a while.
ulimit -n "$(ulimit -Hn)"
if (( N + 64 > $(ulimit -n) )); then
    echo "$N connections need more fds than the limit of $(ulimit -n)" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/crust-bench.XXXXXX)
PIDS=()
PORTS=()
# crust's nftables lock tables (CRIU-crust-netlock, shared by older
# crusts, and CRIU-crust-netlock-<hash>, one per dump) and CRIU's
# (CRIU-<run id>).
lock_tables() { nft list tables inet 2>/dev/null | awk '$3 ~ /^CRIU-/ { print $3 }'; }
NFT_HAD_TABLES=$(lock_tables | tr '\n' ' ')

# Lock rules (iptables and ip6tables) that mention port $1.
lock_rules() {
    { iptables -w -S 2>/dev/null; ip6tables -w -S 2>/dev/null; } |
        grep -i -- '--mark 0xc114' | grep -E -- "--[sd]port $1( |$)" || true
}

cleanup() {
    local p line
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    # Lock rules a failed dump or restore left behind.
    for p in "${PORTS[@]}"; do
        while read -r line; do
            [[ -n $line ]] || continue
            # shellcheck disable=SC2086
            iptables -w ${line/#-A/-D} 2>/dev/null || ip6tables -w ${line/#-A/-D} 2>/dev/null || true
        done < <(lock_rules "$p")
    done
    for t in $(lock_tables); do
        [[ " $NFT_HAD_TABLES " == *" $t "* ]] || nft delete table inet "$t" 2>/dev/null || true
    done
    if [[ -n ${KEEP_WORK:-} ]]; then
        echo "images and logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }
# seconds between two `now` stamps, 3 decimals
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.1
    done
    return 1
}

# Lock rules or nftables set elements for port $1 now.
count_locks() {
    local n t
    n=$(lock_rules "$1" | wc -l)
    for t in $(lock_tables); do
        n=$((n + $(nft list table inet "$t" | grep -o -E "\. $1( |,|$)" | wc -l)))
    done
    echo "$n"
}

# run_one NAME BINARY: one start/dump/restore/check cycle; prints one block.
run_one() {
    local name=$1 bin=$2
    local dir=$WORK/$name img=$WORK/$name/img
    mkdir -p "$img"

    # Started from subshells, so they are no jobs of ours.
    local spid ppid port
    spid=$(setsid "$SERVER" --ready "$dir/server.ready" --result "$dir/server.result" \
        --port-file "$dir/port" --conns "$N" </dev/null >"$dir/server.out" 2>&1 & echo $!)
    PIDS+=("$spid")
    if ! wait_file "$dir/port" 30; then
        echo "$name: tcpmany did not bind: $(cat "$dir/server.out")" >&2
        return 1
    fi
    port=$(cat "$dir/port")
    PORTS+=("$port")
    ppid=$(setsid "$PEER" --ready "$dir/peer.ready" --result "$dir/peer.result" \
        --connect "127.0.0.1:$port" --conns "$N" </dev/null >"$dir/peer.out" 2>&1 & echo $!)
    PIDS+=("$ppid")
    if ! wait_file "$dir/server.ready" 120 || ! wait_file "$dir/peer.ready" 120; then
        echo "$name: not ready: $(cat "$dir/server.out" "$dir/peer.out" "$dir"/*.result 2>/dev/null)" >&2
        return 1
    fi

    local t0 t1 t2 t3
    t0=$(now)
    if ! "$bin" dump -t "$spid" -D "$img" -o dump.log -v"$LOG_LEVEL" --tcp-established \
        --network-lock "$NETLOCK" --display-stats >"$dir/stats" 2>"$dir/dump.err"; then
        echo "$name: dump failed: $(cat "$dir/dump.err"; grep -h Error "$img/dump.log" 2>/dev/null | tail -n 3)" >&2
        return 1
    fi
    t1=$(now)
    local frozen_us locked bytes
    frozen_us=$(awk '/^Frozen time:/ { print $3 }' "$dir/stats")
    locked=$(count_locks "$port")
    bytes=$(du -sb "$img" | awk '{ print $1 }')

    # The killed server is an orphan: the restore needs its pid, so let
    # whoever reaps orphans do it before the clock starts (crust waits for
    # a pid a zombie still holds, which is not restore time).
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -e /proc/$spid ]] || break
        sleep 0.05
    done
    t2=$(now)
    if ! "$bin" restore -D "$img" -d --tcp-established --pidfile "$dir/restored.pid" \
        -o restore.log -v"$LOG_LEVEL" >"$dir/restore.out" 2>"$dir/restore.err"; then
        echo "$name: restore failed: $(cat "$dir/restore.err"; grep -h Error "$img/restore.log" 2>/dev/null | tail -n 3)" >&2
        return 1
    fi
    t3=$(now)
    local rpid unlocked
    rpid=$(cat "$dir/restored.pid")
    PIDS+=("$rpid")
    unlocked=$(count_locks "$port")

    # The peer checks an echo on every connection.
    kill -TERM "$ppid"
    local verdict="no verdict" sverdict="no verdict"
    if wait_file "$dir/peer.result" 60; then
        verdict=$(head -n 1 "$dir/peer.result")
    fi
    kill -TERM "$rpid"
    if wait_file "$dir/server.result" 10; then
        sverdict=$(head -n 1 "$dir/server.result")
    fi

    local dump_s restore_s
    dump_s=$(secs "$t0" "$t1")
    restore_s=$(secs "$t2" "$t3")
    printf '%s (%s connections, --network-lock %s):\n' "$name" "$N" "$NETLOCK"
    printf '  dump        %8s s\n' "$dump_s"
    printf '  frozen      %8s s\n' "$(awk -v u="${frozen_us:-0}" 'BEGIN { printf "%.3f", u / 1e6 }')"
    printf '  restore     %8s s\n' "$restore_s"
    printf '  images      %8s bytes (%s KiB)\n' "$bytes" "$((bytes >> 10))"
    printf '  lock rules/elements: %s after the dump, %s after the restore\n' "$locked" "$unlocked"
    printf '  peer after restore: %s %s\n' "$verdict" "$(grep -h 'round trips' "$dir/peer.out" 2>/dev/null | sed 's/^tcpmanypeer: //')"
    printf '  restored server: %s\n' "$sverdict"
    [[ $verdict == PASS && $unlocked == 0 ]]
}

rc=0
run_one crust "$CRUST" || rc=1
if [[ -n ${CRIU_BIN:-} ]]; then
    run_one criu "$CRIU_BIN" || rc=1
fi
exit $rc
