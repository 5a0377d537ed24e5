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
#   E2E_KNOWN_BUGS=1  also run the tests of known engine bugs (KNOWN_BUG_TESTS)
#   E2E_NO_REAPER=1   do not run under tests/e2e/reaper (a child subreaper)
#   E2E_KEEP=1        keep the work dir (images, logs) of every test, for debugging
#   E2E_CRIT=0        do not check every dump with Debian's crit (default: check when
#                     /usr/bin/crit exists; the `crit` test then SKIPs)
#
# Needs python3 for golden-loop, the crit checks and shell-job (tests/e2e/pty-run).
#
# Output: one line per test, "PASS name", "FAIL name: reason (see LOG)" or
# "SKIP name: reason", then "e2e: N passed, N failed, N skipped". Exits non-zero
# iff a test failed. Every process a test starts is killed and every temporary
# file removed on exit, pass or fail.

set -u
set +m

# Orphans (every test program, every task restored with -d) go to a child
# subreaper (tests/e2e/reaper) that reaps them at once, rather than to PID 1:
# some container inits reap zombies only every second or so, and every wait
# for a killed task took that long. E2E_NO_REAPER=1 runs without it.
if [ -z "${E2E_UNDER_REAPER:-}" ] && [ "${E2E_NO_REAPER:-0}" != 1 ] && [ -x /usr/bin/python3 ]; then
    export E2E_UNDER_REAPER=1
    exec /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/reaper" bash "${BASH_SOURCE[0]}" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${CRUST_BIN_DIR:-$ROOT/target/release}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
CRUST=${CRUST_BIN:-$BIN/crust}
# crust runs from each test's dir: make the path absolute.
case $CRUST in
    /*) ;;
    */*) CRUST=$PWD/$CRUST ;;
    *) CRUST=$(command -v "$CRUST" || echo "$PWD/$CRUST") ;;
esac
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
KEEP=${E2E_KEEP:-0}

ALL_TESTS=(loop bigmem fpregs signals files mappings getpid restore-twice golden-loop
    crit leave-running leave-stopped restore-leave-stopped restore-attached pidfile
    shell-job two-procs
    err-dump-nopid err-dump-uffd err-dump-threads-uffd err-dump-child-uffd err-restore-nodir
    err-restore-truncated err-restore-arch err-restore-files err-restore-pid-busy)

# Debian's crit (criu 3.17) must decode every image crust writes.
CRIT=/usr/bin/crit
CRIT_PY=/usr/bin/python3
CRIT_ON=${E2E_CRIT:-1}
[ -x "$CRIT_PY" ] && [ -f "$CRIT" ] || CRIT_ON=0
# python3 for the pty-run helper; a real binary (not a wrapper script), so
# its exe can be tracked.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3 || echo python3)
PTY_RUN=$ROOT/tests/e2e/pty-run
# Python snippets of the tests import imgedit.py from here.
export PYTHONPATH=$ROOT/tests/e2e${PYTHONPATH:+:$PYTHONPATH}
TIMEOUT_EXE=$(readlink -f "$(command -v timeout)")

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
    # A swap file a test turned on (predump-swap), if it did not end.
    if [ -n "${SWAP_MADE:-}" ]; then
        swapoff "$SWAP_MADE" 2>/dev/null
        rm -f "$SWAP_MADE"
    fi
    for t in "${TRACKED[@]+"${TRACKED[@]}"}"; do
        kill_tracked ${t%% *} "${t#* }"
    done
    for ((i = ${#GOLDEN_MADE[@]} - 1; i >= 0; i--)); do
        t=${GOLDEN_MADE[$i]}
        if [ -d "$t" ]; then rmdir "$t" 2>/dev/null; else rm -f "$t"; fi
    done
    if [ "$KEEP" = 1 ]; then
        echo "e2e: E2E_KEEP=1: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
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

# Print what a command prints, trying again (20 times at most) while it
# prints nothing: a counter rewritten with `echo $i > FILE` is empty for an
# instant after each truncation.
read_nonempty() {
    local v n=20
    while [ $n -gt 0 ]; do
        v=$("$@" 2>/dev/null)
        [ -n "$v" ] && { printf '%s\n' "$v"; return 0; }
        sleep 0.02
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
    # From $D: a stray relative path (a misplaced pidfile, log...) lands there.
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" "$@") >"$D/$name.out" 2>"$D/$name.err"
    RC=$?
}

# The image files crit must decode: every *.img but pages-*.img, and stats-dump.
crit_files() {
    local f
    for f in "$1"/*.img "$1"/stats-dump; do
        [ -f "$f" ] || continue
        case ${f##*/} in pages-*.img) continue ;; esac
        # raw dumps of outside tools (ip, iptables, nft), as CRIU's: crit does not read them
        case ${f##*/} in ifaddr-*.img | route-*.img | route6-*.img | rule-*.img | ip*tables-*.img | nftables-*.img) continue ;; esac
        case ${f##*/} in pages-*.img | tmpfs-*.tar.gz.img) continue ;; esac
        # crust's own extension (POSIX message queues): CRIU's crit does not know it
        case ${f##*/} in crust-*.img) continue ;; esac
        printf '%s\n' "$f"
    done
}

# Decode every image of IMG with crit's own decoder (pycriu.cli.decode, what
# `crit decode [--pretty]` runs) in one python process: cheap enough for
# every dump. No-op without crit.
crit_fast() {
    local img=$1 files
    [ "$CRIT_ON" = 1 ] || return 0
    if [ ! -f "$WORK/crit-check.py" ]; then
        cat >"$WORK/crit-check.py" <<'EOF'
import os, sys
from pycriu import cli
bad = 0
for path in sys.argv[1:]:
    for pretty in (False, True):
        try:
            cli.decode({"in": path, "out": os.devnull, "pretty": pretty, "nopl": False})
        except BaseException as e:
            print("crit decode%s rejects %s: %s: %s" % (" --pretty" if pretty else "",
                  os.path.basename(path), type(e).__name__, e))
            bad += 1
            break
sys.exit(1 if bad else 0)
EOF
    fi
    mapfile -t files < <(crit_files "$img")
    [ ${#files[@]} -gt 0 ] || { fail "no image files in $img"; return 1; }
    "$CRIT_PY" "$WORK/crit-check.py" "${files[@]}" >"$D/crit.out" 2>&1 ||
        { fail "$(grep -m1 'rejects' "$D/crit.out" || head -c 300 "$D/crit.out")" "$D/crit.out"; return 1; }
}

# dump_with IMG [CRUST ARGS...]: dump PID into IMG; checks rc and the images
# with crit. The task may still exist afterwards.
dump_with() {
    local img=$1
    shift
    mkdir -p "$img"
    crust_run dump dump -t "$PID" -D "$img" -v4 -o dump.log "$@"
    [ $RC -eq 0 ] || { fail "dump exited with $RC: $(head -c 300 "$D/dump.err")" "$img/dump.log"; return 1; }
    stats_match_pages "$img" || return 1
    crit_fast "$img"
}

# stats-dump counts every page of the pages files, as CRIU's does:
# (pages_written + shpages_written) * 4096 = the size of pages-*.img.
stats_match_pages() {
    local img=$1 want got
    want=$("$CRUST" image decode -i "$img/stats-dump" 2>"$D/stats.err" | "$PY" -c '
import json, sys
d = json.load(sys.stdin)["entries"][0]["dump"]
print((d["pages_written"] + d.get("shpages_written", 0)) * 4096)') ||
        { fail "cannot decode stats-dump: $(head -c 300 "$D/stats.err")" "$img/dump.log"; return 1; }
    got=$(cat /dev/null "$img"/pages-*.img 2>/dev/null | wc -c)
    [ "$want" = "$got" ] ||
        { fail "stats-dump counts $want bytes of pages (pages_written + shpages_written), pages-*.img hold $got" "$img/dump.log"; return 1; }
}

# dump PID into IMG; checks rc, crit, and that the task is gone.
do_dump() {
    local img=$1
    shift
    dump_with "$img" "$@" || return 1
    wait_gone "$PID" 5 || { fail "pid $PID still exists after dump (state $(pstate "$PID"))" "$img/dump.log"; return 1; }
}

# restore from IMG detached; checks rc and the pidfile. $2: log/pidfile
# suffix; more crust arguments after it.
do_restore() {
    local img=$1 sfx=${2:-} got
    shift $(($# < 2 ? $# : 2))
    rm -f "$D/pidfile$sfx"
    crust_run "restore$sfx" restore -D "$img" -d --pidfile "$D/pidfile$sfx" -v4 -o "restore$sfx.log" "$@"
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

# golden_cpu_ok IMG: 0 when this CPU can hold the registers of the
# processes in CRIU's golden set IMG. The golden sets were dumped on a CPU
# with AVX-512, and their processes' glibc chose its AVX-512 routines when
# it started: on a CPU without AVX-512 (some hosts of this machine kind are
# AMD EPYCs without it) such a process cannot run, and crust must refuse
# the set before it creates a task. Then this checks that refusal (exit
# status, the message naming AVX-512, no task left) and returns 2 (SKIP,
# saying so); 1 when the refusal is not clean.
golden_cpu_ok() {
    grep -qw avx512f /proc/cpuinfo && return 0
    crust_run verify image verify "$1"
    grep -q 'AVX-512' "$D/verify.out" "$D/verify.err" || return 0
    local before after
    before=$(ls /proc | grep -c '^[0-9]')
    crust_run restore restore -D "$1" -d -v4 -o restore.log
    [ $RC -ne 0 ] || { fail "a set with AVX-512 state restored on a CPU without AVX-512" "$1/restore.log"; return 1; }
    grep -q 'AVX-512' "$D/restore.err" ||
        { fail "the refusal does not name AVX-512: $(head -c 300 "$D/restore.err")" "$1/restore.log"; return 1; }
    grep -q "creating the tree's tasks" "$1/restore.log" &&
        { fail "the restore created tasks before refusing" "$1/restore.log"; return 1; }
    skip "this CPU has no AVX-512, which the golden set's processes use (dumped on a CPU with it): checked instead that the restore refuses it before creating any task, naming AVX-512"
    return 2
}

# criu_restore_as_dumped CRIU [IMG]: CRIU restores IMG (default $D/img;
# -d, log restore.log there) and the restored root has the dumped pid $PID.
criu_restore_as_dumped() {
    local img=${2:-$D/img}
    rm -f "$D/pidfile"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$1" restore -D "$img" -d --pidfile "$D/pidfile" \
        -v4 -o restore.log) >"$D/criu-restore.out" 2>&1 ||
        { fail "CRIU's restore of crust's images ($img) failed" "$img/restore.log"; return 1; }
    [ "$(cat "$D/pidfile" 2>/dev/null)" = "$PID" ] ||
        { fail "CRIU restored pid '$(cat "$D/pidfile" 2>/dev/null)', not $PID" "$img/restore.log"; return 1; }
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
    golden_cpu_ok "$D/img" || return $?
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
# Every thread of it too.
expect_untouched() {
    local pid=$1 st tracer task tid
    for task in /proc/"$pid"/task/*; do
        tid=${task##*/}
        st=$(sed 's/.*) //' "$task/stat" 2>/dev/null | cut -d' ' -f1)
        case $st in
            S | R) ;;
            *) fail "after the failed dump thread $tid of pid $pid is in state '$st'" "$D/img/dump.log"; return 1 ;;
        esac
        tracer=$(awk '/^TracerPid:/ {print $2}' "$task/status")
        [ "$tracer" = 0 ] || { fail "after the failed dump thread $tid of pid $pid is traced by $tracer" "$D/img/dump.log"; return 1; }
    done
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

# What a dump that lets a process go must leave as it was: its mappings, fds
# (target and flags) and, for every thread, signal masks and dispositions.
proc_snapshot() {
    local pid=$1 fd task
    for p in $pid $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        echo "== process $p"
        awk '{print $1, $2, $6}' "/proc/$p/maps"
        for fd in /proc/"$p"/fd/*; do
            echo "fd ${fd##*/} $(readlink "$fd") $(grep -E '^(flags|pos):' "/proc/$p/fdinfo/${fd##*/}" | tr -s '\t ' ' ' | tr '\n' ' ')"
        done
        for task in /proc/"$p"/task/*; do
            echo "thread ${task##*/} $(grep -E '^(SigBlk|SigIgn|SigCgt):' "$task/status" | tr -s '\t ' ' ' | tr '\n' ' ')"
        done
    done
}

# expect_same_proc PID BEFORE WHAT: the snapshot of PID now equals BEFORE.
expect_same_proc() {
    local pid=$1 before=$2 what=$3
    proc_snapshot "$pid" >"$before.after"
    cmp -s "$before" "$before.after" && return 0
    diff "$before" "$before.after" >"$before.diff"
    fail "$what changed pid $pid: $(head -c 300 "$before.diff" | tr '\n' ' ')" "$before.diff"
    return 1
}

# dump_must_fail WHAT PROG [ARGS...]: the dump fails with a message matching
# the regex WHAT, and the program runs on untouched and passes its check.
dump_must_fail() {
    local what=$1 prog=$2 children c
    shift
    start_prog "$@" || return 1
    children=$(cat /proc/"$PID"/task/*/children 2>/dev/null)
    for c in $children; do track "$c" "$BIN/$prog"; done
    if [ "$NO_CR" = 1 ]; then
        # Only check the program itself.
        expect_pass
        return
    fi
    need_crust || return 1
    mkdir -p "$D/img"
    proc_snapshot "$PID" >"$D/before"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    expect_same_proc "$PID" "$D/before" "the failed dump" || return 1
    grep -qiE "$what" "$D/dump.err" ||
        { fail "the message does not say '$what': $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    for c in $children; do
        [ -e "/proc/$c" ] || { fail "child $c vanished after the failed dump" "$D/img/dump.log"; return 1; }
        expect_untouched "$c" || return 1
    done
    expect_pass "$D/img/dump.log"
}

# A userfaultfd (fd 3) cannot be dumped: the message names the fd. With
# threads / a child, every thread and process must be let go.
UFFD_MSG='fd 3\b.*userfaultfd|userfaultfd.*fd 3\b'
t_err_dump_uffd() { dump_must_fail "$UFFD_MSG" loop --uffd 1; }
t_err_dump_threads_uffd() { dump_must_fail "$UFFD_MSG" threads --uffd 1; }
t_err_dump_child_uffd() { dump_must_fail "$UFFD_MSG" forker --uffd 1; }

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

# ---------------------------------------------------------------- crit and options

# Wait until a pid is in state $2 (a /proc stat letter); $3 seconds at most.
wait_state() {
    local pid=$1 want=$2 n=$(($3 * 20))
    while [ $n -gt 0 ]; do
        [ "$(pstate "$pid")" = "$want" ] && return 0
        sleep 0.05
        n=$((n - 1))
    done
    return 1
}

tracer_of() { awk '/^TracerPid:/ {print $2}' "/proc/$1/status" 2>/dev/null; }
ppid_of() { awk '/^PPid:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# The pid is stopped (state T, not a ptrace stop), untraced, and stays so.
expect_stopped() {
    local pid=$1 what=$2 log=$3
    wait_state "$pid" T 3 || { fail "$what: pid $pid is in state '$(pstate "$pid")', expected T (stopped)" "$log"; return 1; }
    [ "$(tracer_of "$pid")" = 0 ] || { fail "$what: pid $pid is still traced by $(tracer_of "$pid")" "$log"; return 1; }
    sleep 0.3
    [ "$(pstate "$pid")" = T ] || { fail "$what: pid $pid went from T to '$(pstate "$pid")' on its own" "$log"; return 1; }
}

# Every image of a dump of loop through the real crit command line
# (`crit decode -i FILE`), one process per file; then restore it.
t_crit() {
    need_cr || return
    [ "$CRIT_ON" = 1 ] || { skip "no crit ($CRIT_PY $CRIT: apt-get install criu) or E2E_CRIT=0"; return; }
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    local f bad="" n=0
    while read -r f; do
        n=$((n + 1))
        if ! "$CRIT_PY" "$CRIT" decode -i "$f" >"$D/crit-${f##*/}.json" 2>"$D/crit-${f##*/}.err"; then
            bad="$bad ${f##*/} ($(head -c 120 "$D/crit-${f##*/}.err" | tr '\n' ' '))"
        fi
    done < <(crit_files "$D/img")
    [ -z "$bad" ] || { fail "crit decode rejects:$bad" "$D"; return 1; }
    [ $n -ge 8 ] || { fail "only $n image files to decode in the dump" "$D/img/dump.log"; return 1; }
    grep -q "\"pid\": $PID\\b" "$D/crit-pstree.img.json" ||
        { fail "crit's pstree.img does not show pid $PID: $(head -c 200 "$D/crit-pstree.img.json")"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}

# dump -R: the task runs on, untouched, and passes its own check; the images
# then restore it as well.
t_leave_running() {
    need_cr || return
    start_prog loop || return 1
    proc_snapshot "$PID" >"$D/before"
    dump_with "$D/img" -R || return 1
    expect_same_proc "$PID" "$D/before" "dump -R" || return 1
    sleep 0.3
    [ -e "/proc/$PID" ] || { fail "pid $PID is gone after dump -R" "$D/img/dump.log"; return 1; }
    [ "$(exe_of "$PID")" = "$BIN/loop" ] || { fail "pid $PID now runs '$(exe_of "$PID")'" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log" || { REASON="the task left running: $REASON"; return 1; }
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log" || { REASON="restored from the -R images: $REASON"; return 1; }
}

# dump -s: the task is left stopped and untraced; SIGCONT lets it go on.
t_leave_stopped() {
    need_cr || return
    start_prog loop || return 1
    proc_snapshot "$PID" >"$D/before"
    dump_with "$D/img" -s || return 1
    expect_stopped "$PID" "after dump -s" "$D/img/dump.log" || return 1
    expect_same_proc "$PID" "$D/before" "dump -s" || return 1
    kill -CONT "$PID"
    expect_pass "$D/img/dump.log"
}

# restore -s: the restored task is stopped and untraced; SIGCONT lets it go on.
t_restore_leave_stopped() {
    need_cr || return
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" "" -s || return 1
    expect_stopped "$PID" "after restore -s" "$D/img/restore.log" || return 1
    kill -CONT "$PID"
    expect_pass "$D/img/restore.log"
}

# Start `crust restore` without -d in the background (under timeout): crust
# stays the parent of the restored task. $1: log/pidfile suffix. Sets CPID
# (the timeout process) once the pidfile shows the task restored.
restore_attached_start() {
    local sfx=$1 n=$((30 * 20)) crust_pid
    shift
    rm -f "$D/pidfile$sfx"
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" restore -D "$D/img" --pidfile "$D/pidfile$sfx" \
        -v4 -o "restore$sfx.log" "$@") </dev/null >"$D/restore$sfx.out" 2>"$D/restore$sfx.err" &
    CPID=$!
    track "$CPID" "$TIMEOUT_EXE"
    while [ ! -s "$D/pidfile$sfx" ] && [ $n -gt 0 ]; do
        case $(pstate "$CPID") in "" | Z) break ;; esac
        sleep 0.05
        n=$((n - 1))
    done
    if [ ! -s "$D/pidfile$sfx" ]; then
        wait_rc "$CPID" 5
        fail "restore (attached) ended with $RC before writing its pidfile: $(head -c 300 "$D/restore$sfx.err")" "$D/img/restore$sfx.log"
        return 1
    fi
    [ "$(cat "$D/pidfile$sfx")" = "$PID" ] || { fail "pidfile holds '$(cat "$D/pidfile$sfx")', expected $PID"; return 1; }
    crust_pid=$(ppid_of "$PID")
    [ "$(ppid_of "$crust_pid")" = "$CPID" ] && [ "$(exe_of "$crust_pid")" = "$(readlink -f "$CRUST")" ] ||
        { fail "the restored pid $PID is a child of $crust_pid ($(exe_of "$crust_pid")), not of crust" "$D/img/restore$sfx.log"; return 1; }
}

# Wait for our child $1 to end ($2 seconds at most); RC = its exit status
# (or 255 if it did not end).
wait_rc() {
    local pid=$1 n=$(($2 * 20))
    while [ $n -gt 0 ]; do
        case $(pstate "$pid") in "" | Z) break ;; esac
        sleep 0.05
        n=$((n - 1))
    done
    case $(pstate "$pid") in
        "" | Z) wait "$pid"; RC=$? ;;
        *) RC=255 ;;
    esac
}

# restore without -d: crust waits for the restored task and exits 0 however
# it ends, as CRIU does; with crust's own --root-exit-code, with its status:
# 0 after PASS, 1 after FAIL, 128+9 when it is killed.
t_restore_attached() {
    need_cr || return
    mkdir -p "$D/files"
    start_prog files --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    cp -a "$D/files" "$D/files.orig" || { fail "cannot copy $D/files"; return 1; }
    local res
    # 1. The task passes: crust exits 0.
    restore_attached_start 1 || return 1
    expect_pass "$D/img/restore1.log" || return 1
    wait_rc "$CPID" 10
    [ $RC = 0 ] || { fail "crust exited with $RC after its task exited 0: $(head -c 300 "$D/restore1.err")" "$D/img/restore1.log"; return 1; }
    # 2. Same size but other bytes where the task reads: it says FAIL, exits 1.
    rm -rf "$D/files" "$D/result" && cp -a "$D/files.orig" "$D/files" || { fail "cannot reset $D/files"; return 1; }
    printf 'QQQQ' | dd of="$D/files/ro.dat" bs=1 seek=12 conv=notrunc status=none
    restore_attached_start 2 --root-exit-code || return 1
    kill -TERM "$PID"
    wait_file "$D/result" $RESULT_TIMEOUT || { fail "restore #2: no result after SIGTERM" "$D/img/restore2.log"; return 1; }
    res=$(cat "$D/result")
    case $res in FAIL*) ;; *) fail "restore #2: the task says '$res' though ro.dat was changed"; return 1 ;; esac
    wait_rc "$CPID" 10
    [ $RC = 1 ] || { fail "crust exited with $RC after its task exited 1: $(head -c 300 "$D/restore2.err")" "$D/img/restore2.log"; return 1; }
    # 3. Killed: crust exits 128 + 9.
    rm -rf "$D/files" "$D/result" && cp -a "$D/files.orig" "$D/files" || { fail "cannot reset $D/files"; return 1; }
    restore_attached_start 3 --root-exit-code || return 1
    kill -KILL "$PID"
    wait_rc "$CPID" 10
    [ $RC = 137 ] || { fail "crust exited with $RC after its task was SIGKILLed, expected 137" "$D/img/restore3.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID still exists after crust ended"; return 1; }
    # 4. Killed, without --root-exit-code: crust exits 0, as CRIU does.
    rm -rf "$D/files" "$D/result" && cp -a "$D/files.orig" "$D/files" || { fail "cannot reset $D/files"; return 1; }
    restore_attached_start 4 || return 1
    kill -KILL "$PID"
    wait_rc "$CPID" 10
    [ $RC = 0 ] || { fail "crust exited with $RC after its task was SIGKILLed, expected 0 (as CRIU)" "$D/img/restore4.log"; return 1; }
    return 0
}

# --pidfile: relative to -W (default -D), mode 0600, holds the pid. An existing pidfile
# makes the restore fail before anything is restored; a pidfile that cannot
# be created makes it fail without leaving the task behind.
t_pidfile() {
    need_cr || return
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    local pf=$D/img/rel.pid
    crust_run restore1 restore -D "$D/img" -d --pidfile rel.pid -v4 -o restore1.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore1.err")" "$D/img/restore1.log"; return 1; }
    [ -f "$pf" ] || { fail "no $pf: a relative --pidfile goes to the images dir" "$D/img/restore1.log"; return 1; }
    [ "$(cat "$pf")" = "$PID" ] || { fail "pidfile holds '$(cat "$pf")', expected $PID"; return 1; }
    [ "$(stat -c %a "$pf")" = 600 ] || { fail "pidfile has mode $(stat -c %a "$pf"), expected 600"; return 1; }
    [ -e "/proc/$PID" ] || { fail "restored pid $PID does not exist" "$D/img/restore1.log"; return 1; }
    kill -KILL "$PID"
    wait_gone "$PID" 5 || { fail "pid $PID survived SIGKILL"; return 1; }
    # The pidfile exists (CRIU creates it O_EXCL).
    echo stale >"$pf"
    crust_run restore2 restore -D "$D/img" -d --pidfile rel.pid -v4 -o restore2.log
    expect_error restore2 "$D/img/restore2.log" || return 1
    grep -q 'rel\.pid' "$D/restore2.err" ||
        { fail "the message does not name the pidfile: $(head -c 300 "$D/restore2.err")" "$D/img/restore2.log"; return 1; }
    sleep 0.2
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the restore refused the pidfile" "$D/img/restore2.log"; return 1; }
    [ "$(cat "$pf")" = stale ] || { fail "the existing pidfile was overwritten with '$(cat "$pf")'"; return 1; }
    # A pidfile in a missing directory.
    crust_run restore3 restore -D "$D/img" -d --pidfile "$D/no-such-dir/pid" -v4 -o restore3.log
    expect_error restore3 "$D/img/restore3.log" || return 1
    grep -q 'no-such-dir' "$D/restore3.err" ||
        { fail "the message does not name the pidfile: $(head -c 300 "$D/restore3.err")" "$D/img/restore3.log"; return 1; }
    wait_gone "$PID" 2 || { fail "pid $PID (state $(pstate "$PID")) was left behind when the pidfile could not be written" "$D/img/restore3.log"; return 1; }
    # With -W, a relative pidfile goes there.
    mkdir -p "$D/wd"
    crust_run restore4 restore -D "$D/img" -W "$D/wd" -d --pidfile rel.pid -v4 -o restore4.log
    [ $RC -eq 0 ] || { fail "restore -W exited with $RC: $(head -c 300 "$D/restore4.err")" "$D/wd/restore4.log"; return 1; }
    [ "$(cat "$D/wd/rel.pid" 2>/dev/null)" = "$PID" ] ||
        { fail "restore -W $D/wd --pidfile rel.pid: $D/wd/rel.pid holds '$(cat "$D/wd/rel.pid" 2>/dev/null)', expected $PID" "$D/wd/restore4.log"; return 1; }
    expect_pass "$D/wd/restore4.log"
}

# restore_fails_naming IMG PID WORD SFX [ARGS...]: the restore fails with a message
# containing WORD, without a pidfile and without the pid existing after.
restore_fails_naming() {
    local img=$1 pid=$2 word=$3 sfx=$4
    shift 4
    rm -f "$D/pidfile$sfx"
    crust_run "restore$sfx" restore -D "$img" -d --pidfile "$D/pidfile$sfx" -v4 -o "restore$sfx.log" "$@"
    expect_error "restore$sfx" "$img/restore$sfx.log" || return 1
    grep -qF -- "$word" "$D/restore$sfx.err" ||
        { fail "the message does not name $word: $(head -c 300 "$D/restore$sfx.err")" "$img/restore$sfx.log"; return 1; }
    [ -e "$D/pidfile$sfx" ] && { fail "the failed restore wrote its pidfile" "$img/restore$sfx.log"; return 1; }
    sleep 0.2
    [ -e "/proc/$pid" ] && { fail "pid $pid exists after the failed restore (state $(pstate "$pid"))" "$img/restore$sfx.log"; return 1; }
    return 0
}

# A file the task had open changed size, then is missing: the restore fails
# naming it and leaves nothing; with the files back it works.
t_err_restore_files() {
    need_cr || return
    mkdir -p "$D/files"
    start_prog files --dir "$D/files" || return 1
    do_dump "$D/img" || return 1
    cp -a "$D/files" "$D/files.orig" || { fail "cannot copy $D/files"; return 1; }
    echo more >>"$D/files/rw.dat"
    restore_fails_naming "$D/img" "$PID" "$D/files/rw.dat" 1 || { REASON="rw.dat grew: $REASON"; return 1; }
    cp -a "$D/files.orig/rw.dat" "$D/files/rw.dat"
    rm -f "$D/files/ro.dat"
    restore_fails_naming "$D/img" "$PID" "$D/files/ro.dat" 2 || { REASON="ro.dat deleted: $REASON"; return 1; }
    cp -a "$D/files.orig/ro.dat" "$D/files/ro.dat"
    do_restore "$D/img" 3 || { REASON="with the files back: $REASON"; return 1; }
    expect_pass "$D/img/restore3.log"
}

# --shell-job: loop runs as a job on a pty (fds 0-2); dump without -j is
# refused naming --shell-job, dump -j works, and `restore -j` from a crust on
# another pty gives the task that terminal: it is still a tty after restore.
t_shell_job() {
    need_cr || return
    "$PY" -c 'import pty, termios' 2>/dev/null || { skip "no usable python3 for $PTY_RUN"; return; }
    local py_exe py1 py2 n fd t
    py_exe=$(readlink -f "$(command -v "$PY")")
    rm -f "$D/ready" "$D/result" "$D/ppid"
    "$PY" "$PTY_RUN" --job --pidfile "$D/ppid" --log "$D/pty-dump.log" -- \
        "$BIN/loop" --ready "$D/ready" --result "$D/result" --tty 1 </dev/null >"$D/pty-dump.out" 2>&1 &
    py1=$!
    track "$py1" "$py_exe"
    if ! wait_file "$D/ready" $READY_TIMEOUT; then
        fail "loop on a pty did not become ready: $(tail -c 300 "$D/pty-dump.log" "$D/pty-dump.out" 2>/dev/null)"
        return 1
    fi
    PID=$(cat "$D/ppid")
    track "$PID" "$BIN/loop"
    [ "$(exe_of "$PID")" = "$BIN/loop" ] || { fail "pid $PID from pty-run is not loop"; return 1; }
    rm -f "$D/ready"
    for fd in 0 1 2; do
        t=$(readlink "/proc/$PID/fd/$fd")
        case $t in /dev/pts/*) ;; *) fail "set-up: fd $fd of loop is $t, not a pty"; return 1 ;; esac
    done
    mkdir -p "$D/img0"
    crust_run dump0 dump -t "$PID" -D "$D/img0" -v4 -o dump.log
    expect_error dump0 "$D/img0/dump.log" || { REASON="dump without -j: $REASON"; return 1; }
    grep -q -- '--shell-job' "$D/dump0.err" ||
        { fail "dump without -j: the message does not mention --shell-job: $(head -c 300 "$D/dump0.err")" "$D/img0/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    do_dump "$D/img" -j || return 1
    wait_gone "$py1" 5 || { fail "pty-run of the dumped loop did not end"; return 1; }
    # Restore from a crust on a new pty, attached so its pty stays open
    # until the task ends.
    rm -f "$D/pidfile"
    "$PY" "$PTY_RUN" --log "$D/pty-restore.log" -- \
        "$CRUST" restore -j -D "$D/img" --pidfile "$D/pidfile" -v4 -o restore.log </dev/null >"$D/pty-restore.out" 2>&1 &
    py2=$!
    track "$py2" "$py_exe"
    n=$((30 * 20))
    while [ ! -s "$D/pidfile" ] && [ $n -gt 0 ]; do
        case $(pstate "$py2") in "" | Z) break ;; esac
        sleep 0.05
        n=$((n - 1))
    done
    for t in $(cat /proc/"$py2"/task/*/children 2>/dev/null); do track "$t" "$(readlink -f "$CRUST")"; done
    [ -s "$D/pidfile" ] ||
        { fail "restore -j on a pty failed: $(tail -c 300 "$D/pty-restore.log" "$D/pty-restore.out" 2>/dev/null | tr '\n' ' ')" "$D/img/restore.log"; return 1; }
    [ "$(cat "$D/pidfile")" = "$PID" ] || { fail "pidfile holds '$(cat "$D/pidfile")', expected $PID"; return 1; }
    for fd in 0 1 2; do
        t=$(readlink "/proc/$PID/fd/$fd")
        case $t in /dev/pts/*) ;; *) fail "after restore -j fd $fd is $t, not a pty" "$D/img/restore.log"; return 1 ;; esac
    done
    expect_pass "$D/img/restore.log" || return 1
    wait_rc "$py2" 10
    [ $RC = 0 ] || { fail "crust restore -j on its pty ended with $RC: $(tail -c 300 "$D/pty-restore.log")" "$D/img/restore.log"; return 1; }
    grep -q 'still on a terminal' "$D/pty-restore.log" ||
        { fail "the restored task's line did not reach crust's terminal" "$D/pty-restore.log"; return 1; }
}

# Two loops dumped at the same time into their own dirs, restored at the same
# time, both pass.
two_procs() {
    local top=$1 x pids=() bg=()
    for x in a b; do
        D=$top/$x
        mkdir -p "$D"
        start_prog loop || { REASON="$x: $REASON"; return 1; }
        pids+=("$PID")
    done
    for x in 0 1; do
        ( D=$top/$([ $x = 0 ] && echo a || echo b) PID=${pids[$x]}
          do_dump "$D/img" || { echo "dump: $REASON" >"$D/reason"; exit 1; }
          do_restore "$D/img" || { echo "restore: $REASON" >"$D/reason"; exit 1; } ) &
        bg+=($!)
    done
    for x in 0 1; do wait "${bg[$x]}"; done
    for x in a b; do
        [ -s "$top/$x/reason" ] && { fail "$x: $(cat "$top/$x/reason")" "$top/$x/img"; return 1; }
    done
    for x in 0 1; do
        D=$top/$([ $x = 0 ] && echo a || echo b)
        PID=${pids[$x]}
        expect_pass "$D/img/restore.log" || { REASON="${D##*/}: $REASON"; return 1; }
    done
}

t_two_procs() {
    need_cr || return
    local top=$D rc
    two_procs "$top"
    rc=$?
    D=$top
    return $rc
}

# Shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS): contents, aliases, sharing.
t_shmanon() { cr_test shmanon --mb 8; }
ALL_TESTS+=(shmanon)

# Trees, threads, sessions, pid namespaces.
# shellcheck source=tests/e2e/trees.sh
. "$ROOT/tests/e2e/trees.sh"
# shellcheck source=tests/e2e/chain.sh
. "$ROOT/tests/e2e/chain.sh"
# shellcheck source=tests/e2e/golden.sh
. "$ROOT/tests/e2e/golden.sh"

# Pipes, FIFOs and other IPC (issue 4).
# shellcheck source=tests/e2e/ipc.sh
. "$ROOT/tests/e2e/ipc.sh"

# Event files: eventfd, signalfd, timerfd, epoll, inotify (issue 4).
# shellcheck source=tests/e2e/events.sh
. "$ROOT/tests/e2e/events.sh"

# Unix sockets (issue 4).
# shellcheck source=tests/e2e/unix.sh
. "$ROOT/tests/e2e/unix.sh"

# Trees crust refuses at once, untouched (issue 10).
# shellcheck source=tests/e2e/refuse.sh
. "$ROOT/tests/e2e/refuse.sh"

# File locks and System V IPC (issue 4).
# shellcheck source=tests/e2e/ipcns.sh
. "$ROOT/tests/e2e/ipcns.sh"

# The tree's own namespaces (issue 13).
# shellcheck source=tests/e2e/ns.sh
. "$ROOT/tests/e2e/ns.sh"
# shellcheck source=tests/e2e/ns-nsmisc.sh
. "$ROOT/tests/e2e/ns-nsmisc.sh"
# shellcheck source=tests/e2e/ns-netdev.sh
. "$ROOT/tests/e2e/ns-netdev.sh"
# shellcheck source=tests/e2e/ns-mnt.sh
. "$ROOT/tests/e2e/ns-mnt.sh"
# shellcheck source=tests/e2e/ns-mntprop.sh
. "$ROOT/tests/e2e/ns-mntprop.sh"
# shellcheck source=tests/e2e/ns-mntext.sh
. "$ROOT/tests/e2e/ns-mntext.sh"
# shellcheck source=tests/e2e/ns-flavor.sh
. "$ROOT/tests/e2e/ns-flavor.sh"
# shellcheck source=tests/e2e/ns-ttyns.sh
. "$ROOT/tests/e2e/ns-ttyns.sh"
# shellcheck source=tests/e2e/ns-mntns2.sh
. "$ROOT/tests/e2e/ns-mntns2.sh"
# shellcheck source=tests/e2e/ns-netsk.sh
. "$ROOT/tests/e2e/ns-netsk.sh"
# shellcheck source=tests/e2e/ns-netmisc.sh
. "$ROOT/tests/e2e/ns-netmisc.sh"
# shellcheck source=tests/e2e/ns-netsub.sh
. "$ROOT/tests/e2e/ns-netsub.sh"
# shellcheck source=tests/e2e/ns-tunsk.sh
. "$ROOT/tests/e2e/ns-tunsk.sh"
# shellcheck source=tests/e2e/ns-userns.sh
. "$ROOT/tests/e2e/ns-userns.sh"
# shellcheck source=tests/e2e/ns-filesns.sh
. "$ROOT/tests/e2e/ns-filesns.sh"
# shellcheck source=tests/e2e/ns-mntshare.sh
. "$ROOT/tests/e2e/ns-mntshare.sh"
# shellcheck source=tests/e2e/ns-tcpns.sh
. "$ROOT/tests/e2e/ns-tcpns.sh"
# shellcheck source=tests/e2e/ns-container.sh
. "$ROOT/tests/e2e/ns-container.sh"
# shellcheck source=tests/e2e/ns-pivot.sh
. "$ROOT/tests/e2e/ns-pivot.sh"
# shellcheck source=tests/e2e/ns-skmnt.sh
. "$ROOT/tests/e2e/ns-skmnt.sh"
# shellcheck source=tests/e2e/ns-remap.sh
. "$ROOT/tests/e2e/ns-remap.sh"
# shellcheck source=tests/e2e/ns-pts.sh
. "$ROOT/tests/e2e/ns-pts.sh"
# shellcheck source=tests/e2e/ns-unsover.sh
. "$ROOT/tests/e2e/ns-unsover.sh"
# shellcheck source=tests/e2e/ns-ino01.sh
. "$ROOT/tests/e2e/ns-ino01.sh"
# shellcheck source=tests/e2e/snapshot.sh
. "$ROOT/tests/e2e/snapshot.sh"

# Deleted files (ghosts), memfds, directories and O_PATH fds (issue 4).
# shellcheck source=tests/e2e/files2.sh
. "$ROOT/tests/e2e/files2.sh"

# Pseudo-terminal pairs (issue 4).
# shellcheck source=tests/e2e/pty.sh
. "$ROOT/tests/e2e/pty.sh"

# Inet sockets, TCP connections and network locking (issue 5).
# shellcheck source=tests/e2e/net.sh
. "$ROOT/tests/e2e/net.sh"
# shellcheck source=tests/e2e/crit.sh
. "$ROOT/tests/e2e/crit.sh"

# CRIU's RPC: swrk, service, notify, bad input, with pycriu (issue 14).
# shellcheck source=tests/e2e/rpc.sh
. "$ROOT/tests/e2e/rpc.sh"
# shellcheck source=tests/e2e/orphanpts.sh
. "$ROOT/tests/e2e/orphanpts.sh"
# LXC (lxc-checkpoint) and Docker (docker checkpoint) with crust as criu (issue 14).
# shellcheck source=tests/e2e/lxc.sh
. "$ROOT/tests/e2e/lxc.sh"
# shellcheck source=tests/e2e/docker.sh
. "$ROOT/tests/e2e/docker.sh"
# podman 4.3 with crust installed as criu (issue 14).
# shellcheck source=tests/e2e/podman.sh
. "$ROOT/tests/e2e/podman.sh"
# runc in full: netns, leave-running, tcp-established, restore twice (issue 14).
# shellcheck source=tests/e2e/runc.sh
. "$ROOT/tests/e2e/runc.sh"

# restore --inherit-fd for pipes to outside the tree (issue 4).
# shellcheck source=tests/e2e/inherit.sh
. "$ROOT/tests/e2e/inherit.sh"

# Packet and netlink sockets (issue 5).
# shellcheck source=tests/e2e/netsk.sh
. "$ROOT/tests/e2e/netsk.sh"

# A dump stopped by SIGINT, SIGTERM or SIGHUP (issue 10).
# shellcheck source=tests/e2e/stop.sh
. "$ROOT/tests/e2e/stop.sh"

# The images directory is not trusted (issue 10).
# shellcheck source=tests/e2e/trust.sh
. "$ROOT/tests/e2e/trust.sh"

# Images that lie (issue 10).
# shellcheck source=tests/e2e/lies.sh
. "$ROOT/tests/e2e/lies.sh"

# Unprivileged use: CAP_CHECKPOINT_RESTORE and --unprivileged (issue 10).
# shellcheck source=tests/e2e/unpriv.sh
. "$ROOT/tests/e2e/unpriv.sh"

# What callers parse: command line, check, exit codes (issue 11).
# shellcheck source=tests/e2e/cli.sh
. "$ROOT/tests/e2e/cli.sh"
# Descriptions shared between processes, shared memory of real programs (issue 11).
# shellcheck source=tests/e2e/shared.sh
. "$ROOT/tests/e2e/shared.sh"

# Erlang/OTP and MariaDB from Debian's packages (issue 11).
# shellcheck source=tests/e2e/erlang-mariadb.sh
. "$ROOT/tests/e2e/erlang-mariadb.sh"
# Credentials, System V IPC in the host's namespace, PostgreSQL (issue 11).
# shellcheck source=tests/e2e/sysv.sh
. "$ROOT/tests/e2e/sysv.sh"
# Memory: copy-on-write runs across VMAs, reservations, nginx (issue 11).
# shellcheck source=tests/e2e/mem.sh
. "$ROOT/tests/e2e/mem.sh"
# Deleted FIFOs, directories, devices, symlinks, cwds; sparse ghosts; chroot (issue 12).
# shellcheck source=tests/e2e/ghost.sh
. "$ROOT/tests/e2e/ghost.sh"
# Per-task state: seccomp, membarrier, scheduling, stops, zombies (issue 12).
# shellcheck source=tests/e2e/task.sh
. "$ROOT/tests/e2e/task.sh"
# shellcheck source=tests/e2e/fds.sh
. "$ROOT/tests/e2e/fds.sh"
# shellcheck source=tests/e2e/mem12.sh
. "$ROOT/tests/e2e/mem12.sh"
# AIO rings, guard regions (issue 12).
# shellcheck source=tests/e2e/mem2.sh
. "$ROOT/tests/e2e/mem2.sh"
# shellcheck source=tests/e2e/thp.sh
. "$ROOT/tests/e2e/thp.sh"
# Unix sockets of CRIU's zdtm: relative names, ghosts, lone sockets (issue 12).
# shellcheck source=tests/e2e/unixh.sh
. "$ROOT/tests/e2e/unixh.sh"
# Inet socket states at the edges (issue 12).
# shellcheck source=tests/e2e/net-h.sh
. "$ROOT/tests/e2e/net-h.sh"
# Hugetlb memfds, with CRIU both ways (issue 12).
# shellcheck source=tests/e2e/hugetlb.sh
. "$ROOT/tests/e2e/hugetlb.sh"
# Epolls carried by queued messages, held by no task (issue 12).
# shellcheck source=tests/e2e/scm05.sh
. "$ROOT/tests/e2e/scm05.sh"
# shellcheck source=tests/e2e/actions.sh
. "$ROOT/tests/e2e/actions.sh"
# --freeze-cgroup, v1 and v2 (issue 14).
# shellcheck source=tests/e2e/freezecg.sh
. "$ROOT/tests/e2e/freezecg.sh"
# shellcheck source=tests/e2e/track.sh
. "$ROOT/tests/e2e/track.sh"
# shellcheck source=tests/e2e/migbench.sh
. "$ROOT/tests/e2e/migbench.sh"
# shellcheck source=tests/e2e/lazy.sh
. "$ROOT/tests/e2e/lazy.sh"
# shellcheck source=tests/e2e/pageserver.sh
. "$ROOT/tests/e2e/pageserver.sh"
# shellcheck source=tests/e2e/predump.sh
. "$ROOT/tests/e2e/predump.sh"
# shellcheck source=tests/e2e/imgtools.sh
. "$ROOT/tests/e2e/imgtools.sh"
# shellcheck source=tests/e2e/compress.sh
. "$ROOT/tests/e2e/compress.sh"
# shellcheck source=tests/e2e/cgprops.sh
. "$ROOT/tests/e2e/cgprops.sh"
# shellcheck source=tests/e2e/cgroup.sh
. "$ROOT/tests/e2e/cgroup.sh"
# shellcheck source=tests/e2e/cgns.sh
. "$ROOT/tests/e2e/cgns.sh"
# crust coredump (issue 17).
# shellcheck source=tests/e2e/coredump.sh
. "$ROOT/tests/e2e/coredump.sh"
# cpuinfo.img, --cpu-cap (issue 17).
# shellcheck source=tests/e2e/cpuinfo.sh
. "$ROOT/tests/e2e/cpuinfo.sh"

# The pid is in use (by the task restored from the same images): the second
# restore fails naming the pid and leaves the first task alone.
t_err_restore_pid_busy() {
    need_cr || return
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    do_restore "$D/img" 1 || return 1
    crust_run restore2 restore -D "$D/img" -d --pidfile "$D/pidfile2" -v4 -o restore2.log
    expect_error restore2 "$D/img/restore2.log" || return 1
    grep -q "\b$PID\b" "$D/restore2.err" ||
        { fail "the message does not name pid $PID: $(head -c 300 "$D/restore2.err")" "$D/img/restore2.log"; return 1; }
    [ -e "$D/pidfile2" ] && { fail "the failed restore wrote its pidfile" "$D/img/restore2.log"; return 1; }
    case $(pstate "$PID") in
        S | R) ;;
        *) fail "the first restored task is in state '$(pstate "$PID")' after the failed restore" "$D/img/restore2.log"; return 1 ;;
    esac
    [ "$(tracer_of "$PID")" = 0 ] || { fail "the first restored task is traced by $(tracer_of "$PID")"; return 1; }
    expect_pass "$D/img/restore1.log"
}

# Known engine bugs: not run by default (the suite stays green for everyone's
# work); run by name or with E2E_KNOWN_BUGS=1. Move a test to ALL_TESTS once
# the engine is fixed.
KNOWN_BUG_TESTS+=()
ALL_TESTS+=(shell-job-needs-tty)

# Images with a terminal (dumped with -j) must be restored with -j, by a crust
# whose own fds 0-2 are a terminal to give the task; otherwise the task would
# be attached to whatever terminal has the dump-time path now. The old pty is
# kept open (pty-run --hold) so that path exists, as another user's would.
t_shell_job_needs_tty() {
    need_cr || return
    "$PY" -c 'import pty, termios' 2>/dev/null || { skip "no usable python3 for $PTY_RUN"; return; }
    local py_exe py1 old
    py_exe=$(readlink -f "$(command -v "$PY")")
    rm -f "$D/ready" "$D/result" "$D/ppid"
    "$PY" "$PTY_RUN" --job --hold --pidfile "$D/ppid" --log "$D/pty-dump.log" -- \
        "$BIN/loop" --ready "$D/ready" --result "$D/result" --tty 1 </dev/null >"$D/pty-dump.out" 2>&1 &
    py1=$!
    track "$py1" "$py_exe"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "loop on a pty did not become ready"; return 1; }
    PID=$(cat "$D/ppid")
    track "$PID" "$BIN/loop"
    rm -f "$D/ready"
    old=$(readlink "/proc/$PID/fd/0")
    do_dump "$D/img" -j || return 1
    [ -e "$old" ] || { fail "set-up: $old is gone after the dump (pty-run --hold keeps it)"; return 1; }
    restore_fails_naming "$D/img" "$PID" terminal 1 -j ||
        { REASON="restore -j by a crust without a terminal: $REASON; the task's fd 0 is $(readlink "/proc/$PID/fd/0" 2>/dev/null) (dump-time $old)"; return 1; }
    restore_fails_naming "$D/img" "$PID" --shell-job 2 ||
        { REASON="restore of -j images without -j: $REASON; the task's fd 0 is $(readlink "/proc/$PID/fd/0" 2>/dev/null) (dump-time $old)"; return 1; }
    kill -TERM "$py1"
    wait_gone "$py1" 5
}

# ---------------------------------------------------------------- runner

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
            show_tail "$kept"/result "$kept"/img/dump.log "$kept"/img/restore*.log
            FAILED=$((FAILED + 1))
            ;;
    esac
    # Kill what this test left running (tests run one at a time, so every
    # live tracked process is this test's); free the space of its images.
    local t
    for t in "${TRACKED[@]+"${TRACKED[@]}"}"; do
        kill_tracked ${t%% *} "${t#* }"
    done
    [ "$KEEP" = 1 ] || rm -rf "$D"
    PID=""
}

# bash reads a script as it runs it: the whole run is one function, called on
# the last line, so an edit of this file during a run cannot derail it.
main() {
    if [ "${1:-}" = --list ]; then
        printf '%s\n' "${ALL_TESTS[@]}"
        exit 0
    fi
    if [ $# -gt 0 ]; then
        for t in "$@"; do
            printf '%s\n' "${ALL_TESTS[@]}" "${KNOWN_BUG_TESTS[@]}" | grep -qx -- "$t" ||
            { echo "unknown test: $t (see --list)" >&2; exit 2; }
        done
        TESTS=("$@")
    else
        TESTS=("${ALL_TESTS[@]}")
        [ "${E2E_KNOWN_BUGS:-0}" = 1 ] && TESTS+=("${KNOWN_BUG_TESTS[@]}")
    fi
    [ "$(id -u)" = 0 ] || echo "warning: not running as root; dump and restore will fail" >&2

    PASSED=0
    FAILED=0
    SKIPPED=0

    for t in "${TESTS[@]}"; do
        run_test "$t"
    done

    echo "e2e: $PASSED passed, $FAILED failed, $SKIPPED skipped"
    [ $FAILED -eq 0 ]
}

main "$@"; exit $?
