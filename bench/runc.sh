#!/usr/bin/env bash
# Wall time of `runc checkpoint` and `runc restore -d` of a busybox
# container (the e2e rpc-runc container: busybox-static in a root
# filesystem of its own, a shell counting into a file), with crust as
# runc's criu and with CRIU 4.2, side by side. Each round runs the
# container afresh, checkpoints it, restores it, removes it. Prints the
# median of ROUNDS, in seconds.
#
#   bench/runc.sh [ROUNDS]      (default 5)
#
# CRIU is $CRIU_BIN, else /tmp/oracle/criu-shim (CRIU 4.2 with the prlimit
# shim this machine kind needs) when there, else what
# ../shared/criu/build.sh prints; without one only crust's column is
# filled. BENCH_KEEP=1 keeps the work directory. Needs root, runc,
# busybox-static and `cargo build --release -p crust`. Removes every
# container it makes and its files.
set -euo pipefail

ROUNDS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CRUST=${CRUST_BIN:-$ROOT/target/release/crust}
[[ -x $CRUST ]] || { echo "missing $CRUST: cargo build --release -p crust" >&2; exit 1; }
command -v runc >/dev/null && [[ -x /bin/busybox ]] ||
    { echo "runc or busybox-static is not installed" >&2; exit 1; }
CRIU=${CRIU_BIN:-}
if [[ -z $CRIU && -x /tmp/oracle/criu-shim ]]; then
    CRIU=/tmp/oracle/criu-shim
fi
if [[ -z $CRIU && -x $ROOT/../shared/criu/build.sh ]]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>/dev/null | tail -n 1) || CRIU=
fi

WORK=$(mktemp -d /tmp/crust-bench-runc.XXXXXX)
ID=crust-bench-runc-$$
cleanup() {
    runc kill "$ID" KILL >/dev/null 2>&1 || true
    runc delete -f "$ID" >/dev/null 2>&1 || true
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() { tr ' ' '\n' | grep . | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "-") }'; }

B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/"
for a in sh sleep cat; do ln -s busybox "$B/rootfs/bin/$a"; done
(cd "$B" && runc spec)
python3 - "$B/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["terminal"] = False
c["process"]["args"] = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done"]
c["root"]["readonly"] = False
json.dump(c, open(sys.argv[1], "w"))
EOF

# one TOOL: one round; prints "CHECKPOINT RESTORE" seconds.
one() {
    local tool=$1 img t0 t1 t2 a b
    img=$WORK/img-$RANDOM
    mkdir -p "$img"
    (cd "$B" && runc run -d "$ID" </dev/null >/dev/null 2>&1)
    sleep 0.3
    t0=$(now)
    (cd "$B" && runc --criu "$tool" checkpoint --image-path "$img" "$ID") >"$WORK/cp.out" 2>&1 ||
        { echo "checkpoint with $tool failed: $(head -c 300 "$WORK/cp.out")" >&2; return 1; }
    t1=$(now)
    (cd "$B" && runc --criu "$tool" restore -d --image-path "$img" "$ID" </dev/null >/dev/null 2>"$WORK/rs.err") ||
        { echo "restore with $tool failed: $(head -c 300 "$WORK/rs.err")" >&2; return 1; }
    t2=$(now)
    a=$(cd "$B" && runc exec "$ID" cat /tmp/count)
    sleep 0.3
    b=$(cd "$B" && runc exec "$ID" cat /tmp/count)
    [[ $b -gt $a ]] || { echo "the container restored by $tool does not count ($a, $b)" >&2; return 1; }
    runc kill "$ID" KILL >/dev/null 2>&1 || true
    runc delete -f "$ID" >/dev/null 2>&1
    rm -rf "$img"
    echo "$(secs "$t0" "$t1") $(secs "$t1" "$t2")"
}

# column TOOL: the medians "CHECKPOINT RESTORE" over ROUNDS.
column() {
    local tool=$1 i r cps=() rss=()
    for ((i = 0; i < ROUNDS; i++)); do
        r=$(one "$tool") || return 1
        cps+=("${r% *}")
        rss+=("${r#* }")
    done
    echo "$(echo "${cps[*]}" | median) $(echo "${rss[*]}" | median)"
}

c=$(column "$CRUST")
if [[ -n $CRIU ]]; then
    k=$(column "$CRIU")
else
    k="- -"
fi
printf 'runc %s, busybox container, median of %d rounds (s)\n' "$(runc --version | head -n 1 | awk '{print $3}')" "$ROUNDS"
printf '%-12s %10s %10s\n' "" crust "CRIU 4.2"
printf '%-12s %10s %10s\n' checkpoint "${c% *}" "${k% *}"
printf '%-12s %10s %10s\n' "restore -d" "${c#* }" "${k#* }"
