# Pseudo-terminal pairs held by the tree (issue 4). Sourced by run.sh: uses
# its helpers (cr_test, start_prog, do_dump, do_restore, expect_pass,
# restore_fails_naming, fail...) and adds its tests to ALL_TESTS.

# One process holds a master and its slave (two descriptions, one dup'd),
# raw mode with changed c_cc, a window size, packet mode, the slave locked:
# all kept, and data flows both ways after restore (on a new /dev/pts/N).
t_pty_pair() {
    need_cr || return $?
    start_prog ptypair || return 1
    do_dump "$D/img" || return 1
    [ -f "$D/img/tty-info.img" ] || { fail "no tty-info.img in the images" "$D/img/dump.log"; return 1; }
    "$CRUST" image decode -i "$D/img/tty-info.img" >"$D/tty-info.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 ||
        { fail "cannot decode the images: $(head -c 200 "$D/tty-info.json" "$D/files.json")"; return 1; }
    python3 - "$D/tty-info.json" "$D/files.json" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
infos = json.load(open(sys.argv[1]))["entries"]
files = json.load(open(sys.argv[2]))["entries"]
ttys = [f for f in files if f.get("tty")]
assert len(ttys) == 3, "expected 3 TTY files (master, two slave descriptions), got %d" % len(ttys)
assert len(infos) == 2, "expected 2 tty infos (master, slave), got %d" % len(infos)
for i in infos:
    assert i["type"] == "PTY", i
    assert i["pty"]["index"] == infos[0]["pty"]["index"], infos
master = [i for i in infos if i["rdev"] == (5 << 8 | 2)]
assert len(master) == 1, "no master (rdev 5:2) among %s" % infos
m = master[0]
assert m["packet_mode"] and m["locked"], m
slave = [i for i in infos if i is not m][0]
w = slave["winsize"]
assert (w["ws_row"], w["ws_col"], w["ws_xpixel"], w["ws_ypixel"]) == (33, 111, 7, 9), w
t = slave["termios"]
cc = [(t["c_cc"][j // 4] >> (8 * (j % 4))) & 0xff for j in range(19)]  # CRIU's: 4 bytes a word
assert cc[0] == 7 and cc[4] == 5 and cc[6] == 1, t["c_cc"]
assert t["c_lflag"] & 0o12 == 0, "slave not raw: lflag %o" % t["c_lflag"]
PY
        { fail "images: $(tail -n 3 "$D/check.out" | tr '\n' ' ')"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
ALL_TESTS+=(pty-pair)

# The parent holds the master, its child the slave (blocked reading it
# across the dump): the child answers through the restored pair and checks
# termios, window size and its descriptions itself.
t_pty_child() { cr_test ptypair --mode child; }
ALL_TESTS+=(pty-child)

# Bad input: tty-info.img is missing: the restore fails naming it and
# leaves nothing; with it back the restore works.
t_err_restore_pty_info() {
    need_cr || return $?
    start_prog ptypair || return 1
    do_dump "$D/img" || return 1
    mv "$D/img/tty-info.img" "$D/tty-info.img.saved" || { fail "cannot move tty-info.img"; return 1; }
    restore_fails_naming "$D/img" "$PID" tty-info.img 1 || return 1
    mv "$D/tty-info.img.saved" "$D/img/tty-info.img"
    do_restore "$D/img" 2 || return 1
    expect_pass "$D/img/restore2.log"
}
ALL_TESTS+=(err-restore-pty-info)

# The child is a session leader with the slave as its controlling terminal
# (and its group in the foreground): it gets them back on the new pair.
t_pty_session() { cr_test ptypair --mode session; }
ALL_TESTS+=(pty-session)

# A session leader whose controlling terminal is a pty of the tree but who
# holds no fd on it (zdtm tty00, pty03): crust lends it a slave fd to give
# the terminal back; after restore /dev/tty is the new slave, its session
# and foreground group the child's.
t_pty_ctty_nofd() { cr_test ptypair --mode session-nofd; }
ALL_TESTS+=(pty-ctty-nofd)

# A pty slave whose master was closed (zdtm pty04): hung up again after
# restore.
t_pty_hung() { cr_test ptypair --mode hung; }
ALL_TESTS+=(pty-hung)

# Bytes waiting in a pty at dump time, both ways (output for the master,
# a line and a partial line of input for the slave): saved in
# tty-data.img and back after restore, lines as they were.
t_pty_data() {
    need_cr || return $?
    start_prog ptypair --mode data || return 1
    do_dump "$D/img" || return 1
    [ -f "$D/img/tty-data.img" ] || { fail "no tty-data.img" "$D/img/dump.log"; return 1; }
    do_restore "$D/img" || return 1
    expect_pass "$D/img/restore.log"
}
# The same with dump -R: what was read out is put back at once.
t_pty_data_leave_running() {
    need_cr || return $?
    start_prog ptypair --mode data || return 1
    dump_with "$D/img" -R || return 1
    expect_pass "$D/img/dump.log"
}
ALL_TESTS+=(pty-data pty-data-leave-running)

# A session leader holding its controlling terminal (a pty of the tree) by
# its generic name, /dev/tty (zdtm pty00): a TTY file of type CTTY,
# opened again in the task once its controlling terminal is set.
t_pty_devtty() { cr_test devtty; }
ALL_TESTS+=(pty-devtty)
