#!/usr/bin/env bash
# Time to freeze (and seize) a tree of 1,000 tasks: crust with ptrace
# interrupts, crust with --freeze-cgroup (v1 and v2), and CRIU 4.2 with
# ptrace and with --freeze-cgroup (v1 and v2), on the same tree.
#
#   bench/freeze.sh [ROUNDS]      (default 3; the median is printed)
#
# The tree: target/release/forest --n 1000 (a root and 999 descendants,
# each forking up to 3 children: 1,000 processes of one thread each), born
# in a freezer cgroup of its own (v1 under /sys/fs/cgroup/freezer, v2 under
# /sys/fs/cgroup/unified). Each dump is a full `dump -R` (the tree runs
# on); what is printed is the freeze phase alone, as each tool times it in
# its own stats-dump (`freezing_time`, decoded with `crust image decode`):
# crust from the start of the freeze (freezer write, or the first
# PTRACE_SEIZE) until every task of the tree is in a ptrace stop; CRIU the
# same span (its TIME_FREEZING, collect_pstree). BENCH_N changes the size.
#
# CRIU is $CRIU_BIN, else what ../shared/criu/build.sh prints; without it
# only crust's figures are printed. Needs root and
# `cargo build --release -p crust -p crust-testprogs`. Kills every process
# it starts, removes its cgroups and files.
set -euo pipefail

if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$(dirname "$0")/../tests/e2e/reaper" bash "$0" "$@"
fi

ROUNDS=${1:-3}
N=${BENCH_N:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
FOREST=$ROOT/target/release/forest
for b in "$CRUST" "$FOREST"; do
    [[ -x $b ]] || { echo "missing $b: cargo build --release -p crust -p crust-testprogs" >&2; exit 1; }
done
CRIU=${CRIU_BIN:-}
if [[ -z $CRIU && -x $ROOT/../shared/criu/build.sh ]]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>/dev/null | tail -n 1) || CRIU=
fi

WORK=$(mktemp -d /tmp/crust-bench-freeze.XXXXXX)
CG1=/sys/fs/cgroup/freezer/crust-bench-freeze-$$
CG2=/sys/fs/cgroup/unified/crust-bench-freeze-$$
PIDS=()
cleanup() {
    local cg p
    for cg in "$CG1" "$CG2"; do
        [[ -d $cg ]] || continue
        if [[ -e $cg/freezer.state ]]; then echo THAWED >"$cg/freezer.state"; else echo 0 >"$cg/cgroup.freeze"; fi
        for _ in $(seq 100); do
            p=$(cat "$cg/cgroup.procs")
            [[ -z $p ]] && break
            # shellcheck disable=SC2086
            kill -KILL $p 2>/dev/null || true
            sleep 0.05
        done
        rmdir "$cg" || echo "could not remove $cg" >&2
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_file() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -e $1 ]] && return 0
        sleep 0.05
    done
    return 1
}

# start_tree CG: forest of $N processes born in cgroup CG; prints its root.
start_tree() {
    local cg=$1 d
    d=$WORK/tree$RANDOM
    mkdir -p "$d"
    setsid sh -c 'echo $$ >"$1/cgroup.procs" && shift && exec "$@"' sh "$cg" \
        "$FOREST" --n "$N" --ready "$d/ready" --result "$d/result" </dev/null >/dev/null 2>&1 &
    local pid=$!
    wait_file "$d/ready" 120 || { echo "the tree in $cg did not become ready" >&2; exit 1; }
    echo "$pid"
}

# freeze_ms TOOL PID [ARGS...]: one dump -R; prints its freezing time in ms.
freeze_ms() {
    local tool=$1 pid=$2 d
    shift 2
    d=$WORK/img$RANDOM
    mkdir -p "$d"
    (cd "$d" && "$tool" dump -t "$pid" -D "$d" -R -v2 -o dump.log "$@") >"$d/out" 2>&1 ||
        { echo "dump failed ($tool $*): $(tail -3 "$d/dump.log")" >&2; exit 1; }
    "$CRUST" image decode -i "$d/stats-dump" | python3 -c '
import json, sys
print("%.1f" % (json.load(sys.stdin)["entries"][0]["dump"]["freezing_time"] / 1000))'
    rm -rf "$d"
}

median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

mkdir "$CG1" "$CG2"
T1=$(start_tree "$CG1")
T2=$(start_tree "$CG2")
tasks=$(($(wc -l <"$CG1/tasks")))
echo "freeze (and seize) a tree of $tasks tasks: median of $ROUNDS dumps -R, ms"

run() {
    local label=$1 tool=$2 pid=$3 all=() i
    shift 3
    for ((i = 0; i < ROUNDS; i++)); do all+=("$(freeze_ms "$tool" "$pid" "$@")"); done
    printf '  %-36s %8s   (%s)\n' "$label" "$(echo "${all[*]}" | median)" "${all[*]}"
}

run "crust, ptrace interrupts" "$CRUST" "$T1"
run "crust, --freeze-cgroup v1" "$CRUST" "$T1" --freeze-cgroup "$CG1"
run "crust, --freeze-cgroup v2" "$CRUST" "$T2" --freeze-cgroup "$CG2"
if [[ -n $CRIU && -x $CRIU ]]; then
    run "CRIU 4.2, ptrace interrupts" "$CRIU" "$T1"
    run "CRIU 4.2, --freeze-cgroup v1" "$CRIU" "$T1" --freeze-cgroup "$CG1"
    run "CRIU 4.2, --freeze-cgroup v2" "$CRIU" "$T2" --freeze-cgroup "$CG2"
else
    echo "  (no CRIU 4.2: set CRIU_BIN or build it with ../shared/criu/build.sh)"
fi
