# Pre-dump chains (issue 15, dump/predump.rs, mem/keeper.rs).
# Sourced by run.sh: uses its helpers and adds its tests to ALL_TESTS.

# CRIU 4.2 to restore chains: $CRIU_SHIM (a wrapper, e.g. a prlimit shim)
# if set, else the criu of ../shared/criu/build.sh (criu_bin, shared.sh).
criu_for_chain() {
    if [ -n "${CRIU_SHIM:-}" ]; then echo "$CRIU_SHIM"; else criu_bin; fi
}

# The keepers (crust __keeper) alive now, one pid a line.
keepers() {
    local p crust
    # Only this crust's: another checkout's e2e run on the same machine
    # has keepers of its own (seen as "a keeper is left").
    crust=$(readlink -f "$CRUST")
    for p in $(pgrep -x crust); do
        [ "$(exe_of "$p")" = "$crust" ] || continue
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

# predump_pair: pre-dump the program into $D/i1, step 1, pre-dump into
# $D/i2 with i1 as the parent.
predump_pair() {
    mkdir -p "$D/i1" "$D/i2" "$D/i3"
    crust_run pd1 pre-dump -t "$PID" -D "$D/i1" -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump 1 exited $RC: $(head -c 300 "$D/pd1.err")" "$D/i1/pd.log"; return 1; }
    predump_step 1 || return 1
    crust_run pd2 pre-dump -t "$PID" -D "$D/i2" --prev-images-dir ../i1 -v4 -o pd.log
    [ $RC = 0 ] || { fail "pre-dump 2 exited $RC: $(head -c 300 "$D/pd2.err")" "$D/i2/pd.log"; return 1; }
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
    local mb=$1 dirty=$2 b lo hi criu
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
    criu=$(criu_for_chain)
    [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh, or CRIU_SHIM) to restore the chain"; return 2; }
    (cd "$D" && timeout 60 "$criu" restore -D "$D/i3" -d -v4 -o restore.log --pidfile "$D/pidfile") \
        >"$D/r.out" 2>&1 || { fail "CRIU 4.2 could not restore the chain" "$D/i3/restore.log"; return 1; }
    track "$PID" "$BIN/dirtymem"
    expect_pass "$D/i3/restore.log"
}

# pre-dump -> pre-dump -> dump of 256 MiB with 5% rewritten between steps.
t_predump_chain() { predump_chain 256 12; }

# The same with 1 GiB and the same amount rewritten: the final set holds
# the same, and the frozen time stays of the same order (within 4x + 20 ms
# of the 256 MiB run's: it follows what was written, not the total). A
# time is the machine's as much as crust's: a 1 GiB chain over the bound
# is run once more (one CI run in about 20 saw 255 ms against 47 ms, and
# the test passed alone each time after), and fails only if both are.
t_predump_chain_1g() {
    predump_chain 256 12 || return $?
    local small=$FINAL_BYTES frozen_small=$FROZEN try
    for try in 1 2; do
        rm -rf "$D/i1" "$D/i2" "$D/i3" "$D/step" "$D/step.done" "$D/result"
        predump_chain 1024 12 || return $?
        echo "    final pages: 256 MiB $((small / 1024)) KiB, 1 GiB $((FINAL_BYTES / 1024)) KiB; frozen ${frozen_small} us, ${FROZEN} us" >&2
        [ "$FINAL_BYTES" -le $((small + (2 << 20))) ] ||
            { fail "the 1 GiB final set holds $FINAL_BYTES bytes, the 256 MiB one $small"; return 1; }
        [ "$FROZEN" -le $((frozen_small * 4 + 20000)) ] && return 0
        echo "    frozen ${FROZEN} us with 1 GiB, ${frozen_small} us with 256 MiB (try $try of 2)" >&2
        kill_tree "$PID" "$BIN/dirtymem"
        wait_gone "$PID" 5
    done
    fail "frozen ${FROZEN} us with 1 GiB, ${frozen_small} us with 256 MiB, twice"
    return 1
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
    local criu
    criu=$(criu_for_chain)
    [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh, or CRIU_SHIM) to restore the chain"; return 2; }
    rm -f "$D/pidfile"
    (cd "$D" && timeout 60 "$criu" restore -D "$D/i3" -d -v4 -o restore.log --pidfile "$D/pidfile") \
        >"$D/r.out" 2>&1 || { fail "CRIU 4.2 could not restore the chain" "$D/i3/restore.log"; return 1; }
    track "$PID" "$BIN/dirtymem"
    expect_pass "$D/i3/restore.log"
}

# ps_round N TOOL ARGS...: round N of a migration over the page server:
# `page-server -D d$N` (with --prev-images-dir ../d$((N-1)) after the
# first), then crust's ARGS (pre-dump or dump) with -D s$N and, after the
# first, --prev-images-dir ../s$((N-1)); the server must exit 0.
ps_round() {
    local n=$1 srv=$2 port prev=()
    shift 2
    port=$(ps_port)
    [ "$n" -gt 1 ] && prev=(--prev-images-dir "../d$((n - 1))")
    ps_server "$srv" "$D/d$n" "$port" "${prev[@]}" || return 1
    mkdir -p "$D/s$n"
    prev=()
    [ "$n" -gt 1 ] && prev=(--prev-images-dir "../s$((n - 1))")
    crust_run r$n "$@" -t "$PID" -D "$D/s$n" "${prev[@]}" --page-server --address 127.0.0.1 --port "$port" -v4 -o r.log
    [ $RC = 0 ] || { fail "round $n ($1) exited $RC: $(head -c 300 "$D/r$n.err")" "$D/s$n/r.log"; return 1; }
    wait_rc "$SPID" 10
    [ "$RC" = 0 ] || { fail "the page server of round $n exited $RC: $(head -c 300 "$D/ps-d$n.err")" "$D/ps-d$n.log"; return 1; }
    ls "$D/s$n"/pagemap-*.img >/dev/null 2>&1 && { fail "round $n wrote a pagemap locally" "$D/s$n/r.log"; return 1; }
    return 0
}

# predump_ps SERVER RESTORER: pre-dump -> pre-dump -> dump of dirtymem
# over SERVER's page server (crust or criu), 12 MiB of 128 rewritten
# between rounds: the final round sends about what was written (its
# stats-dump counts it), the chain on the server's side (its own parent
# links) restores by RESTORER with the final dump's other images.
predump_ps() {
    local b got written srv=$CRUST rst=$CRUST criu="" prog=${3:-dirtymem} dirty=12
    need_crust || return 1
    case "$1$2" in *criu*)
        criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; } ;;
    esac
    [ "$1" = criu ] && srv=$criu
    [ "$2" = criu ] && rst=$criu
    if [ "$prog" = shmdirty ]; then
        dirty=4
        start_prog shmdirty --mb 64 --dirty-mb $dirty --step "$D/step" --mode child || return 1
    else
        start_prog dirtymem --mb 128 --dirty-mb $dirty --step "$D/step" || return 1
    fi
    ps_round 1 "$srv" pre-dump || return 1
    [ -n "$(keepers)" ] || { fail "no keeper after pre-dump 1" "$D/s1/r.log"; return 1; }
    predump_step 1 || return 1
    ps_round 2 "$srv" pre-dump || return 1
    [ "$(readlink "$D/d2/parent")" = ../d1 ] || { fail "the server made no parent link d2/parent"; return 1; }
    predump_step 2 || return 1
    ps_round 3 "$srv" dump || return 1
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    sleep 0.3
    [ -z "$(keepers)" ] || { fail "a keeper is left after the final dump: $(keepers)"; return 1; }
    b=$((dirty << 20))
    got=$(pages_bytes "$D/d3")
    # Shared memory's pages are counted apart (shpages_written).
    written=$(($(stat_of "$D/s3" pages_written) + $(stat_of "$D/s3" shpages_written)))
    echo "    sent per round: $(($(pages_bytes "$D/d1") >> 10)) KiB, $(($(pages_bytes "$D/d2") >> 10)) KiB, $((got >> 10)) KiB; stats-dump: $written pages written, $(stat_of "$D/s3" pages_skipped_parent) left to the parent" >&2
    [ "$got" -ge $((b * 8 / 10)) ] && [ "$got" -le $((b + (1 << 20))) ] ||
        { fail "the final round sent $got bytes of pages, not about $b" "$D/s3/r.log"; return 1; }
    [ $((written << 12)) -ge $((got - (1 << 20))) ] || { fail "stats-dump counts $written pages written, $got bytes were sent" "$D/s3/r.log"; return 1; }
    # The final dump's other images beside the server's pages; nothing
    # of the pre-dumps' source directories is needed.
    cp -n "$D/s3"/*.img "$D/d3/"
    rm -f "$D/pidfile"
    (cd "$D" && timeout -k 5 "$CR_TIMEOUT" "$rst" restore -D "$D/d3" -d --pidfile "$D/pidfile" -v4 -o restore.log) \
        >"$D/rst.out" 2>"$D/rst.err" ||
        { fail "$2's restore of $1's chain failed: $(head -c 300 "$D/rst.err")" "$D/d3/restore.log"; return 1; }
    PID=$(cat "$D/pidfile")
    track "$PID" "$BIN/$prog"
    expect_pass "$D/d3/restore.log"
}
t_predump_page_server() { predump_ps crust crust; }
# Shared anonymous memory (a process and its child write 4 MiB of 64 per
# round): the server's chain holds it against the parent too, with
# crust's and with CRIU 4.2's page server.
t_predump_page_server_shm() { predump_ps crust crust shmdirty; }
t_predump_page_server_shm_criu() { predump_ps criu crust shmdirty; }
# crust's chain into CRIU 4.2's page servers (CRIU checks every run sent
# as in the parent against its parent pagemap), restored by CRIU and by
# crust. (CRIU cannot be the dumping side here: its pre-dump needs
# soft-dirty, which this kernel lacks.)
t_predump_page_server_criu() { predump_ps criu criu; }
t_predump_page_server_criu_crust() { predump_ps criu crust; }
# crust's page servers' chain restored by CRIU 4.2.
t_predump_page_server_to_criu() { predump_ps crust criu; }

# The page server of the second round goes away in the middle (a fake
# that reads 1 MiB and resets): the pre-dump fails with an error naming
# the page server, the tree runs on untracked, no keeper, no images.
t_predump_page_server_lost() {
    need_crust || return 1
    local port
    start_prog dirtymem --mb 64 --dirty-mb 4 --step "$D/step" || return 1
    ps_round 1 "$CRUST" pre-dump || return 1
    port=$(ps_port)
    "$PY" - "$port" >"$D/fake.out" 2>&1 <<'PYEOF' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1)
c, _ = s.accept()
got = 0
while got < (1 << 20):
    b = c.recv(32, socket.MSG_WAITALL)
    if len(b) < 32:
        break
    cmd = int.from_bytes(b[0:4], "little") & 0xffff
    if cmd == 5:                     # PS_IOV_PARENT: yes
        c.sendall((1).to_bytes(4, "little"))
    elif cmd == 4:                   # PS_IOV_OPEN2: a parent
        c.sendall(b"\1")
    else:
        n = int.from_bytes(b[8:16], "little")
        flags = int.from_bytes(b[0:4], "little") >> 16
        if flags & 4:                # PRESENT: its bytes
            left = n * 4096
            while left > 0 and got < (1 << 20):
                d = c.recv(min(left, 65536))
                if not d:
                    break
                left -= len(d)
                got += len(d)
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
c.close()                            # gone, with a reset
PYEOF
    track $! "$PY"
    sleep 0.5
    predump_step 1 || return 1
    mkdir -p "$D/s2"
    SECONDS=0
    crust_run pd2 pre-dump -t "$PID" -D "$D/s2" --prev-images-dir ../s1 --page-server --address 127.0.0.1 --port "$port" -v4 -o pd.log
    expect_error pd2 "$D/s2/pd.log" || return 1
    [ $SECONDS -le 40 ] || { fail "the pre-dump took ${SECONDS}s to notice the server gone" "$D/s2/pd.log"; return 1; }
    grep -qi "page server" "$D/pd2.err" || { fail "the message does not name the page server: $(head -c 300 "$D/pd2.err")" "$D/s2/pd.log"; return 1; }
    expect_untouched "$PID" || return 1
    sleep 0.3
    [ -z "$(keepers)" ] || { fail "a keeper is left after the failed pre-dump: $(keepers)"; return 1; }
    grep -q ' uw' "/proc/$PID/smaps" && { fail "the task is still tracked after the failed pre-dump"; return 1; }
    ls "$D/s2" | grep -v '\.log$' | grep -q . && { fail "the failed pre-dump left $(ls "$D/s2" | tr '\n' ' ')" "$D/s2/pd.log"; return 1; }
    predump_step 2 || return 1
    expect_pass "$D/s2/pd.log"
}

ALL_TESTS+=(predump-chain predump-chain-1g predump-release predump-rpc predump-page-server predump-page-server-lost
    predump-page-server-criu predump-page-server-criu-crust predump-page-server-to-criu
    predump-page-server-shm predump-page-server-shm-criu)

# shm_chain MODE LO HI: pre-dump, pre-dump, dump of shmdirty (64 MiB of
# shared anonymous memory, 4 MiB rewritten per step as MODE says:
# shmdirty.rs); the final set holds LO to HI MiB of pages; crust restores
# the chain exactly, then CRIU 4.2 does.
shm_chain() {
    local mode=$1 lo=$(($2 << 20)) hi=$(($3 << 20)) b criu
    need_crust || return 1
    start_prog shmdirty --mb 64 --dirty-mb 4 --step "$D/step" --mode "$mode" || return 1
    predump_pair || return 1
    predump_step 2 || return 1
    crust_run d3 dump -t "$PID" -D "$D/i3" --prev-images-dir ../i2 -v4 -o dump.log
    [ $RC = 0 ] || { fail "dump exited $RC: $(head -c 300 "$D/d3.err")" "$D/i3/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    b=$(pages_bytes "$D/i3")
    echo "    mode $mode: sets $(du -sk "$D/i1" | cut -f1) KiB, $(du -sk "$D/i2" | cut -f1) KiB, final $((b / 1024)) KiB of pages" >&2
    [ "$b" -ge $lo ] && [ "$b" -le $hi ] ||
        { fail "the final set holds $b bytes of pages, not $2-$3 MiB" "$D/i3/dump.log"; return 1; }
    do_restore "$D/i3" || return 1
    expect_pass "$D/i3/restore.log" || return 1
    criu=$(criu_for_chain)
    [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh, or CRIU_SHIM) to restore the chain"; return 2; }
    rm -f "$D/result" "$D/pidfile"
    (cd "$D" && timeout 60 "$criu" restore -D "$D/i3" -d -v4 -o restore-criu.log --pidfile "$D/pidfile") \
        >"$D/r.out" 2>&1 || { fail "CRIU 4.2 could not restore the chain" "$D/i3/restore-criu.log"; return 1; }
    track "$PID" "$BIN/shmdirty"
    expect_pass "$D/i3/restore-criu.log"
}
# Parent and child write the object: only what they wrote is stored.
t_predump_shm() { shm_chain child 3 6; }
# A child forked for each step writes and exits: its writes were not
# tracked, the object is stored whole.
t_predump_shm_fork() { shm_chain fork 60 66; }
# Pages dropped with MADV_REMOVE and read again (zeros now) are not left
# to the parent set.
t_predump_shm_remove() { shm_chain remove 3 6; }

ALL_TESTS+=(predump-shm predump-shm-fork predump-shm-remove)

# Swapped pages in a chain: a swap file of this test's own is turned on,
# dirtymem hands its memory to swap once filled and after each step
# (`--pageout 1`), pre-dump, pre-dump, dump store against the parents
# (the written pages only, whether swapped or not), and crust's restore
# of the chain checks out. The swap file is turned off and removed at
# the end (and by run.sh's cleanup if the run is cut short).
swap_on() {
    SWAP_MADE=$WORK/swapfile
    fallocate -l 512M "$SWAP_MADE" && chmod 600 "$SWAP_MADE" &&
        mkswap -q "$SWAP_MADE" >/dev/null && swapon "$SWAP_MADE" ||
        { rm -f "$SWAP_MADE"; SWAP_MADE=; fail "cannot turn on a swap file in $WORK (a filesystem that takes swap files is needed)"; }
}
swap_off() {
    [ -n "${SWAP_MADE:-}" ] || return 0
    swapoff "$SWAP_MADE"
    rm -f "$SWAP_MADE"
    SWAP_MADE=
}
t_predump_swapped() {
    local swapped b
    need_crust || return 1
    start_prog dirtymem --mb 128 --dirty-mb 6 --step "$D/step" --pageout 1 || return 1
    swapped=$(awk '/^VmSwap:/ {print $2}' "/proc/$PID/status")
    [ "${swapped:-0}" -gt $((64 << 10)) ] ||
        { fail "dirtymem's memory did not go to swap (VmSwap ${swapped:-?} kB)"; return 1; }
    predump_pair || return 1
    predump_step 2 || return 1
    swapped=$(awk '/^VmSwap:/ {print $2}' "/proc/$PID/status")
    crust_run d3 dump -t "$PID" -D "$D/i3" --prev-images-dir ../i2 -v4 -o dump.log
    [ $RC = 0 ] || { fail "dump exited $RC: $(head -c 300 "$D/d3.err")" "$D/i3/dump.log"; return 1; }
    wait_gone "$PID" 5 || { fail "the task lives on after the dump"; return 1; }
    b=$(pages_bytes "$D/i3")
    echo "    VmSwap before the final dump: ${swapped} kB; final set: $((b / 1024)) KiB of pages" >&2
    # The written pages only: at most 6 MiB plus 1 MiB of the rest.
    [ "$b" -le $(((6 << 20) + (1 << 20))) ] ||
        { fail "the final set holds $b bytes of pages: swapped pages were stored again" "$D/i3/dump.log"; return 1; }
    do_restore "$D/i3" || return 1
    expect_pass "$D/i3/restore.log"
}
t_predump_swap() {
    local rc
    swap_on || return 1
    t_predump_swapped
    rc=$?
    kill_tree "$PID" "$BIN/dirtymem"
    swap_off
    return $rc
}

# The same swap file under `dump -R`: the pre-copy reads the swapped
# pages (back in, still protected), the freeze stores only what was
# written since, and the image restores.
t_snapshot_swapped() {
    local swapped
    need_crust || return 1
    start_prog dirtymem --mb 128 --dirty-mb 6 --step "$D/step" --pageout 1 || return 1
    swapped=$(awk '/^VmSwap:/ {print $2}' "/proc/$PID/status")
    [ "${swapped:-0}" -gt $((64 << 10)) ] ||
        { fail "dirtymem's memory did not go to swap (VmSwap ${swapped:-?} kB)"; return 1; }
    dump_with "$D/img" -R || return 1
    grep -q 'moved into the image set' "$D/img/dump.log" ||
        { fail "the pages were not copied before the freeze" "$D/img/dump.log"; return 1; }
    kill_tree "$PID" "$BIN/dirtymem"
    wait_gone "$PID" 5 || { fail "dirtymem did not go"; return 1; }
    rm -f "$D/result"
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
t_snapshot_swap() {
    local rc
    swap_on || return 1
    t_snapshot_swapped
    rc=$?
    kill_tree "$PID" "$BIN/dirtymem"
    swap_off
    return $rc
}

ALL_TESTS+=(predump-swap snapshot-swap)
