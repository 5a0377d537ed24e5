#!/usr/bin/python3
"""crust's crit against CRIU 4.2's crit, file by file (tests/interop/crit.sh).

Usage: crit_check.py CRUST WORKDIR FILE...
Needs PYTHONPATH with CRIU's lib/ and crit/ (crit.sh sets it): CRIU's crit
runs in this interpreter through its own decode/encode functions (what
`crit decode|encode|show` run), crust's as `CRUST crit ...`.

For every FILE:
- `crit decode`, `crit decode --pretty` and `crit show --nopl` give the same
  text as crust's (crust's may have more fields, those crust-only fields
  being the only allowed difference: such files are listed as notes);
- crust's encode of crit's JSON (plain and pretty) gives the bytes crit's
  encode gives; crust's encode of crust's JSON gives back FILE.
Files crit cannot decode (no known magic: raw data, crust-only images) must
round-trip through crust's JSON. Prints one line per failure, then
"crit-check: N files, N failed, N notes"; exits non-zero iff one failed.
"""
import io
import json
import os
import subprocess
import sys

from crit.__main__ import decode, encode  # CRIU 4.2's crit


def crit_run(func, opts):
    """Run one of crit's commands; None when it worked, else why not."""
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        func(opts)
        return None
    except SystemExit as e:
        return "crit exited with %s: %s" % (e.code, err.getvalue().strip().splitlines()[0][:100] if err.getvalue().strip() else "")
    except Exception as e:  # crit's own failures (its bugs included)
        return "crit failed: %r" % e
    finally:
        sys.stderr = old


def crust_run(crust, *args, stdout=None):
    r = subprocess.run([crust, "crit"] + list(args), stdout=stdout or subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace").strip()[:200]


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def extra_keys(want, got, where=""):
    """Keys of `got` beyond `want` if that is the only difference, else None."""
    if isinstance(want, dict) and isinstance(got, dict):
        extra = [where + "." + k for k in got if k not in want]
        if any(k not in got for k in want):
            return None
        for k in want:
            sub = extra_keys(want[k], got[k], where + "." + k)
            if sub is None:
                return None
            extra += sub
        return extra
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return None
        extra = []
        for i, (w, g) in enumerate(zip(want, got)):
            sub = extra_keys(w, g, "%s[%d]" % (where, i))
            if sub is None:
                return None
            extra += sub
        return extra
    return [] if want == got else None


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a.splitlines(), b.splitlines())):
        if x != y:
            return "line %d: crit %r, crust %r" % (i + 1, x[:120], y[:120])
    return "lengths %d and %d" % (len(a), len(b))


def check_file(crust, work, path, fails, notes):
    name = os.path.join(work, os.path.basename(os.path.dirname(os.path.abspath(path))) +
                        "__" + os.path.basename(path))
    orig = read(path, "rb")
    modes = [("plain", False, False), ("pretty", True, False), ("nopl", True, True)]
    err = None
    for m, pretty, nopl in modes:
        err = err or crit_run(decode, {"in": path, "out": name + ".crit." + m,
                                       "pretty": pretty, "nopl": nopl})
    enc_err = None if err else crit_run(encode, {"in": name + ".crit.plain", "out": name + ".crit.reenc"})
    # crust's own round trip, always.
    for m, flag in (("plain", []), ("pretty", ["--pretty"])):
        rc, _, e = crust_run(crust, "decode", "-i", path, "-o", name + ".crust." + m, *flag)
        if rc != 0:
            if err:
                notes.append("%s: neither crit nor crust decodes it (%s; %s)" % (path, err, e))
            else:
                fails.append("%s: crust crit decode %s failed: %s" % (path, m, e))
            return
        rc, _, e = crust_run(crust, "encode", "-i", name + ".crust." + m, "-o", name + ".crust.enc")
        if rc != 0 or read(name + ".crust.enc", "rb") != orig:
            fails.append("%s: crust's encode of crust's %s JSON is not the image (%s)" % (path, m, e))
    if err:
        notes.append("%s: CRIU's crit cannot decode it (%s); crust round-trips it" % (path, err))
        return
    crit_img = json.loads(read(name + ".crit.plain"))
    if crit_img["magic"] == "IPCNS_SHM" and any(e.get("in_pagemaps") for e in crit_img["entries"]):
        notes.append("%s: segments kept in pagemaps: CRIU's crit reads the entries after one "
                     "as its contents, crust does not (crust round-trips it)" % path)
        return
    rc, out, e = crust_run(crust, "show", path, "--nopl")
    with open(name + ".crust.nopl", "wb") as f:
        f.write(out[:-1] if out.endswith(b"\n") else out)
    for m, _, _ in modes:
        want, got = read(name + ".crit." + m), read(name + ".crust." + m)
        if want == got:
            continue
        extra = extra_keys(json.loads(want), json.loads(got))
        if extra:
            notes.append("%s: %s: crust-only fields %s" % (path, m, ", ".join(sorted(set(extra))[:6])))
        else:
            fails.append("%s: %s JSON differs: %s" % (path, m, first_diff(want, got)))
    if enc_err:
        notes.append("%s: CRIU's crit cannot encode its own JSON (%s)" % (path, enc_err))
        return
    reenc = read(name + ".crit.reenc", "rb")
    for m in ("plain", "pretty"):
        rc, _, e = crust_run(crust, "encode", "-i", name + ".crit." + m, "-o", name + ".enc")
        if rc != 0 or read(name + ".enc", "rb") != reenc:
            fails.append("%s: crust's encode of crit's %s JSON differs from crit's encode (%s)"
                         % (path, m, e))


def main():
    crust, work, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    fails, notes = [], []
    for path in files:
        check_file(crust, work, path, fails, notes)
    for n in notes:
        print("note: " + n)
    for f in fails:
        print("FAIL " + f)
    print("crit-check: %d files, %d failed, %d notes" % (len(files), len(fails), len(notes)))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
