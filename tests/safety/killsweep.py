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
checks, or no process with its pid.

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
        rest = (f[1], f[3], f[4], f[5] if len(f) > 5 else "")
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
            self.popen.poll()  # reap our own child once it died
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
        p1 = self.probe_once()
        time.sleep(0.03)
        p2 = self.probe_once()
        if p1 is None or p2 is None:
            return "does not answer the probe"
        if not (p2[0] > p1[0] and p2[1] > p1[1]):
            return "counters do not advance (%s then %s)" % (p1, p2)
        now = snapshot(self.pid)
        for k in ("maps", "fds", "masks"):
            if now[k] != self.snap[k]:
                return "%s changed" % k
        return None

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


def run_dump(img, extra, env=None):
    os.makedirs(img, mode=0o700, exist_ok=True)
    return subprocess.Popen(
        [CRUST, "dump", "-D", img, "-o", "dump.log", "-v4"] + extra,
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


def one_try(work, target, sig, group, leave_running, delay, more=()):
    """Returns (target or None, failure or None)."""
    img = os.path.join(work, "img")
    shutil.rmtree(img, ignore_errors=True)
    extra = ["-t", str(target.pid)] + (["-R"] if leave_running else []) + list(more)
    p = run_dump(img, extra)
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
    if not settle():
        for c in crust_procs():
            os.kill(c, signal.SIGKILL)
        return None, "crust's worker still runs 30 s after the signal"
    if target.alive() and state(target.pid) != "Z":
        why = target.check_running()
        return (target, None) if why is None else (None, why)
    # Dead: allowed only without -R, when the images were complete.
    if leave_running:
        return None, "the target died (with -R)"
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


def freezer_sweep(work, span, steps):
    """Kill `crust dump --freeze-cgroup` (SIGKILL, SIGTERM; to its pid or
    group; with and without -R) over a whole dump: the target passes the
    same checks as above and its cgroup is THAWED. Returns (passed, failed)."""
    if not os.access(os.path.join(FREEZER, "cgroup.procs"), os.W_OK):
        print("SKIP freezer sweep: no cgroup v1 freezer at %s" % FREEZER)
        return 0, 0
    cg = os.path.join(FREEZER, "crust-killsweep-%d" % os.getpid())
    os.mkdir(cg)
    passed = failed = 0
    target = None
    try:
        for sig in (signal.SIGKILL, signal.SIGTERM):
            for group in (False, True):
                for leave in (True, False):
                    name = "--freeze-cgroup %s%s%s" % (
                        signal.Signals(sig).name, " to the group" if group else "",
                        " -R" if leave else "")
                    for i in range(steps):
                        delay = span * 1.2 * i / max(1, steps - 1)
                        if target is None:
                            target = Target(work)
                        # (A restored target is born outside the cgroup.)
                        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                            f.write(str(target.pid))
                        tried = target
                        target, why = one_try(work, target, sig, group, leave, delay,
                                              ["--freeze-cgroup", cg])
                        st = (read(os.path.join(cg, "freezer.state")) or "").strip()
                        if why is None and st != "THAWED":
                            why = "the cgroup is left %s" % st
                        if why:
                            failed += 1
                            print("FAIL %s at %.1f ms: %s" % (name, delay * 1000, why))
                            with open(os.path.join(cg, "freezer.state"), "w") as f:
                                f.write("THAWED")
                            tried.kill()
                            target = None
                        else:
                            passed += 1
        if target is not None:
            why = target.finish()
            target = None
            if why:
                failed += 1
                print("FAIL --freeze-cgroup: the target's own check: %s" % why)
    finally:
        if target is not None:
            target.kill()
        with open(os.path.join(cg, "freezer.state"), "w") as f:
            f.write("THAWED")
        for pid in (read(os.path.join(cg, "cgroup.procs")) or "").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        wait_until(lambda: not (read(os.path.join(cg, "cgroup.procs")) or "").strip(), 5)
        os.rmdir(cg)
    return passed, failed


def restore_sweep(work, steps):
    """Kill `crust restore -d` (SIGKILL, SIGTERM; to its pid or group) at
    delays over a whole restore: afterwards the restored target either runs
    and passes the checks, or no process has its pid. Returns failures."""
    t = Target(work)
    pid = t.pid
    img = os.path.join(work, "rimg")
    shutil.rmtree(img, ignore_errors=True)
    p = run_dump(img, ["-t", str(pid)])
    p.wait()
    if p.returncode != 0 or not wait_until(lambda: not t.alive(), 5):
        t.kill()
        print("FAIL restore sweep: the dump failed")
        return 1
    def restore():
        return subprocess.Popen([CRUST, "restore", "-D", img, "-d", "-o", "restore.log"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    r = restore()
    r.wait()
    span = time.time() - t0
    t.popen = None
    if r.returncode != 0 or not t.alive():
        print("FAIL restore sweep: a plain restore failed (see %s)" % img)
        return 1
    t.kill()
    failed = 0
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for group in (False, True):
            for i in range(steps):
                delay = span * 1.2 * i / max(1, steps - 1)
                r = restore()
                time.sleep(delay)
                try:
                    os.killpg(r.pid, sig) if group else os.kill(r.pid, sig)
                except OSError:
                    pass
                r.wait()
                name = "restore, %s%s at %.1f ms" % (signal.Signals(sig).name,
                                                      " to the group" if group else "", delay * 1000)
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


def predump_sweep(work, span, steps):
    """Kill `crust pre-dump` (SIGKILL, SIGTERM; to its pid or group) over a
    whole pre-dump (issue 15): the target runs on as before; a keeper left
    by a pre-dump that finished is released with `crust track-release`;
    no keeper survives a run killed before it finished, and no write
    tracking (`uw` in smaps) is left in the task. Returns (passed, failed)."""
    passed = failed = 0
    target = None
    img = os.path.join(work, "img")
    for sig in (signal.SIGKILL, signal.SIGTERM):
        for group in (False, True):
            name = "pre-dump %s%s" % (signal.Signals(sig).name, " to the group" if group else "")
            for i in range(steps):
                delay = span * 1.2 * i / max(1, steps - 1)
                if target is None:
                    target = Target(work)
                shutil.rmtree(img, ignore_errors=True)
                os.makedirs(img, mode=0o700)
                p = subprocess.Popen(
                    [CRUST, "pre-dump", "-D", img, "-o", "dump.log", "-v4", "-t", str(target.pid)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True)
                time.sleep(delay)
                try:
                    os.killpg(p.pid, sig) if group else os.kill(p.pid, sig)
                except OSError:
                    pass
                why = None
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    why = "crust did not exit within 60 s"
                # The worker may finish the pre-dump after the front end
                # died: wait for it (not for a keeper) before looking.
                wait_until(lambda: not [c for c in crust_procs()
                                        if "__keeper" not in (read("/proc/%d/cmdline" % c) or "")],
                           30)
                if os.path.exists(os.path.join(img, "crust-keeper")):
                    subprocess.run([CRUST, "track-release", img], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=30)
                if why is None and not settle():
                    why = "a crust process (worker or keeper) still runs 30 s after the signal"
                    for c in crust_procs():
                        os.kill(c, signal.SIGKILL)
                if why is None:
                    why = None if target.alive() else "the target died"
                if why is None:
                    why = target.check_running()
                if why is None and " uw" in (read("/proc/%d/smaps" % target.pid) or ""):
                    why = "write tracking (uw) left in the task"
                if why:
                    failed += 1
                    print("FAIL %s at %.1f ms: %s" % (name, delay * 1000, why))
                    target.kill()
                    target = None
                else:
                    passed += 1
    if target is not None:
        why = target.finish()
        if why:
            failed += 1
            print("FAIL pre-dump sweep: the target's own check: %s" % why)
    return passed, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=6, help="delays per combination")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("killsweep: needs root")
        return 1
    for b in (CRUST, SWEEP):
        if not os.access(b, os.X_OK):
            print("killsweep: missing %s (cargo build --release -p crust -p crust-testprogs)" % b)
            return 1
    work = tempfile.mkdtemp(prefix="crust-killsweep.")
    os.chmod(work, 0o700)
    passed = failed = 0
    target = None
    try:
        span = calibrate(work)
        print("killsweep: a dump -R of the target takes %.0f ms; %d delays per case"
              % (span * 1000, args.steps))
        cases = [(s, g, r) for s in (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)
                 for g in (False, True) for r in (True, False)]
        for sig, group, leave in cases:
            name = "%s%s%s" % (signal.Signals(sig).name, " to the group" if group else "",
                               " -R" if leave else "")
            for i in range(args.steps):
                # From 0 to 1.2 times a whole dump, so that both ends are hit.
                delay = span * 1.2 * i / max(1, args.steps - 1)
                if target is None:
                    target = Target(work)
                tried = target
                target, why = one_try(work, target, sig, group, leave, delay)
                if why:
                    failed += 1
                    print("FAIL %s at %.1f ms: %s" % (name, delay * 1000, why))
                    keep = os.path.join(work, "fail-%d" % failed)
                    shutil.copytree(os.path.join(work, "img"), keep, dirs_exist_ok=True)
                    # Whatever is left of it (restored or not) goes.
                    tried.kill()
                    target = None
                else:
                    passed += 1
            if target is not None:
                why = target.finish()
                target = None
                if why:
                    failed += 1
                    print("FAIL %s: the target's own check: %s" % (name, why))
        # --freeze-cgroup (issue 14): the target in a v1 freezer cgroup of
        # its own; whenever crust is stopped the cgroup is thawed again.
        p, f = freezer_sweep(work, span, args.steps)
        passed += p
        failed += f
        # pre-dump (issue 15): killed at any moment, the target runs on
        # untouched and no keeper or tracking is left behind.
        p, f = predump_sweep(work, span, args.steps)
        passed += p
        failed += f
        # A restore killed at any moment leaves either the whole tree,
        # working, or nothing.
        f = restore_sweep(work, args.steps)
        passed += 2 * 2 * args.steps - f
        failed += f
        # A crust bug (a panic) while a task runs remote syscalls.
        for leave in (True, False):
            target = Target(work)
            img = os.path.join(work, "img")
            shutil.rmtree(img, ignore_errors=True)
            env = dict(os.environ, CRUST_FAULT="panic-remote")
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
                failed += 1
                print("FAIL panic in a remote call%s: %s" % (" -R" if leave else "", why))
                target.kill()
            else:
                passed += 1
            target = None
    except RuntimeError as e:
        failed += 1
        print("FAIL set-up: %s" % e)
    finally:
        if target is not None:
            target.kill()
        for c in crust_procs():
            try:
                os.kill(c, signal.SIGKILL)
            except OSError:
                pass
        if failed:
            print("killsweep: failures kept in %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("killsweep: %d passed, %d failed, 0 skipped" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    if os.environ.get("KILLSWEEP_UNDER_REAPER") is None:
        os.environ["KILLSWEEP_UNDER_REAPER"] = "1"
        reaper = os.path.join(ROOT, "tests", "e2e", "reaper")
        os.execv(sys.executable, [sys.executable, reaper, sys.executable] + sys.argv)
    sys.exit(main())
