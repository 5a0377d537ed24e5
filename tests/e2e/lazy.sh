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
    lazy-ev-munmap lazy-ev-mprotect lazy-ev-exit lazy-daemon-killed lazy-no-daemon)
