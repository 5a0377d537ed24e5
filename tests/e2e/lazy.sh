# Lazy restore (issue 15, crates/engine/src/lazy/): `restore --lazy-pages`
# with crust's `lazy-pages` daemon serving the pages from local images.
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# Start the lazy-pages daemon for IMG in the background (-d: returns once
# it listens); extra environment first (e.g. CRUST_LAZY_PREFETCH=0).
lazy_daemon() {
    local img=$1
    shift
    (cd "$D" && exec env "$@" timeout -k 5 "$CR_TIMEOUT" "$CRUST" lazy-pages -D "$img" -d -v4 -o lazy.log) \
        >"$D/lazy.out" 2>"$D/lazy.err" ||
        { fail "lazy-pages exited with $?: $(head -c 300 "$D/lazy.err")" "$img/lazy.log"; return 1; }
    [ -S "$img/lazy-pages.socket" ] || { fail "lazy-pages does not listen on $img/lazy-pages.socket" "$img/lazy.log"; return 1; }
    # The daemon and its guard: killed by the harness if the test fails.
    local p
    for p in $(pgrep -f "lazy-pages -D $img"); do track "$p" "$CRUST"; done
}

# Wait (up to $2 s) until the daemon says it is done.
lazy_wait_done() {
    local img=$1 n=$((${2:-10} * 10))
    while [ $n -gt 0 ]; do
        grep -q "lazy-pages: done" "$img/lazy.log" 2>/dev/null && return 0
        sleep 0.1
        n=$((n - 1))
    done
    fail "the lazy-pages daemon is not done" "$img/lazy.log"
}

# 256 MiB restored lazily: the process runs before its pages are in, the
# daemon copies them in the background, the checksums hold.
t_lazy_bigmem() {
    need_cr || return $?
    start_prog bigmem --mb 256 || return 1
    do_dump "$D/img" || return 1
    lazy_daemon "$D/img" || return 1
    do_restore "$D/img" "" --lazy-pages || return 1
    lazy_wait_done "$D/img" 20 || return 1
    grep -q "pages in the background" "$D/img/lazy.log" || { fail "no summary in the daemon's log" "$D/img/lazy.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# Pages served at faults only (no background copy): right after the
# restore lazymem makes userfaultfd events (see crates/testprogs/src/bin/
# lazymem.rs) and checks all of its memory after them, and again at
# SIGTERM; its fd table must be the images' (the userfaultfd was closed in
# it). $1: processes the daemon must have served; then lazymem's options.
lazy_events() {
    local procs=$1
    shift
    need_cr || return $?
    start_prog lazymem --mb 32 "$@" || return 1
    do_dump "$D/img" || return 1
    lazy_daemon "$D/img" CRUST_LAZY_PREFETCH=0 || return 1
    do_restore "$D/img" "" --lazy-pages || return 1
    kill -USR1 "$PID"
    sleep 1
    expect_pass "$D/img/restore.log" || return 1
    lazy_wait_done "$D/img" 10 || return 1
    grep -Eq "done: $procs processes, [1-9][0-9]* faults" "$D/img/lazy.log" ||
        { fail "the daemon did not serve $procs processes by faults: $(grep done: "$D/img/lazy.log")" "$D/img/lazy.log"; return 1; }
}
# All of MADV_DONTNEED, mremap and munmap, one after the other.
t_lazy_events() { lazy_events 1; }
# fork: the child gets a userfaultfd of its own and the parent's pieces
# left; it checks every page, then the parent makes the other events.
t_lazy_fork() { lazy_events 2 --fork 1; }
# One event each.
t_lazy_ev_fork() { lazy_events 2 --events fork; }
t_lazy_ev_dontneed() { lazy_events 1 --events dontneed; }
t_lazy_ev_free() { lazy_events 1 --events free; }
t_lazy_ev_mremap() { lazy_events 1 --events remap; }
t_lazy_ev_munmap() { lazy_events 1 --events unmap; }
# mprotect splits a lazy VMA: a copy across the cut is refused by the
# kernel (ENOENT), the daemon puts the pages in piece by piece.
t_lazy_ev_mprotect() { lazy_events 1 --events mprotect; }
# exit: a child of the restored tree exits with most of its pages not in;
# the daemon sees it gone and still serves its parent to the end.
t_lazy_ev_exit() {
    lazy_events 2 --events exit || return 1
    grep -q "exited" "$D/img/lazy.log" || { fail "the daemon did not see the child exit" "$D/img/lazy.log"; return 1; }
}

# The daemon dies (SIGKILL) before the pages are in: its guard kills the
# restored process rather than let it run on empty pages or hang.
t_lazy_daemon_killed() {
    need_cr || return $?
    local dpid
    start_prog lazymem --mb 64 || return 1
    do_dump "$D/img" || return 1
    lazy_daemon "$D/img" CRUST_LAZY_PREFETCH=0 || return 1
    dpid=$(pgrep -f "lazy-pages -D $D/img" | head -1)
    [ -n "$dpid" ] || { fail "no lazy-pages daemon running"; return 1; }
    do_restore "$D/img" "" --lazy-pages || return 1
    # The daemon only (the oldest), not its guard.
    kill -KILL "$(pgrep -o -f "lazy-pages -D $D/img")"
    kill -USR1 "$PID" 2>/dev/null
    wait_gone "$PID" 5 || { fail "the restored process survived its daemon (state $(pstate "$PID"))" "$D/img/lazy.log"; return 1; }
    [ -e "$D/result" ] && { fail "the process wrote a result: $(cat "$D/result")"; return 1; }
    pgrep -f "lazy-pages -D $D/img" >/dev/null && { fail "a lazy-pages process (the guard?) is left"; return 1; }
    return 0
}

# The daemon and its guard die together (one SIGKILL for both) before
# the pages are in: the userfaultfds' last holders are gone, but the guard
# traced the tree with PTRACE_O_EXITKILL, so the kernel kills it. Without
# that the process would run on zero pages: told to check its memory
# (SIGUSR1), it would write a failed result.
t_lazy_guard_killed() {
    need_cr || return $?
    local procs
    start_prog lazymem --mb 64 || return 1
    do_dump "$D/img" || return 1
    lazy_daemon "$D/img" CRUST_LAZY_PREFETCH=0 || return 1
    do_restore "$D/img" "" --lazy-pages || return 1
    grep -q "the guard traces the tree" "$D/img/lazy.log" ||
        { fail "the daemon does not say its guard traces the tree" "$D/img/lazy.log"; return 1; }
    procs=$(pgrep -f "lazy-pages -D $D/img" | tr '\n' ' ')
    [ "$(echo $procs | wc -w)" -eq 2 ] || { fail "not a daemon and a guard: $procs"; return 1; }
    # shellcheck disable=SC2086
    kill -KILL $procs
    kill -USR1 "$PID" 2>/dev/null
    wait_gone "$PID" 5 || { fail "the restored process survived its daemon and guard (state $(pstate "$PID"))" "$D/img/lazy.log"; return 1; }
    [ -e "$D/result" ] && { fail "the process wrote a result: $(cat "$D/result")"; return 1; }
    return 0
}

# The restored tree behaves as untraced while the guard traces it: a
# SIGSTOP stops it (state T, or t under PTRACE_LISTEN), SIGCONT wakes
# it, SIGUSR1 reaches its handler, and SIGTERM ends it with its own
# result once every page is in; the guard then lets go (no tracer left).
t_lazy_traced_signals() {
    need_cr || return $?
    start_prog lazymem --mb 32 || return 1
    do_dump "$D/img" || return 1
    lazy_daemon "$D/img" CRUST_LAZY_PREFETCH=0 || return 1
    do_restore "$D/img" "" --lazy-pages || return 1
    grep -q "the guard traces the tree" "$D/img/lazy.log" ||
        { fail "the daemon does not say its guard traces the tree" "$D/img/lazy.log"; return 1; }
    local tracer
    tracer=$(awk '/^TracerPid:/ {print $2}' "/proc/$PID/status")
    [ "${tracer:-0}" -ne 0 ] || { fail "the restored process is not traced while pages are left"; return 1; }
    kill -STOP "$PID"
    local n=50
    # T, or t: a group stop left to a tracer's PTRACE_LISTEN shows as t.
    while [ $n -gt 0 ] && ! [[ "$(pstate "$PID")" =~ ^[Tt]$ ]]; do sleep 0.1; n=$((n - 1)); done
    [[ "$(pstate "$PID")" =~ ^[Tt]$ ]] || { fail "SIGSTOP did not stop the traced process (state $(pstate "$PID"))"; return 1; }
    # Still stopped a while later (the guard does not let it run on).
    sleep 0.3
    [[ "$(pstate "$PID")" =~ ^[Tt]$ ]] || { fail "the traced process did not stay stopped (state $(pstate "$PID"))"; return 1; }
    kill -CONT "$PID"
    n=50
    while [ $n -gt 0 ] && [[ "$(pstate "$PID")" =~ ^[Tt]$ ]]; do sleep 0.1; n=$((n - 1)); done
    [[ "$(pstate "$PID")" =~ ^[Tt]$ ]] && { fail "SIGCONT did not wake the traced process"; return 1; }
    kill -USR1 "$PID"
    lazy_wait_done "$D/img" 30 || return 1
    n=50
    while [ $n -gt 0 ] && [ "$(awk '/^TracerPid:/ {print $2}' "/proc/$PID/status")" != 0 ]; do sleep 0.1; n=$((n - 1)); done
    [ "$(awk '/^TracerPid:/ {print $2}' "/proc/$PID/status")" = 0 ] || { fail "still traced after the daemon is done" "$D/img/lazy.log"; return 1; }
    expect_pass "$D/img/restore.log"
}

# No daemon listening: the restore fails, naming it, and leaves nothing.
t_lazy_no_daemon() {
    need_cr || return $?
    start_prog loop || return 1
    do_dump "$D/img" || return 1
    crust_run restore restore -D "$D/img" -d --lazy-pages -v4 -o restore.log
    [ $RC -ne 0 ] || { fail "restore --lazy-pages without a daemon succeeded"; return 1; }
    grep -q "lazy-pages daemon" "$D/restore.err" "$D/img/restore.log" ||
        { fail "the error does not name the daemon: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "pid $PID exists after the failed restore"; return 1; }
    return 0
}

ALL_TESTS+=(lazy-bigmem lazy-events lazy-fork lazy-ev-fork lazy-ev-dontneed lazy-ev-free lazy-ev-mremap
    lazy-ev-munmap lazy-ev-mprotect lazy-ev-exit lazy-daemon-killed lazy-guard-killed
    lazy-traced-signals lazy-no-daemon)

# --- Lazy pages from the source (dump --lazy-pages, lazy-pages --page-server)

lazy_port() { echo $((20000 + (RANDOM % 20000))); }

# Start PROG ARGS... as the init of a pid namespace of its own (the source
# tree keeps its pids while frozen; the restore makes a new namespace).
# Sets PID (the init's host pid) and SRC_OUTER (unshare).
lazy_start_pidns() {
    rm -f "$D/ready" "$D/result"
    SRC_OUTER=$(setsid unshare -p -f "$BIN/$1" "${@:2}" --ready "$D/ready" --result "$D/result" \
        </dev/null >/dev/null 2>&1 & echo $!)
    track "$SRC_OUTER" "$(readlink -f "$(command -v unshare)")"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "$1 in a pid namespace did not become ready"; return 1; }
    rm -f "$D/ready"
    PID=$(cat /proc/"$SRC_OUTER"/task/*/children 2>/dev/null | awk '{print $1; exit}')
    [ -n "$PID" ] || { fail "no init under unshare $SRC_OUTER"; return 1; }
    track "$PID" "$BIN/$1"
}

# dump --lazy-pages of PID into IMG in the background, serving on PORT;
# returns once it listens (the images are written). Sets DUMP_PID.
lazy_dump_serve() {
    local img=$1 port=$2 n=100
    shift 2
    mkdir -p "$img"
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" dump -t "$PID" -D "$img" --lazy-pages \
        --address 127.0.0.1 --port "$port" -v4 -o dump.log "$@") </dev/null >"$D/dump.out" 2>"$D/dump.err" &
    DUMP_PID=$!
    track "$DUMP_PID" "$(readlink -f "$(command -v timeout)")"
    while [ $n -gt 0 ]; do
        ss -ltnH "sport = :$port" 2>/dev/null | grep -q . && return 0
        kill -0 "$DUMP_PID" 2>/dev/null || break
        sleep 0.1
        n=$((n - 1))
    done
    fail "dump --lazy-pages did not listen on $port: $(head -c 300 "$D/dump.err")" "$img/dump.log"
}

# The restored init (pid 1 of a new namespace) from the pidfile.
lazy_restored() {
    PID=$(cat "$D/pidfile" 2>/dev/null)
    [ -n "$PID" ] && [ -e "/proc/$PID" ] || { fail "no restored process" "$D/img/restore.log"; return 1; }
    track "$PID" "$BIN/$1"
}

# Post-copy migration on one machine: the source dumps with --lazy-pages
# (lazy memory announced PE_LAZY, not stored) and serves it while frozen;
# a plain restore of the set is refused; the daemon fetches the pages
# from the source, the restored tree's memory checks out, and the source
# tree is killed once the daemon said it has every page.
lazy_remote_roundtrip() {
    need_cr || return $?
    local port src pages prog=$1
    port=$(lazy_port)
    lazy_start_pidns "$@" || return 1
    src=$PID
    lazy_dump_serve "$D/img" "$port" || return 1
    "$CRUST" image decode -i "$D/img/pagemap-1.img" 2>/dev/null | "$PY" -c '
import json, sys
sys.exit(0 if any(e.get("flags") == 2 for e in json.load(sys.stdin)["entries"][1:]) else 1)' ||
        { fail "no PE_LAZY-only entry in pagemap-1.img" "$D/img/dump.log"; return 1; }
    pages=$(cat "$D"/img/pages-*.img | wc -c)
    [ "$pages" -lt $((4 << 20)) ] || { fail "the lazy dump stored $pages bytes of pages" "$D/img/dump.log"; return 1; }
    crust_run restore-plain restore -D "$D/img" -d -v4 -o restore-plain.log
    [ $RC -ne 0 ] || { fail "a plain restore of a lazy set succeeded"; return 1; }
    grep -q "restore this set with --lazy-pages" "$D/restore-plain.err" ||
        { fail "the plain restore's error does not say why: $(head -c 300 "$D/restore-plain.err")"; return 1; }
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" lazy-pages -D "$D/img" --page-server \
        --address 127.0.0.1 --port "$port" -d -v4 -o lazy.log) >"$D/lazy.out" 2>"$D/lazy.err" ||
        { fail "lazy-pages --page-server exited with $?: $(head -c 300 "$D/lazy.err")" "$D/img/lazy.log"; return 1; }
    local p
    for p in $(pgrep -f "lazy-pages -D $D/img"); do track "$p" "$CRUST"; done
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" --lazy-pages -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    lazy_restored "$prog" || return 1
    if [ -n "${LAZY_POKE:-}" ]; then
        # lazymem: its events now, then it reads every page.
        kill -USR1 "$PID"
        sleep 1
    fi
    lazy_wait_done "$D/img" 30 || return 1
    wait "$DUMP_PID"
    [ $? -eq 0 ] || { fail "dump --lazy-pages failed: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$src" 5 || { fail "the source $src runs on after the migration" "$D/img/dump.log"; return 1; }
    grep -q "pages sent" "$D/img/dump.log" || { fail "the dump did not serve pages" "$D/img/dump.log"; return 1; }
    expect_pass "$D/img/restore.log"
}
t_lazy_remote_bigmem() { lazy_remote_roundtrip bigmem --mb 64; }
# The restored task moves memory whose pages are still on the source
# (mremap, with the background copy off), then reads it: the daemon asks
# the source for those pages by their address at the dump.
t_lazy_remote_ev_mremap() {
    LAZY_POKE=1 CRUST_LAZY_PREFETCH=0 lazy_remote_roundtrip lazymem --mb 32 --events remap
}
# A tree of 3 processes: a child's VMAs with pages left on the source are
# not kept from its parent at restore, but served lazily.
t_lazy_remote_tree() { lazy_remote_roundtrip forest --n 3; }

# The source goes away (its dump and tree killed) before the restore:
# the daemon cannot fetch the first page, fails, and its guard kills the
# restored tree (never left hanging on a fault).
t_lazy_remote_source_dies() {
    need_cr || return $?
    local port
    port=$(lazy_port)
    lazy_start_pidns bigmem --mb 16 || return 1
    lazy_dump_serve "$D/img" "$port" || return 1
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" lazy-pages -D "$D/img" --page-server \
        --address 127.0.0.1 --port "$port" -d -v4 -o lazy.log) >"$D/lazy.out" 2>"$D/lazy.err" ||
        { fail "lazy-pages --page-server exited with $?: $(head -c 300 "$D/lazy.err")" "$D/img/lazy.log"; return 1; }
    local p
    for p in $(pgrep -f "lazy-pages -D $D/img"); do track "$p" "$CRUST"; done
    # The source machine dies: its dump and its tree.
    pkill -KILL -P "$DUMP_PID" 2>/dev/null
    kill -KILL "$DUMP_PID" "$SRC_OUTER" "$PID" 2>/dev/null
    wait "$DUMP_PID" 2>/dev/null
    rm -f "$D/pidfile"
    # The daemon's background copy may fail (and the guard kill the tree)
    # before the restore is over: then the restore fails, cleanly.
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" --lazy-pages -v4 -o restore.log
    PID=$(cat "$D/pidfile" 2>/dev/null)
    [ -n "$PID" ] && track "$PID" "$BIN/bigmem"
    [ $RC -eq 0 ] || [ -z "$PID" ] || { fail "the restore failed and left pid $PID" "$D/img/restore.log"; return 1; }
    [ -n "$PID" ] && { wait_gone "$PID" 10 ||
        { fail "the restored tree survived its source (state $(pstate "$PID"))" "$D/img/lazy.log"; return 1; }; }
    local n=50
    while pgrep -f "lazy-pages -D $D/img" >/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    pgrep -f "lazy-pages -D $D/img" >/dev/null && { fail "the lazy-pages daemon is left" "$D/img/lazy.log"; return 1; }
    grep -q "page server\|lazy" "$D/img/lazy.log" || { fail "no error in the daemon's log" "$D/img/lazy.log"; return 1; }
    [ -e "$D/result" ] && { fail "the restored process wrote a result: $(cat "$D/result")"; return 1; }
    pgrep -f "bigmem --mb 16 --ready $D/ready" >/dev/null && { fail "a bigmem of the test is left"; return 1; }
    return 0
}

# The daemon dies before it took the pages: the dump fails, the source
# tree is thawed and runs on (its memory intact), the images are removed.
t_lazy_remote_daemon_dies() {
    need_cr || return $?
    local port rc
    port=$(lazy_port)
    lazy_start_pidns bigmem --mb 16 || return 1
    lazy_dump_serve "$D/img" "$port" || return 1
    (cd "$D" && exec timeout -k 5 "$CR_TIMEOUT" "$CRUST" lazy-pages -D "$D/img" --page-server \
        --address 127.0.0.1 --port "$port" -d -v4 -o lazy.log) >"$D/lazy.out" 2>"$D/lazy.err" ||
        { fail "lazy-pages --page-server exited with $?: $(head -c 300 "$D/lazy.err")" "$D/img/lazy.log"; return 1; }
    local p
    for p in $(pgrep -f "lazy-pages -D $D/img"); do track "$p" "$CRUST"; done
    for p in $(pgrep -f "lazy-pages -D $D/img"); do kill -KILL "$p"; done
    wait "$DUMP_PID"
    rc=$?
    [ $rc -ne 0 ] || { fail "dump --lazy-pages succeeded without its daemon" "$D/dump.log"; return 1; }
    grep -q "went away" "$D/dump.err" || { fail "the dump's error does not say the daemon went away: $(head -c 300 "$D/dump.err")"; return 1; }
    [ -e "$D/img/pagemap-1.img" ] && { fail "the failed dump left its images"; return 1; }
    sleep 0.3
    case $(pstate "$PID") in
    S | R) ;;
    *) fail "the source tree is not running again (state $(pstate "$PID"))"; return 1 ;;
    esac
    expect_pass
}

# No daemon ever connects (CRUST_LAZY_WAIT=2): after 2 s the dump fails
# saying so, removes its images, and the frozen source runs on.
t_lazy_remote_no_daemon() {
    need_cr || return $?
    local port rc
    port=$(lazy_port)
    lazy_start_pidns bigmem --mb 16 || return 1
    CRUST_LAZY_WAIT=2 lazy_dump_serve "$D/img" "$port" || return 1
    wait "$DUMP_PID"
    rc=$?
    [ $rc -ne 0 ] || { fail "dump --lazy-pages succeeded without a daemon" "$D/img/dump.log"; return 1; }
    grep -q "no client connected within 2 s" "$D/dump.err" ||
        { fail "the dump's error does not say no daemon came: $(head -c 300 "$D/dump.err")"; return 1; }
    [ -e "$D/img/pagemap-1.img" ] && { fail "the failed dump left its images"; return 1; }
    sleep 0.3
    case $(pstate "$PID") in
    S | R) ;;
    *) fail "the source tree is not running again (state $(pstate "$PID"))"; return 1 ;;
    esac
    expect_pass
}

# lazy-pages --page-server for IMG from PORT in the background; extra
# environment first. Sets LAZY_D (the daemon; its guard is its child).
lazy_remote_daemon() {
    local img=$1 port=$2 p
    shift 2
    (cd "$D" && exec env "$@" timeout -k 5 "$CR_TIMEOUT" "$CRUST" lazy-pages -D "$img" --page-server \
        --address 127.0.0.1 --port "$port" -d -v4 -o lazy.log) >"$D/lazy.out" 2>"$D/lazy.err" ||
        { fail "lazy-pages --page-server exited with $?: $(head -c 300 "$D/lazy.err")" "$img/lazy.log"; return 1; }
    for p in $(pgrep -f "lazy-pages -D $img"); do track "$p" "$CRUST"; done
    LAZY_D=$(pgrep -o -f "lazy-pages -D $img")
}

# Wait (up to $2 s) until no lazy-pages process of IMG is left.
lazy_daemon_gone() {
    local n=$(($2 * 10))
    while pgrep -f "lazy-pages -D $1" >/dev/null && [ $n -gt 0 ]; do sleep 0.1; n=$((n - 1)); done
    pgrep -f "lazy-pages -D $1" >/dev/null && { fail "a lazy-pages process is left" "$1/lazy.log"; return 1; }
    return 0
}

# The daemon stalls (SIGSTOP) after the restored tree started, its pages
# not all taken: after CRUST_LAZY_IDLE=2 s without a request the source
# gives up, saying so. The tree ran at the destination, so the source
# copy is killed, not thawed (never two copies); resumed, the daemon
# finds the source gone and its guard kills the restored copy.
t_lazy_remote_stall() {
    need_cr || return $?
    local port rc src
    port=$(lazy_port)
    lazy_start_pidns bigmem --mb 16 || return 1
    src=$PID
    CRUST_LAZY_IDLE=2 lazy_dump_serve "$D/img" "$port" || return 1
    lazy_remote_daemon "$D/img" "$port" CRUST_LAZY_PREFETCH=0 || return 1
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" --lazy-pages -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    lazy_restored bigmem || return 1
    kill -STOP "$LAZY_D"
    wait "$DUMP_PID"
    rc=$?
    kill -CONT "$LAZY_D"
    [ $rc -ne 0 ] || { fail "dump --lazy-pages succeeded with a stalled daemon" "$D/img/dump.log"; return 1; }
    grep -q "CRUST_LAZY_IDLE" "$D/dump.err" ||
        { fail "the dump's error does not name the stall: $(head -c 400 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$src" 5 || { fail "the source runs on after the destination ran (state $(pstate "$src"))" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 10 || { fail "the restored copy runs on without its pages (state $(pstate "$PID"))" "$D/img/lazy.log"; return 1; }
    lazy_daemon_gone "$D/img" 10 || return 1
    [ -e "$D/result" ] && { fail "a copy wrote a result: $(cat "$D/result")"; return 1; }
    return 0
}

# The daemon stalls before its first request (SIGSTOP before any
# restore): after CRUST_LAZY_WAIT=2 s the dump fails and the source runs
# on (the tree ran nowhere else).
t_lazy_remote_stall_early() {
    need_cr || return $?
    local port rc
    port=$(lazy_port)
    lazy_start_pidns bigmem --mb 16 || return 1
    CRUST_LAZY_WAIT=2 lazy_dump_serve "$D/img" "$port" || return 1
    lazy_remote_daemon "$D/img" "$port" || return 1
    kill -STOP "$LAZY_D"
    wait "$DUMP_PID"
    rc=$?
    kill -KILL "$LAZY_D"
    [ $rc -ne 0 ] || { fail "dump --lazy-pages succeeded with a stalled daemon" "$D/img/dump.log"; return 1; }
    grep -q "CRUST_LAZY_WAIT" "$D/dump.err" ||
        { fail "the dump's error does not name the wait: $(head -c 400 "$D/dump.err")"; return 1; }
    lazy_daemon_gone "$D/img" 10 || return 1
    sleep 0.3
    case $(pstate "$PID") in
    S | R) ;;
    *) fail "the source tree is not running again (state $(pstate "$PID"))"; return 1 ;;
    esac
    expect_pass
}

# PS_IOV_CLOSE lost after the daemon has every page (the test hook drops
# it: the connection just ends): the source sent every lazy page, so it
# counts the tree as moved (the dump succeeds, the source is killed) and
# the daemon keeps its complete tree: one copy runs, the restored one.
t_lazy_remote_close_lost() {
    need_cr || return $?
    local port src
    port=$(lazy_port)
    lazy_start_pidns bigmem --mb 16 || return 1
    src=$PID
    lazy_dump_serve "$D/img" "$port" || return 1
    lazy_remote_daemon "$D/img" "$port" CRUST_LAZY_TEST_LOSE_CLOSE=1 || return 1
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" --lazy-pages -v4 -o restore.log
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$D/img/restore.log"; return 1; }
    lazy_restored bigmem || return 1
    lazy_wait_done "$D/img" 30 || return 1
    wait "$DUMP_PID"
    [ $? -eq 0 ] || { fail "dump --lazy-pages failed on a lost close: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    grep -q "every lazy page was sent" "$D/img/dump.log" || { fail "the dump did not see the close lost" "$D/img/dump.log"; return 1; }
    wait_gone "$src" 5 || { fail "the source runs on beside the restored tree" "$D/img/dump.log"; return 1; }
    lazy_daemon_gone "$D/img" 10 || return 1
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(lazy-remote-bigmem lazy-remote-ev-mremap lazy-remote-tree lazy-remote-source-dies lazy-remote-daemon-dies
    lazy-remote-no-daemon lazy-remote-stall lazy-remote-stall-early lazy-remote-close-lost)
