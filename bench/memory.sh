#!/usr/bin/env bash
# Time and peak RSS of dump and restore as the work grows: trees of 100,
# 300 and 1,000 processes, and one process with 1k, 10k and 30k VMAs.
# With CRIU_BIN set, CRIU does the same side by side and the ratios
# crust/CRIU are printed.
#
#   bench/memory.sh                         (crust only)
#   CRIU_BIN=/var/cache/criu-4.2/criu/criu bench/memory.sh
#   PROCS="100 300" VMAS="1000" bench/memory.sh    (fewer cases)
#
# Needs root, GNU time (/usr/bin/time) and `cargo build --release -p crust
# -p crust-testprogs`. Runs under tests/e2e/reaper (a child subreaper) so
# killed tasks are reaped at once. Kills every process it starts and
# removes its files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
CRUST=${CRUST:-$BIN/crust}
CRIU=${CRIU_BIN:-}
PROCS=${PROCS-100 300 1000}
VMAS=${VMAS-1000 10000 30000}
if [ -z "${BENCH_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export BENCH_UNDER_REAPER=1
    exec /usr/bin/python3 "$ROOT/tests/e2e/reaper" bash "$0" "$@"
fi
for b in "$CRUST" "$BIN/forest" "$BIN/manyvmas" /usr/bin/time ${CRIU:+"$CRIU"}; do
    [[ -x $b ]] || { echo "missing $b (cargo build --release -p crust -p crust-testprogs; GNU time)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/crust-bench-memory.XXXXXX)
# ROOTS, descendants, kill_all.
. "$ROOT/bench/lib.sh"
trap 'kill_all; rm -rf "$WORK"' EXIT

wait_file() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

# measure OUT CMD...: run CMD under GNU time; OUT gets "seconds KiB".
measure() {
    local out=$1
    shift
    /usr/bin/time -o "$out" -f '%e %M' "$@" >/dev/null 2>"$out.err" ||
        { echo "failed: $* ($(head -c 300 "$out.err"))" >&2; return 1; }
}

# run TOOL NAME PROG ARGS...: start PROG, dump and restore it with TOOL
# (crust or criu), check it; sets R_DUMP, R_RESTORE ("s KiB") and R_CHECK.
run() {
    local tool=$1 name=$2 prog=$3 d pid bin
    shift 3
    d=$WORK/$tool-$name
    bin=$CRUST
    [ "$tool" = criu ] && bin=$CRIU
    mkdir -p "$d/img"
    pid=$(setsid "$BIN/$prog" --ready "$d/ready" --result "$d/result" "$@" </dev/null >/dev/null 2>&1 & echo $!)
    ROOTS+=("$pid")
    R_DUMP="- -" R_RESTORE="- -" R_CHECK="not ready"
    wait_file "$d/ready" 120 || return 0
    sleep 0.5
    R_CHECK="dump failed"
    measure "$d/dump.t" "$bin" dump -t "$pid" -D "$d/img" -o dump.log -v1 || return 0
    R_DUMP=$(cat "$d/dump.t")
    for _ in $(seq 200); do [[ -e /proc/$pid ]] || break; sleep 0.02; done
    R_CHECK="restore failed"
    measure "$d/restore.t" "$bin" restore -D "$d/img" -d -o restore.log -v1 || return 0
    R_RESTORE=$(cat "$d/restore.t")
    kill -TERM "$pid"
    wait_file "$d/result" 120 || true
    R_CHECK=$(cat "$d/result" 2>/dev/null || echo "no result")
    rm -rf "$d/img"
}

mib() { awk -v k="$1" 'BEGIN { if (k == "-") print "-"; else printf "%.1f", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

printf '%-18s %-6s %9s %10s %11s %12s  %s\n' case tool "dump s" "dump MiB" "restore s" "restore MiB" check
line() { # CASE TOOL
    local ds dk rs rk
    read -r ds dk <<<"$R_DUMP"
    read -r rs rk <<<"$R_RESTORE"
    printf '%-18s %-6s %9s %10s %11s %12s  %s\n' "$1" "$2" "$ds" "$(mib "$dk")" "$rs" "$(mib "$rk")" "$R_CHECK"
    eval "V_$2=\"$ds $dk $rs $rk\""
}
bench() { # CASE PROG ARGS...
    local c=$1 a b
    shift
    run crust "${c// /-}" "$@"
    line "$c" crust
    [ -n "$CRIU" ] || return 0
    run criu "${c// /-}" "$@"
    line "$c" criu
    read -r -a a <<<"$V_crust"
    read -r -a b <<<"$V_criu"
    printf '%-18s %-6s %9s %10s %11s %12s\n' "$c" ratio "$(ratio "${a[0]}" "${b[0]}")" "$(ratio "${a[1]}" "${b[1]}")" \
        "$(ratio "${a[2]}" "${b[2]}")" "$(ratio "${a[3]}" "${b[3]}")"
}

for n in $PROCS; do bench "$n processes" forest --n "$n"; done
for n in $VMAS; do bench "$n VMAs" manyvmas --n "$n"; done
