# restore --inherit-fd fd[N]:KEY (issue 4): a pipe whose other end is
# outside the dumped tree (a container's stdio under runc) is dumped like any
# pipe and handed back on restore as one of crust's own fds. Sourced by
# run.sh: uses its helpers (do_dump, do_restore, restore_fails_naming,
# expect_pass, wait_file, fail, skip, track...) and adds to ALL_TESTS.

CAT_EXE=$(readlink -f "$(command -v cat)")

# inherit_start: start stdiopipe with its stdout a pipe to a `cat` writing
# $D/before.out; sets PID and INO (the pipe's inode).
inherit_start() {
    [ -x "$BIN/stdiopipe" ] || { fail "no test program $BIN/stdiopipe (cargo build --release -p crust-testprogs)"; return 1; }
    rm -f "$D/ready" "$D/result"
    # Started by a python that exits at once: neither is our child. The
    # reader gets end-of-file (and exits) when the program is gone.
    local pids
    pids=$("$PY" - "$BIN/stdiopipe" "$D" <<'PYEOF'
import os, subprocess, sys
prog, d = sys.argv[1], sys.argv[2]
r, w = os.pipe()
cat = subprocess.Popen(["cat"], stdin=r, stdout=open(d + "/before.out", "w"))
p = subprocess.Popen([prog, "--ready", d + "/ready", "--result", d + "/result"],
                     stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.DEVNULL,
                     start_new_session=True)
print(p.pid, cat.pid)
PYEOF
)
    PID=${pids% *}
    track "$PID" "$BIN/stdiopipe"
    track "${pids#* }" "$CAT_EXE"
    wait_file "$D/ready" $READY_TIMEOUT || { fail "stdiopipe did not become ready in ${READY_TIMEOUT}s"; return 1; }
    rm -f "$D/ready"
    local link
    link=$(readlink "/proc/$PID/fd/1")
    INO=$(pipe_ino_of "$link")
    [ -n "$INO" ] || { fail "stdiopipe's fd 1 is '$link', not a pipe"; return 1; }
}

pipe_ino_of() { case $1 in "pipe:["*"]") local x=${1#pipe:[}; echo "${x%]}" ;; esac; }

# Restored with --inherit-fd fd[7]:pipe:[INO], crust's fd 7 the write end of
# a new pipe to another cat: the task's fd 1 is that pipe, the ticks it
# writes after the restore and its final line reach the new reader, and an
# extra key that matches no file is only a warning.
t_inherit_fd_pipe() {
    need_cr || return $?
    inherit_start || return 1
    sleep 0.1
    do_dump "$D/img" || return 1
    grep -q '^tick 1$' "$D/before.out" || { fail "the first reader got no tick before the dump"; return 1; }
    local reader link last
    do_restore "$D/img" "" --inherit-fd "fd[7]:pipe:[$INO]" --inherit-fd "fd[2]:pipe:[1]" \
        7> >(exec cat >"$D/after.out")
    local rc=$?
    reader=$!
    track "$reader" "$CAT_EXE"
    [ $rc = 0 ] || return 1
    link=$(readlink "/proc/$PID/fd/1")
    [ "$(pipe_ino_of "$link")" != "$INO" ] && [ -n "$(pipe_ino_of "$link")" ] ||
        { fail "the restored task's fd 1 is '$link' (dumped pipe:[$INO])" "$D/img/restore.log"; return 1; }
    grep -q 'pipe:\[1\].*no file of the image has this key' "$D/img/restore.log" ||
        { fail "no warning for the key matching nothing" "$D/img/restore.log"; return 1; }
    sleep 0.2
    expect_pass "$D/img/restore.log" || return 1
    # The task is gone: its pipe's reader sees end-of-file and exits.
    wait_gone "$reader" 5 || { fail "the new pipe's reader is still waiting: someone else holds the pipe"; return 1; }
    last=$(tail -n 1 "$D/after.out")
    case $last in "done "*) ;; *) fail "the new reader's last line is '$last', expected 'done N'"; return 1 ;; esac
    grep -q '^tick ' "$D/after.out" || { fail "the new reader got no tick written after the restore"; return 1; }
    # Nothing written before the dump is replayed into the inherited pipe:
    # the new reader's first tick comes after the old reader's last one.
    local b a
    b=$(grep '^tick ' "$D/before.out" | tail -n 1 | cut -d' ' -f2)
    a=$(grep '^tick ' "$D/after.out" | head -n 1 | cut -d' ' -f2)
    [ "$a" -gt "$b" ] || { fail "the new reader's first tick $a is not after the old reader's last $b"; return 1; }
}

# --inherit-fd naming an fd crust does not have: a clear error naming it,
# no task left behind.
t_err_restore_inherit_badfd() {
    need_cr || return $?
    inherit_start || return 1
    do_dump "$D/img" || return 1
    restore_fails_naming "$D/img" "$PID" "fd[77]" 1 --inherit-fd "fd[77]:pipe:[$INO]"
}

# Malformed --inherit-fd values: refused by the command line, naming the
# option.
t_err_inherit_fd_syntax() {
    need_crust || return 1
    local v
    mkdir -p "$D/img"
    for v in 7 "fd[x]:pipe:[1]" "fd[7]:" "fd[7]pipe:[1]" "fd[-1]:a"; do
        crust_run syntax restore -D "$D/img" -d --inherit-fd "$v"
        expect_error syntax || { REASON="--inherit-fd '$v': $REASON"; return 1; }
        grep -qF -- "--inherit-fd" "$D/syntax.err" ||
            { fail "--inherit-fd '$v': the message does not name the option: $(head -c 300 "$D/syntax.err")"; return 1; }
    done
}

ALL_TESTS+=(inherit-fd-pipe err-restore-inherit-badfd err-inherit-fd-syntax)
