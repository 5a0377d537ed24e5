# The migration scenario of issue 15, small (bench/migrate.sh with 16
# connections and 64 MiB rewritten at 10 MB/s): a TCP server moves between
# two network namespaces with its service address while its clients, in
# a third, keep exchanging sequenced, hashed messages with it. Sourced by
# run.sh: uses its helpers and adds its tests to ALL_TESTS.
#
# The stages crust has are used (bench/migrate.sh --auto): two pre-dumps
# over a page server per round, the final dump --lazy-pages serving the
# rest from the source, and a lazy restore. PASS if no client saw an error (reset, lost, reordered or late
# bytes), every connection answers after the restore, the restored
# server's memory is intact (checked at once, and at its end), and no
# namespace is left behind.

# migbench_run NAME [ARGS...]: bench/migrate.sh, small, with ARGS. If
# --auto picked a stage crust has only in part (exit 3: it said "not
# supported yet"), the scenario runs again without --auto (the plain
# path), so a half-merged stage does not fail the test; the first run's
# output stays in $D/NAME.auto.out.
migbench_run() {
    local name=$1 rc
    shift
    need_cr || return $?
    command -v ip >/dev/null && command -v nsenter >/dev/null && command -v unshare >/dev/null ||
        { skip "needs ip, nsenter and unshare"; return 2; }
    CRUST_BIN_DIR=$BIN CRUST_BIN=$CRUST timeout -k 5 600 \
        bash "$ROOT/bench/migrate.sh" --conns 16 --mb 64 --rate 10 "$@" >"$D/$name.out" 2>&1
    rc=$?
    if [ $rc = 3 ]; then
        mv "$D/$name.out" "$D/$name.auto.out"
        local a plain=()
        for a in "$@"; do [ "$a" = --auto ] || plain+=("$a"); done
        CRUST_BIN_DIR=$BIN CRUST_BIN=$CRUST timeout -k 5 600 \
            bash "$ROOT/bench/migrate.sh" --conns 16 --mb 64 --rate 10 "${plain[@]}" >"$D/$name.out" 2>&1
        rc=$?
    fi
    if ip netns list 2>/dev/null | grep -q '^mig[0-9]*-'; then
        fail "namespaces left behind: $(ip netns list | grep '^mig' | tr '\n' ' ')" "$D/$name.out"
        return 1
    fi
    [ $rc = 0 ] || { fail "bench/migrate.sh $* exited $rc: $(grep -m1 'migrate:' "$D/$name.out" | head -c 400)" "$D/$name.out"; return 1; }
    grep -q '^  clients: PASS' "$D/$name.out" && grep -q '^  server:  PASS' "$D/$name.out" ||
        { fail "no PASS from the clients and the server" "$D/$name.out"; return 1; }
}
t_migbench_netns_cr() { migbench_run migrate --auto; }
# The same with the server in a pid namespace of its own (the layout the
# lazy stage needs: the source tree lives on until its pages are served).
t_migbench_netns_pidns_cr() { migbench_run migrate --auto --pidns; }

# memwriter (the memory workload of issue 15's tests): 64 MiB rewritten at
# 10 MB/s, plus a burst of 5% (SIGUSR1) just before the dump; restored,
# it answers its probe (SIGUSR2: every page at its latest generation)
# and carries on rewriting, then passes its own check at SIGTERM.
t_migbench_memwriter_cr() {
    need_cr || return $?
    start_prog memwriter --mb 64 --rate 10 --fraction 5 --probe "$D/probe" || return 1
    rm -f "$D/probe"
    kill -USR1 "$PID"
    wait_file "$D/probe" 5 || { fail "memwriter did not answer SIGUSR1"; return 1; }
    case $(cat "$D/probe") in "BURST 819 "*) ;; *) fail "burst answer: $(cat "$D/probe")"; return 1 ;; esac
    do_dump "$D/img" || return 1
    do_restore "$D/img" || return 1
    rm -f "$D/probe"
    kill -USR2 "$PID"
    wait_file "$D/probe" 10 || { fail "the restored memwriter does not answer its probe" "$D/img/restore.log"; return 1; }
    case $(cat "$D/probe") in OK*) ;; *) fail "after the restore: $(cat "$D/probe")" "$D/img/restore.log"; return 1 ;; esac
    sleep 0.3
    expect_pass "$D/img/restore.log"
}

ALL_TESTS+=(migbench-netns-cr migbench-netns-pidns-cr migbench-memwriter-cr)
