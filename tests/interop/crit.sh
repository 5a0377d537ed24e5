#!/usr/bin/env bash
# crust's crit against CRIU 4.2's crit (issue 17): decode (plain, --pretty,
# show --nopl) and encode, file by file (tests/interop/crit_check.py), over
# every golden CRIU 4.2 image set (tests/fixtures/golden) and over sets
# crust dumps of test programs: pipes with data, unix sockets with queues,
# threads, TCP connections in several states (--tcp-established), ghost
# files, SysV IPC in an IPC namespace, a tree with a zombie.
#
# Usage: tests/interop/crit.sh        (as root; ~1 min)
# Needs target/release/crust and the test programs ($CRUST_BIN_DIR), and
# CRIU 4.2's crit: ../shared/criu/build.sh's tree (lib/pycriu, crit) run by
# /usr/bin/python3 with Debian's python3-protobuf.
# Environment: CRUST_BIN_DIR, CRIU_BIN (the criu binary of a CRIU 4.2 build
# tree; default: what ../shared/criu/build.sh prints), CRIT_KEEP=1 (keep the work dir),
# CRUST_REQUIRE_PRIVILEGED=1 (no CRIU is a failure, not a skip).
# Output: crit_check.py's lines, then "crit: PASS" or "crit: FAIL ...".

set -u
set +m

if [ -z "${CRIT_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export CRIT_UNDER_REAPER=1
    exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/../e2e/reaper" bash "${BASH_SOURCE[0]}" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CRUST_BIN_DIR:-$ROOT/target/release}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
CRUST=$BIN/crust
WORK=$(mktemp -d /tmp/crust-crit.XXXXXX) || { echo "crit: cannot create a temp dir" >&2; exit 2; }
declare -a TRACKED=()
PORT=""

# shellcheck source=../lib/proc.sh
. "$ROOT/tests/lib/proc.sh"
cleanup() {
    local t
    for t in "${TRACKED[@]+"${TRACKED[@]}"}"; do kill_tree ${t%% *} "${t#* }"; done
    for t in 0 1 2 3 4 5 6 7 8 9; do unlock_port "$([ -n "$PORT" ] && echo $((PORT + t)))"; done
    if [ "${CRIT_KEEP:-0}" = 1 ]; then echo "crit: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_file() {
    local n=$(($2 * 20))
    while [ $n -gt 0 ]; do
        [ -e "$1" ] && return 0
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

no_criu() {
    if [ "${CRUST_REQUIRE_PRIVILEGED:-0}" = 1 ]; then echo "crit: FAIL: $1"; exit 1; fi
    echo "crit: SKIP: $1"
    exit 0
}

[ -x "$CRUST" ] || no_criu "no crust binary at $CRUST (cargo build --release)"
CRIU=${CRIU_BIN:-}
if [ -z "$CRIU" ] && [ -x "$ROOT/../shared/criu/build.sh" ]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>"$WORK/criu-build.err" | tail -n 1)
fi
[ -n "$CRIU" ] && [ -x "$CRIU" ] ||
    no_criu "no CRIU 4.2 (set CRIU_BIN, or put ../shared/criu/build.sh beside the repo): $(tail -c 200 "$WORK/criu-build.err" 2>/dev/null)"
SRC=$(dirname "$(dirname "$CRIU")")
[ -d "$SRC/lib/pycriu" ] && [ -d "$SRC/crit/crit" ] || no_criu "no lib/pycriu or crit/ in $SRC"

# dump NAME PROG ARGS... [-- DUMP-ARGS...]: start PROG, dump it with crust
# into $WORK/NAME (the dump ends the tree, or -R leaves it, then killed).
FAILED=()
dump() {
    local name=$1 prog=$2 d=$WORK/$1 pid
    shift 2
    local args=() extra=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
    [ $# -gt 0 ] && shift && extra=("$@")
    mkdir -p "$d/img" "$d/files"
    pid=$(setsid "$BIN/$prog" --ready "$d/ready" --result "$d/result" "${args[@]//\{D\}/$d}" \
        </dev/null >"$d/prog.out" 2>&1 & echo $!)
    TRACKED+=("$pid $BIN/$prog")
    wait_file "$d/ready" 10 || { FAILED+=("$name: $prog did not become ready"); return 1; }
    for c in $(descendants "$pid"); do TRACKED+=("$c $BIN/$prog"); done
    (cd "$d" && timeout -k 5 120 "$CRUST" dump -t "$pid" -D "$d/img" -v4 -o dump.log "${extra[@]}") \
        >"$d/dump.out" 2>&1 || { FAILED+=("$name: crust dump failed: $(tail -c 200 "$d/dump.out")"); return 1; }
    kill_tree "$pid" "$BIN/$prog"
}

PORT=$((20000 + RANDOM % 20000))
dump pipes pipes
dump unix unixsk --mode all --dir '{D}/files'
dump threads mthreads --threads 4
dump ghosts ghostnodes --mode nodes --dir '{D}/files'
dump sysvipc sysvipc
dump zombie ptree
dump tcp inetsk --mode states --port "$PORT" -- --tcp-established -R

files=()
for d in "$ROOT"/tests/fixtures/golden/*/ "$WORK"/*/img/; do
    for f in "$d"*.img "$d"stats-dump; do
        case ${f##*/} in pages-*.img) continue ;; esac
        [ -f "$f" ] && files+=("$f")
    done
done
mkdir -p "$WORK/out"
PYTHONPATH=$SRC/lib:$SRC/crit /usr/bin/python3 "$ROOT/tests/interop/crit_check.py" "$CRUST" "$WORK/out" "${files[@]}"
rc=$?
for f in "${FAILED[@]+"${FAILED[@]}"}"; do echo "FAIL $f"; done
if [ $rc -eq 0 ] && [ ${#FAILED[@]} -eq 0 ]; then echo "crit: PASS"; else echo "crit: FAIL"; exit 1; fi
