# Real servers from Debian's packages (issue 11): an Erlang/OTP node with
# its JIT (a memfd mapped twice, its fd closed) and MariaDB (O_TMPFILE
# files, an 8 TiB address space reservation, io_uring by default). Sourced
# by run.sh: uses its helpers (do_dump, do_restore, wait_file, wait_gone,
# track, fail, skip...) and adds its tests to ALL_TESTS. Each test installs
# what it lacks and removes its server, data and files, pass or fail.

# apt_need PKG...: install the packages that are missing (quietly).
apt_need() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || return 1
    { apt-get update -qq -o DPkg::Lock::Timeout=300 &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            "${missing[@]}"; } >"$D/apt.log" 2>&1
}

# no_fds CMD...: run CMD with only fds 0-2 (a lock the caller holds, such
# as flock's on the e2e lock, must not reach a server: it would be dumped).
no_fds() {
    local f n
    for f in /proc/$BASHPID/fd/*; do
        n=${f##*/}
        [ "$n" -gt 2 ] && eval "exec $n>&-"
    done
    exec "$@"
}

# kill_procs EXE...: SIGKILL PID and its descendants whose exe is one of EXE.
kill_procs() {
    local pid=$1 p e x
    shift
    [ -e "/proc/$pid" ] || return 0
    for p in $(descendants "$pid") "$pid"; do
        e=$(exe_of "$p")
        for x in "$@"; do
            [ "$e" = "$x" ] && kill -KILL "$p" 2>/dev/null
        done
    done
    return 0
}

# ---------------------------------------------------------------- Erlang/OTP

# The node's state line: "N SUM", N the counter its loop holds, SUM the sum
# of an ETS table's values.
erl_state() { cat "$D/state" 2>/dev/null; }

# erl_advances TEXT: the counter moves past the value it has now.
erl_advances() {
    local n0 n i
    n0=$(erl_state | awk '{print $1}')
    for i in $(seq 50); do
        sleep 0.1
        n=$(erl_state | awk '{print $1}')
        [ -n "$n" ] && [ -n "$n0" ] && [ "$n" -gt "$n0" ] && return 0
    done
    fail "$1: the node's counter stays at '$n0'"
}

# An `erl -noshell` node (default JIT, 2 schedulers) with an ETS table of
# 1000 rows and a process holding a counter that it writes out every 50 ms:
# dump, restore, the counter goes on from where it was, the table is whole.
t_erlang() {
    need_cr || return $?
    apt_need erlang-base || { skip "cannot install erlang-base (see $D/apt.log)"; return; }
    local beam erl n_before n_after sum want=333833500 rc
    erl=$(command -v erl) || { skip "no erl"; return; }
    beam=$(ls /usr/lib/erlang/erts-*/bin/beam.smp 2>/dev/null | head -n 1)
    rm -f "$D/state"
    PID=$(CRUST_ERL_STATE=$D/state ERL_CRASH_DUMP=$D/erl_crash.dump ERL_CRASH_DUMP_SECONDS=0 setsid bash -c "$(declare -f no_fds); no_fds \"\$@\"" _ "$erl" -noshell +S 2 -eval '
        ets:new(t, [named_table, public]),
        [ets:insert(t, {K, K * K}) || K <- lists:seq(1, 1000)],
        State = os:getenv("CRUST_ERL_STATE"),
        Loop = fun L(N) ->
            Sum = lists:sum([V || {_, V} <- ets:tab2list(t)]),
            ok = file:write_file(State ++ ".tmp", io_lib:format("~p ~p~n", [N, Sum])),
            ok = file:rename(State ++ ".tmp", State),
            timer:sleep(50),
            L(N + 1)
        end,
        Loop(0).' </dev/null >"$D/erl.out" 2>&1 & echo $!)
    track "$PID" "$beam"
    erl_run_test
    rc=$?
    kill_procs "$PID" "$beam" "$(dirname "$beam")/erl_child_setup"
    return $rc
}

erl_run_test() {
    wait_file "$D/state" $READY_TIMEOUT || { fail "erl did not start: $(head -c 300 "$D/erl.out")"; return 1; }
    [ "$(exe_of "$PID")" = "$beam" ] || { fail "pid $PID is $(exe_of "$PID"), not $beam"; return 1; }
    grep -q '/memfd:.*(deleted)' "/proc/$PID/maps" ||
        { fail "set-up: the node maps no memfd (JIT off?)"; return 1; }
    erl_advances "before the dump" || return 1
    do_dump "$D/img" || return 1
    n_before=$(erl_state | awk '{print $1}')
    do_restore "$D/img" || return 1
    erl_advances "after restore" || { LOG=$D/img/restore.log; return 1; }
    read -r n_after sum < <(erl_state)
    [ "$n_after" -gt "$n_before" ] ||
        { fail "the counter went from $n_before to $n_after: the node started over" "$D/img/restore.log"; return 1; }
    [ "$sum" = "$want" ] || { fail "the ETS table sums to $sum, not $want" "$D/img/restore.log"; return 1; }
    grep -q '/memfd:.*(deleted)' "/proc/$PID/maps" ||
        { fail "the restored node maps no memfd" "$D/img/restore.log"; return 1; }
    erl_advances "a second later" || return 1
}

ALL_TESTS+=(erlang)

# ---------------------------------------------------------------- MariaDB

MARIADBD=/usr/sbin/mariadbd

# sql STATEMENTS: run them on the test's server (unix socket in $D).
sql() { mariadb --no-defaults -S "$D/sock" -uroot -N -B -e "$1" 2>>"$D/sql.err"; }

# maria_start MARIADBD-ARGS...: a server on a copy of a fresh datadir (made
# once per run), listening on a unix socket in $D only; sets PID.
maria_start() {
    apt_need mariadb-server mariadb-client || { skip "cannot install mariadb-server (see $D/apt.log)"; return; }
    local tpl=$WORK/mariadb-datadir i
    if [ ! -d "$tpl" ]; then
        mariadb-install-db --no-defaults --datadir="$tpl.new" --user=root \
            --auth-root-authentication-method=normal --skip-test-db >"$D/install.log" 2>&1 ||
            { fail "mariadb-install-db failed" "$D/install.log"; return 1; }
        mv "$tpl.new" "$tpl"
    fi
    cp -a "$tpl" "$D/data" && mkdir -p "$D/tmp" || { fail "cannot copy the datadir"; return 1; }
    PID=$(setsid bash -c "$(declare -f no_fds); no_fds \"\$@\"" _ "$MARIADBD" --no-defaults \
        --datadir="$D/data" --socket="$D/sock" --skip-networking --pid-file="$D/mariadb.pid" \
        --user=root --tmpdir="$D/tmp" --log-error="$D/mariadb.err" --innodb-buffer-pool-size=32M \
        "$@" </dev/null >/dev/null 2>&1 & echo $!)
    track "$PID" "$MARIADBD"
    for i in $(seq 100); do
        [ -S "$D/sock" ] && sql "select 1" >/dev/null && break
        sleep 0.2
    done
    [ "$(sql "select 1")" = 1 ] || { fail "mariadbd did not start" "$D/mariadb.err"; return 1; }
    [ "$(exe_of "$PID")" = "$MARIADBD" ] || { fail "pid $PID is not mariadbd"; return 1; }
    sql "create database t; create table t.r (id int primary key, v varchar(64)) engine=innodb;
         insert into t.r values (1, 'one'), (2, 'two'), (3, 'three');" ||
        { fail "cannot write rows: $(head -c 300 "$D/sql.err")"; return 1; }
}

# maria_stop: kill the server (its datadir and files are in $D).
maria_stop() { kill_procs "$PID" "$MARIADBD"; wait_gone "$PID" 5; }

# maria_cr DUMP-ARGS...: dump the server (crust under a 120 s timeout and an
# 4 GiB address-space limit, so a dump that grows with MariaDB's reserved
# address space fails instead of pushing the machine into the OOM killer),
# restore it, check the rows and that new writes work.
maria_cr() {
    mkdir -p "$D/img"
    (cd "$D" && exec /usr/bin/time -f "%e s, max RSS %M KiB" -o "$D/dump.time" \
        timeout -k 5 120 prlimit --as=$((4 << 30)) "$CRUST" dump -t "$PID" -D "$D/img" \
        -v4 -o dump.log --file-locks "$@") >"$D/dump.out" 2>"$D/dump.err"
    RC=$?
    [ $RC -eq 0 ] || { fail "dump exited with $RC after $(cat "$D/dump.time" 2>/dev/null): $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "mariadbd $PID still runs after the dump" "$D/img/dump.log"; return 1; }
    grep -q '"remap_type": "GHOST"\|remap_type.: 1' <("$CRUST" image decode -i "$D/img/remap-fpath.img" 2>&1) ||
        { fail "no ghost of MariaDB's O_TMPFILE files in remap-fpath.img" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" "" --file-locks || return 1
    local rows
    rows=$(sql "select group_concat(v order by id) from t.r")
    [ "$rows" = "one,two,three" ] || { fail "rows after restore: '$rows' $(head -c 200 "$D/sql.err")" "$D/img/restore.log"; return 1; }
    sql "insert into t.r values (4, 'four'); update t.r set v = 'TWO' where id = 2;" ||
        { fail "writes after restore fail: $(head -c 300 "$D/sql.err")" "$D/img/restore.log"; return 1; }
    rows=$(sql "select group_concat(v order by id) from t.r")
    [ "$rows" = "one,TWO,three,four" ] || { fail "rows after new writes: '$rows'" "$D/img/restore.log"; return 1; }
}

# MariaDB with native AIO off (no io_uring) and a small buffer pool
# reservation: its O_TMPFILE files (ghosts), file locks, 13 threads.
t_mariadb() {
    need_cr || return $?
    local rc
    maria_start --innodb-use-native-aio=0 --innodb-buffer-pool-size-max=64M
    rc=$?
    [ $rc = 0 ] && { maria_cr; rc=$?; }
    maria_stop
    return $rc
}

# The same with MariaDB's default 8 TiB buffer pool reservation (PROT_NONE):
# the dump must not cost memory or time for address space that holds no page.
t_mariadb_8t() {
    need_cr || return $?
    local rc
    maria_start --innodb-use-native-aio=0
    rc=$?
    [ $rc = 0 ] && { maria_cr; rc=$?; }
    maria_stop
    return $rc
}

# Default configuration (io_uring): the dump is refused at once, naming the
# io_uring fd, and mariadbd goes on serving.
t_mariadb_iouring() {
    need_cr || return $?
    local rc t0 t1
    maria_start
    rc=$?
    if [ $rc = 0 ]; then
        mariadb_refused
        rc=$?
    fi
    maria_stop
    return $rc
}

mariadb_refused() {
    ls -l "/proc/$PID/fd" | grep -q 'io_uring' || { skip "this mariadbd uses no io_uring"; return; }
    mkdir -p "$D/img"
    t0=$(date +%s%N)
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --file-locks
    t1=$(date +%s%N)
    [ $RC -ne 0 ] || { fail "the dump of a mariadbd with io_uring succeeded" "$D/img/dump.log"; return 1; }
    grep -q 'io_uring\|iou-wrk' "$D/dump.err" ||
        { fail "the refusal names no io_uring: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    (((t1 - t0) / 1000000 < 2000)) || { fail "the refusal took $(((t1 - t0) / 1000000)) ms" "$D/img/dump.log"; return 1; }
    sql "insert into t.r values (5, 'five')" && [ "$(sql "select count(*) from t.r")" = 4 ] ||
        { fail "mariadbd does not serve after the refused dump: $(head -c 300 "$D/sql.err")" "$D/img/dump.log"; return 1; }
}

# mariadb-8t: the dump reads the pagemap only where pages are (it grew
# past 20 GB before), the restore maps the reservation PROT_NONE as it is.
ALL_TESTS+=(mariadb mariadb-8t mariadb-iouring)
