#!/usr/bin/env bash
# Frozen time of `dump -R` (issue 15: a snapshot that barely pauses) for
# 256 MiB, 1 GiB and 4 GiB of written memory: crust copying pages before
# the freeze and storing only those written since ("crust"), crust's
# fallback snapshot (CRUST_PRECOPY=0: the pages write-protected while
# frozen and copied after the thaw, "snap"), crust copying while frozen
# (CRUST_SNAPSHOT=0, "frozen"), and CRIU 4.2.
#
#   bench/frozen.sh [ROUNDS] [SIZES_MB...]   (default 3 rounds; 256 1024 4096)
#
# The process: target/release/bigmem --mb N (N MiB of pseudo-random
# anonymous memory, plus 4 MiB touched every fourth page), idle during the
# dump. What is printed is each tool's own "Frozen time" of its
# `--display-stats` (stats-dump `frozen_time`: from the end of the freeze
# until the tree is let go), the median and the minimum of ROUNDS dumps,
# in ms; then crust's time until the copy ended ("total").
#
# CRIU is $CRIU_BIN, else /tmp/oracle/criu-shim (CRIU with a prlimit shim),
# else what ../shared/criu/build.sh prints; without one only crust's
# figures are printed (CRIU_BIN=none: none). CRUST_BEFORE=BINARY adds a
# row "before" (another crust build, e.g. main's, measured in the same
# run). Then the final dump of a pre-dump chain (`dirtymem --mb N
# --dirty-mb 12`: pre-dump, 12 MiB rewritten, pre-dump, 12 MiB rewritten,
# dump --prev-images-dir): its frozen time, for crust (and "before").
# CRIU cannot make such a chain here (no soft-dirty); FROZEN_NO_CHAIN=1
# leaves that part out. FROZEN_SHARED=1: the memory is shared anonymous
# memory instead (`shmdirty --mode child`: a process and its child map
# it; in the chain, both rewrite 6 MiB of it per step).
# FROZEN_TOOLS="before crust snap" (say) runs only
# the tools named (before, crust, snap, frozen, criu). Needs root and
# `cargo build --release -p crust -p crust-testprogs`, and free memory for
# the largest size plus its images (images go to $BENCH_DIR, default a
# directory under /tmp). Kills every process it starts, removes its files.
set -euo pipefail

if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$(dirname "$0")/../tests/e2e/reaper" bash "$0" "$@"
fi

ROUNDS=${1:-3}
shift || true
SIZES=("$@")
[[ ${#SIZES[@]} -gt 0 ]] || SIZES=(256 1024 4096)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
BIGMEM=$ROOT/target/release/bigmem
for b in "$CRUST" "$BIGMEM"; do
    [[ -x $b ]] || { echo "missing $b: cargo build --release -p crust -p crust-testprogs" >&2; exit 1; }
done
CRIU=${CRIU_BIN:-}
BEFORE=${CRUST_BEFORE:-}
DIRTYMEM=$ROOT/target/release/dirtymem
SHMDIRTY=$ROOT/target/release/shmdirty
# The program for N MiB (idle, or rewriting as its step file says).
prog() {
    if [[ -n ${FROZEN_SHARED:-} ]]; then
        echo "$SHMDIRTY" --mb "$1" --mode child
    elif [[ ${2:-} == chain ]]; then
        echo "$DIRTYMEM" --mb "$1"
    else
        echo "$BIGMEM" --mb "$1"
    fi
}
if [[ $CRIU == none ]]; then
    CRIU=
elif [[ -z $CRIU && -x /tmp/oracle/criu-shim ]]; then
    CRIU=/tmp/oracle/criu-shim
elif [[ -z $CRIU && -x $ROOT/../shared/criu/build.sh ]]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>/dev/null | tail -n 1) || CRIU=
fi

WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/crust-bench-frozen.XXXXXX")
chmod 0755 "$WORK"
PID=
cleanup() {
    # Its process group (setsid): shmdirty's child too.
    [[ -n $PID ]] && kill -KILL -- "-$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# The frozen time in ms from a dump's display-stats output.
frozen_ms() { sed -n 's/^Frozen time: \([0-9]*\) us.*/\1/p' "$1" | awk '{printf "%.1f", $1 / 1000}'; }

# median and minimum of the arguments
stats() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%8.1f %8.1f", v[int((NR+1)/2)], v[1]}'; }

# one dump -R of $PID by TOOL (crust|frozen|criu): prints "frozen_ms total_ms"
one() {
    local tool=$1 img=$WORK/img t0 t1 out=$WORK/out
    rm -rf "$img"
    mkdir -p "$img"
    t0=$(date +%s%N)
    case $tool in
        before) "$BEFORE" dump -t "$PID" -D "$img" -R --display-stats -o dump.log >"$out" 2>&1 ;;
        crust) "$CRUST" dump -t "$PID" -D "$img" -R --display-stats -o dump.log >"$out" 2>&1 ;;
        snap) CRUST_PRECOPY=0 "$CRUST" dump -t "$PID" -D "$img" -R --display-stats -o dump.log >"$out" 2>&1 ;;
        frozen) CRUST_SNAPSHOT=0 "$CRUST" dump -t "$PID" -D "$img" -R --display-stats -o dump.log >"$out" 2>&1 ;;
        criu) "$CRIU" dump -t "$PID" -D "$img" -R --display-stats -o dump.log >"$out" 2>&1 ;;
    esac || { echo "$tool dump failed: $(tail -3 "$out")" >&2; return 1; }
    t1=$(date +%s%N)
    echo "$(frozen_ms "$out") $(((t1 - t0) / 1000000))"
}

TOOLS=(crust snap frozen)
[[ -n $BEFORE ]] && TOOLS=(before "${TOOLS[@]}")
[[ -n $CRIU ]] && TOOLS+=(criu)
# FROZEN_TOOLS="before crust snap" (say) runs only those.
[[ -n ${FROZEN_TOOLS:-} ]] && read -ra TOOLS <<<"$FROZEN_TOOLS"
printf '%-8s %-8s %8s %8s %8s\n' size tool median min total
for mb in "${SIZES[@]}"; do
    rm -f "$WORK/ready"
    # shellcheck disable=SC2046
    setsid $(prog "$mb") --step "$WORK/nostep" --ready "$WORK/ready" --result "$WORK/result" </dev/null >/dev/null 2>&1 &
    PID=$!
    for _ in $(seq 600); do [[ -e $WORK/ready ]] && break; sleep 0.1; done
    [[ -e $WORK/ready ]] || { echo "bigmem --mb $mb did not get ready" >&2; exit 1; }
    for tool in "${TOOLS[@]}"; do
        fz=() tot=()
        for _ in $(seq "$ROUNDS"); do
            read -r f t < <(one "$tool") || exit 1
            fz+=("$f") tot+=("$t")
        done
        printf '%-8s %-8s %s %8s\n' "${mb}M" "$tool" "$(stats "${fz[@]}")" "$(stats "${tot[@]}" | awk '{print $1}')"
    done
    kill -TERM "$PID"
    for _ in $(seq 100); do [[ -e $WORK/result ]] && break; sleep 0.1; done
    echo "$(basename "$(prog "$mb" | cut -d' ' -f1)") --mb $mb after the dumps: $(cat "$WORK/result" 2>/dev/null || echo 'no result')"
    kill -KILL -- "-$PID" 2>/dev/null || true
    PID=
done

# The final dump of a pre-dump chain: prints its frozen time in ms.
chain_once() {
    local bin=$1 mb=$2 w=$WORK/chain out
    rm -rf "$w"
    mkdir -p "$w/i1" "$w/i2" "$w/i3"
    # shellcheck disable=SC2046
    setsid $(prog "$mb" chain) --dirty-mb 12 --step "$w/step" --ready "$w/ready" --result "$w/result" </dev/null >/dev/null 2>&1 &
    PID=$!
    for _ in $(seq 600); do [[ -e $w/ready ]] && break; sleep 0.1; done
    step() {
        echo "$1" >"$w/step"
        for _ in $(seq 200); do [[ $(cat "$w/step.done" 2>/dev/null) == "$1" ]] && return 0; sleep 0.05; done
        echo "dirtymem did not do step $1" >&2
        return 1
    }
    "$bin" pre-dump -t "$PID" -D "$w/i1" -o pd.log >/dev/null 2>&1 || { echo "pre-dump failed" >&2; return 1; }
    step 1 || return 1
    "$bin" pre-dump -t "$PID" -D "$w/i2" --prev-images-dir ../i1 -o pd.log >/dev/null 2>&1 || { echo "pre-dump 2 failed" >&2; return 1; }
    step 2 || return 1
    out=$WORK/chain.out
    "$bin" dump -t "$PID" -D "$w/i3" --prev-images-dir ../i2 --display-stats -o dump.log >"$out" 2>&1 ||
        { echo "final dump failed: $(tail -3 "$out")" >&2; return 1; }
    for _ in $(seq 100); do [[ -e /proc/$PID ]] || break; sleep 0.05; done
    PID=
    frozen_ms "$out"
}

[[ -x $DIRTYMEM && -z ${FROZEN_NO_CHAIN:-} ]] || exit 0
CTOOLS=(crust)
[[ -n $BEFORE ]] && CTOOLS=(before crust)
echo
echo "final dump of a pre-dump chain (12 MiB rewritten per step), frozen ms"
printf '%-8s %-8s %8s %8s\n' size tool median min
for mb in "${SIZES[@]}"; do
    for tool in "${CTOOLS[@]}"; do
        bin=$CRUST
        [[ $tool == before ]] && bin=$BEFORE
        fz=()
        for _ in $(seq "$ROUNDS"); do
            f=$(chain_once "$bin" "$mb") || exit 1
            fz+=("$f")
        done
        printf '%-8s %-8s %s\n' "${mb}M" "$tool" "$(stats "${fz[@]}")"
    done
done
