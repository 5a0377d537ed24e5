# Trees crust refuses, fast and before touching any task (issue 10, parts
# 1b and 5). Sourced by run.sh: uses its helpers (start_prog, crust_run,
# expect_error, expect_untouched, expect_pass, fail, skip...) and adds its
# tests to ALL_TESTS.

# Milliseconds since the epoch.
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# refused_dump NAME WHAT [CRUST ARGS...]: `crust dump` fails, with one
# clear line matching the regex WHAT, within 2 s. Sets MS (its duration).
refused_dump() {
    local name=$1 what=$2 t0
    shift 2
    mkdir -p "$D/img"
    t0=$(now_ms)
    crust_run "$name" dump -D "$D/img" -v4 -o "$name.log" "$@"
    MS=$(($(now_ms) - t0))
    expect_error "$name" "$D/img/$name.log" || return 1
    grep -qiE "$what" "$D/$name.err" ||
        { fail "the message does not say '$what': $(head -c 300 "$D/$name.err")" "$D/img/$name.log"; return 1; }
    [ "$MS" -lt 2000 ] || { fail "the refusal took ${MS} ms (2 s at most)" "$D/img/$name.log"; return 1; }
}

# A process with an io_uring and a read pending in a kernel io worker: the
# dump (--timeout 5) is refused at once, naming the process, fd 5 and
# io_uring; the program was not touched and completes its read afterwards.
t_refuse_iouring() {
    need_cr || return $?
    start_prog iouring || return 1
    refused_dump dump "process $PID .*fd 5 .*io_uring" -t "$PID" --timeout 5 || return 1
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# The same with --leave-running: nothing differs, the refusal comes first.
t_refuse_iouring_r() {
    need_cr || return $?
    start_prog iouring || return 1
    refused_dump dump "fd 5 .*io_uring" -t "$PID" --timeout 5 -R || return 1
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# kthreadd (pid 2) is a kernel thread, not a vfork parent.
t_refuse_kthread() {
    need_cr || return $?
    refused_dump dump "process 2 .*kernel thread" -t 2 || return 1
    grep -qi vfork "$D/dump.err" && { fail "the message still blames a vfork: $(head -c 300 "$D/dump.err")"; return 1; }
    return 0
}

# pid 1 of the machine.
t_refuse_init() {
    need_cr || return $?
    refused_dump dump "process 1 .*init" -t 1
}

# A tree that holds crust itself: a shell that runs crust on its own pid.
t_refuse_self() {
    need_cr || return $?
    local t0
    mkdir -p "$D/img"
    t0=$(now_ms)
    (cd "$D" && timeout -k 5 30 bash -c '"$1" dump -t $$ -D "$2" -v4 -o dump.log; echo $? >"$3"' \
        _ "$CRUST" "$D/img" "$D/rc") >"$D/dump.out" 2>"$D/dump.err"
    MS=$(($(now_ms) - t0))
    RC=$(cat "$D/rc" 2>/dev/null || echo 999)
    expect_error dump "$D/img/dump.log" || return 1
    grep -qi "crust cannot dump itself" "$D/dump.err" ||
        { fail "the message does not say 'crust cannot dump itself': $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    [ "$MS" -lt 2000 ] || { fail "the refusal took ${MS} ms (2 s at most)" "$D/img/dump.log"; return 1; }
}

# A process traced by strace: the message names the tracer; once strace is
# gone the process runs on untouched.
t_refuse_traced() {
    need_cr || return $?
    local strace tracer n=100
    strace=$(command -v strace) || { skip "strace is not installed"; return 2; }
    strace=$(readlink -f "$strace")
    start_prog loop || return 1
    "$strace" -q -p "$PID" -o /dev/null &
    tracer=$!
    track "$tracer" "$strace"
    while [ "$(tracer_of "$PID")" != "$tracer" ] && [ $n -gt 0 ]; do
        sleep 0.05
        n=$((n - 1))
    done
    [ "$(tracer_of "$PID")" = "$tracer" ] || { fail "strace ($tracer) did not attach to $PID"; return 1; }
    refused_dump dump "process $PID .*already traced by process $tracer \(strace\)" -t "$PID"
    local rc=$?
    kill -INT "$tracer" 2>/dev/null
    wait "$tracer" 2>/dev/null
    [ $rc -eq 0 ] || return 1
    n=100
    while [ "$(tracer_of "$PID")" != 0 ] && [ $n -gt 0 ]; do
        sleep 0.05
        n=$((n - 1))
    done
    expect_untouched "$PID" || return 1
    expect_pass "$D/img/dump.log"
}

# `-o log` with an images directory that does not exist: the message names
# the directory, not only the log file.
t_refuse_nodir_log() {
    need_cr || return $?
    local p
    p=$(free_pid)
    crust_run dump dump -t "$p" -D "$D/no-such-dir" -v4 -o dump.log
    expect_error dump || return 1
    grep -qE "directory $D/no-such-dir does not exist" "$D/dump.err" ||
        { fail "the message does not name the directory: $(head -c 300 "$D/dump.err")"; return 1; }
}

ALL_TESTS+=(refuse-iouring refuse-iouring-r refuse-kthread refuse-init refuse-self refuse-traced
    refuse-nodir-log)
