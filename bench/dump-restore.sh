#!/usr/bin/env bash
# Dump and restore a process holding N GiB of random memory; print timings.
#
#   bench/dump-restore.sh [GiB]          (default 1; fractions like 0.25 work)
#   CRIU_BIN=/usr/local/sbin/criu bench/dump-restore.sh 2   (also run CRIU)
#
# Needs root and `cargo build --release --workspace` (target/release/crust and
# target/release/bigmem). Kills every process it starts and removes its files.
set -euo pipefail

GIB=${1:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
BIGMEM=${BIGMEM_BIN:-$ROOT/target/release/bigmem}
MB=$(awk -v g="$GIB" 'BEGIN { m = int(g * 1024); if (m < 1) m = 1; print m }')

for b in "$CRUST" "$BIGMEM"; do
    [[ -x $b ]] || { echo "missing $b: run cargo build --release --workspace" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/crust-bench.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
# seconds between two `now` stamps, 3 decimals
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# GB/s for MB megabytes in S seconds
rate() { awk -v mb="$MB" -v s="$1" 'BEGIN { if (s > 0) printf "%.2f", mb / 1024 / s; else print "-" }'; }

wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.1
    done
    return 1
}

# run_one NAME BINARY: one start/dump/restore/verify cycle; prints one block.
run_one() {
    local name=$1 bin=$2
    local dir=$WORK/$name img=$WORK/$name/img
    mkdir -p "$img"

    # Started from a subshell, so it is no job of ours (no "Killed" notes) and
    # whoever reaps orphans reaps it once the dump kills it.
    local pid
    pid=$(setsid "$BIGMEM" --mb "$MB" --ready "$dir/ready" --result "$dir/result" \
        </dev/null >"$dir/bigmem.out" 2>&1 & echo $!)
    PIDS+=("$pid")
    if ! wait_file "$dir/ready" 600; then
        echo "$name: bigmem did not get ready" >&2
        return 1
    fi

    local t0 t1 t2
    t0=$(now)
    if ! "$bin" dump -t "$pid" -D "$img" -o dump.log -v2 --display-stats >"$dir/stats" 2>"$dir/dump.err"; then
        echo "$name: dump failed: $(cat "$dir/dump.err"; grep -h Error "$img/dump.log" 2>/dev/null | tail -n 3)" >&2
        return 1
    fi
    t1=$(now)
    local frozen_us
    frozen_us=$(awk '/^Frozen time:/ { print $3 }' "$dir/stats")
    local bytes
    bytes=$(du -sb "$img" | awk '{ print $1 }')

    if ! "$bin" restore -D "$img" -d --pidfile "$dir/restored.pid" -o restore.log -v2 \
        >"$dir/restore.out" 2>"$dir/restore.err"; then
        echo "$name: restore failed: $(cat "$dir/restore.err"; grep -h Error "$img/restore.log" 2>/dev/null | tail -n 3)" >&2
        return 1
    fi
    t2=$(now)
    local rpid
    rpid=$(cat "$dir/restored.pid")
    PIDS+=("$rpid")

    # Ask the restored bigmem to check every byte, and wait for its verdict.
    kill -TERM "$rpid"
    local verdict="no verdict"
    if wait_file "$dir/result" 600; then
        verdict=$(head -n 1 "$dir/result")
    fi

    local dump_s restore_s
    dump_s=$(secs "$t0" "$t1")
    restore_s=$(secs "$t1" "$t2")
    printf '%s (%s MiB):\n' "$name" "$MB"
    printf '  dump        %8s s  %6s GB/s\n' "$dump_s" "$(rate "$dump_s")"
    printf '  frozen      %8s s\n' "$(awk -v u="${frozen_us:-0}" 'BEGIN { printf "%.3f", u / 1e6 }')"
    printf '  restore     %8s s  %6s GB/s\n' "$restore_s" "$(rate "$restore_s")"
    printf '  images      %8s bytes (%s MiB)\n' "$bytes" "$((bytes >> 20))"
    printf '  memory check after restore: %s\n' "$verdict"
    [[ $verdict == PASS ]]
}

rc=0
run_one crust "$CRUST" || rc=1
if [[ -n ${CRIU_BIN:-} ]]; then
    run_one criu "$CRIU_BIN" || rc=1
fi
exit $rc
