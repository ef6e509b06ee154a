#!/bin/bash
# Copy-up without a synchronous fdatasync, and what keeps it crash-safe. A copied-up file
# keeps a pending name in the work directory (a hidden sibling of --upper) until the
# daemon's syncer made its data durable; IMGFS_TEST_SYNC_DELAY_MS holds the syncer so the
# tests can look at a pending file:
# - the user sees st_nlink 1, link/unlink count as usual, and fsync removes the pending
#   name before it returns; a clean umount syncs what is still pending;
# - SIGKILL of the daemon right after a copy-up: the next mount (same boot) keeps the
#   lower's content plus the written byte and removes the pending name;
# - a simulated power loss (data zeroed, the pending name renamed to another boot): the
#   next mount rewrites the lower's content; for a pending name of another image the data
#   is left alone;
# - a large sparse file, copied as two halves by two threads: the same bytes, and its
#   holes stay holes.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root
[ -c /dev/fuse ] || skip "no /dev/fuse"
require_cmd umoci fusermount3 jq

build_image big img 16 1
ref="oci:$TESTDIR/images:img"
mnt=$TESTDIR/mnt
upper=$TESTDIR/upper
work=$TESTDIR/.upper.imgfs-work
file=big/random-1.bin
mkdir -p "$mnt" "$upper"
HELD=600000

umoci unpack --image "$TESTDIR/images:img" "$TESTDIR/bundle" >/dev/null ||
	fail "umoci unpack failed"
lower=$TESTDIR/bundle/rootfs/$file
# The expected content after a 1-byte write of a zero at offset 0.
cp "$lower" "$TESTDIR/written"
printf '\0' | dd of="$TESTDIR/written" bs=1 count=1 conv=notrunc status=none
cmp -s "$lower" "$TESTDIR/written" && fail "the image file starts with a zero byte"

pending() { find "$work" -maxdepth 1 -name 'p-*' -printf '%f\n' 2>/dev/null | sort; }
daemon_pid() { jq -er .pid "$IMGFS_ROOT"/mounts/*/state; }
mount_held() {
	IMGFS_TEST_SYNC_DELAY_MS=$HELD assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
}
copy_up() { dd if=/dev/zero of="$mnt/$file" bs=1 count=1 conv=notrunc status=none; }
kill_daemon() {
	local pid
	pid=$(daemon_pid)
	kill -KILL "$pid"
	while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	assert_ok timeout 20 "$IMGFS_BIN" umount "$mnt"
}
reset_upper() { rm -rf "$upper" "$work" && mkdir -p "$upper"; }

log "a pending copy: nlink, link, unlink, fsync"
mount_held
copy_up
[ "$(pending | wc -l)" = 1 ] || fail "no pending name after the copy-up: $(ls -a "$work")"
assert_eq "$(stat -c %h "$upper/$file")" 2 "links of the pending upper file"
assert_eq "$(stat -c %h "$mnt/$file")" 1 "st_nlink seen through the mount"
ln "$mnt/$file" "$mnt/big/link"
assert_eq "$(stat -c %h "$mnt/$file")" 2 "st_nlink after link"
assert_eq "$(stat -c %h "$mnt/big/link")" 2 "st_nlink of the new link"
rm "$mnt/big/link"
assert_eq "$(stat -c %h "$mnt/$file")" 1 "st_nlink after unlink"
[ "$(pending | wc -l)" = 1 ] || fail "the pending name went before the syncer ran"
"$PYTHON" -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.fsync(fd)
os.close(fd)' "$mnt/$file"
[ -z "$(pending)" ] || fail "fsync returned with the pending name still there: $(pending)"
assert_eq "$(stat -c %h "$upper/$file")" 1 "links of the upper file after fsync"
assert_eq "$(stat -c %h "$mnt/$file")" 1 "st_nlink after fsync"
cmp "$mnt/$file" "$TESTDIR/written" || fail "the copied-up file differs"
# Another copy, still pending at umount: umount makes it durable first.
dd if=/dev/zero of="$mnt/bin/busybox" bs=1 count=0 conv=notrunc status=none
[ "$(pending | wc -l)" = 1 ] || fail "no pending name for the second copy-up"
assert_ok imgfs umount "$mnt"
[ ! -e "$work" ] || fail "umount left the work directory: $(ls -a "$work")"
assert_eq "$(stat -c %h "$upper/bin/busybox")" 1 "links of a copy synced at umount"

log "SIGKILL right after a copy-up, mount again (same boot)"
reset_upper
mount_held
copy_up
[ "$(pending | wc -l)" = 1 ] || fail "no pending name after the copy-up"
kill_daemon
[ "$(pending | wc -l)" = 1 ] || fail "the pending name did not survive the kill"
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
[ -z "$(pending)" ] || fail "the mount left the pending name: $(pending)"
assert_eq "$(stat -c %h "$upper/$file")" 1 "links of the recovered file"
cmp "$mnt/$file" "$TESTDIR/written" || fail "the recovered file is not the lower plus the byte"
assert_ok imgfs umount "$mnt"

# crash_with_zeros IMAGE: a copy-up, a killed daemon, then what a power loss may leave:
# the file's data zeroed and the pending name from another boot (and image IMAGE, or
# this one when empty).
crash_with_zeros() {
	local name new boot img size
	reset_upper
	mount_held
	copy_up
	kill_daemon
	name=$(pending)
	[ -n "$name" ] || fail "no pending name after the kill"
	size=$(stat -c %s "$upper/$file")
	dd if=/dev/zero of="$upper/$file" bs=1M count=$((size >> 20)) conv=notrunc status=none
	boot=$(tr -d '-' </proc/sys/kernel/random/boot_id | cut -c1-16)
	new=0000000000000000
	[ "$boot" = "$new" ] && new=1111111111111111
	img=${name:19:12}
	[ -n "$1" ] && img=$1
	mv "$work/$name" "$work/p-$new-$img-${name:32}"
	sync
}

log "simulated power loss: the data is rewritten from the image"
crash_with_zeros ""
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
[ -z "$(pending)" ] || fail "the mount left the pending name: $(pending)"
cmp "$mnt/$file" "$lower" || fail "the file was not rewritten from the image"
assert_contains "$ERR" "rewritten after a crash" "mount warnings"
assert_ok imgfs umount "$mnt"

log "simulated power loss, pending name of another image: left alone"
crash_with_zeros 0123456789ab
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
[ -z "$(pending)" ] || fail "the mount left the pending name: $(pending)"
cmp -s "$mnt/$file" "$lower" && fail "a pending name of another image was rewritten"
[ -z "$(tr -d '\0' <"$mnt/$file" | head -c 1)" ] || fail "the zeroed data changed"
assert_contains "$ERR" "this is image" "mount warnings"
assert_ok imgfs umount "$mnt"
log "a 40 MiB sparse file with data across the middle: bytes and holes kept"
mkdir -p "$TESTDIR/sparse/sp"
"$PYTHON" - "$TESTDIR/sparse/sp/file" <<'EOF2' || fail "cannot write the sparse file"
import os, random, sys
rnd = random.Random(7)
with open(sys.argv[1], "wb") as f:
    f.truncate(40 << 20)
    for off, n in ((0, 1 << 20), ((20 << 20) - 4096, 8192 + 12345), ((40 << 20) - 777, 777)):
        f.seek(off)
        f.write(rnd.randbytes(n))
EOF2
(cd "$TESTDIR/sparse" && tar --sparse --format=posix --sparse-version=1.0 --owner=0 --group=0 \
	-cf ../sparse.tar sp) || fail "tar --sparse failed"
"$PYTHON" "$IMGFS_TOP/tests/integration/mklayers.py" wrap "$TESTDIR/images" sparse \
	--base "$TESTDIR/images:img" "$TESTDIR/sparse.tar" || fail "mklayers.py wrap failed"
reset_upper
assert_ok imgfs mount --upper "$upper" "oci:$TESTDIR/images:sparse" "$mnt"
cp --sparse=always "$TESTDIR/sparse/sp/file" "$TESTDIR/sparse-written"
printf '\0' | dd of="$TESTDIR/sparse-written" bs=1 count=1 conv=notrunc status=none
dd if=/dev/zero of="$mnt/sp/file" bs=1 count=1 conv=notrunc status=none
cmp "$mnt/sp/file" "$TESTDIR/sparse-written" || fail "the copied-up sparse file differs"
"$PYTHON" - "$upper/sp/file" "$TESTDIR/sparse/sp/file" <<'EOF2' || fail "holes lost in the copy"
import os, sys
def data_map(path):
    fd, out, off = os.open(path, os.O_RDONLY), [], 0
    size = os.fstat(fd).st_size
    while off < size:
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError:
            break
        h = os.lseek(fd, d, os.SEEK_HOLE)
        out.append((d // 4096, -(-h // 4096)))
        off = h
    return out
a, b = data_map(sys.argv[1]), data_map(sys.argv[2])
if a != b:
    sys.exit("data map of the upper copy %r, of the original %r" % (a, b))
EOF2
assert_ok imgfs umount "$mnt"
log "ok"
