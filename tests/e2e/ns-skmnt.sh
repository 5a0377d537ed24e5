# Tests of unix sockets bound in another mount namespace of the tree
# (issue 13, zdtm sk-unix-mntns). Sourced by run.sh: uses its helpers and
# adds its tests to ALL_TESTS.

# The program runs on as is (both pairs deliver, through the kept and a
# new connection).
t_skmntns_run() {
    mkdir -p "$D/dir"
    start_prog skmntns --dir "$D/dir" || return 1
    local c
    for c in $(cat /proc/"$PID"/task/*/children 2>/dev/null); do track "$c" "$BIN/skmntns"; done
    expect_pass
}

ALL_TESTS+=(skmntns-run)

# A child binds a socket on a tmpfs only its own mount namespace has:
# crust cannot bind it there again yet, so the dump is refused naming the
# socket's mount, and both processes run on untouched and pass.
t_err_dump_skmntns() {
    need_cr || return $?
    mkdir -p "$D/dir" "$D/img"
    start_prog skmntns --dir "$D/dir" || return 1
    local c children
    children=$(cat /proc/"$PID"/task/*/children 2>/dev/null)
    for c in $children; do track "$c" "$BIN/skmntns"; done
    crust_run dump dump -t "$PID" -D "$D/img" -v4 -o dump.log --external 'mnt[/dev]:dev'
    expect_error dump "$D/img/dump.log" || return 1
    grep -qi 'another mount namespace' "$D/dump.err" ||
        { fail "the message does not name the mount: $(head -c 300 "$D/dump.err")" "$D/img/dump.log"; return 1; }
    for c in $PID $children; do
        [ -e "/proc/$c" ] || { fail "$c vanished after the failed dump" "$D/img/dump.log"; return 1; }
        expect_untouched "$c" || return 1
    done
    expect_pass "$D/img/dump.log"
}

ALL_TESTS+=(err-dump-skmntns)
