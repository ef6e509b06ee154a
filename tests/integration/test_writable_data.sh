#!/bin/sh
# The data path of the writable mount: the same writes in the mount and in a plain copy of
# the image's tree must give the same bytes (sha256 of every file written), after the
# writes, after an umount and a mount, and after a daemon killed with SIGKILL (a write
# that returned is in the upper file: nothing written is lost, fsync or not).
#
# Writes: 40 MiB in order in chunks of 1 MiB and of odd sizes (requests larger than a page
# are spliced from the kernel into the upper file, smaller ones copied; in-order stretches
# start their writeback early), pwrite at scattered offsets and past the end (holes),
# O_APPEND, a file opened for reading before its copy-up and written through a second
# descriptor (the first must read the new bytes), O_TRUNC of an image file, truncation
# down and up followed by writes in order over the truncated range, one range rewritten
# many times, O_DIRECT, a shared mapping written and msynced, and a reader and a mapping
# holding pages of a file that a write-only descriptor then writes (they see the change).
#
# WRITABLE_DIFF_SELFTEST=1 runs the mount side on the kernel's overlayfs instead of imgfs
# (no daemon to kill there: that step is then an umount and a mount).
set -u

. "$(dirname "$0")/writable_lib.sh"

writable_require

writable_workdir wdata

layout=$WORK/layout
# busybox and /big/random-1.bin, 24 MiB of incompressible data
sh "$TOP/contrib/mkimage.sh" big "$layout:data" 24 >/dev/null || fail "mkimage.sh failed"
umoci unpack --image "$layout:data" "$WORK/lowerbundle" >/dev/null || fail "umoci unpack failed"
lower=$WORK/lowerbundle/rootfs
mnt=$WORK/mnt
upper=$WORK/upper

writable_mount() {
	writable_side "$mnt" "$upper" "$lower" "oci:$layout:data"
}

# writes ROOT ROUND: the writes of round 1 or 2 (round 2 on the files round 1 left).
writes() {
	python3 - "$1" "$2" <<'EOF'
import mmap, os, random, sys

root, rnd = sys.argv[1], int(sys.argv[2])
rng = random.Random(rnd)
d = os.path.join(root, "data")
os.makedirs(d, exist_ok=True)

def data(n):
    return rng.randbytes(n)

def pwrite_all(fd, buf, off):
    while buf:
        n = os.pwrite(fd, buf, off)
        buf, off = buf[n:], off + n

def write_all(fd, buf):
    while buf:
        buf = buf[os.write(fd, buf):]

def check(cond, what):
    if not cond:
        sys.exit("%s: %s" % (root, what))

seq = os.path.join(d, "seq.bin")
if rnd == 1:
    # In order: 1 MiB chunks, then odd sizes across page boundaries.
    fd = os.open(seq, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for _ in range(32):
        write_all(fd, data(1 << 20))
    for n in (1, 4095, 4097, 65536 + 17, 1048576 + 123, 3 << 20, 100, 2 << 20):
        write_all(fd, data(n))
    os.fsync(fd)
    os.close(fd)
    # Scattered offsets, some past the end (holes between).
    fd = os.open(seq, os.O_RDWR)
    for _ in range(40):
        pwrite_all(fd, data(rng.choice([1, 512, 4096, 70000, 1 << 20])),
                   rng.randrange(0, 48 << 20))
    os.close(fd)
    # O_APPEND: large and small appends.
    fd = os.open(os.path.join(d, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    for n in (300 << 10, 10, 5 << 20, 4096, 1):
        write_all(fd, data(n))
    os.close(fd)
    # An image file opened before its copy-up, written through a second descriptor.
    img = os.path.join(root, "big/random-1.bin")
    ro = os.open(img, os.O_RDONLY)
    os.pread(ro, 1 << 20, 5 << 20)
    rw = os.open(img, os.O_RDWR)
    chunk = data(9 << 20)
    pwrite_all(rw, chunk, 3 << 20)
    pwrite_all(rw, data(4000), 23 << 20)
    check(os.pread(ro, 9 << 20, 3 << 20) == chunk,
          "a descriptor opened before the copy-up does not read the new data")
    os.close(rw)
    os.close(ro)
    # O_TRUNC of an image file (copied up without its data), then written.
    fd = os.open(os.path.join(root, "bin/busybox"), os.O_WRONLY | os.O_TRUNC)
    write_all(fd, data(12 << 20))
    os.close(fd)
    # One range rewritten many times, as a database page would be.
    fd = os.open(os.path.join(d, "db"), os.O_RDWR | os.O_CREAT, 0o644)
    for i in range(24):
        pwrite_all(fd, data(1 << 20), (i % 3) << 20)
        if i % 8 == 7:
            os.fdatasync(fd)
    os.close(fd)
else:
    # Truncate down, then in order over the truncated range and beyond; truncate up.
    fd = os.open(seq, os.O_RDWR)
    os.ftruncate(fd, (5 << 20) + 17)
    os.lseek(fd, 0, os.SEEK_END)
    for _ in range(20):
        write_all(fd, data(1 << 20))
    os.ftruncate(fd, 60 << 20)
    pwrite_all(fd, data(3 << 20), 58 << 20)
    os.close(fd)
    fd = os.open(seq, os.O_WRONLY | os.O_TRUNC)
    for _ in range(10):
        write_all(fd, data(1 << 20))
    os.ftruncate(fd, 7 << 20)
    os.close(fd)
    # O_DIRECT, from an aligned buffer.
    fd = os.open(os.path.join(d, "direct"), os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    buf = mmap.mmap(-1, 2 << 20)
    for i in range(4):
        buf[:] = data(2 << 20)
        check(os.pwritev(fd, [buf], i << 21) == 2 << 20, "short O_DIRECT write")
    os.close(fd)
    # A shared mapping of an upper file, written and msynced (writes from the page cache).
    p = os.path.join(d, "log")
    fd = os.open(p, os.O_RDWR)
    size = os.fstat(fd).st_size
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for _ in range(30):
        off = rng.randrange(0, size - 5000)
        m[off:off + 5000] = data(5000)
    m.flush()
    m.close()
    os.close(fd)
    # More appends after the mapping.
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    write_all(fd, data(2 << 20))
    os.close(fd)
    # A reader and a mapping hold pages of a file that a write-only descriptor (direct I/O
    # in the mount) then writes: both must see the new bytes.
    p = os.path.join(d, "shared")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    write_all(fd, data(4 << 20))
    os.close(fd)
    ro = os.open(p, os.O_RDONLY)
    os.pread(ro, 4 << 20, 0)
    m = mmap.mmap(ro, 4 << 20, mmap.MAP_SHARED, mmap.PROT_READ)
    m[:]
    wo = os.open(p, os.O_WRONLY)
    new = data((1 << 20) + 100)
    pwrite_all(wo, new, (1 << 20) + 7)
    os.close(wo)
    check(os.pread(ro, len(new), (1 << 20) + 7) == new, "a reader reads stale bytes")
    check(m[(1 << 20) + 7:(2 << 20) + 107] == new, "a mapping shows stale bytes")
    m.close()
    os.close(ro)
EOF
}

# sums ROOT: sha256 and size of every file written.
sums() {
	(cd "$1" && for f in data/seq.bin data/log data/db data/direct data/shared big/random-1.bin bin/busybox; do
		[ -e "$f" ] || continue
		printf '%s %s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$(stat -c %s "$f")" "$f"
	done)
}

# check LABEL ROUND: the mount has the bytes of the plain directory after round ROUND.
check() {
	sums "$mnt" >"$WORK/sums.mnt" || fail "$1: cannot read the files in the mount"
	if ! cmp -s "$WORK/sums.local$2" "$WORK/sums.mnt"; then
		diff "$WORK/sums.local$2" "$WORK/sums.mnt" >&2
		fail "$1: the mount's bytes differ from the same writes on a plain directory" \
			"(< plain directory, > mount)"
	fi
}

# kill_and_remount: the daemon killed with SIGKILL (no sync), then a new mount.
kill_and_remount() {
	if [ "$SELFTEST" = 1 ]; then
		writable_umount "$mnt"
	else
		state=$(ls "$IMGFS_ROOT"/mounts/*/state 2>/dev/null | head -n 1)
		[ -n "$state" ] || fail "no state file under $IMGFS_ROOT/mounts"
		pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$state") ||
			fail "no pid in $state"
		kill -KILL "$pid" || fail "cannot kill the daemon $pid"
		"$IMGFS" umount "$mnt" || fail "imgfs umount after SIGKILL failed"
	fi
	writable_mount
}

local=$WORK/local
cp -a "$lower" "$local" || fail "cannot copy the image's tree"
writes "$local" 1 || fail "round 1 failed on the plain directory"
sums "$local" >"$WORK/sums.local1"
writes "$local" 2 || fail "round 2 failed on the plain directory"
sums "$local" >"$WORK/sums.local2"

writable_mount
writes "$mnt" 1 || fail "round 1 failed in the mount"
check "after round 1" 1
echo "round 1: same bytes as on a plain directory"
writable_umount "$mnt"
writable_mount
check "round 1, after umount and mount" 1
echo "round 1: same bytes after a remount"

writes "$mnt" 2 || fail "round 2 failed in the mount"
check "after round 2" 2
echo "round 2: same bytes as on a plain directory"
kill_and_remount
check "round 2, after a killed daemon and a new mount" 2
echo "round 2: same bytes after SIGKILL of the daemon and a remount"
writable_umount "$mnt"
echo "ok"
