# The orphan pty master (issue 14): a pty slave whose master is outside the
# tree, as a container's console, over CRIU's RPC with orphan_pts_master.
# Sourced by run.sh after rpc.sh (uses need_pycriu and rpc_run).

# A shell on a pty whose master the client holds: without
# orphan_pts_master the dump is refused naming the terminal and the shell
# runs on; with it the dump takes the slave alone; the restore is refused
# without orphan_pts_master and without notify_scripts; with both the new
# master comes with the orphan-pts-master notify (before post-restore) and
# the restored shell still has its variable.
t_rpc_orphan_pts() {
    need_pycriu || return $?
    mkdir -p "$D/img"
    rpc_run orphan "$ROOT/tests/e2e/orphanpts-client" "$CRUST" "$D/img" /bin/sh
    [ $RC -eq 0 ] || { fail "$(head -c 400 "$D/orphan.err")" "$D/img/restore.log"; return 1; }
    grep -q '^ok .*orphan-pts-master' "$D/orphan.out" ||
        { fail "client said: $(cat "$D/orphan.out")" "$D/img/restore.log"; return 1; }
}

ALL_TESTS+=(rpc-orphan-pts)

# podman run -t (podman.sh's helpers): conmon holds the console's master.
# The container counts and prints each count on its terminal; after
# checkpoint and restore (runc hands the new master to conmon) it counts on
# and the counts printed after the restore reach podman's log through the
# new master.
t_podman_terminal() {
    local rc
    podman_terminal
    rc=$?
    pm_cleanup
    return $rc
}

podman_terminal() {
    pm_setup || return $?
    local a last
    pm_run pt -t --network none "$PM_IMAGE" sh -c "${PM_COUNTER/mv \/tmp\/c.new \/tmp\/count;/mv /tmp/c.new /tmp/count; echo tick-\$i;}" || return 1
    a=$(pm_wait_count pt 5) || { fail "the container does not count"; return 1; }
    pm_checkpoint pt --keep || return 1
    pm_crust_log pt dump.log Dump || return 1
    pm_restore pt --keep pt || return 1
    pm_crust_log pt restore.log Restore || return 1
    grep -q 'orphan-pts-master' "$D/pt-restore.log" ||
        { fail "the restore log does not show the orphan-pts-master notify" "$D/pt-restore.log"; return 1; }
    pm_counting pt "$a" || return 1
    a=$(pm_count pt)
    for _ in $(seq 30); do
        last=$(pm logs pt 2>/dev/null | tr -d '\r' | sed -n 's/^tick-//p' | tail -n 1)
        [ -n "$last" ] && [ -n "$a" ] && [ "$last" -gt "$a" ] && return 0
        sleep 0.2
    done
    fail "podman's log has no count after the restore's $a (last: ${last:-none}): the new master did not reach conmon" "$D/pt-restore.log"
}

ALL_TESTS+=(podman-terminal)
