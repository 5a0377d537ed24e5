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
