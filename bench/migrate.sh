#!/usr/bin/env bash
# Live migration on one machine (issue 15): a TCP service holding many
# client connections and memory that is being rewritten moves from one
# network namespace ("source host") to another ("destination host"),
# taking its service address along, while its clients keep talking to it.
#
#   bench/migrate.sh [--conns N] [--mb M] [--rate MBPS] [--pre-dumps K]
#                    [--page-server] [--lazy] [--all] [--tool crust|criu]
#                    [--auto] [--pidns] [--keep]
#
# Defaults: 100 connections, 512 MiB rewritten at 10 MB/s, no pre-dump, no
# page server, no lazy restore: the plain path (one dump, the images
# copied over, one restore). Each stage of the full migration is a flag:
#   --pre-dumps K   K rounds of `pre-dump --track-mem` (each after the
#                   first with --prev-images-dir), then the final dump
#                   with --prev-images-dir: only what was written since
#                   the previous round goes.
#   --page-server   every round's pages go through `page-server` on the
#                   destination (dump|pre-dump --page-server); only the
#                   other images are copied.
#   --lazy          the final dump is `dump --lazy-pages` (its pages stay on
#                   the source and are served from there); the destination
#                   runs `lazy-pages --page-server` and `restore --lazy-pages`.
#   --all           --pre-dumps 2 --page-server --lazy.
#   --auto          each stage crust has: pre-dumps when `check --feature
#                   mem_dirty_track` says yes, the page server when
#                   `crust page-server` is no longer "not supported yet",
#                   lazy when `check --feature uffd-noncoop` says yes; exit
#                   3 if crust then says "not supported yet" (a stage it
#                   has only in part).
# --pidns runs the server in a pid namespace of its own (so the restored
# tree's pids cannot collide with the source's); --lazy implies it, as
# the source tree lives on, frozen, until its last page is served.
# --tool criu runs CRIU 4.2 ($CRIU_BIN, else /tmp/oracle/criu-shim, else
# ../shared/criu/build.sh's) instead of crust; CRIU cannot pre-dump on a
# kernel without soft-dirty, and its `dump --lazy-pages` fails here to
# serve pages (tee: EPERM in page-pipe.c): --tool criu --page-server works.
#
# The set-up: three network namespaces, nothing in the host's. The source
# and the destination are joined by a veth pair (10.80.0.1 - 10.80.0.2:
# the migration network, page-server traffic). The service address
# 10.81.0.100 is on a veth (svc0) in the source whose peer is in the
# clients' namespace (10.81.0.3); after the final dump svc0 itself moves
# into the destination and gets the address back (same link, same MAC: the
# clients' neighbour entries stay right). The server is `tcpfleet --mode
# server` (one process: the connections and the memory, memgen's pages
# checked by generation), the clients one `tcpfleet --mode client` in the
# clients' namespace: one request per connection every 50 ms, each answer
# checked (sequence and hash of every byte sent).
#
# Prints per round the bytes sent to the destination (page server files
# and copied images) and the round's time and frozen time; then the total
# time (the first round's start to the restored server answering on every
# connection, and with --lazy to every page being in), the frozen time of
# the final dump, the restore's time, and the longest wait any client saw
# for an answer (the service's interruption as its clients feel it). Fails
# (exit 1) if a client saw an error, or the server's memory is not intact
# (checked by the restored server at once, and again at its end).
#
# Needs root, ip, nsenter, `cargo build --release -p crust -p
# crust-testprogs`. Runs under tests/e2e/reaper; kills every process it
# starts and deletes its namespaces (the veths go with them) and files,
# pass or fail. MIG_LOG_LEVEL (default 2) is the tools' -v.
set -euo pipefail

if [[ -z ${BENCH_UNDER_REAPER:-} ]]; then
    export BENCH_UNDER_REAPER=1
    exec python3 "$(dirname "$0")/../tests/e2e/reaper" bash "$0" "$@"
fi

CONNS=100 MB=512 RATE=10 PREDUMPS=0 PS=0 LAZY=0 TOOL=crust KEEP=0 PIDNS= AUTO=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --conns) CONNS=$2; shift ;;
        --mb) MB=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --pre-dumps) PREDUMPS=$2; shift ;;
        --page-server) PS=1 ;;
        --lazy) LAZY=1 ;;
        --all) PREDUMPS=2 PS=1 LAZY=1 ;;
        --auto) AUTO=1 ;;
        --tool) TOOL=$2; shift ;;
        --keep) KEEP=1 ;;
        --pidns) PIDNS=1 ;;
        *) echo "unknown argument $1 (see the head of $0)" >&2; exit 2 ;;
    esac
    shift
done

if [[ $AUTO = 1 && $TOOL = crust ]]; then
    c=${CRUST_BIN:-${CRUST_BIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/target/release}/crust}
    "$c" check --no-default-config --feature mem_dirty_track >/dev/null 2>&1 && PREDUMPS=2
    # The page server carries every round, the pre-dumps' too.
    case $("$c" page-server -D /nonexistent/crust-probe 2>&1) in *"not supported yet"*) ;; *) PS=1 ;; esac
    # Lazy restore needs userfaultfd with its fork/remap/unmap events.
    "$c" check --no-default-config --feature uffd-noncoop >/dev/null 2>&1 && LAZY=1
fi
# A lazy dump keeps the source tree (frozen) until its last page is
# served: the destination cannot have the same pids on this one machine,
# so with --lazy the server runs in a pid namespace of its own.
[[ -z $PIDNS ]] && PIDNS=$LAZY

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CRUST_BIN_DIR:-$ROOT/target/release}
FLEET=$BIN/tcpfleet
case $TOOL in
    crust) TOOLBIN=${CRUST_BIN:-$BIN/crust} ;;
    criu)
        TOOLBIN=${CRIU_BIN:-}
        [[ -z $TOOLBIN && -x /tmp/oracle/criu-shim ]] && TOOLBIN=/tmp/oracle/criu-shim
        if [[ -z $TOOLBIN && -x $ROOT/../shared/criu/build.sh ]]; then
            TOOLBIN=$("$ROOT/../shared/criu/build.sh" 2>/dev/null | tail -n 1) || TOOLBIN=
        fi
        ;;
    *) echo "--tool crust|criu" >&2; exit 2 ;;
esac
CRUST=${CRUST_BIN:-$BIN/crust}
for b in "$TOOLBIN" "$FLEET" "$CRUST"; do
    [[ -n $b && -x $b ]] || { echo "missing ${b:-the $TOOL binary}: cargo build --release -p crust -p crust-testprogs" >&2; exit 1; }
done
command -v ip >/dev/null && command -v nsenter >/dev/null || { echo "needs ip and nsenter" >&2; exit 1; }
LOGV=${MIG_LOG_LEVEL:-2}

TAG=mig$$
NS_SRC=$TAG-src NS_DST=$TAG-dst NS_CLI=$TAG-cli
SRC_IP=10.80.0.1 DST_IP=10.80.0.2 SVC_IP=10.81.0.100 CLI_IP=10.81.0.3
SVC_PORT=8000 PS_PORT=27000 LAZY_PORT=27001
WORK=$(mktemp -d /tmp/crust-bench-migrate.XXXXXX)
chmod 755 "$WORK"
PIDS=()

cleanup() {
    local p n
    for p in "${PIDS[@]+"${PIDS[@]}"}"; do
        kill -KILL "$p" 2>/dev/null || true
    done
    # A restored server is not one of the pids above if the restore's
    # pidfile was not written: kill whatever is left in the namespaces.
    for n in "$NS_SRC" "$NS_DST" "$NS_CLI"; do
        [[ -e /run/netns/$n ]] || continue
        # shellcheck disable=SC2046
        kill -KILL $(ip netns pids "$n" 2>/dev/null) 2>/dev/null || true
    done
    for n in "$NS_SRC" "$NS_DST" "$NS_CLI"; do
        ip netns del "$n" 2>/dev/null || true
    done
    if [[ $KEEP = 1 ]]; then
        echo "work dir (images, logs) kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
wait_file() { # FILE SECONDS
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -s $1 ]] && return 0
        sleep 0.05
    done
    return 1
}
wait_gone() { # PID SECONDS
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        [[ -e /proc/$1 ]] || return 0
        sleep 0.05
    done
    return 1
}
die() { echo "migrate: $*" >&2; exit 1; }
# A tool's failure. With --auto, one saying "not supported yet" means a
# stage crust only half has (e.g. pre-dump before restore through a
# parent chain): exit 3, so that a caller can run the stages it has.
tool_die() {
    if [[ $AUTO = 1 && $* == *"not supported yet"* ]]; then
        echo "migrate: --auto: a stage is not complete in crust yet: $*" >&2
        exit 3
    fi
    die "$@"
}
# in_ns NS CMD...: CMD in NS's network namespace (nothing else changes).
# Backgrounded commands are not run through this function (its subshell
# would be the job): they call nsenter themselves.
in_ns() { local n=$1; shift; nsenter -F --net="/run/netns/$n" "$@"; }
# The frozen time in a stats-dump, ms ("-" without one).
frozen_ms() {
    [[ -f $1/stats-dump ]] || { echo -; return; }
    "$CRUST" image decode -i "$1/stats-dump" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["entries"][0]["dump"]
print("%.1f" % (d["frozen_time"] / 1000))' 2>/dev/null || echo -
}
lazy_bytes() {
    "$CRUST" image decode -i "$1/stats-dump" 2>/dev/null | python3 -c '
import json, sys
print(json.load(sys.stdin)["entries"][0]["dump"].get("pages_lazy", 0) * 4096)' 2>/dev/null || echo 0
}
tail_log() { tail -n 5 "$1" 2>/dev/null | tr '\n' ' ' | head -c 600; }

setup_net() {
    local n
    for n in "$NS_SRC" "$NS_DST" "$NS_CLI"; do
        ip netns add "$n"
        ip -n "$n" link set lo up
    done
    ip -n "$NS_SRC" link add mig0 type veth peer name mig0 netns "$NS_DST"
    ip -n "$NS_SRC" addr add "$SRC_IP/24" dev mig0
    ip -n "$NS_DST" addr add "$DST_IP/24" dev mig0
    ip -n "$NS_SRC" link set mig0 up
    ip -n "$NS_DST" link set mig0 up
    ip -n "$NS_SRC" link add svc0 type veth peer name eth0 netns "$NS_CLI"
    ip -n "$NS_SRC" addr add "$SVC_IP/24" dev svc0
    ip -n "$NS_CLI" addr add "$CLI_IP/24" dev eth0
    ip -n "$NS_SRC" link set svc0 up
    ip -n "$NS_CLI" link set eth0 up
}

# The service address moves with the workload: the link itself goes to
# the destination (moving a link drops its addresses: add it back).
move_address() {
    # Until the restore has the connections back, the destination drops
    # what reaches the service (as a network lock): a client's packet
    # landing before its socket exists would be answered by a reset.
    in_ns "$NS_DST" iptables -w -I INPUT -p tcp -d "$SVC_IP" --dport "$SVC_PORT" -j DROP
    ip -n "$NS_SRC" link set svc0 netns "$NS_DST"
    ip -n "$NS_DST" addr add "$SVC_IP/24" dev svc0
    ip -n "$NS_DST" link set svc0 up
}

# wait_listen NS PORT: until something listens on PORT in NS (10 s).
wait_listen() {
    local i
    for ((i = 0; i < 200; i++)); do
        in_ns "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    return 1
}

# Copies the images of a round's SRC dir the destination does not have
# yet (the page server's files are there already); prints the bytes.
transfer() {
    local src=$1 dst=$2 f b total=0
    for f in "$src"/*; do
        b=${f##*/}
        [[ -e $dst/$b || -L $dst/$b ]] && continue
        # Logs, and crust's files for the source's next round (the write
        # tracking's keeper, the runs it sent to the page server).
        case $b in *.log | crust-keeper | crust-ps-pagemap-*) continue ;; esac
        if [[ -L $f ]]; then
            cp -a "$f" "$dst/$b"
        else
            cp -a "$f" "$dst/$b"
            total=$((total + $(stat -c %s "$f")))
        fi
    done
    echo "$total"
}

# Bytes the page server of a round wrote.
ps_bytes() { cat /dev/null "$1"/pages-*.img "$1"/pagemap-*.img 2>/dev/null | wc -c; }

# start_page_server DIR: the destination's page server for one round.
start_page_server() {
    local d=$1
    nsenter -F --net="/run/netns/$NS_DST" "$TOOLBIN" page-server -D "$d" --address "$DST_IP" --port "$PS_PORT" \
        -v"$LOGV" -o page-server.log </dev/null >"$d/page-server.out" 2>&1 &
    PS_PID=$!
    PIDS+=("$PS_PID")
    wait_listen "$NS_DST" "$PS_PORT" ||
        tool_die "the page server does not listen: $(cat "$d/page-server.out"; tail_log "$d/page-server.log")"
}

# A round's dump or pre-dump arguments: ROUND (1-based).
round_args() {
    local i=$1
    ROUND_ARGS=()
    if [[ $PREDUMPS -gt 0 ]]; then
        ROUND_ARGS+=(--track-mem)
        [[ $i -gt 1 ]] && ROUND_ARGS+=(--prev-images-dir "../$((i - 1))")
    fi
    [[ $PS = 1 ]] && ROUND_ARGS+=(--page-server --address "$DST_IP" --port "$PS_PORT")
    return 0
}

# round I CMD [ARGS]: one pre-dump or dump round (not the lazy one).
round() {
    local i=$1 cmd=$2 s d t0 t1 sent=0
    shift 2
    s=$WORK/src/$i d=$WORK/dst/$i
    mkdir -p "$s" "$d"
    [[ $i -gt 1 && $PREDUMPS -gt 0 ]] && ln -s "../$((i - 1))" "$d/parent"
    [[ $PS = 1 ]] && start_page_server "$d"
    round_args "$i"
    t0=$(now)
    in_ns "$NS_SRC" "$TOOLBIN" "$cmd" -t "$SERVER" -D "$s" "${ROUND_ARGS[@]+"${ROUND_ARGS[@]}"}" "$@" \
        -v"$LOGV" -o "$cmd.log" --display-stats </dev/null >"$s/$cmd.out" 2>&1 ||
        tool_die "$cmd (round $i) failed: $(tail_log "$s/$cmd.out") $(tail_log "$s/$cmd.log")"
    t1=$(now)
    if [[ $PS = 1 ]]; then
        wait_gone "$PS_PID" 30 || die "the page server of round $i did not exit"
        sent=$(ps_bytes "$d")
    fi
    sent=$((sent + $(transfer "$s" "$d")))
    printf '  round %d (%-8s) %12d bytes sent  %7s s  frozen %7s ms\n' \
        "$i" "$cmd" "$sent" "$(secs "$t0" "$t1")" "$(frozen_ms "$s")"
    SENT_TOTAL=$((SENT_TOTAL + sent))
}

# The final round with --lazy: the dump stays on the source serving pages.
lazy_round() {
    local i=$1 s d t0 t1 sent
    s=$WORK/src/$i d=$WORK/dst/$i
    mkdir -p "$s" "$d"
    [[ $PREDUMPS -gt 0 ]] && ln -s "../$((i - 1))" "$d/parent"
    round_args "$i"
    # Lazy pages are served by the dump itself, not sent to a page server.
    local a=() x skip=0
    for x in "${ROUND_ARGS[@]}"; do
        case $skip$x in
            0--page-server) ;;
            0--address | 0--port) skip=1 ;;
            1*) skip=0 ;;
            *) a+=("$x") ;;
        esac
    done
    mkfifo "$WORK/lazy.status"
    t0=$(now)
    nsenter -F --net="/run/netns/$NS_SRC" "$TOOLBIN" dump -t "$SERVER" -D "$s" "${a[@]+"${a[@]}"}" --tcp-established \
        --lazy-pages --address "$SRC_IP" --port "$LAZY_PORT" --status-fd 3 \
        -v"$LOGV" -o dump.log --display-stats 3>"$WORK/lazy.status" </dev/null >"$s/dump.out" 2>&1 &
    LAZY_DUMP=$!
    PIDS+=("$LAZY_DUMP")
    # The dump says on its status fd when the images are written and its
    # pages are served (the fifo opens once the dump opened its end).
    if ! timeout 300 head -c 1 "$WORK/lazy.status" >/dev/null; then
        tool_die "dump --lazy-pages did not get ready: $(tail_log "$s/dump.out") $(tail_log "$s/dump.log")"
    fi
    t1=$(now)
    sent=$(transfer "$s" "$d")
    printf '  round %d (dump, lazy) %8d bytes sent  %7s s  (the rest served lazily)\n' \
        "$i" "$sent" "$(secs "$t0" "$t1")"
    SENT_TOTAL=$((SENT_TOTAL + sent))
}

client_field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" "$WORK/client.status" 2>/dev/null; }

main() {
    setup_net
    local i j t_start t_dumped t_restored t_resumed t_done min0 spath
    # The server: its files (result, probe) are on the shared filesystem,
    # where the restored one finds them again.
    # (With --pidns, unshare stays in the source with files of its own:
    # the server's output file is the server's alone.)
    local pidns=()
    [[ $PIDNS = 1 ]] && pidns=(unshare --pid --fork)
    SERVER=$(nsenter -F --net="/run/netns/$NS_SRC" "${pidns[@]+"${pidns[@]}"}" \
        sh -c 'exec setsid "$@" </dev/null >"$0" 2>&1' "$WORK/server.out" "$FLEET" --mode server \
        --ready "$WORK/server.ready" --result "$WORK/server.result" --listen "$SVC_IP:$SVC_PORT" \
        --mb "$MB" --rate "$RATE" --probe "$WORK/server.probe" </dev/null >"$WORK/launcher.out" 2>&1 & echo $!)
    PIDS+=("$SERVER")
    wait_file "$WORK/server.ready" 120 || die "the server did not start: $(cat "$WORK/server.out")"
    if [[ $PIDNS = 1 ]]; then
        # unshare's child is the server (pid 1 of its namespace).
        SERVER=$(cat "/proc/$SERVER/task/$SERVER/children" | tr -d ' ')
        PIDS+=("$SERVER")
    fi
    CLIENT=$(nsenter -F --net="/run/netns/$NS_CLI" setsid "$FLEET" --mode client --ready "$WORK/client.ready" \
        --result "$WORK/client.result" --connect "$SVC_IP:$SVC_PORT" --conns "$CONNS" \
        --status "$WORK/client.status" </dev/null >"$WORK/client.out" 2>&1 & echo $!)
    PIDS+=("$CLIENT")
    wait_file "$WORK/client.ready" 60 || die "the clients did not connect: $(cat "$WORK/client.out" "$WORK/client.result" 2>/dev/null)"
    sleep 1

    local stages="plain dump"
    [[ $PREDUMPS -gt 0 ]] && stages="$PREDUMPS pre-dumps"
    [[ $PS = 1 ]] && stages+=", page server"
    [[ $LAZY = 1 ]] && stages+=", lazy restore" || stages+=", restore"
    echo "migrate ($TOOL: $stages): a server of $CONNS connections, $MB MiB rewritten at $RATE MB/s"
    SENT_TOTAL=0
    t_start=$(now)
    for ((i = 1; i <= PREDUMPS; i++)); do
        round "$i" pre-dump
    done
    i=$((PREDUMPS + 1))
    if [[ $LAZY = 1 ]]; then
        lazy_round "$i"
    else
        round "$i" dump --tcp-established
    fi
    t_dumped=$(now)
    move_address
    # A lazy dump holds the (frozen) tree until every page is served.
    [[ $LAZY = 1 ]] || wait_gone "$SERVER" 10 || die "the dumped server (pid $SERVER) is still there"
    local d=$WORK/dst/$i restore_args=()
    if [[ $LAZY = 1 ]]; then
        nsenter -F --net="/run/netns/$NS_DST" "$TOOLBIN" lazy-pages -D "$d" --page-server --address "$SRC_IP" \
            --port "$LAZY_PORT" -v"$LOGV" -o lazy-pages.log </dev/null >"$d/lazy-pages.out" 2>&1 &
        LAZY_D=$!
        PIDS+=("$LAZY_D")
        # (A socket is empty: wait for it to be there.)
        for ((j = 0; j < 200; j++)); do
            [[ -S $d/lazy-pages.socket ]] && break
            sleep 0.05
        done
        [[ -S $d/lazy-pages.socket ]] ||
            tool_die "the lazy-pages daemon did not start: $(tail_log "$d/lazy-pages.out") $(tail_log "$d/lazy-pages.log")"
        restore_args+=(--lazy-pages)
    fi
    min0=$(client_field min)
    t_dumped=$(now)
    in_ns "$NS_DST" "$TOOLBIN" restore -D "$d" -d --tcp-established --pidfile "$WORK/restored.pid" \
        "${restore_args[@]+"${restore_args[@]}"}" -v"$LOGV" -o restore.log </dev/null >"$d/restore.out" 2>&1 ||
        tool_die "restore failed: $(tail_log "$d/restore.out") $(tail_log "$d/restore.log")"
    t_restored=$(now)
    in_ns "$NS_DST" iptables -w -D INPUT -p tcp -d "$SVC_IP" --dport "$SVC_PORT" -j DROP
    PIDS+=("$(cat "$WORK/restored.pid")")
    if [[ $PIDNS = 1 ]]; then
        SERVER=$(cat "$WORK/restored.pid")
    else
        [[ $(cat "$WORK/restored.pid") = "$SERVER" ]] || die "the restore made pid $(cat "$WORK/restored.pid"), not $SERVER"
    fi
    # Every connection answered again after the restore.
    for ((i = 0; i < 1200; i++)); do
        [[ $(client_field min) -gt $((min0 + 1)) ]] && break
        [[ $(client_field err) = - ]] || break
        sleep 0.05
    done
    t_resumed=$(now)
    [[ $(client_field err) = - ]] || die "a client saw an error: $(client_field err | tr _ ' ')"
    [[ $(client_field min) -gt $((min0 + 1)) ]] || die "the connections did not all answer within 60 s of the restore ($(cat "$WORK/client.status"))"
    t_done=$t_resumed
    if [[ $LAZY = 1 ]]; then
        wait_gone "$LAZY_D" 300 || die "the lazy-pages daemon did not finish in 300 s"
        wait_gone "$LAZY_DUMP" 30 || die "dump --lazy-pages did not exit once its pages were served"
        t_done=$(now)
    fi
    # The restored server checks its memory now.
    rm -f "$WORK/server.probe"
    kill -USR2 "$SERVER"
    wait_file "$WORK/server.probe" 60 || die "the restored server does not answer its probe"
    spath=$(cat "$WORK/server.probe")
    [[ $spath = OK* ]] || die "the restored server's memory: $spath"

    kill -TERM "$CLIENT"
    wait_file "$WORK/client.result" 30 || die "the clients gave no verdict"
    kill -TERM "$SERVER" 2>/dev/null || true  # (it may have ended with its last connection)
    wait_file "$WORK/server.result" 60 || die "the server gave no verdict"
    printf '  total          %8s s   (first round to every connection answering in the destination%s)\n' \
        "$(secs "$t_start" "$t_done")" "$([[ $LAZY = 1 ]] && echo ' and every page in')"
    printf '  frozen (dump)  %8s ms%s\n' "$(frozen_ms "$WORK/src/$((PREDUMPS + 1))")" \
        "$([[ $LAZY = 1 ]] && echo "   (the dump's; with --lazy-pages it ends when the last page is served; $(lazy_bytes "$WORK/src/$((PREDUMPS + 1))") bytes lazily)")"
    printf '  restore        %8s s\n' "$(secs "$t_dumped" "$t_restored")"
    printf '  resumed after  %8s s   (the restore to every connection answering)\n' "$(secs "$t_restored" "$t_resumed")"
    [[ $LAZY = 1 ]] && printf '  all pages in   %8s s   (the restore to the lazy-pages daemon done and the source tree gone)\n' \
        "$(secs "$t_restored" "$t_done")"
    printf '  longest client wait %s ms; bytes sent %d\n' "$(client_field maxwait)" "$SENT_TOTAL"
    printf '  clients: %s %s\n' "$(cat "$WORK/client.result")" "$(sed 's/^tcpfleet //' "$WORK/client.out" | tail -n 1)"
    printf '  server:  %s %s\n' "$(cat "$WORK/server.result")" "$(sed 's/^tcpfleet //' "$WORK/server.out" | tail -n 1)"
    [[ $(cat "$WORK/client.result") = PASS && $(cat "$WORK/server.result") = PASS ]]
}

main
