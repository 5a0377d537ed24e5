#!/usr/bin/env bash
# Compressed images (issue 16, `dump --compress`): one process with MB MiB
# (default 1024, `bigmem`) of compressible memory (`--mask 65535`: two
# random bytes of every 8) and of random memory, dumped plain, with
# --compress (lz4) and with --compress=zstd, then restored; ROUNDS rounds
# (default 3), medians. Prints per memory kind and mode: the pages files'
# size (MiB and % of plain), dump and restore throughput (GB/s of the
# process's memory: MB MiB + bigmem's 16 MiB sparse region's 4 MiB
# touched, over crust's own "dumped tree ... in N us" and "Restored ... in N us"), and the load.
# Each restored process checks its memory (checksums) at SIGTERM.
#
#   bench/compress.sh
#   MB=256 ROUNDS=5 bench/compress.sh
#
# Needs root and `cargo build --release -p crust -p crust-testprogs`.
# Runs under tests/e2e/reaper; kills what it starts and removes its files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
CRUST=${CRUST:-$BIN/crust}
MB=${MB:-1024}
ROUNDS=${ROUNDS:-3}
if [ -z "${BENCH_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export BENCH_UNDER_REAPER=1
    exec /usr/bin/python3 "$ROOT/tests/e2e/reaper" bash "$0" "$@"
fi
for b in "$CRUST" "$BIN/bigmem"; do
    [[ -x $b ]] || { echo "missing $b (cargo build --release -p crust -p crust-testprogs)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/crust-bench-compress.XXXXXX)
PID=
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

gone() {
    for _ in $(seq 200); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done
    echo "pid $1 still exists" >&2
    return 1
}

# The microseconds crust's log $1 gives for "$2 ... in N us".
us_of() { grep -o "$2.* in [0-9]* us" "$1" | tail -n1 | grep -o '[0-9]* us' | grep -o '[0-9]*'; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }

BYTES=$(((MB + 4) << 20))
# run KIND MASK MODE ARGS...: one round; appends "size dump_us restore_us"
# to $WORK/KIND-MODE.
run() {
    local kind=$1 mask=$2 mode=$3 img=$WORK/img
    shift 3
    rm -rf "$img" "$WORK/ready" "$WORK/result" "$WORK/pid"
    mkdir -p "$img"
    PID=$(setsid "$BIN/bigmem" --mb "$MB" --mask "$mask" --ready "$WORK/ready" --result "$WORK/result" </dev/null >/dev/null 2>&1 & echo $!)
    for _ in $(seq 600); do [ -e "$WORK/ready" ] && break; sleep 0.05; done
    [ -e "$WORK/ready" ] || { echo "bigmem did not start" >&2; exit 1; }
    "$CRUST" dump -t "$PID" -D "$img" -o dump.log -v4 "$@"
    gone "$PID"
    local size d r
    size=$(find "$img" -name 'pages-*.img' -o -name 'crust-zpages-*.img' | xargs cat | wc -c)
    d=$(us_of "$img/dump.log" "dumped tree")
    sync
    echo 1 >/proc/sys/vm/drop_caches 2>/dev/null || true
    "$CRUST" restore -D "$img" -d -o restore.log -v4 --pidfile "$WORK/pid"
    r=$(us_of "$img/restore.log" "Restored [0-9]* processes")
    PID=$(cat "$WORK/pid")
    kill -TERM "$PID"
    for _ in $(seq 600); do [ -s "$WORK/result" ] && break; sleep 0.05; done
    [ "$(cat "$WORK/result" 2>/dev/null)" = PASS ] ||
        { echo "$kind $mode: the restored process says: $(cat "$WORK/result" 2>/dev/null)" >&2; exit 1; }
    gone "$PID"
    PID=
    echo "$size $d $r" >>"$WORK/$kind-$mode"
}

echo "compressed images: $MB MiB bigmem, $ROUNDS rounds, medians; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-13s %-6s %10s %8s %10s %12s\n' memory mode "size MiB" "% plain" "dump GB/s" "restore GB/s"
for kind in compressible random; do
    mask=65535
    [ $kind = random ] && mask=18446744073709551615
    for ((i = 0; i < ROUNDS; i++)); do
        run $kind $mask plain
        run $kind $mask lz4 --compress
        run $kind $mask zstd --compress=zstd
    done
    plain=$(cut -d' ' -f1 "$WORK/$kind-plain" | median)
    for mode in plain lz4 zstd; do
        size=$(cut -d' ' -f1 "$WORK/$kind-$mode" | median)
        d=$(cut -d' ' -f2 "$WORK/$kind-$mode" | median)
        r=$(cut -d' ' -f3 "$WORK/$kind-$mode" | median)
        awk -v k=$kind -v m=$mode -v s="$size" -v p="$plain" -v d="$d" -v r="$r" -v b=$BYTES 'BEGIN {
            printf "%-13s %-6s %10.1f %8.0f %10.2f %12.2f\n", k, m, s / 1048576, 100 * s / p, b / d / 1000, b / r / 1000 }'
    done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
