#!/usr/bin/env python3
"""chainify.py SET PARENT LINK: turn the image set SET into a child of the
image set PARENT, as an incremental dump would have written it: every
present page of SET's process pagemaps whose bytes PARENT holds at the same
address (read through PARENT's own chain, if it has one) becomes a
PE_PARENT run and its bytes leave SET's pages file; SET/parent -> LINK.
Prints the bytes SET's pages files held before and after.

Used by tests/e2e/chain.sh to build pre-dump chains before `crust
pre-dump` exists (run.sh puts this directory on PYTHONPATH)."""
import glob
import os
import struct
import sys

from imgedit import enc, varint

PAGE = 4096
PE_PARENT, PE_PRESENT = 1, 4


def fields(e):
    """The varint fields of a protobuf message (field -> value)."""
    out, o = {}, 0
    while o < len(e):
        key, o = varint(e, o)
        wire = key & 7
        if wire == 0:
            v, o = varint(e, o)
            out[key >> 3] = v
        elif wire == 2:
            ln, o = varint(e, o)
            o += ln
        elif wire == 1:
            o += 8
        elif wire == 5:
            o += 4
    return out


def read_pagemap(path):
    """(magic bytes, pages_id, [(vaddr, pages, flags)])."""
    b = open(path, "rb").read()
    magic, o, msgs = b[:8], 8, []
    while o < len(b):
        n = struct.unpack_from("<I", b, o)[0]
        msgs.append(fields(b[o + 4:o + 4 + n]))
        o += 4 + n
    runs = []
    for e in msgs[1:]:
        flags = e.get(4, PE_PRESENT)
        if e.get(3):
            flags = PE_PARENT
        runs.append((e[1], e.get(5, e.get(2, 0)), flags))
    return magic, msgs[0][1], runs


def write_pagemap(path, magic, pages_id, runs):
    def msg(b):
        return struct.pack("<I", len(b)) + b
    out = bytearray(magic) + msg(enc(1 << 3) + enc(pages_id))
    for vaddr, n, flags in runs:
        out += msg(enc(1 << 3) + enc(vaddr) + enc(2 << 3) + enc(0) +
                   enc(4 << 3) + enc(flags) + enc(5 << 3) + enc(n))
    open(path, "wb").write(bytes(out))


class Set:
    """An image set's pages by address, for one pagemap name."""

    def __init__(self, d, name):
        self.d, self.name = d, name
        path = os.path.join(d, name)
        self.runs = []
        self.data = b""
        self.parent = None
        if not os.path.exists(path):
            return
        _, pid, self.runs = read_pagemap(path)
        self.data = open(os.path.join(d, "pages-%d.img" % pid), "rb").read()
        if os.path.exists(os.path.join(d, "parent")):
            self.parent = Set(os.path.join(d, "parent"), name)

    def page(self, addr):
        """The bytes of the page at addr, or None."""
        off = 0
        for vaddr, n, flags in self.runs:
            end = vaddr + n * PAGE
            if vaddr <= addr < end:
                if flags & PE_PARENT:
                    return self.parent.page(addr) if self.parent else None
                if flags & PE_PRESENT:
                    o = off + addr - vaddr
                    return self.data[o:o + PAGE]
                return None
            if flags & PE_PRESENT and not flags & PE_PARENT:
                off += n * PAGE
        return None


def chainify(d, parent, link):
    before = after = 0
    for path in sorted(glob.glob(os.path.join(d, "pagemap-*.img"))):
        name = os.path.basename(path)
        if name.startswith("pagemap-shmem-"):
            continue
        magic, pid, runs = read_pagemap(path)
        pages_path = os.path.join(d, "pages-%d.img" % pid)
        data = open(pages_path, "rb").read()
        p = Set(parent, name)
        new_runs, new_data, off = [], bytearray(), 0

        def add(vaddr, n, flags):
            if new_runs and new_runs[-1][2] == flags and \
                    new_runs[-1][0] + new_runs[-1][1] * PAGE == vaddr:
                v, m, f = new_runs[-1]
                new_runs[-1] = (v, m + n, f)
            else:
                new_runs.append((vaddr, n, flags))
        for vaddr, n, flags in runs:
            if not flags & PE_PRESENT or flags & PE_PARENT:
                new_runs.append((vaddr, n, flags))
                continue
            for i in range(n):
                addr = vaddr + i * PAGE
                mine = data[off + i * PAGE:off + (i + 1) * PAGE]
                if p.page(addr) == mine:
                    add(addr, 1, PE_PARENT)
                else:
                    add(addr, 1, flags)
                    new_data += mine
            off += n * PAGE
        before += len(data)
        after += len(new_data)
        write_pagemap(path, magic, pid, new_runs)
        open(pages_path, "wb").write(bytes(new_data))
    os.symlink(link, os.path.join(d, "parent"))
    print(before, after)


if __name__ == "__main__":
    chainify(sys.argv[1], sys.argv[2], sys.argv[3])
