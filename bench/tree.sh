#!/usr/bin/env bash
# Dump and restore a tree of N processes and a process with M threads;
# print the times.
#
#   bench/tree.sh [N processes, default 100] [M threads, default 200]
#
# Needs root and `cargo build --release --workspace`. Runs under
# tests/e2e/reaper (a child subreaper) so killed tasks are reaped at once.
# Kills every process it starts and removes its files.
set -euo pipefail

N=${1:-100}
M=${2:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
CRUST=${CRUST_BIN:-$BIN/crust}
if [ -z "${BENCH_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export BENCH_UNDER_REAPER=1
    exec /usr/bin/python3 "$ROOT/tests/e2e/reaper" bash "$0" "$@"
fi
for b in "$CRUST" "$BIN/forest" "$BIN/mthreads"; do
    [[ -x $b ]] || { echo "missing $b: run cargo build --release --workspace" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/crust-bench-tree.XXXXXX)
ROOTS=()
kill_all() {
    local r p
    for r in "${ROOTS[@]}"; do
        for p in $(pgrep -f -- "--ready $WORK/" || true); do kill -KILL "$p" 2>/dev/null || true; done
        kill -KILL "$r" 2>/dev/null || true
    done
}
trap 'kill_all; rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
wait_file() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

# bench NAME PROG ARGS...: start, dump, restore, check; print one line.
bench() {
    local name=$1 prog=$2 d pid t0 t1 t2 res
    shift 2
    d=$WORK/$name
    mkdir -p "$d/img"
    pid=$(setsid "$BIN/$prog" --ready "$d/ready" --result "$d/result" "$@" </dev/null >/dev/null 2>&1 & echo $!)
    ROOTS+=("$pid")
    wait_file "$d/ready" 60 || { echo "$name: not ready" >&2; return 1; }
    sleep 0.5
    t0=$(now)
    "$CRUST" dump -t "$pid" -D "$d/img" -o dump.log -v2
    t1=$(now)
    for _ in $(seq 100); do [[ -e /proc/$pid ]] || break; sleep 0.02; done
    t2=$(now)
    "$CRUST" restore -D "$d/img" -d -o restore.log -v2
    t3=$(now)
    kill -TERM "$pid"
    wait_file "$d/result" 60 || true
    res=$(cat "$d/result" 2>/dev/null || echo "no result")
    printf '%-28s dump %7.3f s   restore %7.3f s   images %6s   check %s\n' \
        "$name" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(du -sh "$d/img" | cut -f1)" "$res"
}

bench "tree of $N processes" forest --n "$N"
bench "process with $M threads" mthreads --threads "$M"
