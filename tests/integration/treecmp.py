#!/usr/bin/env python3
"""Compare two directory trees attribute by attribute.

    treecmp.py [--no-mtime] [--no-root] [--no-dir-mtime] [--ignore-xattr PREFIX]...
               [--exclude PATH]... EXPECTED ACTUAL

For every path under either tree (symlinks are not followed): presence, file type,
permission bits including setuid/setgid/sticky, owner, group, size and sha256 of regular
files, symlink target, device numbers, extended attributes (names and values), hardlink
groups (paths sharing an inode in one tree must share one in the other, and only those),
and mtime to the nanosecond. Prints one line per difference and exits 1 when there is
any, 0 when the trees match, 2 on a usage error.
"""
import argparse
import hashlib
import os
import stat
import sys


def file_type(mode):
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "char"), (stat.S_ISBLK, "block"), (stat.S_ISFIFO, "fifo"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def xattrs_of(path, ignored):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        if any(name.startswith(p) for p in ignored):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as e:
            out[name] = "<error %s>" % e.strerror
    return out


def walk(root, excluded):
    """Returns {relative path: lstat result}; "." is the root itself."""
    entries = {".": os.lstat(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel in excluded or any(rel.startswith(e + "/") for e in excluded):
                continue
            entries[rel] = os.lstat(os.path.join(root, rel))
        dirnames[:] = [d for d in dirnames
                       if os.path.normpath(os.path.join(rel_dir, d)) not in excluded]
    return entries


def link_groups(entries):
    """Maps each non-directory path with st_nlink > 1 to the sorted tuple of its group."""
    by_inode = {}
    for rel, st in entries.items():
        if not stat.S_ISDIR(st.st_mode):
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
    groups = {}
    for paths in by_inode.values():
        if len(paths) > 1:
            group = tuple(sorted(paths))
            for p in paths:
                groups[p] = group
    return groups


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("expected")
    ap.add_argument("actual")
    ap.add_argument("--no-mtime", action="store_true", help="do not compare mtimes")
    ap.add_argument("--no-dir-mtime", action="store_true",
                    help="do not compare the mtimes of directories")
    ap.add_argument("--no-root", action="store_true",
                    help="do not compare the attributes of the two roots")
    ap.add_argument("--ignore-xattr", action="append", default=[], metavar="PREFIX")
    ap.add_argument("--exclude", action="append", default=[], metavar="PATH",
                    help="relative path to leave out, with everything below it")
    ap.add_argument("--max-diffs", type=int, default=200)
    args = ap.parse_args()

    excluded = {os.path.normpath(e) for e in args.exclude}
    a = walk(args.expected, excluded)
    b = walk(args.actual, excluded)
    diffs = []

    def diff(rel, what, x, y):
        diffs.append("%s: %s: expected %r, got %r" % (rel, what, x, y))

    for rel in sorted(set(a) | set(b)):
        if rel not in b:
            diffs.append("%s: missing" % rel)
            continue
        if rel not in a:
            diffs.append("%s: unexpected" % rel)
            continue
        if rel == "." and args.no_root:
            continue
        sa, sb = a[rel], b[rel]
        ta, tb = file_type(sa.st_mode), file_type(sb.st_mode)
        if ta != tb:
            diff(rel, "type", ta, tb)
            continue
        if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
            diff(rel, "mode", oct(stat.S_IMODE(sa.st_mode)), oct(stat.S_IMODE(sb.st_mode)))
        if sa.st_uid != sb.st_uid:
            diff(rel, "uid", sa.st_uid, sb.st_uid)
        if sa.st_gid != sb.st_gid:
            diff(rel, "gid", sa.st_gid, sb.st_gid)
        pa = os.path.join(args.expected, rel)
        pb = os.path.join(args.actual, rel)
        if ta == "file":
            if sa.st_size != sb.st_size:
                diff(rel, "size", sa.st_size, sb.st_size)
            else:
                try:
                    ha, hb = sha256_of(pa), sha256_of(pb)
                    if ha != hb:
                        diff(rel, "sha256", ha, hb)
                except OSError as e:
                    diffs.append("%s: cannot read: %s" % (rel, e))
        elif ta == "symlink":
            la, lb = os.readlink(pa), os.readlink(pb)
            if la != lb:
                diff(rel, "target", la, lb)
        elif ta in ("char", "block"):
            da = (os.major(sa.st_rdev), os.minor(sa.st_rdev))
            db = (os.major(sb.st_rdev), os.minor(sb.st_rdev))
            if da != db:
                diff(rel, "device", da, db)
        xa, xb = xattrs_of(pa, args.ignore_xattr), xattrs_of(pb, args.ignore_xattr)
        if xa != xb:
            diff(rel, "xattrs", xa, xb)
        check_mtime = not args.no_mtime and not (ta == "dir" and args.no_dir_mtime)
        # Symlink mtimes are not restored by every unpacker; compare them only to the second.
        if check_mtime and ta == "symlink":
            if int(sa.st_mtime) != int(sb.st_mtime):
                diff(rel, "mtime", int(sa.st_mtime), int(sb.st_mtime))
        elif check_mtime and sa.st_mtime_ns != sb.st_mtime_ns:
            diff(rel, "mtime_ns", sa.st_mtime_ns, sb.st_mtime_ns)

    ga, gb = link_groups(a), link_groups(b)
    for rel in sorted(set(ga) | set(gb)):
        if rel in a and rel in b and ga.get(rel) != gb.get(rel):
            diff(rel, "hardlink group", ga.get(rel), gb.get(rel))

    for line in diffs[:args.max_diffs]:
        print(line)
    if len(diffs) > args.max_diffs:
        print("... and %d more differences" % (len(diffs) - args.max_diffs))
    if diffs:
        print("treecmp: %d differences between %s and %s" % (len(diffs), args.expected,
                                                             args.actual), file=sys.stderr)
        return 1
    print("treecmp: %d paths match" % len(a), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
