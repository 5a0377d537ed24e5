#!/usr/bin/env bash
# Page-server throughput over loopback TCP: `dump --page-server` of one
# process with MB MiB of memory (default 1024) to crust's page server, and
# with CRIU_BIN set also to CRIU 4.2's page server (crust's dump both
# times) and CRIU's dump to CRIU's server. Prints the dump's wall time and
# GB/s (bytes of pages-*.img the server wrote / dump time). Goal: >= 2.5.
# For crust's dumps also the rate of the pages alone (", pages": bytes /
# the dump's own time for its pages, its -v4 log's "pages copied in"),
# without the freeze, the reading of the state and the wait for the
# killed tree to die (about 0.1 s a GiB, spent freeing its memory).
# Each round also measures the machine's own ceiling (bench/loopback.py:
# the same bytes over loopback TCP from memory to memory, plainly and
# with each read waiting for 1 MiB; and into a new file beside the
# images, read and written, and spliced as crust's server does), and the
# end prints crust's median as a share of the spliced-into-a-file median.
# With /usr/bin/time, also the CPU (user+sys) each side spent: on a loaded
# machine wall times swing, CPU per GiB much less.
#
#   bench/pageserver.sh
#   MB=256 CRIU_BIN=/var/cache/criu-4.2/criu/criu bench/pageserver.sh
#   TLS=1 bench/pageserver.sh     (--tls both sides, test certificates
#                                  made with openssl; CRIU too with CRIU_BIN)
#   REPS=5 bench/pageserver.sh    (each pairing REPS times, interleaved;
#                                  prints every run and the median)
#   Without TLS, crust's dump also runs with CRUST_PS_SPLICE=0 (its pages
#   copied out of the task instead of vmspliced: the way before).
#   CRUST_PS_DIRECT=1 bench/pageserver.sh   (crust's server writes with
#                                  O_DIRECT: README, "Page server")
#
# Needs root and `cargo build --release -p crust -p crust-testprogs`. Runs
# under tests/e2e/reaper; takes /tmp/crust-e2e.lock around each dump;
# kills what it starts and removes its files.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
CRUST=${CRUST:-$BIN/crust}
CRIU=${CRIU_BIN:-}
MB=${MB:-1024}
REPS=${REPS:-1}
if [ -z "${BENCH_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export BENCH_UNDER_REAPER=1
    exec /usr/bin/python3 "$ROOT/tests/e2e/reaper" bash "$0" "$@"
fi
for b in "$CRUST" "$BIN/bigmem" ${CRIU:+"$CRIU"}; do
    [[ -x $b ]] || { echo "missing $b (cargo build --release -p crust -p crust-testprogs)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/crust-bench-ps.XXXXXX)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

TLSOPTS=()
if [ -n "${TLS:-}" ]; then
    command -v openssl >/dev/null || { echo "TLS=1 needs openssl" >&2; exit 1; }
    (cd "$WORK" &&
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=bench-ca &&
        openssl req -newkey rsa:2048 -nodes -keyout key.pem -out req.pem -subj /CN=127.0.0.1 &&
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >ext.cnf &&
        openssl x509 -req -in req.pem -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cert.pem -days 1 -extfile ext.cnf) \
        >"$WORK/openssl.log" 2>&1 || { echo "openssl failed: $(cat "$WORK/openssl.log")" >&2; exit 1; }
    TLSOPTS=(--tls --tls-cacert "$WORK/ca.pem" --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem")
fi

# one SERVER_TOOL CLIENT_TOOL LABEL [VAR=VALUE...]: the variables are
# set for the dump only
one() {
    local srv=$1 cli=$2 label=$3 port sp pid t0 t1 bytes cpu d=$WORK/$3
    local cenv=(env "${@:4}")
    local st=() ct=()
    mkdir -p "$d/src" "$d/dst"
    if [ -x /usr/bin/time ]; then
        st=(/usr/bin/time -f "%U %S" -o "$d/srv.cpu")
        ct=(/usr/bin/time -f "%U %S" -o "$d/cli.cpu")
    fi
    port=$((20000 + RANDOM % 20000))
    (cd "$d" && exec "${st[@]}" "$srv" page-server -D "$d/dst" --address 127.0.0.1 --port "$port" -o "$d/ps.log" "${TLSOPTS[@]}") &
    sp=$!
    PIDS+=("$sp")
    for _ in $(seq 50); do ss -ltnH "sport = :$port" | grep -q . && break; sleep 0.1; done
    pid=$(setsid "$BIN/bigmem" --ready "$d/ready" --result "$d/result" --mb "$MB" </dev/null >/dev/null 2>&1 & echo $!)
    PIDS+=("$pid")
    for _ in $(seq 600); do [ -e "$d/ready" ] && break; sleep 0.1; done
    exec 9>/tmp/crust-e2e.lock
    flock 9
    t0=$(date +%s%N)
    (cd "$d" && "${ct[@]}" "${cenv[@]}" "$cli" dump -t "$pid" -D "$d/src" -o "$d/dump.log" -v4 --page-server --address 127.0.0.1 --port "$port" "${TLSOPTS[@]}") ||
        { echo "$label: dump failed (see $d)"; flock -u 9; return 1; }
    t1=$(date +%s%N)
    flock -u 9
    wait "$sp" || echo "$label: page server exited non-zero"
    bytes=$(cat "$d"/dst/pages-*.img | wc -c)
    cpu=
    if [ -s "$d/cli.cpu" ] && [ -s "$d/srv.cpu" ]; then
        cpu=$(awk '{ c += $1 + $2 } END { printf "%.2f", c }' "$d/cli.cpu"),$(awk '{ c += $1 + $2 } END { printf "%.2f", c }' "$d/srv.cpu")
    fi
    awk -v l="$label" -v b="$bytes" -v ns=$((t1 - t0)) -v cpu="$cpu" \
        'BEGIN { split(cpu, c, ",");
                 printf "%-28s %6.0f MiB in %7.1f ms%s: %5.2f GB/s\n", l, b / 1048576, ns / 1e6,
                     cpu == "" ? "" : sprintf(" (CPU s/GiB: dump %.2f, server %.2f)", c[1] * 1073741824 / b, c[2] * 1073741824 / b), b / ns }' |
        tee -a "$WORK/results"
    # crust's dump logs the time its pages took ("pages copied in N us").
    local pus
    pus=$(sed -n 's/.*pages copied in \([0-9]*\) us.*/\1/p' "$d/dump.log" | tail -1)
    if [ -n "$pus" ] && [ "$pus" -gt 0 ]; then
        awk -v l="$label, pages" -v b="$bytes" -v us="$pus" \
            'BEGIN { printf "%-28s %6.0f MiB in %7.1f ms: %5.2f GB/s\n", l, b / 1048576, us / 1e3, b / us / 1e3 }' |
            tee -a "$WORK/results"
    fi
    rm -rf "$d"
}

# median LABEL: the median GB/s of LABEL's runs
median() {
    grep -F "$1 " "$WORK/results" | awk '{ print $(NF - 1) }' | sort -n |
        awk -v l="$1" '{ v[NR] = $1 } END { if (NR) printf "%-28s median of %d: %5.2f GB/s\n", l, NR, v[int((NR + 1) / 2)] }'
}

# ceiling: the machine's own rates in the same run (bench/loopback.py):
# MB MiB over loopback TCP from memory to memory, and into a new file
# next to the page servers' images.
ceiling() {
    local v
    local label args
    for label in "machine: loopback TCP" "machine: loopback, gathered" "machine: into a file" "machine: spliced into file"; do
        case $label in
        *gathered) args=(--gather) ;;
        *"into a file") args=(--into "$WORK") ;;
        *spliced*) args=(--into "$WORK" --splice) ;;
        *) args=() ;;
        esac
        v=$(python3 "$ROOT/bench/loopback.py" --mb "$MB" "${args[@]}") || return 0
        printf '%-28s %6d MiB %26s: %5.2f GB/s\n' "$label" "$MB" "" "$v" | tee -a "$WORK/results"
    done
}

echo "page server over loopback${TLS:+ with TLS}, one process of $MB MiB (dump wall time, freeze included; load: $(cut -d' ' -f1-3 /proc/loadavg))"
LABELS=("crust -> crust server" "crust -> crust server, pages" "crust copying -> crust" "crust copying -> crust, pages"
    "machine: loopback TCP" "machine: loopback, gathered" "machine: into a file" "machine: spliced into file")
[ -n "$CRIU" ] && LABELS+=("crust -> CRIU server" "crust -> CRIU server, pages" "CRIU -> crust server" "CRIU -> CRIU server")
for _ in $(seq "$REPS"); do
    ceiling
    one "$CRUST" "$CRUST" "crust -> crust server"
    # the copy out of the task (CRUST_PS_SPLICE=0), as before vmsplice
    [ -z "${TLS:-}" ] && one "$CRUST" "$CRUST" "crust copying -> crust" CRUST_PS_SPLICE=0
    if [ -n "$CRIU" ]; then
        one "$CRIU" "$CRUST" "crust -> CRIU server"
        one "$CRUST" "$CRIU" "CRIU -> crust server"
        one "$CRIU" "$CRIU" "CRIU -> CRIU server"
    fi
done
if [ "$REPS" -gt 1 ]; then
    for l in "${LABELS[@]}"; do median "$l"; done
fi
# crust's median against the machine's spliced-into-a-file median of
# this run.
ratio() {
    local a b
    a=$(grep -F "$1 " "$WORK/results" | awk '{ print $(NF - 1) }' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }')
    b=$(grep -F "machine: spliced into file " "$WORK/results" | awk '{ print $(NF - 1) }' | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)] }')
    [ -n "$a" ] && [ -n "$b" ] && awk -v l="$1" -v a="$a" -v b="$b" 'BEGIN { if (b > 0) printf "%-28s %.2f of the machine'"'"'s loopback spliced into a file\n", l, a / b }'
}
ratio "crust -> crust server"
ratio "crust -> crust server, pages"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
