#!/usr/bin/python3
"""Load generators for the crash tests (tests/integration/test_crash_mount.sh).

    crashload.py read MANIFEST ROOT STOPFILE RESULT
        Reads every file listed in MANIFEST (lines "SHA256 SIZE PATH", PATH relative to
        ROOT) again and again, in a shuffled order, until STOPFILE exists. Writes to RESULT
        one line per file read: "ok PATH", "wrong PATH" (bytes that do not match the
        manifest) or "err ERRNO_NAME PATH".

    crashload.py write FILE PROGRESS STOPFILE
        Appends numbered 4 KiB records to FILE, fsync after each one, until a write or an
        fsync fails or STOPFILE exists. After each fsync that returned, PROGRESS is
        rewritten with the number of records made durable. Exit status 0 when stopped by
        STOPFILE, 1 when the file system failed (the error is printed).

    crashload.py check FILE MIN
        Checks that FILE holds at least MIN records, each one intact and in order (a
        partial last record, written but not fsynced, is allowed). Prints the count.

    crashload.py fill FILE
        Writes 64 KiB blocks of a pattern to FILE until a write fails; prints
        "BYTES ERRNO_NAME". Nothing is fsynced.
"""

import errno
import hashlib
import os
import random
import sys

RECORD = 4096


def record(i):
    head = b"record %012d " % i
    body = hashlib.sha256(head).hexdigest().encode() * (RECORD // 64)
    return (head + body)[:RECORD - 1] + b"\n"


def cmd_read(manifest, root, stopfile, result):
    files = []
    with open(manifest) as f:
        for line in f:
            digest, size, path = line.rstrip("\n").split(" ", 2)
            files.append((digest, path))
    with open(result, "a", buffering=1) as out:
        while not os.path.exists(stopfile):
            random.shuffle(files)
            for digest, path in files:
                if os.path.exists(stopfile):
                    break
                h = hashlib.sha256()
                try:
                    with open(os.path.join(root, path), "rb", buffering=0) as f:
                        while True:
                            b = f.read(128 << 10)
                            if not b:
                                break
                            h.update(b)
                except OSError as e:
                    out.write("err %s %s\n" % (errno.errorcode.get(e.errno, e.errno), path))
                    continue
                out.write("%s %s\n" % ("ok" if h.hexdigest() == digest else "wrong", path))


def cmd_write(path, progress, stopfile):
    i = 0
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        while not os.path.exists(stopfile):
            os.write(fd, record(i))
            os.fsync(fd)
            i += 1
            with open(progress + ".tmp", "w") as p:
                p.write("%d\n" % i)
            os.rename(progress + ".tmp", progress)
    except OSError as e:
        print("writer stopped after %d durable records: %s" % (i, e))
        return 1
    return 0


def cmd_check(path, minimum):
    data = open(path, "rb").read()
    n = len(data) // RECORD
    for i in range(n):
        if data[i * RECORD:(i + 1) * RECORD] != record(i):
            sys.exit("record %d of %s is damaged" % (i, path))
    tail = data[n * RECORD:]
    if tail and not record(n).startswith(tail):
        sys.exit("the partial record %d of %s is damaged" % (n, path))
    if n < minimum:
        sys.exit("%s holds %d records, %d were fsynced" % (path, n, minimum))
    print(n)
    return 0


def cmd_fill(path):
    block = bytes(range(256)) * 256
    written = 0
    err = "none"
    try:
        with open(path, "wb", buffering=0) as f:
            while True:
                written += f.write(block)
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    print(written, err)
    return 0


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "read":
        return cmd_read(*args)
    if cmd == "write":
        return cmd_write(*args)
    if cmd == "check":
        return cmd_check(args[0], int(args[1]))
    if cmd == "fill":
        return cmd_fill(*args)
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
