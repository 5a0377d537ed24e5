#!/usr/bin/env bash
# Dump and restore a tree in a mount namespace of its own holding N tmpfs
# mounts (plus the few of the `mntns` test program); print timings.
#
#   bench/mounts.sh [N]          (default 1000)
#
# The program (target/release/mntns --many N) detaches the host's mounts but
# / and /dev, so /dev is the one external mount (--external mnt[/dev]:dev at
# dump, mnt[dev]:/dev at restore). Needs root and
# `cargo build --release -p crust -p crust-testprogs`. Kills every process it
# starts and removes its files; the mounts live in the program's namespace
# and go with it.
set -euo pipefail

# The dumped program, killed by the dump, is reaped at once by a child
# subreaper (this machine's init reaps now and then: the restore would wait
# for its pid).
if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$(dirname "$0")/../tests/e2e/reaper" bash "$0" "$@"
fi

N=${1:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
MNTNS=${MNTNS_BIN:-$ROOT/target/release/mntns}
for b in "$CRUST" "$MNTNS"; do
    [[ -x $b ]] || { echo "missing $b: cargo build --release -p crust -p crust-testprogs" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/crust-bench-mnt.XXXXXX)
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
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.1
    done
    return 1
}

mkdir -p "$WORK/dir" "$WORK/img"
t0=$(now)
pid=$(setsid "$MNTNS" --dir "$WORK/dir" --many "$N" --ready "$WORK/ready" --result "$WORK/result" \
    </dev/null >"$WORK/mntns.out" 2>&1 & echo $!)
PIDS+=("$pid")
wait_file "$WORK/ready" 300 || { echo "mntns did not get ready: $(cat "$WORK/mntns.out")" >&2; exit 1; }
t1=$(now)
mounts=$(wc -l <"/proc/$pid/mountinfo")

t2=$(now)
"$CRUST" dump -t "$pid" -D "$WORK/img" -o dump.log -v2 --external 'mnt[/dev]:dev' 2>"$WORK/dump.err" ||
    { echo "dump failed: $(cat "$WORK/dump.err")" >&2; exit 1; }
t3=$(now)
bytes=$(du -sb "$WORK/img" | awk '{ print $1 }')
"$CRUST" restore -D "$WORK/img" -d --pidfile "$WORK/restored.pid" -o restore.log -v2 \
    --external 'mnt[dev]:/dev' 2>"$WORK/restore.err" ||
    { echo "restore failed: $(cat "$WORK/restore.err")" >&2; exit 1; }
t4=$(now)
rpid=$(cat "$WORK/restored.pid")
PIDS+=("$rpid")
kill -TERM "$rpid"
wait_file "$WORK/result" 60 || { echo "no result from the restored tree" >&2; exit 1; }
result=$(cat "$WORK/result")

echo "mount namespace with $mounts mounts ($N tmpfs made by the test program in $(ms "$t0" "$t1") ms)"
echo "  dump:    $(ms "$t2" "$t3") ms (images $((bytes / 1024)) KiB)"
echo "  restore: $(ms "$t3" "$t4") ms"
echo "  restored tree says: $result"
[[ $result == PASS ]]
