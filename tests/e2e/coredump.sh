# `crust coredump` (issue 17): an ELF core per process of an image set,
# which Debian's gdb loads with every thread's backtrace. Sourced by run.sh:
# uses its helpers and adds its tests to ALL_TESTS.

ALL_TESTS+=(coredump)

# thrcore (3 threads, each blocked in a function of its own name) is
# pre-dumped, then dumped with -R on top of the pre-dump (so part of its
# memory is only in the parent set); `crust coredump` of the final set;
# gdb's `thread apply all bt` must show, for each thread (by LWP), the
# function it blocks in. The program then runs on and checks itself.
t_coredump() {
    need_cr || return
    local gdb=/usr/bin/gdb lwp="" want got t
    [ -x "$gdb" ] || { skip "no $gdb (Debian's gdb package)"; return; }
    start_prog thrcore || return 1
    mkdir -p "$D/i1" "$D/i2" "$D/cores"
    crust_run pd pre-dump -t "$PID" -D "$D/i1" -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump exited $RC: $(head -c 300 "$D/pd.err")" "$D/i1/pd.log"; return 1; }
    dump_with "$D/i2" -R --prev-images-dir ../i1 || return 1
    "$CRUST" image decode -i "$D/i2/pagemap-$PID.img" | grep -q '"flags": 1\b' ||
        { fail "set-up: the final set has no pages in its parent (PE_PARENT)" "$D/i2/dump.log"; return 1; }
    crust_run cd coredump -i "$D/i2" -o "$D/cores" -p "$PID"
    [ $RC = 0 ] || { fail "coredump exited $RC: $(head -c 300 "$D/cd.err")"; return 1; }
    [ -f "$D/cores/core.$PID" ] || { fail "no core.$PID in $D/cores: $(ls "$D/cores")"; return 1; }
    [ "$(stat -c %a "$D/cores/core.$PID")" = 600 ] || { fail "core.$PID has mode $(stat -c %a "$D/cores/core.$PID"), not 0600"; return 1; }
    timeout 120 "$gdb" -nx -batch -ex 'thread apply all bt' "$BIN/thrcore" "$D/cores/core.$PID" \
        >"$D/gdb.out" 2>&1 || { fail "gdb failed: $(tail -c 300 "$D/gdb.out")" "$D/gdb.out"; return 1; }
    # Each thread's block: "Thread N (Thread 0x... (LWP tid)):" then its frames.
    for t in $(ls "/proc/$PID/task"); do
        got=$(awk -v lwp="(LWP $t))" 'index($0, "Thread ") == 1 { on = index($0, lwp) > 0; next } on' "$D/gdb.out")
        [ -n "$got" ] || { fail "gdb shows no thread $t" "$D/gdb.out"; return 1; }
        if [ "$t" = "$PID" ]; then
            want=thrcore_main_waits
        elif grep -q thrcore_reader_blocks <<<"$got"; then
            want=thrcore_reader_blocks
        else
            want=thrcore_poller_blocks
        fi
        grep -q "in thrcore::$want ()" <<<"$got" ||
            { fail "thread $t: gdb's backtrace lacks $want: $(head -c 300 <<<"$got")" "$D/gdb.out"; return 1; }
        lwp="$lwp $want"
    done
    for want in thrcore_main_waits thrcore_reader_blocks thrcore_poller_blocks; do
        grep -qw "$want" <<<"$lwp" || { fail "no thread is in $want: $lwp" "$D/gdb.out"; return 1; }
    done
    # The core file is never overwritten (O_EXCL), as every file crust makes.
    crust_run cd2 coredump -i "$D/i2" -o "$D/cores"
    [ $RC != 0 ] || { fail "a second coredump over core.$PID succeeded"; return 1; }
    expect_pass "$D/i2/dump.log"
}
