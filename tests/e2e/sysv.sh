# Credentials across round trips (issue 11, item 2), System V IPC of a tree
# in the host's IPC namespace and PostgreSQL (issue 11, item 3). Sourced by
# run.sh: uses its helpers (start_prog, do_dump, do_restore, expect_pass,
# dump_must_fail, fail, track...) and adds its tests to ALL_TESTS.

# The credential lines of a process's status (every thread).
creds_of() {
    local t
    for t in /proc/"$1"/task/*; do
        grep -E '^(Uid|Gid|Groups|Cap[A-Za-z]+|NoNewPrivs):' "$t/status" 2>/dev/null | tr -s '\t ' ' '
    done
}

# creds --mode M: dump, restore, dump, restore; after each restore the
# credentials seen from outside are those before the first dump, and the
# program (which checks its own, securebits too, every 20 ms in two
# threads) passes at the end.
creds_round_trips() {
    need_cr || return $?
    # The program is not root: it writes its ready and result files in $D
    # through a directory fd, so $D must let it.
    chmod 1777 "$D"
    start_prog creds "$@" || return 1
    creds_of "$PID" >"$D/creds.before"
    grep -q '^Uid: 0 ' "$D/creds.before" && { fail "creds still runs as root: $(head -1 "$D/creds.before")"; return 1; }
    local round
    for round in 1 2; do
        do_dump "$D/img$round" || { REASON="dump #$round: $REASON"; return 1; }
        do_restore "$D/img$round" || { REASON="restore #$round: $REASON"; return 1; }
        creds_of "$PID" >"$D/creds.$round"
        cmp -s "$D/creds.before" "$D/creds.$round" || {
            fail "after restore #$round: $(diff "$D/creds.before" "$D/creds.$round" | grep '^[<>]' | head -4 | tr '\n' ' ')" "$D/img$round/restore.log"
            return 1
        }
    done
    expect_pass "$D/img2/restore.log"
}
t_creds_nobody() { creds_round_trips --mode nobody; }
t_creds_full() { creds_round_trips --mode full; }

ALL_TESTS+=(creds-nobody creds-full)

# ---- System V objects of the host's IPC namespace that only the tree uses

# Is System V object KIND (shm, sem, msg) ID there?
sysv_exists() {
    awk -v id="$2" 'NR > 1 && $2 == id { f = 1 } END { exit !f }' "/proc/sysvipc/$1"
}

# Remove every object listed in $D/ipc-ids (lines "KIND ID") still there.
sysv_cleanup() {
    local kind id
    [ -f "$D/ipc-ids" ] || return 0
    while read -r kind id; do
        [ "$id" -ge 0 ] 2>/dev/null || continue
        sysv_exists "$kind" "$id" || continue
        case $kind in
            shm) ipcrm -m "$id" ;;
            sem) ipcrm -s "$id" ;;
            msg) ipcrm -q "$id" ;;
        esac
    done <"$D/ipc-ids"
}

# Every object of $D/ipc-ids is there ($1 = 1) or gone ($1 = 0).
sysv_all() {
    local want=$1 kind id
    while read -r kind id; do
        [ "$id" -ge 0 ] 2>/dev/null || continue
        if sysv_exists "$kind" "$id"; then
            [ "$want" = 1 ] || { echo "$kind $id"; return 1; }
        else
            [ "$want" = 0 ] || { echo "$kind $id"; return 1; }
        fi
    done <"$D/ipc-ids"
}

sysvhost_start() {
    start_prog sysvhost --ids "$D/ipc-ids" "$@" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/sysvhost"; done
}

# sysvhost --kinds K: dump (the images hold the objects, which are gone
# with the tree), restore (they are back, same ids and keys), twice; the
# program checks contents, values and messages at the end.
sysvhost_cr() {
    need_cr || return $?
    sysvhost_start --kinds "$1" || return 1
    local round f left
    for round in 1 2; do
        do_dump "$D/img$round" || { REASON="dump #$round: $REASON"; return 1; }
        for f in shm sem msg; do
            [ -s "$D/img$round/ipcns-$f-3.img" ] ||
                { fail "dump #$round wrote no ipcns-$f-3.img" "$D/img$round/dump.log"; return 1; }
        done
        left=$(sysv_all 0 <"$D/ipc-ids") ||
            { fail "dump #$round killed the tree but System V $left is still there" "$D/img$round/dump.log"; return 1; }
        do_restore "$D/img$round" || { REASON="restore #$round: $REASON"; return 1; }
        left=$(sysv_all 1) ||
            { fail "restore #$round did not make System V $left again" "$D/img$round/restore.log"; return 1; }
    done
    expect_pass "$D/img2/restore.log"
}
t_sysv_host_shm() { sysvhost_cr shm; local rc=$?; sysv_cleanup; return $rc; }
t_sysv_host_sem() { sysvhost_cr sem; local rc=$?; sysv_cleanup; return $rc; }
t_sysv_host_msg() { sysvhost_cr msg; local rc=$?; sysv_cleanup; return $rc; }

# Used outside the tree too (a reparented grandchild keeps segment A
# attached, or operated on the set, or sent to the queue): the dump is
# refused naming the object and that process, and the tree runs on.
sysvhost_outside() {
    need_cr || return $?
    local what=$1 id g
    sysvhost_start --kinds "$what" --outside "$what" --outside-pid "$D/outside" || return 1
    g=$(cat "$D/outside" 2>/dev/null)
    [ -n "$g" ] || { fail "no outside user's pid"; return 1; }
    track "$g" "$BIN/sysvhost"
    id=$(awk -v k="$what" '$1 == k { print $2; exit }' "$D/ipc-ids")
    mkdir -p "$D/img"
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log
    expect_error dump "$D/img/dump.log" || return 1
    grep -qE "(segment|set|queue) $id .*pid $g \(" "$D/dump.err" ||
        { fail "the message does not name $what $id and pid $g: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    expect_untouched "$PID" || return 1
    local left
    left=$(sysv_all 1) || { fail "the failed dump removed System V $left" "$D/img/dump.log"; return 1; }
    # Gone before the program counts segment A's attachments: a SIGKILL
    # is not the end of the process, its mappings go with its exit (on a
    # loaded machine the count was 9, the outside user's 3 still there).
    kill -KILL "$g" 2>/dev/null
    wait_gone "$g" 10 || { fail "the outside user $g did not die"; return 1; }
    expect_pass "$D/img/dump.log"
}
t_err_dump_sysv_host_outside_shm() { sysvhost_outside shm; local rc=$?; sysv_cleanup; return $rc; }
t_err_dump_sysv_host_outside_sem() { sysvhost_outside sem; local rc=$?; sysv_cleanup; return $rc; }

# Between dump and restore another segment took segment A's id: the restore
# fails naming it; once it is removed the restore works.
sysvhost_id_taken() {
    need_cr || return $?
    sysvhost_start --kinds shm || return 1
    local id got
    id=$(awk '$1 == "shm" { print $2; exit }' "$D/ipc-ids")
    do_dump "$D/img" || return 1
    echo "$id" >/proc/sys/kernel/shm_next_id
    got=$(ipcmk -M 4096 | grep -o '[0-9]*$')
    echo -1 >/proc/sys/kernel/shm_next_id
    echo "shm $got" >>"$D/ipc-ids"
    [ "$got" = "$id" ] || { fail "ipcmk made segment '$got', not $id"; return 1; }
    restore_fails_naming "$D/img" "$PID" "shared memory id $id is taken" 1 || return 1
    ipcrm -m "$got"
    do_restore "$D/img" 2 || { REASON="with the id free again: $REASON"; return 1; }
    expect_pass "$D/img/restore2.log"
}
t_err_restore_sysv_host_id_taken() { sysvhost_id_taken; local rc=$?; sysv_cleanup; return $rc; }

ALL_TESTS+=(sysv-host-shm sysv-host-sem sysv-host-msg err-dump-sysv-host-outside-shm
    err-dump-sysv-host-outside-sem err-restore-sysv-host-id-taken)

# ---- PostgreSQL (issue 11): a real server from Debian's package

PG_PKG=postgresql-15
PG_BIN=/usr/lib/postgresql/15/bin

# Install the packages given that are missing (Debian's apt).
ensure_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >"$D/apt.log" 2>&1
}

# A TCP port nobody listens on, on 127.0.0.1.
free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Send a query on the client's connection and wait for its answer; the
# answer's rows go to $PG_ROWS. pg_query SQL
PG_N=0
pg_query() {
    PG_N=$((PG_N + 1))
    echo "$1" >&7
    local n=0
    while ! grep -qE "^(DONE|ERROR) $PG_N( |\$)" "$D/pg.out"; do
        n=$((n + 1))
        [ $n -lt 400 ] || { fail "no answer to '$1' within 20 s: $(tail -c 200 "$D/pg.out")"; return 1; }
        sleep 0.05
    done
    grep -q "^ERROR $PG_N " "$D/pg.out" && { fail "'$1' failed: $(grep "^ERROR $PG_N " "$D/pg.out" | head -c 300)"; return 1; }
    # The rows since the previous answer.
    PG_ROWS=$(awk -v n="$PG_N" '/^(DONE|ERROR) / { k = $2 } /^ROW / && k == n - 1 { sub(/^ROW /, ""); print }' "$D/pg.out")
}

# The postmaster's System V segment, "id key" (line 7 of postmaster.pid
# holds "key id"; the segment must exist).
pg_segment() {
    local key id
    read -r key id < <(sed -n 7p "$PG_DATA/postmaster.pid")
    awk -v id="$id" 'NR > 1 && $2 == id { f = 1 } END { exit !f }' /proc/sysvipc/shm || return 1
    echo "$id $key"
}

pg_cleanup() {
    [ -n "${PG_CLIENT:-}" ] && kill -KILL "$PG_CLIENT" 2>/dev/null
    exec 7>&- 2>/dev/null
    if [ -n "${PG_PID:-}" ] && [ "$(exe_of "$PG_PID")" = "$PG_BIN/postgres" ]; then
        local kids c
        kids=$(cat /proc/"$PG_PID"/task/*/children 2>/dev/null)
        kill -QUIT "$PG_PID" 2>/dev/null
        wait_gone "$PG_PID" 10 || kill -KILL "$PG_PID" 2>/dev/null
        for c in $kids; do
            [ "$(exe_of "$c")" = "$PG_BIN/postgres" ] && kill -KILL "$c" 2>/dev/null
        done
    fi
    local id
    for id in ${PG_SEGS:-}; do sysv_exists shm "$id" && ipcrm -m "$id"; done
    [ -n "${PG_ROOT:-}" ] && rm -rf "$PG_ROOT"
    PG_CLIENT="" PG_PID="" PG_ROOT="" PG_DATA="" PG_SEGS=""
}

# PostgreSQL 15, default configuration, a fresh cluster on 127.0.0.1: rows
# written and a client connection open over TCP; dump (--tcp-established),
# the System V segment is gone, restore, it is back (from the images: the
# same id and key), the rows and the connection are there, new writes
# work; twice in a row.
pg_round_trips() {
    need_cr || return $?
    ensure_pkgs "$PG_PKG" || { fail "cannot install $PG_PKG: $(tail -c 300 "$D/apt.log")"; return 1; }
    [ -x "$PG_BIN/postgres" ] || { fail "no $PG_BIN/postgres after installing $PG_PKG"; return 1; }
    PG_ROOT=$(mktemp -d /tmp/crust-pg.XXXXXX) || { fail "mktemp"; return 1; }
    PG_DATA=$PG_ROOT
    chown postgres:postgres "$PG_DATA"
    setpriv --reuid postgres --regid postgres --init-groups "$PG_BIN/initdb" -D "$PG_DATA/data" \
        -A trust -U postgres --no-sync >"$D/initdb.log" 2>&1 ||
        { fail "initdb failed: $(tail -c 300 "$D/initdb.log")"; return 1; }
    local port
    port=$(free_port)
    # Only where it listens differs from the defaults. Nothing of the
    # harness's is inherited (the e2e lock's fd holds a flock).
    PG_PID=$(cd / || exit; setsid setpriv --reuid postgres --regid postgres --init-groups \
        "$PG_BIN/postgres" -D "$PG_DATA/data" -c listen_addresses=127.0.0.1 -c port="$port" \
        -c unix_socket_directories="$PG_DATA" \
        </dev/null >"$PG_DATA/server.log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- & echo $!)
    track "$PG_PID" "$PG_BIN/postgres"
    local n=0
    until [ -s "$PG_DATA/data/postmaster.pid" ] && grep -q "ready" "$PG_DATA/data/postmaster.pid"; do
        n=$((n + 1))
        [ $n -lt 200 ] || { fail "postgres did not start: $(tail -c 300 "$PG_DATA/server.log")"; return 1; }
        sleep 0.05
    done
    PG_DATA=$PG_DATA/data
    local seg
    seg=$(pg_segment) || { fail "postgres has no System V segment"; return 1; }
    PG_SEGS=${seg%% *}
    mkfifo "$D/pg.in"
    "$PY" "$ROOT/tests/e2e/pgclient" "$port" postgres postgres <"$D/pg.in" >"$D/pg.out" 2>&1 &
    PG_CLIENT=$!
    exec 7>"$D/pg.in"
    n=0
    until grep -q CONNECTED "$D/pg.out"; do
        n=$((n + 1))
        [ $n -lt 200 ] || { fail "the client did not connect: $(tail -c 300 "$D/pg.out")"; return 1; }
        sleep 0.05
    done
    pg_query "CREATE TABLE t (id int PRIMARY KEY, v text)" || return 1
    pg_query "INSERT INTO t SELECT i, 'row ' || i FROM generate_series(1, 1000) i" || return 1
    PID=$PG_PID
    local round want=1000 after
    for round in 1 2; do
        do_dump "$D/img$round" --tcp-established --file-locks || { REASON="dump #$round: $REASON"; return 1; }
        ss -tanoe "( sport = :$port or dport = :$port )" >"$D/ss.$round" 2>&1
        sysv_exists shm "$PG_SEGS" && { fail "dump #$round: segment $PG_SEGS is still there" "$D/img$round/dump.log"; return 1; }
        [ -s "$D/img$round/ipcns-shm-3.img" ] || { fail "dump #$round wrote no ipcns-shm-3.img" "$D/img$round/dump.log"; return 1; }
        do_restore "$D/img$round" "" --tcp-established --file-locks || { REASON="restore #$round: $REASON"; return 1; }
        after=$(pg_segment) || { fail "restore #$round: no System V segment" "$D/img$round/restore.log"; return 1; }
        [ "$after" = "$seg" ] || { fail "restore #$round: segment '$after', was '$seg'" "$D/img$round/restore.log"; return 1; }
        pg_query "SELECT count(*), sum(id) FROM t" || { REASON="after restore #$round: $REASON"; return 1; }
        [ "$PG_ROWS" = "$want|$((want * (want + 1) / 2))" ] ||
            { fail "after restore #$round: count|sum is '$PG_ROWS', expected $want rows" "$D/img$round/restore.log"; return 1; }
        pg_query "INSERT INTO t VALUES ($((want + 1)), 'after restore $round')" || { REASON="after restore #$round: $REASON"; return 1; }
        want=$((want + 1))
        pg_query "SELECT v FROM t WHERE id = $want" || return 1
        [ "$PG_ROWS" = "after restore $round" ] || { fail "after restore #$round: read back '$PG_ROWS'"; return 1; }
    done
    # A new connection works too.
    "$PY" "$ROOT/tests/e2e/pgclient" "$port" postgres postgres <<<"SELECT count(*) FROM t" >"$D/pg2.out" 2>&1
    grep -q "^ROW $want\$" "$D/pg2.out" || { fail "a new connection sees: $(head -c 200 "$D/pg2.out")"; return 1; }
}
t_postgres() { pg_round_trips; local rc=$?; pg_cleanup; return $rc; }

ALL_TESTS+=(postgres)
