# Pre-dump chains (issue 15, dump/predump.rs, mem/keeper.rs).
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# CRIU 4.2 with the prlimit shim of this machine kind (restores chains).
CRIU_SHIM=${CRIU_SHIM:-/tmp/oracle/criu-shim}

# The keepers (crust __keeper) alive now, one pid a line.
keepers() {
    local p
    for p in $(pgrep -x crust); do
        tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '__keeper' && echo "$p"
    done
}

# predump_step N: the program rewrites its pages for step N.
predump_step() {
    echo "$1" >"$D/step"
    wait_file "$D/step.done" 10 && [ "$(cat "$D/step.done")" = "$1" ] ||
        { sleep 0.5; [ "$(cat "$D/step.done" 2>/dev/null)" = "$1" ]; } ||
        { fail "dirtymem did not do step $1"; return 1; }
}

# Bytes of the pages files of image set $1.
pages_bytes() { cat /dev/null "$1"/pages-*.img | wc -c; }

# A field of stats-dump of $1.
stat_of() {
    "$CRUST" image decode -i "$1/stats-dump" | "$PY" -c "
import json, sys
print(json.load(sys.stdin)['entries'][0]['dump'].get('$2', 0))"
}

# predump_chain MB DIRTY_MB: pre-dump, pre-dump, dump of dirtymem, each
# after DIRTY_MB were rewritten; the final set holds about DIRTY_MB; CRIU
# 4.2 restores the chain; the memory checks out. Sets FINAL_BYTES, FROZEN.
predump_chain() {
    local mb=$1 dirty=$2 b lo hi
    need_crust || return 1
    rm -f "$D/pidfile"
    start_prog dirtymem --mb "$mb" --dirty-mb "$dirty" --step "$D/step" || return 1
    mkdir -p "$D/i1" "$D/i2" "$D/i3"
    crust_run pd1 pre-dump -t "$PID" -D "$D/i1" -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump 1 exited $RC: $(head -c 300 "$D/pd1.err")" "$D/i1/pd.log"; return 1; }
    [ -e "/proc/$PID" ] || { fail "the task is gone after pre-dump" "$D/i1/pd.log"; return 1; }
    [ -n "$(keepers)" ] || { fail "no keeper after pre-dump" "$D/i1/pd.log"; return 1; }
    predump_step 1 || return 1
    crust_run pd2 pre-dump -t "$PID" -D "$D/i2" --prev-images-dir ../i1 -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump 2 exited $RC: $(head -c 300 "$D/pd2.err")" "$D/i2/pd.log"; return 1; }
    [ "$(readlink "$D/i2/parent")" = ../i1 ] || { fail "i2/parent is not ../i1"; return 1; }
    predump_step 2 || return 1
    crust_run d3 dump -t "$PID" -D "$D/i3" --prev-images-dir ../i2 -v4 -o dump.log
    [ $RC = 0 ] || { fail "dump exited $RC: $(head -c 300 "$D/d3.err")" "$D/i3/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    sleep 0.3
    [ -z "$(keepers)" ] || { fail "a keeper is left after the final dump: $(keepers)"; return 1; }
    FINAL_BYTES=$(pages_bytes "$D/i3")
    FROZEN=$(stat_of "$D/i3" frozen_time)
    # About DIRTY_MB: at most that (pages chosen twice count once), at
    # least 80% of it; plus at most 1 MiB of the program's other pages.
    b=$((dirty << 20))
    lo=$((b * 8 / 10))
    hi=$((b + (1 << 20)))
    echo "    ${mb} MiB, ${dirty} MiB rewritten per step: sets $(du -sk "$D/i1" | cut -f1) KiB, $(du -sk "$D/i2" | cut -f1) KiB, final $((FINAL_BYTES / 1024)) KiB of pages, frozen ${FROZEN} us" >&2
    [ "$FINAL_BYTES" -ge $lo ] && [ "$FINAL_BYTES" -le $hi ] ||
        { fail "the final set holds $FINAL_BYTES bytes of pages, not about $b" "$D/i3/dump.log"; return 1; }
    [ -x "$CRIU_SHIM" ] || { skip "no CRIU 4.2 at $CRIU_SHIM to restore the chain"; return 2; }
    (cd "$D" && timeout 60 "$CRIU_SHIM" restore -D "$D/i3" -d -v4 -o restore.log --pidfile "$D/pidfile") \
        >"$D/r.out" 2>&1 || { fail "CRIU 4.2 could not restore the chain" "$D/i3/restore.log"; return 1; }
    track "$PID" "$BIN/dirtymem"
    expect_pass "$D/i3/restore.log"
}

# pre-dump -> pre-dump -> dump of 256 MiB with 5% rewritten between steps.
t_predump_chain() { predump_chain 256 12; }

# The same with 1 GiB and the same amount rewritten: the final set holds
# the same, and the frozen time stays of the same order (within 4x + 20 ms
# of the 256 MiB run's: it follows what was written, not the total).
t_predump_chain_1g() {
    predump_chain 256 12 || return $?
    local small=$FINAL_BYTES frozen_small=$FROZEN
    rm -rf "$D/i1" "$D/i2" "$D/i3" "$D/step" "$D/step.done" "$D/result"
    predump_chain 1024 12 || return $?
    echo "    final pages: 256 MiB $((small / 1024)) KiB, 1 GiB $((FINAL_BYTES / 1024)) KiB; frozen ${frozen_small} us, ${FROZEN} us" >&2
    [ "$FINAL_BYTES" -le $((small + (2 << 20))) ] ||
        { fail "the 1 GiB final set holds $FINAL_BYTES bytes, the 256 MiB one $small"; return 1; }
    [ "$FROZEN" -le $((frozen_small * 4 + 20000)) ] ||
        { fail "frozen ${FROZEN} us with 1 GiB, ${frozen_small} us with 256 MiB"; return 1; }
}

# `crust track-release DIR` ends the keeper and lifts the tracking (no
# `uw` left in the task's smaps); the task runs on, unharmed.
t_predump_release() {
    need_crust || return 1
    start_prog dirtymem --mb 16 --step "$D/step" || return 1
    mkdir -p "$D/i1"
    crust_run pd1 pre-dump -t "$PID" -D "$D/i1" -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump exited $RC: $(head -c 300 "$D/pd1.err")" "$D/i1/pd.log"; return 1; }
    grep -q ' uw' "/proc/$PID/smaps" || { fail "no uw in smaps while tracked"; return 1; }
    "$CRUST" track-release "$D/i1" >"$D/rel.out" 2>&1 || { fail "track-release: $(cat "$D/rel.out")"; return 1; }
    sleep 0.3
    [ -z "$(keepers)" ] || { fail "the keeper is still there"; return 1; }
    grep -q ' uw' "/proc/$PID/smaps" && { fail "uw still in smaps after release"; return 1; }
    predump_step 1 || return 1
    expect_pass
}

# The chain over RPC (swrk, CRIU's pycriu: PRE_DUMP, PRE_DUMP with
# parent_img, DUMP with parent_img), restored by CRIU 4.2.
t_predump_rpc() {
    need_crust || return 1
    local client=$ROOT/tests/e2e/rpc-client
    start_prog dirtymem --mb 64 --dirty-mb 3 --step "$D/step" || return 1
    mkdir -p "$D/i1" "$D/i2" "$D/i3"
    "$client" "$CRUST" swrk pre-dump "$PID" "$D/i1" >"$D/r1.out" 2>&1 || { fail "RPC pre-dump: $(tail -c 300 "$D/r1.out")" "$D/i1/dump.log"; return 1; }
    predump_step 1 || return 1
    "$client" "$CRUST" swrk pre-dump "$PID" "$D/i2" ../i1 >"$D/r2.out" 2>&1 || { fail "RPC pre-dump 2: $(tail -c 300 "$D/r2.out")" "$D/i2/dump.log"; return 1; }
    predump_step 2 || return 1
    "$client" "$CRUST" swrk dump-parent "$PID" "$D/i3" ../i2 >"$D/r3.out" 2>&1 || { fail "RPC dump: $(tail -c 300 "$D/r3.out")" "$D/i3/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    [ "$(stat_of "$D/i3" pages_skipped_parent)" -gt 10000 ] || { fail "the final dump left no pages to its parent" "$D/i3/dump.log"; return 1; }
    [ -x "$CRIU_SHIM" ] || { skip "no CRIU 4.2 at $CRIU_SHIM to restore the chain"; return 2; }
    rm -f "$D/pidfile"
    (cd "$D" && timeout 60 "$CRIU_SHIM" restore -D "$D/i3" -d -v4 -o restore.log --pidfile "$D/pidfile") \
        >"$D/r.out" 2>&1 || { fail "CRIU 4.2 could not restore the chain" "$D/i3/restore.log"; return 1; }
    track "$PID" "$BIN/dirtymem"
    expect_pass "$D/i3/restore.log"
}

# pre-dump --page-server is refused (its pages would land in -D, not on
# the server): a clear error, the task untouched and untracked.
t_err_predump_page_server() {
    need_crust || return 1
    start_prog dirtymem --mb 16 --step "$D/step" || return 1
    mkdir -p "$D/i1"
    crust_run pd1 pre-dump -t "$PID" -D "$D/i1" --page-server --address 127.0.0.1 --port 1 -v4 -o pd.log
    [ $RC != 0 ] || { fail "pre-dump --page-server succeeded" "$D/i1/pd.log"; return 1; }
    grep -q "page-server" "$D/pd1.err" || { fail "the error does not name --page-server: $(head -c 300 "$D/pd1.err")"; return 1; }
    grep -q ' uw' "/proc/$PID/smaps" && { fail "the task is tracked after the refusal"; return 1; }
    [ -z "$(keepers)" ] || { fail "a keeper was started"; return 1; }
    expect_pass
}

ALL_TESTS+=(predump-chain predump-chain-1g predump-release predump-rpc err-predump-page-server)
