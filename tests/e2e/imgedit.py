"""Protobuf varints for the e2e tests that edit image entries by hand
(imported by the python snippets of events.sh, ipc.sh and netsk.sh; run.sh
puts this directory on PYTHONPATH)."""


def varint(b, o):
    """The varint at offset o of b, and the offset after it."""
    v = s = 0
    while True:
        c = b[o]
        o += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, o


def enc(v):
    """v as a varint."""
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def set_varint_field(path, field, value):
    """Rewrite the first entry of the image at `path` so that its field
    `field` is the single varint `value`: every occurrence of the field is
    dropped and one is appended (protobuf takes the last)."""
    import struct
    b = open(path, "rb").read()
    head, rest = b[:8], b[8:]
    n = struct.unpack("<I", rest[:4])[0]
    e, tail = rest[4:4 + n], rest[4 + n:]
    out, o = bytearray(), 0
    while o < len(e):
        key, o2 = varint(e, o)
        wire = key & 7
        if wire == 0:
            _, o2 = varint(e, o2)
        elif wire == 2:
            ln, o3 = varint(e, o2)
            o2 = o3 + ln
        elif wire == 1:
            o2 += 8
        elif wire == 5:
            o2 += 4
        if key >> 3 != field:
            out += e[o:o2]
        o = o2
    out += enc(field << 3) + enc(value)
    open(path, "wb").write(head + struct.pack("<I", len(out)) + out + tail)
