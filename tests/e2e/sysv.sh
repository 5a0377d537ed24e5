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
