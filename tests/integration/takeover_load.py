#!/usr/bin/env python3
"""Load on an imgfs mount while its daemon is killed and replaced (test_takeover.sh).

takeover_load.py MOUNT EXPECTED.json WORKDIR [--readers N] [--writers N] [--no-write]
                 [--drop-cache]

EXPECTED.json maps paths below MOUNT to their sha256. Readers hash those files in a loop,
timing every read (the longest one is the longest pause a reader saw); writers append
numbered records to MOUNT/takeover/wN and fsync each one, noting the last one fsynced in
WORKDIR/wN.last. Before the load starts it also opens, for the checks after it: a file for
reading (half read), one for writing, a directory stream (partly read) and a file it
unlinks while open. Then it writes WORKDIR/ready, runs until WORKDIR/stop appears, checks
those, and prints one JSON object: errors (a list of strings; empty when all went well),
reads, max_pause_ms, records (per writer: the last fsynced record). --drop-cache: each
file's pages are dropped from the page cache after it was hashed, so that every pass reads
from the filesystem's daemon (a mount that lets the kernel keep file data). A reader whose
error comes with MNT itself gone (a container's root once the container has ended) says so
and stops.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time

CHUNK = 128 * 1024
errors = []
lock = threading.Lock()
stats = {"reads": 0, "max_pause_ms": 0.0}
drop_cache = False


def error(msg):
    with lock:
        if len(errors) < 50:
            errors.append(msg)


def timed_read(fd, size):
    t = time.monotonic()
    data = os.read(fd, size)
    ms = (time.monotonic() - t) * 1000
    with lock:
        stats["reads"] += 1
        if ms > stats["max_pause_ms"]:
            stats["max_pause_ms"] = ms
    return data


def hash_file(path):
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            b = timed_read(fd, CHUNK)
            if not b:
                break
            h.update(b)
        if drop_cache:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return h.hexdigest()


def gone(path):
    """Whether path no longer exists (a dead FUSE mount is there: ENOTCONN)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        pass
    return False


def reader(mnt, expected, stop, idx):
    paths = sorted(expected)
    i = idx
    while not stop.is_set():
        p = paths[i % len(paths)]
        i += 1
        try:
            got = hash_file(os.path.join(mnt, p))
            if got != expected[p]:
                error("reader %d: %s: sha256 %s, expected %s" % (idx, p, got, expected[p]))
        except OSError as e:
            if gone(mnt):
                # Not the filesystem's doing: MNT itself went away (a container's root
                # through /proc/PID/root, once the container has ended).
                error("reader %d: %s: %s; %s itself is gone" % (idx, p, e, mnt))
                return
            error("reader %d: %s: %s" % (idx, p, e))


def writer(mnt, work, stop, idx):
    path = os.path.join(mnt, "takeover", "w%d" % idx)
    last = os.path.join(work, "w%d.last" % idx)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as e:
        error("writer %d: open: %s" % (idx, e))
        return
    seq = 0
    try:
        while not stop.is_set():
            rec = ("w%d record %08d " % (idx, seq)).encode() + b"x" * 100 + b"\n"
            try:
                t = time.monotonic()
                n = os.write(fd, rec)
                if n != len(rec):
                    error("writer %d: short write %d" % (idx, n))
                    return
                os.fsync(fd)
                ms = (time.monotonic() - t) * 1000
                with lock:
                    if ms > stats["max_pause_ms"]:
                        stats["max_pause_ms"] = ms
            except OSError as e:
                error("writer %d: record %d: %s" % (idx, seq, e))
                return
            with open(last + ".tmp", "w") as f:
                f.write("%d\n" % seq)
            os.rename(last + ".tmp", last)
            seq += 1
            time.sleep(0.002)
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mnt")
    ap.add_argument("expected")
    ap.add_argument("work")
    ap.add_argument("--readers", type=int, default=3)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--drop-cache", action="store_true")
    a = ap.parse_args()
    global drop_cache
    drop_cache = a.drop_cache
    with open(a.expected) as f:
        expected = json.load(f)
    write = not a.no_write

    # Open before the load (and so before any kill), checked after it.
    probe = sorted(expected)[0]
    rfd = os.open(os.path.join(a.mnt, probe), os.O_RDONLY)
    first = os.read(rfd, 4096)
    dirpath = os.path.join(a.mnt, "takeover", "dir") if write else os.path.dirname(
        os.path.join(a.mnt, probe))
    if write:
        os.makedirs(dirpath, exist_ok=True)
        for i in range(400):
            open(os.path.join(dirpath, "entry-with-a-long-name-%04d" % i), "w").close()
        wfd = os.open(os.path.join(a.mnt, "takeover", "open-for-writing"),
                      os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(wfd, b"before\n")
        gone = os.path.join(a.mnt, "takeover", "deleted-but-open")
        with open(gone, "wb") as f:
            f.write(b"kept data\n" * 1000)
        gfd = os.open(gone, os.O_RDONLY)
        os.unlink(gone)
    want_names = sorted(os.listdir(dirpath))
    it = os.scandir(dirpath)
    seen = [next(it).name for _ in range(min(10, len(want_names)))]

    stop = threading.Event()
    threads = [threading.Thread(target=reader, args=(a.mnt, expected, stop, i))
               for i in range(a.readers)]
    if write:
        threads += [threading.Thread(target=writer, args=(a.mnt, a.work, stop, i))
                    for i in range(a.writers)]
    for t in threads:
        t.start()
    open(os.path.join(a.work, "ready"), "w").close()
    while not os.path.exists(os.path.join(a.work, "stop")):
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()

    # What was open across every kill.
    try:
        rest = b"".join(iter(lambda: os.read(rfd, CHUNK), b""))
        if hashlib.sha256(first + rest).hexdigest() != expected[probe]:
            error("the file open for reading across the kills read wrong")
    except OSError as e:
        error("the file open for reading across the kills: %s" % e)
    try:
        seen += [e.name for e in it]
        if sorted(seen) != want_names:
            error("the directory stream across the kills listed %d names, expected %d" %
                  (len(seen), len(want_names)))
    except OSError as e:
        error("the directory stream across the kills: %s" % e)
    if write:
        try:
            os.write(wfd, b"after\n")
            os.fsync(wfd)
            os.close(wfd)
            with open(os.path.join(a.mnt, "takeover", "open-for-writing"), "rb") as f:
                if f.read() != b"before\nafter\n":
                    error("the file open for writing across the kills has wrong data")
        except OSError as e:
            error("the file open for writing across the kills: %s" % e)
        try:
            data = b"".join(iter(lambda: os.read(gfd, CHUNK), b""))
            if data != b"kept data\n" * 1000:
                error("the deleted-but-open file lost its data (%d bytes)" % len(data))
        except OSError as e:
            error("the deleted-but-open file: %s" % e)
    records = {}
    for i in range(a.writers if write else 0):
        try:
            with open(os.path.join(a.work, "w%d.last" % i)) as f:
                records["w%d" % i] = int(f.read())
        except OSError:
            records["w%d" % i] = -1
    json.dump({"errors": errors, "reads": stats["reads"],
               "max_pause_ms": round(stats["max_pause_ms"], 1), "records": records},
              sys.stdout)
    print()


if __name__ == "__main__":
    main()
