#!/usr/bin/env bash
# Interoperability with CRIU 4.2, both ways: image sets crust dumps are
# restored by CRIU, image sets CRIU dumps are restored by crust, and the
# restored program passes its own check (crates/testprogs).
#
# Usage: tests/interop/run.sh [--list] [CASE[:DIRECTION]...]   (as root)
#   DIRECTION is crust-criu (crust dumps, CRIU restores) or criu-crust;
#   a CASE alone runs both. No argument: every case, both ways. For
#   comparison, criu-criu and crust-crust can be asked for by name.
#
# Builds nothing of crust: it expects $CRUST_BIN_DIR/crust and the test
# programs (default target/release; `cargo build --release -p crust -p
# crust-testprogs`). CRIU is $CRIU_BIN, else what ../shared/criu/build.sh
# prints (it builds CRIU 4.2 once and caches it).
#
# Environment:
#   CRUST_BIN_DIR   where crust and the test programs are (default target/release)
#   CRIU_BIN        the criu binary (default: ../shared/criu/build.sh)
#   INTEROP_KEEP=1  keep the work dir (images, logs of both tools)
#   CRUST_REQUIRE_PRIVILEGED=1  no CRIU is a failure, not a skip (as in CI)
#
# Output: one line per case and direction, "PASS case crust-criu",
# "FAIL case criu-crust: reason (see LOG)" or "SKIP ...", then
# "interop: N passed, N failed, N skipped". Exits non-zero iff one failed.
# Every process started is killed and every file removed on exit. Take
# /tmp/crust-e2e.lock around it when e2e runs may run at the same time
# (.ci/run runs them one after the other).

set -u
set +m

# Orphans (the programs, restored trees) go to a child subreaper that
# reaps them at once (see tests/e2e/reaper).
if [ -z "${INTEROP_UNDER_REAPER:-}" ] && [ -x /usr/bin/python3 ]; then
    export INTEROP_UNDER_REAPER=1
    exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/../e2e/reaper" bash "${BASH_SOURCE[0]}" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CRUST_BIN_DIR:-$ROOT/target/release}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
CRUST=$BIN/crust
KEEP=${INTEROP_KEEP:-0}
READY_TIMEOUT=10
RESULT_TIMEOUT=20
CR_TIMEOUT=120

# Each case: NAME|PROGRAM ARGS ({D} is the case's dir)|what it shows.
# threads: 7, not mthreads' usual 8: its thread 7 waits in poll(2), which
# CRIU 4.2's dump makes return EINTR (compel turns ERESTART_RESTARTBLOCK
# into -EINTR), and the program counts that as a failure (criu-criu fails
# alike); crust restarts such a poll.
CASES=(
    "loop|loop|a single process"
    "tree3|forest --n 3|a tree of 3 processes"
    "tree8|forest --n 8|a tree of 8 processes"
    "sessions|ptree|8 processes in 2 sessions and 3 groups, a zombie"
    "cow|cow --mb 32|parent and child sharing copy-on-write memory (the child checks Pss < Rss)"
    "threads|mthreads --threads 7|7 threads: registers, TLS, masks, policies, one blocked in read(2)"
    "files|files --dir {D}/files|regular files: offsets, flags, O_APPEND"
    "pipes|pipes|pipes with data queued, a dup, a non-blocking pipe"
    "ghosts|ghostnodes --mode nodes --dir {D}/files|files deleted while open: sparse (chunks), FIFO, directory, device, symlink, cwd"
    "deadproc|ghostnodes --mode deadproc --dir {D}/files|the cwd and an fd in /proc/N of a dead child (a PROCFS remap; a helper of pid N at restore)"
    "pipes3|pipes --mode three|a pipe shared by three processes"
    "unix|unixsk --mode child|unix stream and seqpacket pairs split between parent and child"
    "tcp|tcp|a TCP connection over loopback with data queued both ways (--tcp-established)"
    "taskstate|taskstate --no-nobody 1|seccomp filters (TSYNC, 2 threads), membarrier, SCHED_RESET_ON_FORK (no uid-65534 child: CRIU 4.2 cannot dump another uid's process without CAP_SYS_RESOURCE)"
    "stopped|taskstate --mode stopped|a child stopped by SIGTSTP"
    "aio|aioring|two AIO contexts (io_setup), one gone round its ring: head, tail and events kept"
    "guards|guards|guard regions (MADV_GUARD_INSTALL), one across two VMAs: the same pages guarded, the rest kept"
    "utsns|utsns|a UTS namespace of the tree's own (host and domain names) with a child in it"
    "scmepoll|scmepoll --mode socket|an epoll held by no task, carried twice by messages queued on the socket it watches (zdtm scm05)"
    "lazy|lazy bigmem --mb 32|restore --lazy-pages: the dumping tool's lazy-pages daemon serves the other tool's lazy restore (PE_LAZY marks)"
    "lazyremote|lazyremote bigmem --mb 32|post-copy: dump --lazy-pages serves the other tool's lazy-pages --page-server and lazy restore (pid namespace; criu-crust is a skip: CRIU leaves the rseq page on the source, which crust refuses, and CRIU's dump --lazy-pages fails here to serve anyway)"
    "scmepoll2|scmepoll --mode other --moved 0|an epoll held by no task, carried by a message, watching a pipe and an eventfd of the process (not moved since: CRIU 4.2 records the numbers as registered and cannot restore its own images otherwise)"
)
DIRECTIONS=(crust-criu criu-crust)

if [ "${1:-}" = --list ]; then
    for c in "${CASES[@]}"; do
        IFS='|' read -r name _ what <<<"$c"
        printf '%-10s %s\n' "$name" "$what"
    done
    exit 0
fi

WORK=$(mktemp -d /tmp/crust-interop.XXXXXX) || { echo "cannot create a temp dir" >&2; exit 2; }
LOG_KEEP=$ROOT/target/interop-logs
declare -a TRACKED=() # "pid exe" of every program started or restored

# shellcheck source=../lib/proc.sh
. "$ROOT/tests/lib/proc.sh"
pstate() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
track() { TRACKED+=("$1 $2"); }

cleanup() {
    local t
    for t in "${TRACKED[@]+"${TRACKED[@]}"}"; do
        kill_tree ${t%% *} "${t#* }"
    done
    unlock_port "${PORT:-}"
    if [ "$KEEP" = 1 ]; then
        echo "interop: INTEROP_KEEP=1: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_file() {
    local f=$1 n=$(($2 * 20))
    while [ $n -gt 0 ]; do
        [ -e "$f" ] && return 0
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

wait_gone() {
    local pid=$1 n=$(($2 * 20))
    while [ $n -gt 0 ]; do
        [ -z "$(pstate "$pid")" ] && return 0
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

# Per case and direction: D (its dir), REASON, LOG.
fail() { REASON=$1; LOG=${2:-}; return 1; }

# start PROG [ARGS...]: start a test program in its own session; sets PID.
start() {
    local prog=$1
    shift
    [ -x "$BIN/$prog" ] || { fail "no $BIN/$prog (cargo build --release -p crust-testprogs)"; return 1; }
    PID=$(setsid "$BIN/$prog" --ready "$D/ready" --result "$D/result" "$@" </dev/null >"$D/$prog.out" 2>&1 & echo $!)
    track "$PID" "$BIN/$prog"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "$prog did not become ready: $(head -c 200 "$D/$prog.out")"; return 1; }
    rm -f "$D/ready"
}

# run_tool NAME TOOL ARGS...: TOOL (crust or criu) with a timeout, from $D;
# its stdout and stderr in $D/NAME.out. Sets RC.
run_tool() {
    local name=$1 tool=$2 bin
    shift 2
    bin=$CRUST
    [ "$tool" = criu ] && bin=$CRIU
    (cd "$D" && exec timeout -k 5 $CR_TIMEOUT "$bin" "$@") >"$D/$name.out" 2>&1
    RC=$?
}

# The first error line of a CRIU log, or the end of the tool's output.
why() {
    local log=$1 out=$2 e=""
    [ -f "$log" ] && e=$(grep -E 'Error \(|BUG' "$log" | grep -v RLIMIT_NOFILE | head -n 1)
    [ -z "$e" ] && e=$(tail -c 200 "$out" 2>/dev/null)
    printf '%s' "$e" | tr '\n' ' ' | head -c 240
}

# dump TOOL [ARGS...]: dump $PID into $D/img; the tree must be gone after.
dump() {
    local tool=$1
    shift
    mkdir -p "$D/img"
    run_tool dump "$tool" dump -t "$PID" -D "$D/img" -v4 -o dump.log "$@"
    [ $RC -eq 0 ] || { fail "$tool dump exited with $RC: $(why "$D/img/dump.log" "$D/dump.out")" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID is still there after the $tool dump" "$D/img/dump.log"; return 1; }
}

# restore TOOL [ARGS...]: restore $D/img detached; the root must be $PID.
restore() {
    local tool=$1 got
    shift
    rm -f "$D/pidfile"
    run_tool restore "$tool" restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log "$@"
    [ $RC -eq 0 ] || { fail "$tool restore exited with $RC: $(why "$D/img/restore.log" "$D/restore.out")" "$D/img/restore.log"; return 1; }
    got=$(cat "$D/pidfile" 2>/dev/null)
    [ "$got" = "$PID" ] || { fail "pidfile holds '$got', expected $PID" "$D/img/restore.log"; return 1; }
}

# SIGTERM the root and expect PASS in its result file; then the root ends.
expect_pass() {
    local res
    kill -TERM "$PID" 2>/dev/null
    wait_file "$D/result" $RESULT_TIMEOUT || { fail "no result ${RESULT_TIMEOUT}s after SIGTERM (state '$(pstate "$PID")')" "$D/img/restore.log"; return 1; }
    res=$(cat "$D/result")
    [ "$res" = PASS ] || { fail "the program says: $res" "$D/img/restore.log"; return 1; }
    [ -e "$D/ready" ] && { fail "the program ran its set-up again" "$D/img/restore.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID did not exit after PASS" "$D/img/restore.log"; return 1; }
}

# A free TCP port in 20000-39999.
PORT=""
pick_port() {
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        PORT=$((20000 + RANDOM % 20000))
        ss -Htanu "sport = :$PORT" 2>/dev/null | grep -q . || return 0
    done
}

# lazy: FROM dumps, FROM's lazy-pages daemon serves TO's lazy restore.
run_lazy() {
    local from=$1 to=$2
    shift 2
    start "$@" && dump "$from" || return 1
    run_tool lazy "$from" lazy-pages -D "$D/img" -W "$D/img" -v4 -o lazy.log &
    wait_file "$D/img/lazy-pages.socket" $READY_TIMEOUT || [ -S "$D/img/lazy-pages.socket" ] ||
        { fail "$from lazy-pages did not listen: $(why "$D/img/lazy.log" "$D/lazy.out")" "$D/img/lazy.log"; return 1; }
    restore "$to" --lazy-pages && expect_pass || return 1
    [ "$from" = crust ] && ! grep -q "lazy-pages: done" "$D/img/lazy.log" && { fail "crust's daemon did not finish" "$D/img/lazy.log"; return 1; }
    return 0
}

# The tools a lazy case started in the background (their command lines
# name the case's images directory): given 10 s to end, then killed.
end_lazy_tools() {
    local n=100 p
    while [ $n -gt 0 ] && pgrep -f "$D/img" >/dev/null; do sleep 0.1; n=$((n - 1)); done
    for p in $(pgrep -f "$D/img"); do kill -KILL "$p" 2>/dev/null; done
    wait 2>/dev/null
}

# lazyremote: FROM dumps with --lazy-pages (a pid namespace's init, the
# source kept frozen), TO's lazy-pages --page-server and lazy restore take
# it; the source is gone once every page moved. Returns 2 (skip) for
# CRIU's dump --lazy-pages, which fails here to serve its pages.
run_lazy_remote() {
    local from=$1 to=$2 outer bin=$CRUST port dump_pid
    shift 2
    [ "$from" = criu ] && bin=$CRIU
    [ -x "$BIN/$1" ] || { fail "no $BIN/$1"; return 1; }
    outer=$(setsid unshare -p -f sh -c 'exec setsid "$@"' sh "$BIN/$1" "${@:2}" --ready "$D/ready" \
        --result "$D/result" </dev/null >"$D/$1.out" 2>&1 & echo $!)
    track "$outer" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "$1 did not become ready: $(head -c 200 "$D/$1.out")"; return 1; }
    rm -f "$D/ready"
    PID=$(cat /proc/"$outer"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    track "$PID" "$BIN/$1"
    pick_port
    port=$PORT PORT=""
    mkdir -p "$D/img"
    (cd "$D" && exec timeout -k 5 $CR_TIMEOUT "$bin" dump -t "$PID" -D "$D/img" --lazy-pages \
        --address 127.0.0.1 --port "$port" -v4 -o dump.log) >"$D/dump.out" 2>&1 &
    dump_pid=$!
    for _ in $(seq 100); do
        ss -ltnH "sport = :$port" 2>/dev/null | grep -q . && break
        kill -0 "$dump_pid" 2>/dev/null || break
        sleep 0.1
    done
    run_tool lazy "$to" lazy-pages -D "$D/img" -W "$D/img" --page-server --address 127.0.0.1 \
        --port "$port" -v4 -o lazy.log &
    wait_file "$D/img/lazy-pages.socket" $READY_TIMEOUT || [ -S "$D/img/lazy-pages.socket" ] ||
        { fail "$to lazy-pages did not listen: $(why "$D/img/lazy.log" "$D/lazy.out")" "$D/img/lazy.log"; return 1; }
    rm -f "$D/pidfile"
    run_tool restore "$to" restore -D "$D/img" -d --pidfile "$D/pidfile" --lazy-pages -v4 -o restore.log
    if [ $RC -ne 0 ] && [ "$from" = criu ] && grep -q "not supported yet: a lazy restore" "$D/restore.out"; then
        # CRIU leaves the page of a thread's rseq area on the source; crust's
        # restore must fill it at once, and says so.
        REASON="crust refuses CRIU's lazy set: $(why "$D/img/restore.log" "$D/restore.out")"
        return 2
    fi
    [ $RC -eq 0 ] || { fail "$to restore exited with $RC: $(why "$D/img/restore.log" "$D/restore.out")" "$D/img/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/$1"
    if ! wait "$dump_pid"; then
        if [ "$from" = criu ] && grep -q 'page-pipe' "$D/img/dump.log"; then
            REASON="CRIU 4.2's dump --lazy-pages fails here to serve its pages ($(why "$D/img/dump.log" "$D/dump.out"))"
            return 2
        fi
        fail "$from dump --lazy-pages failed: $(why "$D/img/dump.log" "$D/dump.out")" "$D/img/dump.log"
        return 1
    fi
    expect_pass
}

# One case in one direction: start, dump with one tool, restore with the
# other, check.
run_case() {
    local name=$1 cmd=$2 dir=$3 from to prog rc extra=() peer="" res
    from=${dir%-*}
    to=${dir#*-}
    D=$WORK/$name-$dir
    mkdir -p "$D/files"
    REASON="" LOG=""
    cmd=${cmd//\{D\}/$D}
    # shellcheck disable=SC2206
    local argv=($cmd)
    prog=${argv[0]}
    if [ "$prog" = lazy ] || [ "$prog" = lazyremote ]; then
        if [ "$prog" = lazy ]; then run_lazy "$from" "$to" "${argv[@]:1}"; else
            run_lazy_remote "$from" "$to" "${argv[@]:1}"; fi
        rc=$?
        kill_tree "$PID" "$BIN/${argv[1]}"
        end_lazy_tools
        return $rc
    fi
    if [ "$prog" = tcp ]; then
        prog=tcpstream
        pick_port
        peer=$(setsid "$BIN/tcpstream" --role peer --listen 127.0.0.1:$PORT --ready "$D/peer.ready" \
            --result "$D/peer.result" </dev/null >"$D/peer.out" 2>&1 & echo $!)
        track "$peer" "$BIN/tcpstream"
        argv=(tcpstream --role dumped --connect 127.0.0.1:$PORT)
        extra=(--tcp-established)
    fi
    start "${argv[@]}" &&
        { [ -z "$peer" ] || wait_file "$D/peer.ready" $READY_TIMEOUT || fail "the TCP peer did not become ready"; } &&
        dump "$from" "${extra[@]}" &&
        restore "$to" "${extra[@]}" &&
        { [ -z "$peer" ] || kill -TERM "$peer"; } &&
        expect_pass
    rc=$?
    if [ $rc -eq 0 ] && [ -n "$peer" ]; then
        if wait_file "$D/peer.result" $RESULT_TIMEOUT; then
            res=$(cat "$D/peer.result")
            [ "$res" = PASS ] || fail "the TCP peer says: $res" "$D/img/restore.log"
        else
            fail "the TCP peer gave no result"
        fi
        rc=$?
    fi
    kill_tree "$PID" "$BIN/$prog"
    [ -n "$peer" ] && kill_tree "$peer" "$BIN/tcpstream"
    if [ -n "$peer" ]; then
        if iptables -w -S 2>/dev/null | grep -iE 'c114|CRIU' | grep -qE -- "port $PORT( |$)"; then
            [ $rc -eq 0 ] && fail "network lock rules for port $PORT are left over"
            rc=1
        fi
        unlock_port "$PORT"
        PORT=""
    fi
    return $rc
}

# --- CRIU
if [ -n "${CRIU_BIN:-}" ]; then
    CRIU=$CRIU_BIN
elif [ -x "$ROOT/../shared/criu/build.sh" ]; then
    CRIU=$("$ROOT/../shared/criu/build.sh" 2>"$WORK/criu-build.err" | tail -n 1)
else
    CRIU=""
fi
passed=0 failed=0 skipped=0
no_criu=""
[ -n "$CRIU" ] && [ -x "$CRIU" ] || no_criu="no CRIU 4.2 (set CRIU_BIN, or put ../shared/criu/build.sh beside the repo): $(tail -c 200 "$WORK/criu-build.err" 2>/dev/null)"
[ -x "$CRUST" ] || no_criu="no crust binary at $CRUST (cargo build --release -p crust)"

# --- which cases
declare -a WANT=()
if [ $# -eq 0 ]; then
    for c in "${CASES[@]}"; do
        for dir in "${DIRECTIONS[@]}"; do WANT+=("${c%%|*}:$dir"); done
    done
else
    for a in "$@"; do
        if [[ $a == *:* ]]; then WANT+=("$a"); else
            for dir in "${DIRECTIONS[@]}"; do WANT+=("$a:$dir"); done
        fi
    done
fi

for w in "${WANT[@]}"; do
    name=${w%%:*} dir=${w#*:} cmd=""
    for c in "${CASES[@]}"; do
        IFS='|' read -r n p _ <<<"$c"
        [ "$n" = "$name" ] && cmd=$p
    done
    case $dir in crust-criu | criu-crust | criu-criu | crust-crust) ;; *) cmd="" ;; esac
    if [ -z "$cmd" ]; then
        echo "FAIL $name $dir: no such case or direction (--list)"
        failed=$((failed + 1))
        continue
    fi
    if [ -n "$no_criu" ]; then
        if [ "${CRUST_REQUIRE_PRIVILEGED:-0}" = 1 ]; then
            echo "FAIL $name $dir: $no_criu"
            failed=$((failed + 1))
        else
            echo "SKIP $name $dir: $no_criu"
            skipped=$((skipped + 1))
        fi
        continue
    fi
    t0=$EPOCHREALTIME
    run_case "$name" "$cmd" "$dir"
    rc=$?
    if [ $rc -eq 0 ]; then
        printf 'PASS %s %s (%s s)\n' "$name" "$dir" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
        passed=$((passed + 1))
    elif [ $rc -eq 2 ]; then
        echo "SKIP $name $dir: $REASON"
        skipped=$((skipped + 1))
    else
        kept=""
        if [ -n "$LOG" ] && [ -e "$LOG" ]; then
            mkdir -p "$LOG_KEEP/$name-$dir"
            cp -r "$D"/. "$LOG_KEEP/$name-$dir/" 2>/dev/null
            kept=" (see $LOG_KEEP/$name-$dir/${LOG#"$D"/})"
        fi
        echo "FAIL $name $dir: $REASON$kept"
        failed=$((failed + 1))
    fi
done

echo "interop: $passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
