#!/bin/bash
# A full disk. During a pull (the store on an 8 MiB tmpfs, the image 12 MiB): one clear
# line saying "No space left on device" and naming what could not be written, a consistent
# store, and once there is room the pull completes. During writes to the writable layer
# (--upper on a 4 MiB tmpfs): the writer gets ENOSPC, the daemon lives on, what was
# written before is intact, space freed can be used again, and everything is still there
# after umount and mount.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_root
[ -c /dev/fuse ] || skip "no /dev/fuse"
require_cmd fusermount3

LOAD="$HELPERS/crashload.py"
start_registry
build_image big big 12 2
push_image "$TESTDIR/images:big" test/big:latest
ref=$REGISTRY/test/big:latest
digest=$(oci_digest "$TESTDIR/images" big)

# pid_alive PID: running, not a zombie (whoever adopted the daemon may reap it late).
pid_alive() {
	local state
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# small_tmpfs DIR SIZE: a tmpfs of SIZE at DIR, unmounted when the test exits.
small_tmpfs() {
	mkdir -p "$1"
	mount -t tmpfs -o "size=$2,mode=755" imgfs-test "$1" || skip "cannot mount a tmpfs"
	defer umount -l "$1"
}

log "pull into a store on an 8 MiB tmpfs"
small_tmpfs "$TESTDIR/small" 8m
export IMGFS_ROOT=$TESTDIR/small/store
assert_fails_one_line "No space left on device" timeout 60 "$IMGFS_BIN" pull -q "$ref"
# The line names the file or blob that could not be written.
grep -Eq "sha256:[0-9a-f]{12}|[0-9a-f]{64}|index\.json|tmp/|idx/|trees/|blobs/" <<<"$ERR" ||
	fail "the error does not say what could not be written: $ERR"
[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "refs after a full disk"
[ ! -f "$IMGFS_ROOT/index.json" ] || check_store_consistent
df -h "$TESTDIR/small" | tail -n 1

log "pull again while still full: the same clear error, nothing broken"
assert_fails_one_line "No space left on device" timeout 60 "$IMGFS_BIN" pull -q "$ref"
[ ! -f "$IMGFS_ROOT/index.json" ] || check_store_consistent

log "a store on a 2 MiB tmpfs: a layer blob does not fit"
small_tmpfs "$TESTDIR/tiny" 2m
IMGFS_ROOT=$TESTDIR/tiny/store assert_fails_one_line "No space left on device" \
	timeout 60 "$IMGFS_BIN" pull -q "$ref"
grep -Eq "sha256:[0-9a-f]{12}|[0-9a-f]{64}" <<<"$ERR" || fail "the error names no blob: $ERR"

log "room made: the pull completes"
mount -o remount,size=64m "$TESTDIR/small" || fail "cannot grow the tmpfs"
assert_ok timeout 60 "$IMGFS_BIN" pull -q "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent

log "the writable layer on a 4 MiB tmpfs"
small_tmpfs "$TESTDIR/upperfs" 4m
upper=$TESTDIR/upperfs/upper
mnt=$TESTDIR/mnt
mkdir -p "$mnt"
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
pid=$(imgfs status "$mnt" | sed -n 's/^daemon-pid: //p') # the worker serving it
echo "written before the disk filled" >"$mnt/before.txt"
echo "copied up" >>"$mnt/etc/hostname"
expected_hostname=$(cat "$mnt/etc/hostname")
sync

assert_ok timeout 30 "$PYTHON" "$LOAD" fill "$mnt/big.bin"
read -r filled err <<<"$OUT"
log "wrote $filled bytes, then $err"
assert_eq "$err" ENOSPC "the writer's error"
[ "$filled" -gt $((1 << 20)) ] || fail "only $filled bytes fit in a 4 MiB upper"
pid_alive "$pid" || fail "the daemon died"
assert_eq "$(cat "$mnt/before.txt")" "written before the disk filled" "before.txt"
assert_eq "$(cat "$mnt/etc/hostname")" "$expected_hostname" "/etc/hostname"
size=$(stat -c %s "$mnt/big.bin")
[ "$size" -ge $((filled - 65536)) ] || fail "big.bin is $size bytes, $filled were written"
cmp -s -n "$filled" "$mnt/big.bin" <("$PYTHON" -c '
import sys
block = bytes(range(256)) * 256
n = int(sys.argv[1])
while n > 0:
    sys.stdout.buffer.write(block[:n]); n -= len(block)' "$filled") ||
	fail "big.bin does not hold what was written"

log "a new file while full: ENOSPC, and the daemon answers"
if echo more >"$mnt/after.txt" 2>"$TESTDIR/after.err"; then
	# tmpfs may still find room for a tiny file
	log "a small file still fit"
else
	assert_contains "$(cat "$TESTDIR/after.err")" "No space left on device" "error writing after.txt"
fi
ls "$mnt/bin" >/dev/null || fail "the mount stopped answering"

log "space freed is usable again"
rm "$mnt/big.bin"
head -c $((1 << 20)) /dev/urandom >"$TESTDIR/onemeg"
cp "$TESTDIR/onemeg" "$mnt/one.bin" || fail "cannot write after freeing space"
cmp -s "$TESTDIR/onemeg" "$mnt/one.bin" || fail "one.bin differs"

log "umount and mount again: everything is there"
assert_ok imgfs umount "$mnt"
! pid_alive "$pid" || fail "daemon $pid still running after umount"
assert_ok imgfs mount --upper "$upper" "$ref" "$mnt"
assert_eq "$(cat "$mnt/before.txt")" "written before the disk filled" "before.txt after remount"
assert_eq "$(cat "$mnt/etc/hostname")" "$expected_hostname" "/etc/hostname after remount"
cmp -s "$TESTDIR/onemeg" "$mnt/one.bin" || fail "one.bin differs after remount"
assert_no_file "$mnt/big.bin"
assert_ok imgfs umount "$mnt"
