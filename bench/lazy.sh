#!/usr/bin/env bash
# Lazy restore (issue 15) of one process with MB MiB of memory (default
# 1024, `bigmem`): crust dumps it once, then restores the images ROUNDS
# times (default 3) with `restore --lazy-pages` and crust's `lazy-pages`
# daemon, and once eagerly for comparison. Prints, per lazy round:
#   run     the restore's time until the tree runs (crust's "Restored ...
#           in N us": from its start to the release of the tasks, so the
#           task's first instruction; goal < 10 ms)
#   fault   from the daemon's hand-over to the first fault served
#   all-in  from the hand-over to the last page in (background copy)
# and the eager restore's time. Each restored process checks its memory
# (checksums) at SIGTERM and must say PASS.
#
#   bench/lazy.sh
#   MB=256 ROUNDS=5 bench/lazy.sh
#   REMOTE=1 MB=256 ROUNDS=5 bench/lazy.sh
#
# REMOTE=1: post-copy migrations on loopback instead (each round a new
# `bigmem`, the init of a pid namespace: `dump --lazy-pages --port P`
# serving it, `lazy-pages --page-server`, `restore --lazy-pages`), once
# with the daemon asking the source for one range at a time
# (CRUST_LAZY_AHEAD=0) and once with one request sent ahead (the
# default), interleaved; prints run, fault and all-in per migration, and
# the medians of all-in.
#
# Needs root and `cargo build --release -p crust -p crust-testprogs`.
# Runs under tests/e2e/reaper; takes /tmp/crust-e2e.lock for the whole
# run; kills what it starts and removes its files.
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
WORK=$(mktemp -d /tmp/crust-bench-lazy.XXXXXX)
PID=
DAEMON=
cleanup() {
    [ -n "$DAEMON" ] && kill -9 "$DAEMON" 2>/dev/null || true
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
exec 9>/tmp/crust-e2e.lock
flock 9

gone() {
    for _ in $(seq 100); do [ -e "/proc/$1" ] || return 0; sleep 0.05; done
    echo "pid $1 still exists" >&2
    return 1
}

# SIGTERM to the restored process: it checks its memory and says PASS.
verdict() {
    rm -f "$WORK/result"
    kill -TERM "$PID"
    for _ in $(seq 600); do [ -s "$WORK/result" ] && break; sleep 0.05; done
    [ "$(cat "$WORK/result" 2>/dev/null)" = PASS ] ||
        { echo "$1: the restored process says: $(cat "$WORK/result" 2>/dev/null)" >&2; return 1; }
    gone "$PID"
}

# The restore's time until the tree runs, in us, from its log.
run_us() {
    sed -n 's/.*Restored [0-9]* processes of tree [0-9]* in \([0-9]*\) us.*/\1/p' "$1" | tail -1
}

# One post-copy migration with CRUST_LAZY_AHEAD=$1; prints its line and
# appends its all-in (us) to $WORK/allin-$1.
remote_round() {
    local ahead=$1 img=$WORK/img-r port=$((20000 + RANDOM % 20000)) outer dump run stats
    rm -rf "$img" "$WORK/ready" "$WORK/result" "$WORK/pidfile"
    mkdir -p "$img"
    outer=$(setsid unshare -p -f "$BIN/bigmem" --ready "$WORK/ready" --result "$WORK/result" --mb "$MB" \
        </dev/null >/dev/null 2>&1 & echo $!)
    for _ in $(seq 1200); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
    [ -e "$WORK/ready" ] || { echo "bigmem did not become ready" >&2; return 1; }
    PID=$(cat /proc/"$outer"/task/*/children | awk '{print $1; exit}')
    (cd "$WORK" && exec "$CRUST" dump -t "$PID" -D "$img" --lazy-pages --address 127.0.0.1 \
        --port "$port" -o dump.log) </dev/null >/dev/null 2>&1 &
    dump=$!
    for _ in $(seq 200); do ss -ltnH "sport = :$port" | grep -q . && break; sleep 0.05; done
    (cd "$WORK" && exec env CRUST_LAZY_AHEAD="$ahead" "$CRUST" lazy-pages -D "$img" --page-server \
        --address 127.0.0.1 --port "$port" -o lazy.log -v4) &
    DAEMON=$!
    for _ in $(seq 100); do [ -S "$img/lazy-pages.socket" ] && break; sleep 0.02; done
    "$CRUST" restore -D "$img" -d --lazy-pages --pidfile "$WORK/pidfile" -o restore-lazy.log -v4 ||
        { echo "lazy restore failed (see $img/restore-lazy.log)" >&2; return 1; }
    wait "$DAEMON" || { echo "the daemon failed (see $img/lazy.log)" >&2; return 1; }
    DAEMON=
    wait "$dump" || { echo "dump --lazy-pages failed (see $img/dump.log)" >&2; return 1; }
    PID=$(cat "$WORK/pidfile")
    run=$(run_us "$img/restore-lazy.log")
    stats=$(grep -o 'first_fault_us: Some([0-9]*), all_in_us: Some([0-9]*)' "$img/lazy.log" | tr -dc '0-9 ')
    verdict "ahead $ahead" || return 1
    # shellcheck disable=SC2086
    set -- $stats
    echo "${2:-0}" >>"$WORK/allin-$ahead"
    printf '%-9s run %9.2f ms   fault %7.2f ms   all-in %8.1f ms\n' "ahead $ahead" \
        "$(awk -v v="$run" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="${1:-0}" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="${2:-0}" 'BEGIN { print v / 1000 }')"
}

if [ "${REMOTE:-0}" = 1 ]; then
    AHEAD=1
    echo "post-copy migration of ${MB} MiB (bigmem) on loopback, ${ROUNDS} rounds, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    for r in $(seq "$ROUNDS"); do
        remote_round 0
        remote_round "$AHEAD"
    done
    PID=
    med() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) / 1000 }'; }
    printf 'median all-in: one at a time %.1f ms, %s ahead %.1f ms\n' "$(med "$WORK/allin-0")" "$AHEAD" \
        "$(med "$WORK/allin-$AHEAD")"
    exit 0
fi

PID=$(setsid "$BIN/bigmem" --ready "$WORK/ready" --result "$WORK/result" --mb "$MB" </dev/null >/dev/null 2>&1 & echo $!)
for _ in $(seq 1200); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
[ -e "$WORK/ready" ] || { echo "bigmem did not become ready" >&2; exit 1; }
IMG=$WORK/img
mkdir -p "$IMG"
"$CRUST" dump -t "$PID" -D "$IMG" -o dump.log || { echo "dump failed (see $IMG/dump.log)" >&2; exit 1; }
gone "$PID"
echo "lazy restore of ${MB} MiB (bigmem), load: $(cut -d' ' -f1-3 /proc/loadavg)"

"$CRUST" restore -D "$IMG" -d -o restore-eager.log -v4 ||
    { echo "eager restore failed (see $IMG/restore-eager.log)" >&2; exit 1; }
eager=$(run_us "$IMG/restore-eager.log")
verdict eager
printf '%-8s run %9.2f ms\n' eager "$(echo "$eager" | awk '{ print $1 / 1000 }')"

for r in $(seq "$ROUNDS"); do
    rm -f "$IMG/lazy.log" "$IMG/restore-lazy.log"
    (cd "$WORK" && exec "$CRUST" lazy-pages -D "$IMG" -o lazy.log -v4) &
    DAEMON=$!
    for _ in $(seq 100); do [ -S "$IMG/lazy-pages.socket" ] && break; sleep 0.02; done
    "$CRUST" restore -D "$IMG" -d --lazy-pages -o restore-lazy.log -v4 ||
        { echo "lazy restore failed (see $IMG/restore-lazy.log)" >&2; exit 1; }
    wait "$DAEMON" || { echo "the daemon failed (see $IMG/lazy.log)" >&2; exit 1; }
    DAEMON=
    run=$(run_us "$IMG/restore-lazy.log")
    stats=$(grep -o 'first_fault_us: Some([0-9]*), all_in_us: Some([0-9]*)' "$IMG/lazy.log" | tr -dc '0-9 ')
    verdict "lazy $r"
    # shellcheck disable=SC2086
    set -- $stats
    printf '%-8s run %9.2f ms   fault %7.2f ms   all-in %8.1f ms\n' "lazy $r" \
        "$(awk -v v="$run" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="${1:-0}" 'BEGIN { print v / 1000 }')" \
        "$(awk -v v="${2:-0}" 'BEGIN { print v / 1000 }')"
done
PID=
