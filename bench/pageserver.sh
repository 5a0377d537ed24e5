#!/usr/bin/env bash
# Page-server throughput over loopback TCP: `dump --page-server` of one
# process with MB MiB of memory (default 1024) to crust's page server, and
# with CRIU_BIN set also to CRIU 4.2's page server (crust's dump both
# times) and CRIU's dump to CRIU's server. Prints the dump's wall time and
# GB/s (bytes of pages-*.img the server wrote / dump time). Goal: >= 2.5.
#
#   bench/pageserver.sh
#   MB=256 CRIU_BIN=/var/cache/criu-4.2/criu/criu bench/pageserver.sh
#
# Needs root and `cargo build --release -p crust -p crust-testprogs`. Runs
# under tests/e2e/reaper; takes /tmp/crust-e2e.lock around each dump;
# kills what it starts and removes its files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
CRUST=${CRUST:-$BIN/crust}
CRIU=${CRIU_BIN:-}
MB=${MB:-1024}
if [ -z "${BENCH_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export BENCH_UNDER_REAPER=1
    exec /usr/bin/python3 "$ROOT/tests/e2e/reaper" bash "$0" "$@"
fi
for b in "$CRUST" "$BIN/bigmem" ${CRIU:+"$CRIU"}; do
    [[ -x $b ]] || { echo "missing $b (cargo build --release -p crust -p crust-testprogs)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/crust-bench-ps.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# one SERVER_TOOL CLIENT_TOOL LABEL
one() {
    local srv=$1 cli=$2 label=$3 port sp pid t0 t1 bytes d=$WORK/$3
    mkdir -p "$d/src" "$d/dst"
    port=$((20000 + RANDOM % 20000))
    (cd "$d" && exec "$srv" page-server -D "$d/dst" --address 127.0.0.1 --port "$port" -o "$d/ps.log") &
    sp=$!
    PIDS+=("$sp")
    for _ in $(seq 50); do ss -ltnH "sport = :$port" | grep -q . && break; sleep 0.1; done
    pid=$(setsid "$BIN/bigmem" --ready "$d/ready" --result "$d/result" --mb "$MB" </dev/null >/dev/null 2>&1 & echo $!)
    PIDS+=("$pid")
    for _ in $(seq 600); do [ -e "$d/ready" ] && break; sleep 0.1; done
    exec 9>/tmp/crust-e2e.lock
    flock 9
    t0=$(date +%s%N)
    (cd "$d" && "$cli" dump -t "$pid" -D "$d/src" -o "$d/dump.log" --page-server --address 127.0.0.1 --port "$port") ||
        { echo "$label: dump failed (see $d)"; flock -u 9; return 1; }
    t1=$(date +%s%N)
    flock -u 9
    wait "$sp" || echo "$label: page server exited non-zero"
    bytes=$(cat "$d"/dst/pages-*.img | wc -c)
    awk -v l="$label" -v b="$bytes" -v ns=$((t1 - t0)) \
        'BEGIN { printf "%-28s %6.0f MiB in %7.1f ms: %5.2f GB/s\n", l, b / 1048576, ns / 1e6, b / ns }'
    rm -rf "$d"
}

echo "page server over loopback, one process of $MB MiB (dump wall time, freeze included)"
one "$CRUST" "$CRUST" "crust -> crust server"
if [ -n "$CRIU" ]; then
    one "$CRIU" "$CRUST" "crust -> CRIU server"
    one "$CRIU" "$CRIU" "CRIU -> CRIU server"
fi
