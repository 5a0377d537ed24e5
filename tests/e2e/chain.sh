# Restore through chains of image sets (issue 15): sets whose pagemaps
# have runs in a parent set, reached through their `parent` link. Until
# `crust pre-dump` writes them, chainify.py makes them from full dumps of
# chainmem taken between its rounds of writes. Sourced by run.sh.

CHAIN_MB=64

# One more round of chainmem's writes: chain_step N.
chain_step() {
    echo "$1" >"$D/result.step"
    local n=100
    while [ "$(cat "$D/result.stepped" 2>/dev/null)" != "$1" ]; do
        n=$((n - 1))
        [ $n -gt 0 ] || { fail "chainmem did not do round $1"; return 1; }
        sleep 0.05
    done
}

# make_chain DEPTH: chainmem dumped DEPTH times into $D/s1 .. $D/sDEPTH
# (-R but the last), a round of writes between dumps, then every set but
# the first made a child of the one before (newest first, while its parent
# is still whole). The tree is gone after it. Sets CHAIN_TOP, the newest.
make_chain() {
    local depth=$1 i out before after
    start_prog chainmem --mb "$CHAIN_MB" || return 1
    for i in $(seq 1 "$depth"); do
        if [ "$i" -lt "$depth" ]; then
            dump_with "$D/s$i" -R || return 1
            chain_step "$i" || return 1
        else
            do_dump "$D/s$i" || return 1
        fi
    done
    for i in $(seq "$depth" -1 2); do
        out=$("$PY" "$ROOT/tests/e2e/chainify.py" "$D/s$i" "$D/s$((i - 1))" "../s$((i - 1))" 2>"$D/chainify.err") ||
            { fail "chainify.py failed: $(tail -c 300 "$D/chainify.err")"; return 1; }
        # A tenth of chainmem's pages changed per round: the child keeps
        # about that (plus the stack and heap pages that moved).
        read -r before after <<<"$out"
        [ "$after" -lt $((before / 4)) ] ||
            { fail "set s$i still holds $after of $before bytes after chainify"; return 1; }
    done
    CHAIN_TOP=$D/s$depth
}

# The newest set of a chain of 2, then 3, restores with exact memory.
t_chain_restore2() {
    need_cr || return $?
    make_chain 2 || return 1
    do_restore "$CHAIN_TOP" || return 1
    expect_pass "$CHAIN_TOP/restore.log"
}

t_chain_restore3() {
    need_cr || return $?
    make_chain 3 || return 1
    do_restore "$CHAIN_TOP" || return 1
    expect_pass "$CHAIN_TOP/restore.log"
}

# `crust dedup` punches the superseded pages out of the parents (their
# files keep their size, use fewer blocks), and the newest set still
# restores.
t_chain_dedup() {
    need_cr || return $?
    make_chain 3 || return 1
    local blocks
    blocks=$(stat -c %b "$D"/s1/pages-*.img | paste -sd+ | bc)
    crust_run dedup dedup -D "$CHAIN_TOP" -v4 -o dedup.log
    [ $RC -eq 0 ] || { fail "dedup exited with $RC: $(head -c 300 "$D/dedup.err")" "$CHAIN_TOP/dedup.log"; return 1; }
    local now
    now=$(stat -c %b "$D"/s1/pages-*.img | paste -sd+ | bc)
    [ "$now" -lt "$blocks" ] || { fail "dedup freed nothing in s1 ($blocks blocks before, $now after)" "$CHAIN_TOP/dedup.log"; return 1; }
    do_restore "$CHAIN_TOP" || return 1
    expect_pass "$CHAIN_TOP/restore.log"
}

# `dump --auto-dedup` into a set whose `parent` link is made beforehand
# (as an incremental dump will make it): the dump is whole, so what the
# parent held is punched out of it, and the new set restores.
t_chain_auto_dedup() {
    need_cr || return $?
    start_prog chainmem --mb "$CHAIN_MB" || return 1
    dump_with "$D/s1" -R || return 1
    chain_step 1 || return 1
    mkdir -p "$D/s2"
    ln -s ../s1 "$D/s2/parent"
    local blocks now
    blocks=$(stat -c %b "$D"/s1/pages-*.img | paste -sd+ | bc)
    do_dump "$D/s2" --auto-dedup || return 1
    now=$(stat -c %b "$D"/s1/pages-*.img | paste -sd+ | bc)
    [ "$now" -lt $((blocks / 4)) ] ||
        { fail "auto-dedup left $now of $blocks blocks in s1" "$D/s2/dump.log"; return 1; }
    do_restore "$D/s2" || return 1
    expect_pass "$D/s2/restore.log"
}

# CRIU 4.2 restores the same chain (it reads PE_PARENT runs through
# `parent`).
t_chain_criu() {
    need_cr || return $?
    local criu
    criu=$(criu_bin) && [ -x "$criu" ] || { skip "no CRIU 4.2 (../shared/criu/build.sh or CRIU_BIN)"; return 2; }
    make_chain 3 || return 1
    criu_restore_as_dumped "$criu" "$CHAIN_TOP" || return 1
    expect_pass "$CHAIN_TOP/restore.log"
}

# chain_refused WHAT PATTERN: the restore of $CHAIN_TOP fails with an error
# matching PATTERN, and no process of the tree was made.
chain_refused() {
    crust_run restore restore -D "$CHAIN_TOP" -d --pidfile "$D/pidfile" -v4 -o restore.log
    expect_error restore "$CHAIN_TOP/restore.log" || return 1
    grep -qi -- "$2" "$D/restore.err" ||
        { fail "$1: the error does not say '$2': $(head -c 300 "$D/restore.err")" "$CHAIN_TOP/restore.log"; return 1; }
    [ -e "/proc/$PID" ] && { fail "$1: pid $PID exists after the refused restore" "$CHAIN_TOP/restore.log"; return 1; }
    return 0
}

# A chain altered in each of the ways a restore must refuse: no parent,
# a dangling link, a parent of another tree, a parent whose pages file is
# short, a loop of links. The error comes before any task exists.
t_err_chain_bad() {
    need_cr || return $?
    make_chain 3 || return 1
    local link=$CHAIN_TOP/parent f
    mv "$link" "$D/parent.kept"
    chain_refused "no parent" "there is none" || return 1
    ln -s ../nowhere "$link"
    chain_refused "dangling parent" "cannot be reached" || return 1
    rm "$link"
    # Another tree's set: a dump of another process.
    mkdir -p "$D/other"
    cp "$D/s1/inventory.img" "$D/other/"
    ln -s ../other "$link"
    chain_refused "parent of another tree" "not a parent of this image set" || return 1
    rm "$link"
    mv "$D/parent.kept" "$link"
    # The oldest set's pages file cut short.
    f=$(ls "$D"/s1/pages-*.img | head -n 1)
    cp "$f" "$D/pages.kept"
    truncate -s 4096 "$f"
    chain_refused "short parent pages" "truncated\|does not hold" || return 1
    cp "$D/pages.kept" "$f"
    # A loop: the middle set's parent is the newest.
    rm "$D/s2/parent"
    ln -s ../s3 "$D/s2/parent"
    chain_refused "loop" "loops back" || return 1
    return 0
}

ALL_TESTS+=(chain-restore2 chain-restore3 chain-dedup chain-auto-dedup chain-criu err-chain-bad)
