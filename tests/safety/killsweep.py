#!/usr/bin/env python3
"""Kill sweep (issue 10): kill `crust dump` at every moment, the target lives.

For each way of stopping crust (SIGKILL, SIGINT, SIGTERM; sent to crust's
pid or to its whole process group, as `kill -9 -PGID` or a service manager
does), with and without -R (--leave-running), the delay between starting
the dump and the signal is swept over the whole dump in small steps. After
each try, once crust and its worker are gone:
  - the target (crates/testprogs/src/bin/sweep.rs: 32 MiB of checksummed
    memory, a thread in nanosleep, one spinning, one blocked in read) is
    not traced and not stopped, both counters it reports to a probe
    (SIGUSR1) advance, and its maps, fds (by kind) and every thread's
    signal mask are what they were before;
  - or, only without -R and only when the dump had finished writing its
    images, the target is gone; then the images must restore (`restore -d`)
    and the restored target must pass the same checks.
Each target is finally asked to check itself (SIGTERM: memory checksum,
masks, the reader thread) and must say PASS.
Also: a panic injected in crust while a task runs remote syscalls
(CRUST_FAULT=panic-remote) must leave the target the same way; and a
`restore -d` killed (SIGKILL, SIGTERM; its pid or group) at delays over a
whole restore leaves either the whole target, running and passing the same
checks, or no process with its pid; the same for a 20-process tree: all of
it, running and passing its own check, or none of it. And the copy phase of a `dump -R`
snapshot (pages copied while the target runs, write-protected through
crust's userfaultfd): crust's dump worker SIGKILLed at delays after the
tree was let go, or during the pre-copy before the freeze, leaves the
target running, unharmed.

The cases are rows of the table CASES (a DumpSweep with its surroundings,
a RestoreSweep, a PanicCase, or a class of the same shape); a case whose
`requires` says crust or the machine cannot do it is a SKIP. `--list`
names them, `--case NAME` (repeatable) runs only those.

Bounded run (CI, .ci/run, about a minute):
    python3 tests/safety/killsweep.py --steps 6
Longer run (a finer sweep; a few minutes per 100 steps):
    python3 tests/safety/killsweep.py --steps 100
Run as root from the repo, with the e2e lock when others may run the e2e
tests (`flock /tmp/crust-e2e.lock python3 tests/safety/killsweep.py`).
Needs target/release/{crust,sweep} (`cargo build --release -p crust
-p crust-testprogs`). Runs itself under tests/e2e/reaper (a child
subreaper) so that killed tasks are reaped at once. Prints one line per
failure and `killsweep: N passed, N failed, N skipped`.
"""

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("CRUST_BIN_DIR", os.path.join(ROOT, "target", "release"))
CRUST = os.path.join(BIN, "crust")
SWEEP = os.path.join(BIN, "sweep")
FOREST = os.path.join(BIN, "forest")
# Seconds the target's counters get to advance after a try (a bound, not
# a speed: it is waited out only when a thread is stuck).
ADVANCE_WAIT = 5


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def state(pid):
    st = read("/proc/%d/stat" % pid)
    return st.rsplit(")", 1)[1].split()[0] if st else None


def threads(pid):
    try:
        return sorted(int(t) for t in os.listdir("/proc/%d/task" % pid))
    except OSError:
        return []


def merged_maps(text):
    """Maps with adjacent pieces of one mapping joined (same perms, file and
    contiguous offsets): a restore rebuilds a RELRO region split by an
    mprotect as one VMA, as the kernel would merge it."""
    out = []
    for line in text.splitlines():
        f = line.split(None, 5)
        if len(f) < 5:
            continue
        lo, hi = (int(x, 16) for x in f[0].split("-"))
        off = int(f[2], 16)
        path = f[5] if len(f) > 5 else ""
        inode = f[4]
        # Shared anonymous memory is a new object after a restore: its
        # inode number is the kernel's choice.
        if path.strip() == "/dev/zero (deleted)" and f[3] == "00:01":
            inode = "shmem"
        rest = (f[1], f[3], inode, path)
        if out:
            plo, phi, poff, prest = out[-1]
            if phi == lo and prest == rest and (rest[2] == "0" or poff + (phi - plo) == off):
                out[-1] = (plo, hi, poff, prest)
                continue
        out.append((lo, hi, off, rest))
    return out


def snapshot(pid):
    """What must not change: maps, fds (by kind), each thread's mask."""
    maps = merged_maps(read("/proc/%d/maps" % pid) or "")
    fds = {}
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            fds[fd] = link.split(":")[0] if ":" in link else link
    except OSError:
        pass
    masks = []
    for t in threads(pid):
        st = read("/proc/%d/task/%d/status" % (pid, t)) or ""
        masks.append([l for l in st.splitlines() if l.startswith("SigBlk")])
    return {"maps": maps, "fds": fds, "masks": masks}


def changes(was, now):
    """What is in only one of two snapshots' parts (maps, fds or masks)."""
    def items(x):
        if isinstance(x, dict):
            return sorted("%s=%s" % kv for kv in x.items())
        return [repr(e) if not isinstance(e, tuple) else
                "%x-%x %x %s" % (e[0], e[1], e[2], " ".join(e[3])) for e in x]
    a, b = items(was), items(now)
    gone = [e for e in a if e not in b]
    new = [e for e in b if e not in a]
    return "gone [%s], new [%s]" % ("; ".join(gone)[:600], "; ".join(new)[:600])


def crust_procs():
    """Pids of processes running the crust under test (front ends, workers)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink("/proc/%s/exe" % d) == CRUST:
                    out.append(int(d))
            except OSError:
                pass
    return out


def wait_until(cond, seconds):
    end = time.time() + seconds
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


class Target:
    def __init__(self, work):
        self.work = work
        self.ready = os.path.join(work, "ready")
        self.result = os.path.join(work, "result")
        self.probe = os.path.join(work, "probe")
        for f in (self.ready, self.result, self.probe):
            if os.path.exists(f):
                os.unlink(f)
        p = subprocess.Popen(
            [SWEEP, "--ready", self.ready, "--result", self.result, "--probe", self.probe],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.popen = p
        self.pid = p.pid
        if not wait_until(lambda: os.path.exists(self.ready), 10):
            raise RuntimeError("sweep did not become ready")
        os.unlink(self.ready)
        time.sleep(0.05)
        self.snap = snapshot(self.pid)

    def alive(self):
        if self.popen is not None:
            # Our own child: alive until reaped. (Its state is no guide: a
            # dying thread-group leader shows Z while its other threads
            # exit, and cannot be reaped yet; a target taken for dead then
            # was left to the reaper, "left behind".)
            return self.popen.poll() is None
        s = state(self.pid)
        return s is not None and s not in ("Z", "X")

    def probe_once(self):
        try:
            os.unlink(self.probe)
        except OSError:
            pass
        os.kill(self.pid, signal.SIGUSR1)
        if not wait_until(lambda: os.path.exists(self.probe), 2):
            return None
        txt = read(self.probe) or ""
        try:
            a, b = txt.split()
            return int(a), int(b)
        except ValueError:
            return None

    def check_running(self):
        """None if the target runs on as before, else why not."""
        st = read("/proc/%d/status" % self.pid) or ""
        if "TracerPid:\t0" not in st:
            return "still traced"
        for t in threads(self.pid):
            s = read("/proc/%d/task/%d/stat" % (self.pid, t)) or ""
            s = s.rsplit(")", 1)[1].split()[0] if s else "?"
            if s in ("T", "t"):
                return "thread %d left stopped (%s)" % (t, s)
        # Both counters must move past the first probe's. The spinning
        # thread is runnable but a loaded machine may not run it for a
        # while (it was seen in R for 100 ms at a load of 8 with CPU
        # hogs beside it): it gets up to ADVANCE_WAIT seconds, as the
        # program's own check gives it, before the threads' states are
        # reported.
        p1 = self.probe_once()
        if p1 is None:
            return "does not answer the probe"
        end = time.time() + ADVANCE_WAIT
        while True:
            time.sleep(0.03)
            p2 = self.probe_once()
            if p2 is None:
                return "does not answer the probe"
            if p2[0] > p1[0] and p2[1] > p1[1]:
                break
            if time.time() > end:
                return "counters do not advance in %d s (%s then %s) [%s]" % (
                    ADVANCE_WAIT, p1, p2, self.threads_diag())
        now = snapshot(self.pid)
        for k in ("maps", "fds", "masks"):
            if now[k] != self.snap[k]:
                return "%s changed: %s" % (k, changes(self.snap[k], now[k]))
        return None

    def how_ended(self):
        """How our own child ended (its wait status), if it did."""
        rc = self.popen.returncode if self.popen is not None else None
        if rc is None:
            return "not our child" if self.popen is None else "not reaped"
        return "killed by %s" % signal.Signals(-rc).name if rc < 0 else "exit %d" % rc

    def threads_diag(self):
        """Each thread's state, user time, wait channel and syscall."""
        out = []
        for t in threads(self.pid):
            base = "/proc/%d/task/%d/" % (self.pid, t)
            st = (read(base + "stat") or "").rsplit(")", 1)[-1].split()
            out.append("%d %s utime=%s wchan=%s sys=%s" % (
                t, st[0] if st else "?", st[11] if len(st) > 11 else "?",
                read(base + "wchan"), (read(base + "syscall") or "").strip()[:40]))
        return "; ".join(out)

    def finish(self):
        """SIGTERM: the program checks itself. None if PASS, else why not."""
        os.kill(self.pid, signal.SIGTERM)
        if not wait_until(lambda: os.path.exists(self.result), 20):
            self.kill()
            return "no verdict after SIGTERM"
        res = (read(self.result) or "").strip()
        wait_until(lambda: not self.alive(), 5)
        return None if res == "PASS" else "program says: " + res

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
        except OSError:
            pass
        wait_until(lambda: not self.alive(), 5)


def run_dump(img, extra, env=None, command="dump"):
    os.makedirs(img, mode=0o700, exist_ok=True)
    return subprocess.Popen(
        [CRUST, command, "-D", img, "-o", "dump.log", "-v4"] + extra,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(img, "..", "dump.err"), "w"),
        start_new_session=True, env=env)


def settle():
    """Wait for crust's front end and worker to be gone."""
    return wait_until(lambda: not crust_procs(), 30)


def calibrate(work):
    t = Target(work)
    img = os.path.join(work, "img")
    times = []
    for _ in range(3):
        shutil.rmtree(img, ignore_errors=True)
        t0 = time.time()
        p = run_dump(img, ["-t", str(t.pid), "-R"])
        p.wait()
        times.append(time.time() - t0)
        if p.returncode != 0:
            t.kill()
            raise RuntimeError("a plain dump -R failed: see %s" % img)
    why = t.check_running() or t.finish()
    if why:
        raise RuntimeError("the target broke on a plain dump -R: " + why)
    return sorted(times)[1]


def one_try(work, target, sig, group, leave_running, delay, more=(), command="dump",
            release=None):
    """Returns (target or None, failure or None). COMMAND "pre-dump" is
    like a dump -R (the target must live) without the -R. RELEASE(img), if
    given, runs once crust exited, before waiting for every crust process
    to be gone (it ends what the case leaves running on purpose)."""
    img = os.path.join(work, "img")
    shutil.rmtree(img, ignore_errors=True)
    extra = ["-t", str(target.pid)] + (["-R"] if leave_running and command == "dump" else []) + list(more)
    if command != "dump":
        leave_running = True
    p = run_dump(img, extra, command=command)
    time.sleep(delay)
    try:
        os.killpg(p.pid, sig) if group else os.kill(p.pid, sig)
    except OSError:
        pass
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        return None, "crust did not exit within 60 s"
    if release is not None:
        release(img)
    if not settle():
        for c in crust_procs():
            os.kill(c, signal.SIGKILL)
        return None, "crust's worker still runs 30 s after the signal"
    if target.alive() and state(target.pid) != "Z":
        why = target.check_running()
        return (target, None) if why is None else (None, why)
    # Dead: allowed only without -R, when the images were complete.
    if leave_running:
        return None, "the target died (with -R, or in a pre-dump)"
    log = read(os.path.join(img, "dump.log")) or ""
    if "killed after dump" not in log:
        return None, "the target died but the dump had not finished"
    r = subprocess.run([CRUST, "restore", "-D", img, "-d", "-o", "restore.log", "-v4"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode != 0:
        return None, "the target died and its images do not restore: %s" % r.stderr[-300:]
    target.popen = None  # the restored target is not our child
    if not wait_until(target.alive, 5):
        return None, "restore said yes but the target is not there"
    target.snap["fds"] = snapshot(target.pid)["fds"]  # pipe inodes are new
    why = target.check_running()
    return (target, None) if why is None else (None, "after restore: " + why)


FREEZER = "/sys/fs/cgroup/freezer"


def crust_can(feature):
    """None if `crust check --feature FEATURE` says yes, else why not."""
    r = subprocess.run([CRUST, "check", "--no-default-config", "--feature", feature],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=60)
    if r.returncode == 0:
        return None
    return "crust has no %s yet (%s)" % (feature, r.stderr.decode(errors="replace").strip()[-200:])


def sig_name(sig, group):
    return "%s%s" % (signal.Signals(sig).name, " to the group" if group else "")


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0

    def ok(self, n=1):
        self.passed += n

    def bad(self, what):
        self.failed += 1
        print("FAIL %s" % what)


class NoContext:
    """What a dump sweep does around each try; this one nothing. A case
    with state of its own (a cgroup, a keeper...) provides the same
    methods."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def extra(self):
        """crust arguments of each try."""
        return []

    def before(self, target):
        """Before each try, with the target that will be dumped."""

    def after(self, why):
        """After each try: the failure (or None) this case sees."""
        return why

    def on_fail(self):
        """After a failed try, before the target is killed."""

    def release(self, img):
        """Once crust exited, before waiting for all crust processes to be
        gone: end what the case leaves running on purpose."""


class FreezerCgroup(NoContext):
    """The target in a v1 freezer cgroup of its own (issue 14): whenever
    crust is stopped the cgroup is THAWED again."""

    def __init__(self):
        self.cg = os.path.join(FREEZER, "crust-killsweep-%d" % os.getpid())

    def __enter__(self):
        os.mkdir(self.cg)
        return self

    def __exit__(self, *exc):
        with open(os.path.join(self.cg, "freezer.state"), "w") as f:
            f.write("THAWED")
        for pid in (read(os.path.join(self.cg, "cgroup.procs")) or "").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        wait_until(lambda: not (read(os.path.join(self.cg, "cgroup.procs")) or "").strip(), 5)
        os.rmdir(self.cg)
        return False

    def extra(self):
        return ["--freeze-cgroup", self.cg]

    def before(self, target):
        # (A restored target is born outside the cgroup.)
        with open(os.path.join(self.cg, "cgroup.procs"), "w") as f:
            f.write(str(target.pid))

    def after(self, why):
        st = (read(os.path.join(self.cg, "freezer.state")) or "").strip()
        if why is None and st != "THAWED":
            why = "the cgroup is left %s" % st
        return why

    def on_fail(self):
        with open(os.path.join(self.cg, "freezer.state"), "w") as f:
            f.write("THAWED")


class TrackMem(NoContext):
    """Pre-dumps that track memory for the next one (issue 15). A pre-dump
    that finished leaves its tracking with a keeper (a crust process) for
    the next run of the chain: each try releases it with `crust
    track-release IMG` (a no-op when the killed pre-dump left none), so
    that every crust process is gone as after a dump."""

    def extra(self):
        return ["--track-mem"]

    def release(self, img):
        # The pre-dump's worker may finish (and hand over to a keeper)
        # after its front end was killed: wait for it first.
        def keeper(pid):
            return (read("/proc/%d/cmdline" % pid) or "").split("\0")[1:2] == ["__keeper"]
        wait_until(lambda: all(keeper(p) for p in crust_procs()), 30)
        subprocess.run([CRUST, "track-release", img], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


def listening(port):
    """Is something listening on 127.0.0.1:PORT (read from /proc/net/tcp)?"""
    want = ":%04X" % port
    for line in (read("/proc/net/tcp") or "").splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and f[1].endswith(want) and f[3] == "0A":
            return True
    return False


class PageServerTrackMem(TrackMem):
    """Pre-dumps that send their pages to a page server (issue 15): each
    try starts `crust page-server` on a port of its own; once the pre-dump
    is gone the server has ended (it got all or saw its client vanish) or
    is killed (the pre-dump died before it connected), then the keeper is
    released as for TrackMem. The target must run on as before whatever
    the moment crust died."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="crust-killsweep-ps-")
        self.n = 0
        self.srv = None
        return self

    def __exit__(self, *exc):
        self.stop_server(0)
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def extra(self):
        self.stop_server(0)
        self.n += 1
        port = 30000 + (os.getpid() + self.n * 7) % 20000
        d = os.path.join(self.dir, "srv-%d" % self.n)
        os.makedirs(d, mode=0o700)
        self.srv = subprocess.Popen(
            [CRUST, "page-server", "-D", d, "--address", "127.0.0.1", "--port", str(port),
             "-o", "ps.log", "-v4"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_until(lambda: listening(port) or self.srv.poll() is not None, 10)
        return ["--track-mem", "--page-server", "--address", "127.0.0.1", "--port", str(port)]

    def stop_server(self, wait):
        if self.srv is None:
            return
        if not wait_until(lambda: self.srv.poll() is not None, wait):
            self.srv.kill()
        self.srv.wait()
        self.srv = None

    def release(self, img):
        # A pre-dump killed mid-send: the server sees its client vanish.
        self.stop_server(10)
        TrackMem.release(self, img)


class PageServer(PageServerTrackMem):
    """Dumps (-R: the target runs on after a finished one) that send their
    pages to a page server of their own, through a pipe planted in the
    target (issue 15): whatever the moment crust died, the target's maps
    and fds are as before (no pipe, no scratch area left)."""

    def extra(self):
        return PageServerTrackMem.extra(self)[1:]

    def release(self, img):
        self.stop_server(10)


def freezer_available():
    if os.access(os.path.join(FREEZER, "cgroup.procs"), os.W_OK):
        return None
    return "no cgroup v1 freezer at %s" % FREEZER


class DumpSweep:
    """Kill `crust dump` (SIGNALS; to its pid, or to its group when
    GROUPS holds True; with -R and without as LEAVE says) at STEPS delays
    from 0 to 1.2 times a whole dump -R. After each try the target runs on
    as before (Target.check_running), or, only without -R and when the
    dump had finished, it is gone and its images restore to a target that
    passes the same checks (one_try). One target serves the tries of a
    combination until one fails; at the end of a combination (or of the
    whole case, FINISH_EACH False) it checks itself (Target.finish).
    CONTEXT makes the case's surroundings (NoContext, FreezerCgroup);
    REQUIRES, if given, says why the case cannot run here (a SKIP)."""

    def __init__(self, name, signals, leave=(True, False), groups=(False, True),
                 context=NoContext, requires=None, finish_each=True, keep_failures=False,
                 command="dump"):
        self.name, self.signals, self.leave, self.groups = name, signals, leave, groups
        self.context, self.requires = context, requires
        self.finish_each, self.keep_failures = finish_each, keep_failures
        self.command = command

    def own_span(self, work, ctx):
        """A whole run of a command other than dump, timed (median of 3)."""
        t = Target(work)
        img = os.path.join(work, "img")
        times = []
        try:
            for _ in range(3):
                shutil.rmtree(img, ignore_errors=True)
                t0 = time.time()
                p = run_dump(img, ["-t", str(t.pid)] + ctx.extra(), command=self.command)
                p.wait()
                times.append(time.time() - t0)
                ctx.release(img)
                if p.returncode != 0:
                    raise RuntimeError("a plain %s failed: see %s" % (self.command, img))
            why = t.check_running() or t.finish()
            if why:
                raise RuntimeError("the target broke on a plain %s: %s" % (self.command, why))
        finally:
            t.kill()
        return sorted(times)[1]

    def run(self, work, span, steps, tally):
        self.target = None
        with self.context() as ctx:
            if self.command != "dump":
                span = self.own_span(work, ctx)
                print("killsweep: a %s of the target takes %.0f ms" % (self.command, span * 1000))
            try:
                for sig in self.signals:
                    for group in self.groups:
                        for leave in self.leave:
                            name = "%s%s%s" % (self.name, sig_name(sig, group),
                                               " -R" if leave and self.command == "dump" else "")
                            self.combination(work, span, steps, tally, ctx, name, sig, group, leave)
                            if self.finish_each and self.target is not None:
                                self.finish(tally, name, self.target)
                                self.target = None
                if self.target is not None:
                    self.finish(tally, self.name.strip(), self.target)
                    self.target = None
            finally:
                if self.target is not None:
                    self.target.kill()
                    self.target = None

    def combination(self, work, span, steps, tally, ctx, name, sig, group, leave):
        """The tries of one signal, group and -R; self.target is the
        target that lives on (None after a failure)."""
        for i in range(steps):
            # From 0 to 1.2 times a whole dump, so that both ends are hit.
            delay = span * 1.2 * i / max(1, steps - 1)
            if self.target is None:
                self.target = Target(work)
            ctx.before(self.target)
            tried = self.target
            self.target = None
            target, why = one_try(work, tried, sig, group, leave, delay, ctx.extra(), self.command,
                                  ctx.release)
            self.target = target
            why = ctx.after(why)
            if why:
                tally.bad("%s at %.1f ms: %s" % (name, delay * 1000, why))
                if self.keep_failures:
                    keep = os.path.join(work, "fail-%d" % tally.failed)
                    shutil.copytree(os.path.join(work, "img"), keep, dirs_exist_ok=True)
                ctx.on_fail()
                # Whatever is left of it (restored or not) goes.
                tried.kill()
                self.target = None
            else:
                tally.ok()

    @staticmethod
    def finish(tally, name, target):
        why = target.finish()
        if why:
            tally.bad("%s: the target's own check: %s" % (name, why))


def restore_detached(img):
    """`crust restore -d` of `img`, in a session of its own."""
    return subprocess.Popen([CRUST, "restore", "-D", img, "-d", "-o", "restore.log"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def timed_restore(img):
    """A whole `restore -d` of `img`: its exit status and how long it took."""
    t0 = time.time()
    r = restore_detached(img)
    r.wait()
    return r.returncode, time.time() - t0


class RestoreSweep:
    """Kill `crust restore -d` (SIGNALS; to its pid or group) at STEPS
    delays over a whole restore: afterwards the restored target either
    runs and passes the checks, or no process has its pid."""

    def __init__(self, name, signals, requires=None):
        self.name, self.signals, self.requires = name, signals, requires

    def run(self, work, span, steps, tally):
        f = self.sweep(work, steps)
        tally.ok(max(0, len(self.signals) * 2 * steps - f))
        tally.failed += f

    def sweep(self, work, steps):
        t = Target(work)
        pid = t.pid
        img = os.path.join(work, "rimg")
        shutil.rmtree(img, ignore_errors=True)
        p = run_dump(img, ["-t", str(pid)])
        p.wait()
        if p.returncode != 0 or not wait_until(lambda: not t.alive(), 5):
            t.kill()
            print("FAIL %s sweep: the dump failed" % self.name)
            return 1
        rc, span = timed_restore(img)
        t.popen = None
        if rc != 0 or not t.alive():
            print("FAIL %s sweep: a plain restore failed (see %s)" % (self.name, img))
            return 1
        t.kill()
        failed = 0
        for name in self.killed_restores(img, span, steps):
            # Whatever is left settles within a moment.
            time.sleep(0.05)
            if t.alive():
                why = t.check_running()
                t.kill()
                if why:
                    failed += 1
                    print("FAIL %s: the restored tree is broken: %s" % (name, why))
            elif state(pid) is not None:
                failed += 1
                print("FAIL %s: pid %d is left in state %s" % (name, pid, state(pid)))
                t.kill()
        return failed

    def killed_restores(self, img, span, steps):
        """`restore -d` of `img` killed by each signal, to its pid and to
        its group, at `steps` delays over 1.2 times `span`; yields each
        try's name once crust was reaped."""
        for sig in self.signals:
            for group in (False, True):
                for i in range(steps):
                    delay = span * 1.2 * i / max(1, steps - 1)
                    r = restore_detached(img)
                    time.sleep(delay)
                    try:
                        os.killpg(r.pid, sig) if group else os.kill(r.pid, sig)
                    except OSError:
                        pass
                    r.wait()
                    yield "%s, %s at %.1f ms" % (self.name, sig_name(sig, group), delay * 1000)


class TreeRestoreSweep(RestoreSweep):
    """Kill `crust restore -d` of a 20-process tree (crates/testprogs
    forest: built on two tracer threads, restore/split.rs) at STEPS delays
    over a whole restore: afterwards either every process of the tree is
    there, running (not traced, not stopped), and the tree passes its own
    check (SIGTERM), or none is. Part of a tree left running is the harm
    this looks for: tasks let go one by one, a crust killed in between
    left the ones already let go running without the rest (now: all are
    loaded first, and a kill switch kills the tree if crust dies while it
    lets them go, restore/finish.rs)."""

    N = 20

    @staticmethod
    def tree(root):
        """The root and its descendants, by /proc's children lists."""
        out, todo = [], [root]
        while todo:
            p = todo.pop()
            out.append(p)
            for t in threads(p) if os.path.isdir("/proc/%d" % p) else []:
                kids = read("/proc/%d/task/%d/children" % (p, t)) or ""
                todo.extend(int(c) for c in kids.split())
        return out

    @staticmethod
    def live(pids):
        """The processes of `pids` that exist and are not on their way
        out (a task killed when crust died shows R, S or t for a moment
        with SIGKILL pending: counted live, the tree looked whole)."""
        def dying(p):
            st = read("/proc/%d/status" % p) or ""
            for line in st.splitlines():
                k, _, v = line.partition(":\t")
                if k in ("SigPnd", "ShdPnd") and int(v, 16) & (1 << (signal.SIGKILL - 1)):
                    return True
            stat = (read("/proc/%d/stat" % p) or ")").rsplit(")", 1)[1].split()
            # PF_EXITING (0x4) in the flags (field 9).
            return len(stat) > 6 and int(stat[6]) & 0x4 != 0
        return [p for p in pids if state(p) not in (None, "Z", "X") and not dying(p)]

    def settled(self, pids):
        """The live processes of `pids` once the same set is seen for
        0.3 s (at most 3 s): a task crust was cloning when it died can
        come out of its parent's clone3 untraced a moment later, run into
        the int3 after the trampoline's syscall and die of SIGTRAP."""
        end = time.time() + 3
        seen, since = None, time.time()
        while True:
            up = self.live(pids)
            if up != seen:
                seen, since = up, time.time()
            if time.time() - since >= 0.3 or time.time() > end:
                return up
            time.sleep(0.01)

    def kill_all(self, pids):
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        wait_until(lambda: not self.live(pids), 5)

    def start(self, work):
        ready, result = os.path.join(work, "tready"), os.path.join(work, "tresult")
        for f in (ready, result):
            if os.path.exists(f):
                os.unlink(f)
        p = subprocess.Popen([FOREST, "--n", str(self.N), "--ready", ready, "--result", result],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: os.path.exists(ready) and len(self.tree(p.pid)) == self.N, 10):
            self.kill_all(self.tree(p.pid))
            p.wait()
            raise RuntimeError("forest did not become ready")
        return p, result

    def check_whole(self, pids, result):
        """None if every process runs and the tree passes its check."""
        for p in pids:
            st = read("/proc/%d/status" % p) or ""
            if "TracerPid:\t0" not in st:
                return "process %d is still traced" % p
            if state(p) in ("T", "t"):
                return "process %d is left stopped" % p
        if os.path.exists(result):
            os.unlink(result)
        os.kill(pids[0], signal.SIGTERM)
        if not wait_until(lambda: os.path.exists(result), 20):
            return "no verdict after SIGTERM"
        res = (read(result) or "").strip()
        return None if res == "PASS" else "the tree says: " + res

    def sweep(self, work, steps):
        p, result = self.start(work)
        pids = self.tree(p.pid)
        img = os.path.join(work, "timg")
        shutil.rmtree(img, ignore_errors=True)
        d = run_dump(img, ["-t", str(p.pid)])
        d.wait()
        p.wait()
        if d.returncode != 0 or not wait_until(lambda: not self.live(pids), 5):
            self.kill_all(pids)
            print("FAIL %s sweep: the dump failed" % self.name)
            return 1
        rc, span = timed_restore(img)
        if rc != 0 or len(self.live(pids)) != self.N:
            self.kill_all(pids)
            print("FAIL %s sweep: a plain restore failed (see %s)" % (self.name, img))
            return 1
        self.kill_all(pids)
        failed = 0
        for name in self.killed_restores(img, span, steps):
            # Tasks crust left die with it (PTRACE_O_EXITKILL),
            # or by its kill switch (a crust process of its own,
            # which kills once crust is gone): judged once no
            # crust process is left and the rest settled.
            wait_until(lambda: not crust_procs(), 5)
            up = self.settled(pids)
            why = None
            if len(up) == self.N:
                why = self.check_whole(pids, result)
            elif up:
                why = "%d of the %d processes are left: %s" % (
                    len(up), self.N, " ".join("%d(%s)" % (q, state(q)) for q in up))
            self.kill_all(pids)
            if why:
                failed += 1
                print("FAIL %s: %s" % (name, why))
        return failed


class PanicCase:
    """A crust bug (a panic injected with CRUST_FAULT=FAULT) while a task
    runs remote syscalls, with -R and without: the dump fails saying
    "crust bug", the target runs on as before and passes its own check."""

    def __init__(self, name, fault, leave=(True, False), requires=None):
        self.name, self.fault, self.leave, self.requires = name, fault, leave, requires

    def run(self, work, span, steps, tally):
        for leave in self.leave:
            target = Target(work)
            img = os.path.join(work, "img")
            shutil.rmtree(img, ignore_errors=True)
            env = dict(os.environ, CRUST_FAULT=self.fault)
            p = run_dump(img, ["-t", str(target.pid)] + (["-R"] if leave else []), env)
            p.wait(timeout=60)
            settle()
            err = read(os.path.join(work, "dump.err")) or ""
            why = None
            if p.returncode == 0:
                why = "the dump did not fail"
            elif "crust bug" not in err:
                why = "no 'crust bug' message: " + err[-200:]
            elif not target.alive():
                why = "the target died"
            else:
                why = target.check_running() or target.finish()
            if why:
                tally.bad("%s%s: %s" % (self.name, " -R" if leave else "", why))
                target.kill()
            else:
                tally.ok()


def children(pid):
    """The children of every thread of PID (a tuple of pids)."""
    out = []
    for t in glob.glob("/proc/%d/task/*/children" % pid):
        out.extend(int(w) for w in (read(t) or "").split())
    return tuple(out)


class LazySweep:
    """Kill the lazy-pages daemon, the restore, or both, or the daemon and
    its guard (VICTIM: "daemon", "restore", "both", "guard"; SIGNALS) at STEPS delays over a whole lazy restore
    (`lazy-pages -D IMG` from local images, `restore -d --lazy-pages`):
    afterwards the restored target is either complete (runs, answers, its
    maps and masks as before, and its own check passes: its memory
    checksum catches a page that was never delivered) or gone (no process
    has its pid), never left hanging on a fault. Neither crust process
    outlives the other by more than 60 s, but a daemon still waiting for
    a restore that died before it connected (it waits for the next one:
    ended here)."""

    def __init__(self, name, signals, victim="daemon", requires=None):
        self.name, self.signals, self.victim, self.requires = name, signals, victim, requires

    def lazy_restore(self, img, delay=None, sig=None):
        """One lazy restore; with DELAY, SIG is sent to the victim DELAY s
        after the restore started. Returns (seconds, failure or None)."""
        sock = os.path.join(img, "lazy-pages.socket")
        log = os.path.join(img, "lazy-pages.log")
        for f in (sock, log):
            if os.path.exists(f):
                os.unlink(f)
        d = subprocess.Popen([CRUST, "lazy-pages", "-D", img, "-o", "lazy-pages.log", "-v4"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: os.path.exists(sock) or d.poll() is not None, 5)
        t0 = time.time()
        r = subprocess.Popen([CRUST, "restore", "-D", img, "-d", "--lazy-pages",
                              "-o", "restore.log", "-v4"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        why = None
        if delay is not None:
            time.sleep(delay)
            victims = {"daemon": (d.pid,), "restore": (r.pid,), "both": (d.pid, r.pid),
                       "guard": (d.pid,) + children(d.pid)}[self.victim]
            for v in victims:
                try:
                    os.kill(v, sig)
                except OSError:
                    pass
        try:
            r.wait(timeout=120)
            if delay is not None and self.victim != "daemon":
                # The restore died, maybe before it connected: the daemon
                # then waits for the next restore (no hang of a tree).
                try:
                    d.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    if "the restore connected" not in (read(log) or ""):
                        d.terminate()
            d.wait(timeout=60)
        except subprocess.TimeoutExpired:
            why = "the restore or the daemon still runs 60 s after the %s was stopped" % self.victim
            for p in (r, d):
                p.kill()
        if delay is None and (r.returncode != 0 or d.returncode != 0):
            why = "a plain lazy restore failed (restore %s, daemon %s; see %s)" % (
                r.returncode, d.returncode, img)
        span = time.time() - t0
        if not settle():
            why = why or "crust still runs 30 s after the lazy restore"
        return span, why

    def run(self, work, span, steps, tally):
        t = Target(work)
        pid = t.pid
        img = os.path.join(work, "limg")
        shutil.rmtree(img, ignore_errors=True)
        p = run_dump(img, ["-t", str(pid)])
        p.wait()
        if p.returncode != 0 or not wait_until(lambda: not t.alive(), 5):
            t.kill()
            tally.bad("%s: the dump failed" % self.name)
            return
        t.popen = None
        lspan, why = self.lazy_restore(img)
        why = why or (None if t.alive() else "the target is not there") or t.check_running()
        t.kill()
        if why:
            tally.bad("%s: %s" % (self.name, why))
            return
        # Half the delays of a dump sweep (a lazy restore is the slowest
        # try of all), at least 3.
        steps = max(3, steps // 2)
        for sig in self.signals:
            for i in range(steps):
                delay = lspan * 1.2 * i / max(1, steps - 1)
                name = "%s, %s at %.1f ms" % (self.name, sig_name(sig, False), delay * 1000)
                _, why = self.lazy_restore(img, delay, sig)
                time.sleep(0.05)
                if why is None and t.alive():
                    why = t.check_running() or t.finish()
                elif why is None and state(pid) is not None:
                    why = "pid %d is left in state %s" % (pid, state(pid))
                t.kill()
                if why:
                    tally.bad("%s: %s" % (name, why))
                else:
                    tally.ok()


# The cases, in the order they run. A new case is a row: a DumpSweep with
# its command's arguments and surroundings (a context class), or a class
# of its own with run(work, span, steps, tally) and `requires` (a function
# saying why the case cannot run here, or None).
class CopySweep:
    """dump -R copies pages while the target runs (issue 15): SIGKILL
    crust's dump worker itself at delays after "left running" (the copy
    phase, the target's pages write-protected through crust's
    userfaultfd): the target runs on unharmed."""

    def __init__(self, name, requires=None, after="left running"):
        self.name, self.requires, self.after = name, requires, after

    def run(self, work, span, steps, tally):
        target = None
        for i in range(steps):
            if target is None:
                target = Target(work)
            img = os.path.join(work, "img")
            shutil.rmtree(img, ignore_errors=True)
            log = os.path.join(img, "dump.log")
            p = run_dump(img, ["-t", str(target.pid), "-R"])
            wait_until(lambda: self.after in (read(log) or ""), 20)
            time.sleep(0.002 * i)
            txt = read(log) or ""
            worker = [ln.split("dump worker ")[1].split()[0] for ln in txt.splitlines()
                      if "dump worker " in ln]
            in_copy = self.after in txt and "moved into the image set" not in txt
            for w in worker[:1]:
                try:
                    os.kill(int(w), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
            p.wait(timeout=60)
            settle()
            why = None if target.alive() else "the target died (%s)" % target.how_ended()
            why = why or target.check_running()
            if why:
                tally.bad("%s: SIGKILL to the worker (%s, step %d): %s"
                          % (self.name, "during the copy" if in_copy else "after it", i, why))
                target.kill()
                target = None
            else:
                tally.ok()
        if target is not None:
            why = target.finish()
            if why:
                tally.bad("SIGKILL in the copy of dump -R: the target's own check: %s" % why)


class NsTarget(Target):
    """The sweep target as the init of a pid namespace of its own (a lazy
    migration restores it while the source, frozen, still holds its pid)."""

    def __init__(self, work):
        self.work = work
        self.ready = os.path.join(work, "ready")
        self.result = os.path.join(work, "result")
        self.probe = os.path.join(work, "probe")
        for f in (self.ready, self.result, self.probe):
            if os.path.exists(f):
                os.unlink(f)
        self.outer = subprocess.Popen(
            ["unshare", "-p", "-f", SWEEP, "--ready", self.ready, "--result", self.result,
             "--probe", self.probe],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.popen = None
        if not wait_until(lambda: os.path.exists(self.ready), 10):
            self.outer.kill()
            raise RuntimeError("sweep in a pid namespace did not become ready")
        os.unlink(self.ready)
        kids = (read("/proc/%d/task/%d/children" % (self.outer.pid, self.outer.pid)) or "").split()
        if not kids:
            self.outer.kill()
            raise RuntimeError("no sweep under unshare")
        self.pid = int(kids[0])
        time.sleep(0.05)
        self.snap = snapshot(self.pid)

    def kill(self):
        Target.kill(self)
        self.outer.poll()


class LazyDumpSweep:
    """dump --lazy-pages (post-copy migration on one machine): crust's dump
    (its process group) SIGKILLed at STEPS delays after the destination's
    restore started, while it serves the frozen tree's pages to the
    lazy-pages daemon. Afterwards exactly one of: the source runs on
    unharmed (killed before the daemon's first request: the tree ran
    nowhere else, the kernel's detach lets it go, the daemon fails and its
    guard kills the restored copy before it ran), or the restored copy is
    complete (its own check passes) and the source is gone (PTRACE_O_EXITKILL
    from the first request on); neither only with the daemon's error in its
    log (killed after the first request, pages not all taken). Never both."""

    def __init__(self, name, requires=None):
        self.name, self.requires = name, requires

    def one(self, work, delay):
        """One migration, the dump killed DELAY s after the restore began
        (None: not killed). Returns (outcome, failure or None)."""
        src = NsTarget(work)
        img = os.path.join(work, "mimg")
        shutil.rmtree(img, ignore_errors=True)
        port = 20000 + (os.getpid() + int(time.time() * 1000)) % 20000
        dump = run_dump(img, ["-t", str(src.pid), "--lazy-pages", "--address", "127.0.0.1",
                              "--port", str(port)])
        if not wait_until(lambda: listening(port) or dump.poll() is not None, 20):
            dump.kill()
        if dump.poll() is not None:
            src.kill()
            return None, "dump --lazy-pages did not listen (see %s)" % img
        pidfile = os.path.join(work, "mpid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        d = subprocess.run([CRUST, "lazy-pages", "-D", img, "--page-server", "--address",
                            "127.0.0.1", "--port", str(port), "-d", "-o", "lazy.log", "-v4"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
        r = subprocess.Popen([CRUST, "restore", "-D", img, "-d", "--lazy-pages", "--pidfile",
                              pidfile, "-o", "restore.log", "-v4"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        t_restore = time.time()
        if delay is not None:
            time.sleep(delay)
            try:
                os.killpg(dump.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            r.wait(timeout=60)
            dump.wait(timeout=60)
            self.span = time.time() - t_restore
        except subprocess.TimeoutExpired:
            for p in (r, dump):
                p.kill()
            src.kill()
            return None, "the restore or the dump still runs after 60 s"
        if not settle():
            for c in crust_procs():
                os.kill(c, signal.SIGKILL)
            src.kill()
            return None, "crust still runs 30 s after the migration"
        time.sleep(0.05)
        restored = (read(pidfile) or "").strip()
        dst = None
        if restored.isdigit() and state(int(restored)) not in (None, "Z", "X"):
            dst = int(restored)
        src_alive = src.alive() and state(src.pid) != "Z"
        if d.returncode != 0:
            why = "lazy-pages --page-server failed to start"
        elif src_alive and dst is not None:
            why = "both copies run (source %d, restored %d)" % (src.pid, dst)
        elif src_alive:
            why = src.check_running() or src.finish()
            src.kill()
            return "source", why
        elif dst is not None:
            src.kill()
            src.pid = dst  # the restored copy checks itself
            return "restored", src.finish()
        else:
            log = read(os.path.join(img, "lazy.log")) or ""
            why = None if "Error" in log else "neither copy runs and the daemon logged no error"
            return "neither", why
        src.kill()
        if dst is not None:
            os.kill(dst, signal.SIGKILL)
        return None, why

    def run(self, work, span, steps, tally):
        self.span = 0.0
        outcome, why = self.one(work, None)
        lspan = self.span
        if why or outcome != "restored":
            tally.bad("%s: a plain migration: %s" % (self.name, why or outcome))
            return
        steps = max(3, steps // 2)
        for i in range(steps):
            delay = lspan * 0.8 * i / max(1, steps - 1)
            outcome, why = self.one(work, delay)
            name = "%s, SIGKILL at %.1f ms (%s)" % (self.name, delay * 1000, outcome)
            if why:
                tally.bad("%s: %s" % (name, why))
            else:
                tally.ok()


CASES = [
    DumpSweep("", (signal.SIGKILL, signal.SIGINT, signal.SIGTERM), keep_failures=True),
    # --freeze-cgroup (issue 14).
    DumpSweep("--freeze-cgroup ", (signal.SIGKILL, signal.SIGTERM), context=FreezerCgroup,
              requires=freezer_available, finish_each=False),
    # A restore killed at any moment leaves either the whole tree,
    # working, or nothing.
    RestoreSweep("restore", (signal.SIGKILL, signal.SIGTERM)),
    # The same for a tree: all of it or none of it.
    TreeRestoreSweep("restore tree", (signal.SIGKILL,)),
    PanicCase("panic in a remote call", "panic-remote"),
    # Issue 15. A pre-dump killed at any moment leaves the target running
    # as before: not traced, not stopped, its maps and fds (no uffd left
    # behind in it) unchanged.
    # (Signals to crust's pid only: the group cases of the first row test
    # the same signal handling; this keeps the CI step short.)
    DumpSweep("pre-dump --track-mem ", (signal.SIGKILL, signal.SIGTERM), leave=(False,), groups=(False,),
              command="pre-dump", requires=lambda: crust_can("mem_dirty_track"),
              context=TrackMem),
    # The same pre-dump sending its pages to a page server.
    DumpSweep("pre-dump --page-server ", (signal.SIGKILL, signal.SIGTERM), leave=(False,), groups=(False,),
              command="pre-dump", requires=lambda: crust_can("mem_dirty_track"),
              context=PageServerTrackMem),
    # A dump to a page server: the pages vmspliced by the target into a
    # pipe planted in it (-R only: without it the pages would be on the
    # server, not in the images a gone target is restored from).
    DumpSweep("dump --page-server ", (signal.SIGKILL, signal.SIGTERM), leave=(True,), groups=(False,),
              context=PageServer),
    # The -R copy phase (a snapshot's pages copied while the tree runs):
    # the first case's delays span a whole dump -R; this one kills the
    # worker itself once the tree was let go.
    CopySweep("dump -R copy phase"),
    # Its pre-copy (pages copied before the freeze, the target's memory
    # tracked through crust's userfaultfd): the worker killed at delays
    # once the target runs again.
    # (After "Pre-copy: tree N paused ... to make its userfaultfds", logged
    # once the tree was let go: the earlier "Pre-copy: tree seized" is
    # logged while the tree is held, inside the remote calls a SIGKILL of
    # the worker is not covered in.)
    CopySweep("dump -R pre-copy", after="to make its userfaultfds"),
    # A lazy restore (issue 15): its daemon, the restore, or both killed.
    LazySweep("lazy-pages daemon", (signal.SIGKILL, signal.SIGTERM),
              requires=lambda: crust_can("uffd-noncoop")),
    LazySweep("lazy restore", (signal.SIGKILL,), victim="restore",
              requires=lambda: crust_can("uffd-noncoop")),
    LazySweep("lazy daemon and restore", (signal.SIGKILL,), victim="both",
              requires=lambda: crust_can("uffd-noncoop")),
    # The daemon and its guard at once: the guard traces the tree with
    # PTRACE_O_EXITKILL once the restore let it go (lazy/tracer.rs).
    LazySweep("lazy daemon and guard", (signal.SIGKILL,), victim="guard",
              requires=lambda: crust_can("uffd-noncoop")),
    # The source's side of a lazy migration: dump --lazy-pages killed
    # while it serves pages.
    LazyDumpSweep("dump --lazy-pages", requires=lambda: crust_can("uffd-noncoop")),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="delays per combination")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--case", action="append", default=[],
                    help="run only the cases whose name starts with this (repeatable; "
                    "'dump' is the plain dump sweep)")
    args = ap.parse_args()
    label = lambda c: (c.name.strip() or "dump")
    if args.list:
        for c in CASES:
            print(label(c))
        return 0
    if os.geteuid() != 0:
        print("killsweep: needs root")
        return 1
    for b in (CRUST, SWEEP, FOREST):
        if not os.access(b, os.X_OK):
            print("killsweep: missing %s (cargo build --release -p crust -p crust-testprogs)" % b)
            return 1
    cases = [c for c in CASES if not args.case or any(label(c).startswith(w) for w in args.case)]
    work = tempfile.mkdtemp(prefix="crust-killsweep.")
    os.chmod(work, 0o700)
    tally = Tally()
    try:
        span = calibrate(work)
        print("killsweep: a dump -R of the target takes %.0f ms; %d delays per case"
              % (span * 1000, args.steps))
        for case in cases:
            why = case.requires() if case.requires else None
            if why:
                print("SKIP %s: %s" % (label(case), why))
                tally.skipped += 1
                continue
            case.run(work, span, args.steps, tally)
    except RuntimeError as e:
        tally.bad("set-up: %s" % e)
    finally:
        for c in crust_procs():
            try:
                os.kill(c, signal.SIGKILL)
            except OSError:
                pass
        if tally.failed:
            print("killsweep: failures kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("killsweep: %d passed, %d failed, %d skipped" % (tally.passed, tally.failed, tally.skipped))
    return 1 if tally.failed else 0


if __name__ == "__main__":
    if os.environ.get("KILLSWEEP_UNDER_REAPER") is None:
        os.environ["KILLSWEEP_UNDER_REAPER"] = "1"
        reaper = os.path.join(ROOT, "tests", "e2e", "reaper")
        os.execv(sys.executable, [sys.executable, reaper, sys.executable] + sys.argv)
    sys.exit(main())
