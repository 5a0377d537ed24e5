# CRIU 4.2's golden image sets restored by crust (threads, pidns, files;
# loop is in run.sh, tree in ipc.sh). Sourced by run.sh. Each test places
# the program and data files where the images say (under /tmp/crust-golden,
# removed afterwards through GOLDEN_MADE), skips when a pid it needs is
# taken, checks the restored tasks from outside and kills them.

G=/tmp/crust-golden

# golden_place BIN [DATA...]: copy tests/fixtures/golden/bin/BIN to
# $G/bin/BIN (0755) and each DATA (a fixture path) to $G/data/ (0644).
golden_place() {
    local bin=$1 f
    shift
    (cd "$GOLDEN_SRC/bin" && sha256sum -c --quiet SHA256SUMS >/dev/null 2>&1) ||
        { fail "$GOLDEN_SRC/bin does not match its SHA256SUMS"; return 1; }
    if [ -e $G/bin/$bin ] && ! cmp -s $G/bin/$bin "$GOLDEN_SRC/bin/$bin"; then
        skip "$G/bin/$bin exists and differs from the fixture"
        return 2
    fi
    golden_make_dir $G $G/bin $G/data || { fail "cannot create $G"; return 1; }
    if [ ! -e $G/bin/$bin ]; then
        cp "$GOLDEN_SRC/bin/$bin" $G/bin/$bin && chmod 0755 $G/bin/$bin || { fail "cannot copy $bin"; return 1; }
        GOLDEN_MADE+=($G/bin/$bin)
    fi
    for f in "$@"; do
        [ -e "$G/data/${f##*/}" ] && { skip "$G/data/${f##*/} exists (in use by someone else?)"; return 2; }
        cp "$f" "$G/data/" && chmod 0644 "$G/data/${f##*/}" || { fail "cannot copy $f"; return 1; }
        GOLDEN_MADE+=("$G/data/${f##*/}")
    done
}

golden_images() { # CASE
    mkdir -p "$D/img" && cp "$GOLDEN_SRC/$1"/*.img "$D/img/" || { fail "cannot copy the images"; return 1; }
}

t_golden_threads() {
    need_cr || return $?
    [ -e /proc/1373 ] && { skip "pid 1373 is in use"; return 2; }
    golden_place threads || return $?
    golden_images threads || return 1
    golden_cpu_ok "$D/img" || return $?
    PID=1373
    track 1373 $G/bin/threads
    do_restore "$D/img" || return 1
    local log=$D/img/restore.log t want got
    for t in 1373:threads:0000000000000200 1376:t1-futex:0000000000000800 \
        1377:t2-fpu:0000000000002001 1378:t3-tick:0000001000001000; do
        IFS=: read -r tid name mask <<<"$t"
        got=$(cat /proc/1373/task/"$tid"/comm 2>/dev/null)
        [ "$got" = "$name" ] || { fail "thread $tid is named '$got', not $name" "$log"; return 1; }
        got=$(awk '/^SigBlk:/ {print $2}' /proc/1373/task/"$tid"/status)
        [ "$got" = "$mask" ] || { fail "thread $tid blocks $got, not $mask" "$log"; return 1; }
    done
    want=0000001000000000
    got=$(awk '/^SigPnd:/ {print $2}' /proc/1373/task/1378/status)
    [ "$got" = "$want" ] || { fail "t3-tick has pending $got, not SIGRTMIN+3 ($want)" "$log"; return 1; }
    kill -KILL 1373
    wait_gone 1373 5 || { fail "pid 1373 survived SIGKILL"; return 1; }
}

# The `loop` program as init of its own pid namespace: restored into a new
# one, where it is pid 1 again and its counter runs on.
t_golden_pidns() {
    need_cr || return $?
    golden_place loop "$GOLDEN_SRC/pidns/external-data/pidns.out" || return $?
    golden_images pidns || return 1
    golden_cpu_ok "$D/img" || return $?
    rm -f "$D/pidfile"
    crust_run restore restore -D "$D/img" -d --pidfile "$D/pidfile" -v4 -o restore.log
    local log=$D/img/restore.log c1 c2
    [ $RC -eq 0 ] || { fail "restore exited with $RC: $(head -c 300 "$D/restore.err")" "$log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" $G/bin/loop
    grep -q "^NSpid:.*[[:space:]]1$" /proc/"$PID"/status ||
        { fail "restored $PID is not pid 1 of a namespace" "$log"; return 1; }
    c1=$(peek_u64 "$PID" $GOLDEN_COUNTER_ADDR 2>"$D/peek.err") ||
        { fail "cannot read /proc/$PID/mem: $(head -c 200 "$D/peek.err")" "$log"; return 1; }
    sleep 0.3
    c2=$(peek_u64 "$PID" $GOLDEN_COUNTER_ADDR 2>/dev/null)
    [ "$c1" -ge 22 ] && [ "$c2" -gt "$c1" ] || { fail "counter $c1 then $c2 (dumped at 22)" "$log"; return 1; }
    kill -KILL "$PID"
    wait_gone "$PID" 5 || { fail "pid $PID survived SIGKILL"; return 1; }
}

# Every file kind of the `files` program, and the shared anonymous memory of
# parent and child.
t_golden_files() {
    need_cr || return $?
    local p
    for p in 1514 1517; do
        [ -e /proc/$p ] && { skip "pid $p is in use"; return 2; }
    done
    for p in files-dgram.sock files-listen.sock files-watched; do
        [ -e $G/data/$p ] && { skip "$G/data/$p exists (in use by someone else?)"; return 2; }
    done
    golden_place files "$GOLDEN_SRC"/files/external-data/* || return $?
    golden_make_dir $G/data/files-watched || { fail "cannot create files-watched"; return 1; }
    GOLDEN_MADE+=($G/data/files-dgram.sock $G/data/files-listen.sock)
    golden_images files || return 1
    golden_cpu_ok "$D/img" || return $?
    PID=1514
    track 1514 $G/bin/files
    track 1517 $G/bin/files
    do_restore "$D/img" || return 1
    local log=$D/img/restore.log fd want got i1 i2
    for fd in 3:files-append.log 4:'files-deleted.tmp (deleted)' 9:'anon_inode:[eventfd]' \
        10:'anon_inode:[signalfd]' 11:'anon_inode:[timerfd]' 12:'anon_inode:[eventpoll]' \
        13:anon_inode:inotify 14:/memfd:crust-memfd; do
        want=${fd#*:}
        got=$(readlink /proc/1514/fd/"${fd%%:*}" 2>/dev/null)
        case $got in *"$want"*) ;; *) fail "fd ${fd%%:*} of 1514 is '$got', not ...$want" "$log"; return 1 ;; esac
    done
    for fd in 5 6 7 8; do
        case $(readlink /proc/1514/fd/$fd) in socket:*) ;; *) fail "fd $fd of 1514 is not a socket" "$log"; return 1 ;; esac
    done
    i1=$(awk '/dev\/zero/ {print $5}' /proc/1514/maps)
    i2=$(awk '/dev\/zero/ {print $5}' /proc/1517/maps)
    [ -n "$i1" ] && [ "$i1" = "$i2" ] ||
        { fail "the shared anonymous mapping is not shared by parent and child (inodes '$i1', '$i2')" "$log"; return 1; }
    for p in 1517 1514; do kill -KILL "$p" 2>/dev/null; done
    for p in 1514 1517; do wait_gone "$p" 5 || { fail "pid $p survived SIGKILL"; return 1; }; done
}

ALL_TESTS+=(golden-threads golden-pidns golden-files)
