# Epolls carried by messages queued on unix sockets (SCM_RIGHTS), held by
# no task (zdtm scm05; issue 12, helper "scm05"). Sourced by run.sh: uses
# its helpers (cr_test, start_prog, do_dump, dump_must_fail...) and adds
# its tests to ALL_TESTS.

# An epoll watching the socket its two messages are queued on: after
# restore it reports the socket readable, and the registration kept its fd
# number (EPOLL_CTL_DEL by it works); both messages bring the same epoll.
t_scm_epoll_socket() { cr_test scmepoll --mode socket; }
# An epoll watching a pipe and an eventfd the process holds, the eventfd
# registered under a number since closed (dup2'd to fd 40): both ready
# with their data after restore; the images name the targets by the fds
# the process has now (the pipe's read end, 40).
t_scm_epoll_other() {
    cr_test scmepoll --mode other || return 1
    [ "$NO_CR" = 1 ] && return 0
    "$CRUST" image decode -i "$D/img/files.img" >"$D/files.json" 2>&1 &&
        "$CRUST" image decode -i "$D/img/sk-queues.img" >"$D/q.json" 2>&1 ||
        { fail "cannot decode files.img / sk-queues.img: $(head -c 200 "$D/files.json" "$D/q.json")"; return 1; }
    python3 - "$D/files.json" "$D/q.json" >"$D/check.out" 2>&1 <<'PY' ||
import json, sys
files = json.load(open(sys.argv[1]))["entries"]
q = json.load(open(sys.argv[2]))["entries"]
ep = [f for f in files if f["type"] in ("EVENTPOLL", 8)]
assert len(ep) == 1, "expected one EVENTPOLL entry, got %d" % len(ep)
tfds = sorted(t["tfd"] for t in ep[0]["epfd"]["tfd"])
assert len(tfds) == 2 and 40 in tfds, "targets named by fds %s" % tfds
rights = [r for m in q for s in m.get("scm", []) for r in s["rights"]]
assert rights == [ep[0]["id"]], "the messages carry %s, the epoll is %d" % (rights, ep[0]["id"])
PY
        { fail "images: $(tail -c 300 "$D/check.out")"; return 1; }
}
# The sending end of the pair held by a child only: the epoll's target (a
# pipe both hold at one number) is registered by the child.
t_scm_epoll_child() { cr_tree scmepoll --mode child; }
# An epoll watching a pipe that only the same message holds: no process
# can name it, the dump is refused and the process left as it was.
t_err_dump_scm_epoll_unheld() { dump_must_fail 'does not hold' scmepoll --mode unheld; }
ALL_TESTS+=(scm-epoll-socket scm-epoll-other scm-epoll-child err-dump-scm-epoll-unheld)
