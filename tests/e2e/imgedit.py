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
