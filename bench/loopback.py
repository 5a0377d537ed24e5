#!/usr/bin/env python3
"""The machine's own ceiling for a page server on loopback, measured the
way bench/pageserver.sh measures crust: MB MiB sent over one loopback TCP
connection in 1 MiB writes, received in 1 MiB reads, and (with --into DIR)
written into a new file in DIR as it comes, as a page server writes its
pages file. Prints "GB/s" (bytes / wall time from connect to the last
byte received, and written). The file is removed.

    bench/loopback.py --mb 1024 [--into DIR]
"""
import argparse
import os
import socket
import time

CHUNK = 1 << 20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--into")
    a = ap.parse_args()
    total = a.mb << 20
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    done = {}

    def receive():
        conn, _ = lsock.accept()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        fd = None
        path = None
        if a.into:
            path = os.path.join(a.into, "loopback-ceiling.%d" % os.getpid())
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        got = 0
        try:
            while got < total:
                n = conn.recv_into(view, min(CHUNK, total - got))
                if n == 0:
                    break
                if fd is not None:
                    os.write(fd, view[:n])
                got += n
        finally:
            done["t"] = time.monotonic()
            done["got"] = got
            if fd is not None:
                os.close(fd)
                os.unlink(path)
            conn.close()

    # The sender is a process of its own, as crust's dump is.
    data = memoryview(bytes(os.urandom(CHUNK)))
    t0 = time.monotonic()
    child = os.fork()
    if child == 0:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            sent = 0
            while sent < total:
                s.sendall(data)
                sent += CHUNK
            s.close()
        finally:
            os._exit(0)
    receive()
    os.waitpid(child, 0)
    lsock.close()
    print("%.2f" % (done["got"] / (done["t"] - t0) / 1e9))


if __name__ == "__main__":
    main()
