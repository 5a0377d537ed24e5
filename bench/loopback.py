#!/usr/bin/env python3
"""The machine's own ceiling for a page server on loopback, measured the
way bench/pageserver.sh measures crust: MB MiB sent over one loopback TCP
connection in 1 MiB writes by a process of its own. Prints "GB/s" (bytes /
wall time from connect to the last byte received, and written).

    bench/loopback.py --mb 1024                    memory to memory
    bench/loopback.py --mb 1024 --gather           ... each receive waits
                                                   for its whole 1 MiB
    bench/loopback.py --mb 1024 --into DIR         into a new file in DIR
    bench/loopback.py --mb 1024 --into DIR --splice

--gather: SO_RCVLOWAT of 1 MiB; without it the receiver is woken for every
segment or two, which on this machine costs more than the copy.
--into: read into a buffer, written into a new file in DIR as a page
server writes its pages file (removed at the end); with --splice the bytes
go from the socket through a pipe into the file (splice, no copy through
user space) and the file's blocks are allocated ahead, as crust's page
server does.
"""
import argparse
import fcntl
import os
import socket
import time

CHUNK = 1 << 20
F_SETPIPE_SZ = 1031


def receive_loop(conn, fd, total, splice):
    """Take `total` bytes from `conn` (into `fd` when given); the count."""
    got = 0
    if splice:
        r, w = os.pipe()
        try:
            try:
                fcntl.fcntl(w, F_SETPIPE_SZ, CHUNK)
            except OSError:
                pass
            while got < total:
                n = os.splice(conn.fileno(), w, min(CHUNK, total - got))
                if n == 0:
                    break
                if fd is not None:
                    os.posix_fallocate(fd, got, n)
                k = 0
                while k < n:
                    k += os.splice(r, fd, n - k, offset_dst=got + k)
                got += n
        finally:
            os.close(r)
            os.close(w)
        return got
    view = memoryview(bytearray(CHUNK))
    while got < total:
        n = conn.recv_into(view, min(CHUNK, total - got))
        if n == 0:
            break
        if fd is not None:
            os.write(fd, view[:n])
        got += n
    return got


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--into")
    ap.add_argument("--gather", action="store_true")
    ap.add_argument("--splice", action="store_true")
    a = ap.parse_args()
    if a.splice and not a.into:
        ap.error("--splice needs --into")
    total = a.mb << 20
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

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
    conn, _ = lsock.accept()
    if a.gather:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, CHUNK)
    fd = None
    path = None
    if a.into:
        path = os.path.join(a.into, "loopback-ceiling.%d" % os.getpid())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        got = receive_loop(conn, fd, total, a.splice)
        t = time.monotonic()
    finally:
        if fd is not None:
            os.close(fd)
            os.unlink(path)
        conn.close()
    os.waitpid(child, 0)
    lsock.close()
    print("%.2f" % (got / (t - t0) / 1e9))


if __name__ == "__main__":
    main()
