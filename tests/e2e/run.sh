#!/usr/bin/env bash
# End-to-end tests of crust: dump and restore single processes, and the error paths.
#
# Usage: tests/e2e/run.sh [--list] [TEST...]      (as root; runs every test by default)
#
# Builds nothing: it expects $CRUST_BIN_DIR/crust and the test programs of
# crates/testprogs in $CRUST_BIN_DIR (default: target/release), so first run
#   cargo build --release -p crust -p crust-testprogs
#
# Environment:
#   CRUST_BIN_DIR     where crust and the test programs are (default target/release)
#   CRUST_E2E_NO_CR=1 skip dump/restore: every program is only started and signalled
#                     (checks the programs and this harness); tests that need crust SKIP
#   E2E_BIGMEM_MB     size of the bigmem test (default 1024)
#   E2E_LOG_DIR       where the logs of failed tests are kept (default target/e2e-logs)
#
# Output: one line per test, "PASS name", "FAIL name: reason (see LOG)" or
# "SKIP name: reason", then "e2e: N passed, N failed, N skipped". Exits non-zero
# iff a test failed. Every process a test starts is killed and every temporary
# file removed on exit, pass or fail.

set -u
set +m

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CRUST_BIN_DIR:-$ROOT/target/release}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
CRUST=${CRUST_BIN:-$BIN/crust}
NO_CR=${CRUST_E2E_NO_CR:-0}
case $NO_CR in "" | 0) NO_CR=0 ;; *) NO_CR=1 ;; esac
BIGMEM_MB=${E2E_BIGMEM_MB:-1024}
LOG_KEEP=${E2E_LOG_DIR:-$ROOT/target/e2e-logs}
GOLDEN_SRC=$ROOT/tests/fixtures/golden
GOLDEN_PID=1077
GOLDEN_COUNTER_ADDR=$((0x4a60f0))
READY_TIMEOUT=10
RESULT_TIMEOUT=20
CR_TIMEOUT=${E2E_CR_TIMEOUT:-300}

ALL_TESTS=(loop bigmem fpregs signals files mappings getpid restore-twice golden-loop
    err-dump-nopid err-dump-threads err-dump-children err-restore-nodir
    err-restore-truncated err-restore-arch)

WORK=$(mktemp -d /tmp/crust-e2e.XXXXXX) || { echo "cannot create a temp dir" >&2; exit 2; }
declare -a TRACKED=()      # "pid exe" of every process we started or restored
declare -a GOLDEN_MADE=()  # files and dirs the golden test created, removed in reverse

# ---------------------------------------------------------------- helpers

# Remember a process to kill at the end; exe is the binary it must run (so a
# recycled pid is never killed by mistake).
track() { TRACKED+=("$1 $2"); }

exe_of() { readlink "/proc/$1/exe" 2>/dev/null | sed 's/ (deleted)$//'; }

# Kill a tracked pid (and its children) if it still runs the expected binary.
kill_tracked() {
    local pid=$1 exe=$2 child
    [ -e "/proc/$pid" ] || return 0
    [ "$(exe_of "$pid")" = "$exe" ] || return 0
    for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        [ "$(exe_of "$child")" = "$exe" ] && kill -KILL "$child" 2>/dev/null
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    local t i
    for t in "${TRACKED[@]+"${TRACKED[@]}"}"; do
        kill_tracked ${t%% *} "${t#* }"
    done
    for ((i = ${#GOLDEN_MADE[@]} - 1; i >= 0; i--)); do
        t=${GOLDEN_MADE[$i]}
        if [ -d "$t" ]; then rmdir "$t" 2>/dev/null; else rm -f "$t"; fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# State letter of a pid ("" if gone).
pstate() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }

# Wait until a file exists; $2 seconds at most.
wait_file() {
    local f=$1 n=$(($2 * 20))
    while [ $n -gt 0 ]; do
        [ -e "$f" ] && return 0
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

# Wait until a pid is gone (reaping it if it is our zombie child); $2 seconds at most.
wait_gone() {
    local pid=$1 n=$(($2 * 20)) st
    while [ $n -gt 0 ]; do
        st=$(pstate "$pid")
        [ -z "$st" ] && return 0
        [ "$st" = Z ] && wait "$pid" 2>/dev/null
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

# A pid that does not exist.
free_pid() {
    local max p
    max=$(cat /proc/sys/kernel/pid_max)
    for ((p = max - 1; p > max - 1000; p--)); do
        [ -e "/proc/$p" ] || { echo "$p"; return; }
    done
    echo 999999999
}

# Per-test state set by run_test: T (name), D (test dir), REASON, LOG.
fail() { REASON=$1; [ -n "${2:-}" ] && LOG=$2; return 1; }
skip() { REASON=$1; return 2; }

# Start a test program: start_prog PROG [ARGS...]; sets PID.
start_prog() {
    local prog=$1
    shift
    [ -x "$BIN/$prog" ] || { fail "no test program $BIN/$prog (cargo build --release -p crust-testprogs)"; return 1; }
    rm -f "$D/ready" "$D/result"
    # Started from a subshell that exits at once, so the program is not our
    # child (like a restored one): init reaps it and bash reports nothing.
    PID=$(setsid "$BIN/$prog" --ready "$D/ready" --result "$D/result" "$@" </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$BIN/$prog"
    if ! wait_file "$D/ready" $READY_TIMEOUT; then
        fail "$prog did not become ready in ${READY_TIMEOUT}s"
        return 1
    fi
    if [ "$(exe_of "$PID")" != "$BIN/$prog" ]; then
        fail "pid $PID is not $prog (exe $(exe_of "$PID"))"
        return 1
    fi
    # Programs write the ready file once, during set-up: if it comes back, the
    # program was started again rather than restored (checked in expect_pass).
    rm -f "$D/ready"
    return 0
}

need_crust() {
    [ -x "$CRUST" ] || { fail "no crust binary at $CRUST (cargo build --release)"; return 1; }
}

# Run crust with a timeout; stdout/stderr to $D/NAME.out/.err. Sets RC.
crust_run() {
    local name=$1
    shift
    timeout -k 5 "$CR_TIMEOUT" "$CRUST" "$@" >"$D/$name.out" 2>"$D/$name.err"
    RC=$?
}

# dump PID into IMG; checks rc and that the task is gone.
do_dump() {
    local img=$1
    mkdir -p "$img"
    crust_run dump dump -t "$PID" -D "$img" -v4 -o dump.log
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump (state $(pstate "$PID"))" "$img/dump.log"; return 1; }
}

# restore from IMG detached; checks rc and the pidfile. $2: log/pidfile suffix.
do_restore() {
    local img=$1 sfx=${2:-} got
    rm -f "$D/pidfile$sfx"
    crust_run "restore$sfx" restore -D "$img" -d --pidfile "$D/pidfile$sfx" -v4 -o "restore$sfx.log"
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore$sfx.err")" "$img/restore$sfx.log"; return 1; }
    got=$(cat "$D/pidfile$sfx" 2>/dev/null)
    [ "$got" = "$PID" ] || { fail "pidfile holds '$got', expected $PID" "$img/restore$sfx.log"; return 1; }
    [ -e "/proc/$PID" ] || { fail "restored pid $PID does not exist" "$img/restore$sfx.log"; return 1; }
}

# SIGTERM the program and expect PASS in its result file.
expect_pass() {
    local log=${1:-} res
    kill -TERM "$PID" 2>/dev/null
    if ! wait_file "$D/result" $RESULT_TIMEOUT; then
        fail "no result ${RESULT_TIMEOUT}s after SIGTERM (state '$(pstate "$PID")')" "$log"
        return 1
    fi
    res=$(cat "$D/result")
    [ "$res" = PASS ] || { fail "program says: $res" "$log"; return 1; }
    [ -e "$D/ready" ] && { fail "the ready file was written again: the program ran its set-up twice" "$log"; return 1; }
    wait_gone "$PID" 5 || { fail "pid $PID did not exit after writing PASS" "$log"; return 1; }
}

# The standard test: start, (dump, restore), SIGTERM, expect PASS.
cr_test() {
    start_prog "$@" || return 1
    if [ "$NO_CR" = 1 ]; then
        sleep 0.3
        expect_pass
        return
    fi
    need_crust || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# ---------------------------------------------------------------- tests

t_loop() { cr_test loop; }
t_bigmem() { cr_test bigmem --mb "$BIGMEM_MB"; }
t_fpregs() { cr_test fpregs; }
t_signals() { cr_test signals; }
t_files() { mkdir -p "$D/files" && cr_test files --dir "$D/files"; }
t_mappings() { mkdir -p "$D/files" && cr_test mappings --dir "$D/files"; }
t_getpid() { cr_test getpid; }

t_restore_twice() {
    [ "$NO_CR" = 1 ] && { skip "CRUST_E2E_NO_CR is set"; return; }
    need_crust || return 1
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" 1 || return 1
    # Restore #1 must be a live loop: still running, not stopped, 300 ms later.
    sleep 0.3
    case $(pstate "$PID") in
        S | R) ;;
        *) fail "restore #1: pid $PID in state '$(pstate "$PID")'" "$D/img/restore1.log"; return 1 ;;
    esac
    [ "$(exe_of "$PID")" = "$BIN/loop" ] || { fail "restore #1: pid $PID runs '$(exe_of "$PID")'" "$D/img/restore1.log"; return 1; }
    kill -KILL "$PID"
    wait_gone "$PID" 5 || { fail "restore #1: pid $PID survived SIGKILL"; return 1; }
    do_restore "$D/img" 2 || return 1
    expect_pass "$D/img/restore2.log"
}

# Read the u64 at an address of a process.
peek_u64() {
    python3 - "$1" "$2" <<'EOF'
import struct, sys
with open("/proc/%s/mem" % sys.argv[1], "rb") as f:
    f.seek(int(sys.argv[2]))
    print(struct.unpack("<Q", f.read(8))[0])
EOF
}

golden_make_dir() {
    local d
    for d in "$@"; do
        [ -d "$d" ] && continue
        mkdir "$d" || return 1
        GOLDEN_MADE+=("$d")
    done
}

t_golden_loop() {
    [ "$NO_CR" = 1 ] && { skip "CRUST_E2E_NO_CR is set"; return; }
    compgen -G "$GOLDEN_SRC/loop/*.img" >/dev/null || { skip "no images in $GOLDEN_SRC/loop"; return; }
    [ -f "$GOLDEN_SRC/bin/loop" ] || { skip "no $GOLDEN_SRC/bin/loop"; return; }
    [ -e /proc/$GOLDEN_PID ] && { skip "pid $GOLDEN_PID is in use"; return; }
    command -v python3 >/dev/null || { skip "python3 is needed to read /proc/$GOLDEN_PID/mem"; return; }
    need_crust || return 1
    (cd "$GOLDEN_SRC/bin" && sha256sum -c --quiet SHA256SUMS >/dev/null 2>&1) ||
        { fail "$GOLDEN_SRC/bin/loop does not match its SHA256SUMS"; return 1; }
    local g=/tmp/crust-golden
    if [ -e $g/bin/loop ] && ! cmp -s $g/bin/loop "$GOLDEN_SRC/bin/loop"; then
        skip "$g/bin/loop exists and differs from the fixture"
        return
    fi
    if [ -e $g/data/loop.out ]; then
        skip "$g/data/loop.out exists (in use by someone else?)"
        return
    fi
    golden_make_dir $g $g/bin $g/data || { fail "cannot create $g"; return 1; }
    if [ ! -e $g/bin/loop ]; then
        cp "$GOLDEN_SRC/bin/loop" $g/bin/loop && chmod 0755 $g/bin/loop || { fail "cannot copy loop"; return 1; }
        GOLDEN_MADE+=($g/bin/loop)
    fi
    GOLDEN_MADE+=($g/data/loop.out)
    python3 -c 'import sys; sys.stdout.write("".join(chr(65 + i % 26) for i in range(256)))' >$g/data/loop.out
    chmod 0644 $g/data/loop.out
    mkdir -p "$D/img" && cp "$GOLDEN_SRC"/loop/*.img "$D/img/" || { fail "cannot copy the images"; return 1; }
    [ -f "$GOLDEN_SRC/loop/stats-dump" ] && cp "$GOLDEN_SRC/loop/stats-dump" "$D/img/"
    PID=$GOLDEN_PID
    track "$PID" $g/bin/loop
    do_restore "$D/img" || return 1
    local c1 c2
    c1=$(peek_u64 $PID $GOLDEN_COUNTER_ADDR 2>"$D/peek.err") ||
        { fail "cannot read /proc/$PID/mem: $(head -c 200 "$D/peek.err")" "$D/img/restore.log"; return 1; }
    sleep 0.3
    c2=$(peek_u64 $PID $GOLDEN_COUNTER_ADDR 2>"$D/peek.err") ||
        { fail "cannot read /proc/$PID/mem: $(head -c 200 "$D/peek.err")" "$D/img/restore.log"; return 1; }
    [ "$c1" -ge 22 ] || { fail "counter $c1 is below its dumped value 22" "$D/img/restore.log"; return 1; }
    [ "$c2" -gt "$c1" ] || { fail "counter did not advance: $c1 then $c2" "$D/img/restore.log"; return 1; }
    kill -KILL $PID
    wait_gone $PID 5 || { fail "pid $PID survived SIGKILL"; return 1; }
}

# Error tests: expect a non-zero exit and one clear message on stderr.
expect_error() {
    local name=$1 log=${2:-} lines
    [ $RC -ne 0 ] || { fail "$name succeeded, expected an error" "$log"; return 1; }
    [ $RC -lt 124 ] || { fail "$name died or timed out (exit $RC)" "$log"; return 1; }
    lines=$(grep -c . "$D/$name.err")
    [ "$lines" -ge 1 ] || { fail "$name failed (exit $RC) without a message on stderr" "$log"; return 1; }
    grep -qi 'panicked' "$D/$name.err" && { fail "$name panicked: $(head -c 300 "$D/$name.err")" "$log"; return 1; }
    [ "$lines" -le 5 ] || { fail "$name printed $lines lines on stderr, expected one clear message" "$log"; return 1; }
    return 0
}

# The target must still run, not stopped or traced, after a failed dump.
expect_untouched() {
    local pid=$1 st tracer
    st=$(pstate "$pid")
    case $st in
        S | R) ;;
        *) fail "after the failed dump pid $pid is in state '$st'" "$D/img/dump.log"; return 1 ;;
    esac
    tracer=$(awk '/^TracerPid:/ {print $2}' "/proc/$pid/status")
    [ "$tracer" = 0 ] || { fail "after the failed dump pid $pid is traced by $tracer" "$D/img/dump.log"; return 1; }
}

need_cr() {
    [ "$NO_CR" = 1 ] && { skip "CRUST_E2E_NO_CR is set"; return 2; }
    need_crust
}

t_err_dump_nopid() {
    need_cr || return
    local p
    p=$(free_pid)
    mkdir -p "$D/img"
    crust_run dump dump -t "$p" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log"
}

dump_must_fail() {
    local prog=$1 what=$2 children c
    start_prog "$prog" || return 1
    children=$(cat /proc/"$PID"/task/*/children 2>/dev/null)
    for c in $children; do track "$c" "$BIN/$prog"; done
    if [ "$NO_CR" = 1 ]; then
        # Only check the program itself.
        expect_pass
        return
    fi
    need_crust || return 1
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -qiE "$what" "$D/dump.err" ||
        { fail "the message does not say '$what': $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    for c in $children; do
        [ -e "/proc/$c" ] || { fail "child $c vanished after the failed dump" "$D/img/dump.log"; return 1; }
        expect_untouched "$c" || return 1
    done
    expect_pass "$D/img/dump.log"
}

t_err_dump_threads() { dump_must_fail threads 'not supported|thread'; }
t_err_dump_children() { dump_must_fail forker 'not supported|child'; }

t_err_restore_nodir() {
    need_cr || return
    crust_run restore restore -D "$D/does-not-exist" -d --pidfile "$D/pidfile" -v4 -o restore.log
    expect_error restore
}

# One dump of `loop` shared by the restore error tests (made on first use).
PID=""
ERR_IMG=""
ERR_PID=""
err_images() {
    if [ -n "$ERR_IMG" ]; then
        [ -d "$ERR_IMG" ] || { fail "the shared dump of loop failed earlier"; return 1; }
        return 0
    fi
    local saveD=$D
    D=$WORK/err-setup
    mkdir -p "$D"
    ERR_IMG=$D/img
    if ! start_prog loop || ! do_dump "$ERR_IMG"; then
        REASON="setup (dump of loop): $REASON"
        rm -rf "$ERR_IMG"
        D=$saveD
        return 1
    fi
    ERR_PID=$PID
    D=$saveD
}

restore_must_fail() {
    local img=$1
    crust_run restore restore -D "$img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    expect_error restore "$img/restore.log" || return 1
    sleep 0.2
    [ -e "/proc/$ERR_PID" ] && { fail "pid $ERR_PID exists after the failed restore (state $(pstate "$ERR_PID"))" "$img/restore.log"; return 1; }
    return 0
}

t_err_restore_truncated() {
    need_cr || return
    err_images || return 1
    cp -r "$ERR_IMG" "$D/img" || { fail "cannot copy images"; return 1; }
    local core=$D/img/core-$ERR_PID.img size
    [ -f "$core" ] || { fail "no core-$ERR_PID.img in the dump"; return 1; }
    size=$(stat -c %s "$core")
    truncate -s $((size / 2)) "$core"
    restore_must_fail "$D/img"
}

t_err_restore_arch() {
    need_cr || return
    err_images || return 1
    cp -r "$ERR_IMG" "$D/img" || { fail "cannot copy images"; return 1; }
    local core=$D/img/core-$ERR_PID.img b
    [ -f "$core" ] || { fail "no core-$ERR_PID.img in the dump"; return 1; }
    # Layout: 8 magic bytes, u32 entry length, then CoreEntry with field 1
    # (mtype, enum: X86_64 = 1) first: bytes 08 01. Make it AARCH64 (3).
    b=$(od -An -tx1 -j12 -N2 "$core" | tr -d ' \n')
    [ "$b" = 0801 ] || { fail "core-$ERR_PID.img does not start with mtype X86_64 (bytes $b)"; return 1; }
    printf '\003' | dd of="$core" bs=1 seek=13 conv=notrunc status=none
    restore_must_fail "$D/img"
}

# ---------------------------------------------------------------- runner

if [ "${1:-}" = --list ]; then
    printf '%s\n' "${ALL_TESTS[@]}"
    exit 0
fi
if [ $# -gt 0 ]; then
    for t in "$@"; do
        printf '%s\n' "${ALL_TESTS[@]}" | grep -qx -- "$t" || { echo "unknown test: $t (see --list)" >&2; exit 2; }
    done
    TESTS=("$@")
else
    TESTS=("${ALL_TESTS[@]}")
fi
[ "$(id -u)" = 0 ] || echo "warning: not running as root; dump and restore will fail" >&2

PASSED=0
FAILED=0
SKIPPED=0

show_tail() {
    local f
    for f in "$@"; do
        [ -s "$f" ] || continue
        echo "    --- tail of $f"
        tail -n 15 "$f" | sed 's/^/    | /'
    done
}

run_test() {
    T=$1
    D=$WORK/$T
    REASON=""
    LOG=""
    mkdir -p "$D"
    local fn=t_${T//-/_} rc kept
    $fn
    rc=$?
    case $rc in
        0)
            echo "PASS $T"
            PASSED=$((PASSED + 1))
            ;;
        2)
            echo "SKIP $T: $REASON"
            SKIPPED=$((SKIPPED + 1))
            ;;
        *)
            kept=$LOG_KEEP/$T
            rm -rf "$kept"
            mkdir -p "$kept"
            cp -r "$D"/. "$kept"/ 2>/dev/null
            # Keep logs and small files, not the (possibly huge) images.
            find "$kept" -type f -size +1M -delete 2>/dev/null
            if [ -n "$LOG" ]; then
                echo "FAIL $T: $REASON (see ${LOG/#$D/$kept})"
            else
                echo "FAIL $T: $REASON (see $kept)"
            fi
            show_tail "$kept"/img/dump.log "$kept"/img/restore*.log
            FAILED=$((FAILED + 1))
            ;;
    esac
    # Kill what this test left running (tests run one at a time, so every
    # live tracked process is this test's); free the space of its images.
    local t
    for t in "${TRACKED[@]+"${TRACKED[@]}"}"; do
        kill_tracked ${t%% *} "${t#* }"
    done
    rm -rf "$D"
    PID=""
}

for t in "${TESTS[@]}"; do
    run_test "$t"
done

echo "e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped"
[ $FAILED -eq 0 ]
