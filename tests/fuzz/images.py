#!/usr/bin/env python3
"""Mutation fuzzer for crust's image reading (issue 10: images that lie).

Takes real image sets, mutates one thing in a copy, and runs on it
`crust restore -d --leave-stopped` and `crust image decode` under a timeout.
A case fails on:
  - a panic ("panicked" on stderr) or a crash (exit by a signal, or 101),
  - a hang (the timeout),
  - a leftover: a process of the test programs after a failed restore, or
    anything new in the test program's work dir or crust's cwd (bound
    socket files...), outside the images dir,
  - a "success" whose reported root (the pidfile) does not exist, or is
    not stopped as --leave-stopped asks.
Anything else (an error with a message, or a restore that works) passes.

The image sets: fresh dumps, by the crust under test, of some test programs
(loop, threads, unixsk, files) made in a temp dir when running as root, and
the golden sets of tests/fixtures/golden (decode; their restores fail early,
their binaries not being where they were).

Mutations: bit flips, truncation, a huge entry length, a wrong magic, a
varint of the first entry set to an edge value, a missing file, an extra
file, a file from another set, a file replaced by a symbolic link.

With --verify (as root), each case also runs `crust image verify` on the
mutated set before the restore, and fails when the two disagree: verify
must fail exactly when the restore fails before creating any task (the
restore log has no "creating the tree's tasks" line), and pass when the
restore works. A restore that fails later may have been refused by verify
or not (counted, not a failure).

Bounded run (CI, .ci/run; fixed seed, about 60 s):
    python3 tests/fuzz/images.py --seconds 60 --seed 1 --verify
Longer run (random seed, printed so a failure can be replayed; keep the
failing cases' dirs with --keep):
    python3 tests/fuzz/images.py --seconds 3600 --seed random --keep /tmp/fuzz-fail
Replay one case: the same --seed, --sources, and --only N (the case number).
Run it as root, with the e2e lock when others may run the e2e tests
(`flock /tmp/crust-e2e.lock python3 tests/fuzz/images.py ...`): restores use
the dumped pids. Needs target/release/{crust,loop,threads,unixsk,files}
(`cargo build --release -p crust -p crust-testprogs`). As root it runs
itself under tests/e2e/reaper, which adopts the tasks restored with -d.
"""

import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from imgedit import enc as varint  # noqa: E402  (the varint encoder the e2e edits use)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "fixtures", "golden")
RESTORE_TIMEOUT = 30
DECODE_TIMEOUT = 10


def log(*a):
    print(*a, flush=True)


# --- processes -------------------------------------------------------------

def procs_of(exes):
    """Pids (not threads) whose exe is one of `exes`."""
    out = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            exe = os.readlink("/proc/%s/exe" % d)
        except OSError:
            continue
        if exe.replace(" (deleted)", "") in exes:
            out.add(int(d))
    return out


def state_of(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def descendants(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def kill_all(pids, wait=5.0):
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    end = time.time() + wait
    while time.time() < end and any(state_of(p) not in (None, "Z") for p in pids):
        time.sleep(0.02)
    # Zombies: their parent (init, a subreaper) reaps them.
    end = time.time() + wait
    while time.time() < end and any(state_of(p) is not None for p in pids):
        time.sleep(0.02)


# --- files -----------------------------------------------------------------

def tree_of(dirs, skip):
    """Every path under `dirs`, but not under `skip`."""
    out = set()
    for d in dirs:
        for top, subdirs, files in os.walk(d):
            subdirs[:] = [s for s in subdirs if os.path.join(top, s) not in skip]
            for n in subdirs + files:
                out.add(os.path.join(top, n))
    return out


# --- image sets --------------------------------------------------------------

PROGS = [
    ("loop", []),
    ("threads", []),
    ("unixsk", ["--mode", "all", "--dir", "{work}"]),
    ("files", ["--dir", "{work}"]),
]


def make_sources(crust, bindir, tmp, names):
    """Dump each test program of PROGS into tmp/NAME/img; returns the sets:
    dicts with name, img, work (the program's dir), exe."""
    sets = []
    for name, args in PROGS:
        if names and name not in names:
            continue
        exe = os.path.join(bindir, name)
        if not os.access(exe, os.X_OK):
            log("fuzz: no %s, skipped (cargo build --release -p crust-testprogs)" % exe)
            continue
        base = os.path.join(tmp, name)
        work = os.path.join(base, "work")
        img = os.path.join(base, "img")
        os.makedirs(work)
        os.makedirs(img)
        ready = os.path.join(base, "ready")
        argv = [exe, "--ready", ready, "--result", os.path.join(base, "result")]
        argv += [a.format(work=work) for a in args]
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.time() + 10
        while not os.path.exists(ready) and time.time() < end:
            time.sleep(0.02)
        r = subprocess.run([crust, "dump", "-t", str(p.pid), "-D", img, "-o", "dump.log"],
                           cwd=base, capture_output=True, timeout=60)
        if r.returncode != 0:
            log("fuzz: dump of %s failed: %s" % (name, r.stderr.decode(errors="replace")[:300]))
            p.kill()
            p.wait()
            continue
        p.wait()
        os.unlink(os.path.join(img, "dump.log"))
        sets.append({"name": name, "img": img, "work": work, "exe": exe, "base": base})
    return sets


def golden_sources():
    out = []
    for n in sorted(os.listdir(GOLDEN)) if os.path.isdir(GOLDEN) else []:
        d = os.path.join(GOLDEN, n)
        if os.path.exists(os.path.join(d, "inventory.img")):
            out.append({"name": "golden-" + n, "img": d, "work": None, "exe": None, "base": None})
    return out


def image_files(d):
    return sorted(f for f in os.listdir(d)
                  if f.endswith(".img") and os.path.isfile(os.path.join(d, f))
                  and not os.path.islink(os.path.join(d, f)))


# --- mutations ----------------------------------------------------------------

EDGE = [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 63, 2 ** 64 - 1, 4096]


def read_varint(b, o):
    """The varint at offset o of b and the offset after it; None past the end
    (mutated data may end in the middle of one)."""
    v = s = 0
    while o < len(b):
        c = b[o]
        o += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, o
    raise ValueError


def header_len(b):
    # inventory.img has one magic, the others two (CRIU's common magic first).
    return 4 if b[:4] == struct.pack("<I", 0x58313116) else 8


def mutate(rng, img, others):
    """Change one thing in the copy `img`; returns what, for the report."""
    files = image_files(img)
    if not files:
        return "nothing to mutate"
    f = rng.choice(files)
    p = os.path.join(img, f)
    with open(p, "rb") as fh:
        b = bytearray(fh.read())
    kind = rng.choice(["flip", "flip", "flip", "truncate", "length", "magic", "varint",
                       "varint", "missing", "extra", "other", "symlink"])
    if kind == "flip" and b:
        n = rng.randint(1, 8)
        for _ in range(n):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        what = "%s: %d bit flips" % (f, n)
    elif kind == "truncate":
        n = rng.randrange(len(b) + 1)
        what = "%s: cut to %d of %d bytes" % (f, n, len(b))
        b = b[:n]
    elif kind == "length" and len(b) >= 12:
        h = header_len(b)
        v = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x10000000, len(b) + 1])
        b[h:h + 4] = struct.pack("<I", v)
        what = "%s: first entry length %#x" % (f, v)
    elif kind == "magic" and len(b) >= 8:
        i = rng.choice([0, 4]) if header_len(b) == 8 else 0
        b[i:i + 4] = struct.pack("<I", rng.getrandbits(32))
        what = "%s: magic at %d changed" % (f, i)
    elif kind == "varint" and len(b) >= 13:
        h = header_len(b)
        (n,) = struct.unpack("<I", b[h:h + 4])
        e = bytes(b[h + 4:h + 4 + n])
        # Walk the entry's top-level fields; change one varint.
        fields, o = [], 0
        try:
            while o < len(e):
                key, o2 = read_varint(e, o)
                wt = key & 7
                if wt == 0:
                    _, o3 = read_varint(e, o2)
                    fields.append((o2, o3))
                elif wt == 2:
                    ln, o3 = read_varint(e, o2)
                    o3 += ln
                elif wt == 1:
                    o3 = o2 + 8
                elif wt == 5:
                    o3 = o2 + 4
                else:
                    break
                o = o3
        except ValueError:
            pass
        if not fields:
            return mutate(rng, img, others)
        s, t = rng.choice(fields)
        v = rng.choice(EDGE)
        e2 = e[:s] + varint(v) + e[t:]
        b = b[:h] + struct.pack("<I", len(e2)) + e2 + b[h + 4 + n:]
        what = "%s: a varint of the first entry set to %d" % (f, v)
    elif kind == "missing":
        os.unlink(p)
        return "%s: missing" % f
    elif kind == "extra":
        name = rng.choice(["core-%d.img", "fdinfo-%d.img", "pages-%d.img", "mm-%d.img"]) % rng.randint(1, 99999)
        with open(os.path.join(img, name), "wb") as fh:
            fh.write(bytes(b[:rng.randrange(len(b) + 1)]))
        return "extra %s (part of %s)" % (name, f)
    elif kind == "other" and others:
        src = rng.choice(others)
        cand = [g for g in image_files(src) if g.split("-")[0] == f.split("-")[0]]
        if not cand:
            return mutate(rng, img, others)
        g = rng.choice(cand)
        shutil.copyfile(os.path.join(src, g), p)
        return "%s: replaced by %s of %s" % (f, g, os.path.basename(os.path.dirname(src)) or src)
    elif kind == "symlink":
        target = p + ".real"
        os.rename(p, target)
        os.symlink(target, p)
        return "%s: a symbolic link" % f
    else:
        return mutate(rng, img, others)
    with open(p, "wb") as fh:
        fh.write(b)
    return what


# --- one case ------------------------------------------------------------------

def bad_exit(r, what):
    """Why an exit is a failure (a panic, a crash), or None."""
    err = r.stderr.decode(errors="replace")
    if "panicked" in err:
        return "%s panicked: %s" % (what, err.strip()[-300:])
    if r.returncode < 0:
        return "%s died of signal %d" % (what, -r.returncode)
    if r.returncode == 101:
        return "%s exited 101 (a Rust panic)" % what
    return None


# What the restore logs once every check passed, as it creates the first task.
TASKS_MARK = "creating the tree's tasks"
VERIFY_TIMEOUT = 30
STATS = {"verify_late": 0, "verify_agree": 0}


def verify_once(crust, img, cwd):
    """Exit code and first output line of `crust image verify`, or (None, why)."""
    try:
        r = subprocess.run([crust, "image", "verify", img], cwd=cwd, capture_output=True,
                           timeout=VERIFY_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "image verify hung (> %d s)" % VERIFY_TIMEOUT
    b = bad_exit(r, "image verify")
    if b:
        return None, b
    out = (r.stdout + r.stderr).decode(errors="replace").strip().splitlines()
    return r.returncode, (out[-1] if out else "")


def verify_problems(vrc, vwhy, restored, img):
    """Whether verify and the restore disagree."""
    if vrc is None:
        return [vwhy]
    try:
        log = open(os.path.join(img, "restore.log"), errors="replace").read()
    except OSError:
        log = ""
    if restored:
        if vrc != 0:
            return ["image verify refused a set that restores: %s" % vwhy[:300]]
    elif TASKS_MARK not in log:
        if vrc == 0:
            err = [ln for ln in log.splitlines() if "Error" in ln or "error" in ln][-1:]
            return ["image verify passed a set whose restore failed before creating a task: %s"
                    % (err[0][:300] if err else "(no error line in restore.log)")]
    elif vrc != 0:
        STATS["verify_late"] += 1
        return []
    STATS["verify_agree"] += 1
    return []


def run_case(crust, src, others, rng, case_dir, exes, verify=False):
    img = os.path.join(case_dir, "img")
    shutil.copytree(src["img"], img, symlinks=True)
    what = mutate(rng, img, others)
    cwd = os.path.join(case_dir, "cwd")
    os.makedirs(cwd)
    watch = [d for d in (src["work"], cwd) if d]
    before = tree_of(watch, {img})
    procs_before = procs_of(exes)
    problems = []
    # Decode the mutated file(s): every image, cheap enough.
    for f in image_files(img):
        try:
            r = subprocess.run([crust, "image", "decode", "-i", os.path.join(img, f), "-o", os.devnull],
                               cwd=cwd, capture_output=True, timeout=DECODE_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append("image decode %s hung (> %d s)" % (f, DECODE_TIMEOUT))
            continue
        b = bad_exit(r, "image decode %s" % f)
        if b:
            problems.append(b)
    restored = False
    if os.geteuid() == 0:
        if verify:
            vrc, vwhy = verify_once(crust, img, cwd)
        more, restored = restore_once(crust, img, cwd, exes, procs_before)
        problems += more
        if verify and not more:
            problems += verify_problems(vrc, vwhy, restored, img)
    after = tree_of(watch, {img})
    new = sorted(after - before)
    if new:
        # A restore that worked keeps what it made (bound socket files);
        # one that failed must leave nothing.
        if not restored:
            problems.append("left behind: %s" % ", ".join(new[:5]))
        for n in new:
            try:
                if os.path.isdir(n) and not os.path.islink(n):
                    shutil.rmtree(n)
                else:
                    os.unlink(n)
            except OSError:
                pass
    return what, problems


def restore_once(crust, img, cwd, exes, procs_before):
    """Problems of one restore, and whether it succeeded."""
    problems = []
    ok = False
    pidfile = os.path.join(os.path.dirname(img), "pidfile")
    argv = [crust, "restore", "-D", img, "-d", "-s", "--pidfile", pidfile, "-v4", "-o", "restore.log"]
    try:
        r = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=RESTORE_TIMEOUT)
    except subprocess.TimeoutExpired:
        problems.append("restore hung (> %d s)" % RESTORE_TIMEOUT)
        r = None
    if r is not None:
        b = bad_exit(r, "restore")
        if b:
            problems.append(b)
        elif r.returncode == 0:
            ok = True
            try:
                pid = int(open(pidfile).read().strip())
            except (OSError, ValueError):
                pid = 0
            st = state_of(pid) if pid > 0 else None
            # A stop sent at detach takes effect a moment later.
            end = time.time() + 1
            while st in ("R", "S", "D") and time.time() < end:
                time.sleep(0.02)
                st = state_of(pid)
            if st is None:
                problems.append("restore succeeded but its pidfile's pid %d does not exist" % pid)
            elif st not in ("T", "t"):
                problems.append("restore -s succeeded but pid %d is in state %s, not stopped" % (pid, st))
            if st is not None:
                kill_all(descendants(pid))
        elif os.path.exists(pidfile):
            problems.append("the failed restore wrote its pidfile")
    # Nothing of the test programs may be left (a success was killed above).
    left = procs_of(exes) - procs_before
    if left:
        problems.append("processes left behind: %s" % sorted(left))
        kill_all(sorted(left))
    return problems, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--seed", default="1", help="a number, or 'random'")
    ap.add_argument("--crust", default=os.path.join(ROOT, "target", "release", "crust"))
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release"),
                    help="where the test programs are")
    ap.add_argument("--sources", default="", help="comma-separated test programs to dump (default: all)")
    ap.add_argument("--no-golden", action="store_true")
    ap.add_argument("--keep", help="copy each failing case's dir here")
    ap.add_argument("--only", type=int, help="run only case N (replay)")
    ap.add_argument("--verify", action="store_true",
                    help="check `crust image verify` against each restore")
    a = ap.parse_args()
    seed = random.SystemRandom().randrange(2 ** 32) if a.seed == "random" else int(a.seed)
    rng = random.Random(seed)
    if not os.access(a.crust, os.X_OK):
        log("fuzz: no crust at %s (cargo build --release -p crust)" % a.crust)
        return 2
    tmp = tempfile.mkdtemp(prefix="crust-fuzz.")
    passed = failed = 0
    try:
        sets = []
        if os.geteuid() == 0:
            sets = make_sources(a.crust, a.bin, tmp, [s for s in a.sources.split(",") if s])
        else:
            log("fuzz: not root: decode only, no restores")
        if not a.no_golden:
            sets += golden_sources()
        if not sets:
            log("fuzz: no image set to mutate")
            return 2
        exes = {s["exe"] for s in sets if s["exe"]}
        imgs = [s["img"] for s in sets]
        log("fuzz: seed %d, %.0f s, sets: %s" % (seed, a.seconds, " ".join(s["name"] for s in sets)))
        end = time.time() + a.seconds
        n = 0
        while time.time() < end or (a.only is not None and n <= a.only):
            n += 1
            src = rng.choice(sets)
            case_rng = random.Random(rng.getrandbits(64))
            if a.only is not None and n != a.only:
                if n > a.only:
                    break
                continue
            case_dir = os.path.join(tmp, "case-%d" % n)
            os.makedirs(case_dir)
            what, problems = run_case(a.crust, src, [i for i in imgs if i != src["img"]],
                                      case_rng, case_dir, exes, a.verify)
            if problems:
                failed += 1
                log("FAIL case %d (%s; %s):" % (n, src["name"], what))
                for p in problems:
                    log("    " + p)
                if a.keep:
                    os.makedirs(a.keep, exist_ok=True)
                    shutil.copytree(case_dir, os.path.join(a.keep, "case-%d" % n), symlinks=True)
            else:
                passed += 1
            shutil.rmtree(case_dir, ignore_errors=True)
        log("image fuzz (seed %d): %d passed, %d failed" % (seed, passed, failed))
        if a.verify:
            log("image verify: agreed with the restore %d times; refused %d sets whose restore "
                "failed only after creating tasks" % (STATS["verify_agree"], STATS["verify_late"]))
        return 1 if failed else 0
    finally:
        # The sources' work dirs may hold socket files of the dumped programs.
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    # Under tests/e2e/reaper (a child subreaper in our session): a task
    # restored with -d is reparented to it, so its process group keeps a
    # parent in this session. Reparented to init instead, a root left in
    # crust's session with a group of its own (its session outside the
    # tree, as a mutated pstree.img can say) made an orphaned group with a
    # stopped member when crust exited: the kernel sent it SIGHUP and
    # SIGCONT, and `restore -s` was reported as leaving a zombie (seed
    # 19021, case 140: 3 of 4 replays; 0 of 5 under the reaper).
    if os.environ.get("FUZZ_UNDER_REAPER") is None and os.geteuid() == 0:
        os.environ["FUZZ_UNDER_REAPER"] = "1"
        reaper = os.path.join(ROOT, "tests", "e2e", "reaper")
        os.execv(sys.executable, [sys.executable, reaper, sys.executable] + sys.argv)
    sys.exit(main())
