#!/bin/sh
# The decoded-data cache: a second mount of an image reads what the first one inflated
# from ROOT/cache instead of inflating it again (`imgfs status` counts both), with the same
# bytes; damaged entries are ignored, not served; a daemon killed while filling the cache
# leaves nothing that serves wrong bytes; $IMGFS_CACHE_MAX bounds it (0: off); `imgfs
# images` reports it and `imgfs gc` drops it with the image.
set -u
. "$(dirname "$0")/mount_lib.sh"

layout=$WORK/layout
build_fixture "$layout" fixture
umoci unpack --image "$layout:fixture" "$WORK/ref" >/dev/null || fail "umoci unpack failed"
(cd "$WORK/ref/rootfs" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/sums.ref"
mnt=$WORK/mnt
ref=oci:$layout:fixture
cache=$IMGFS_ROOT/cache/sha256

# field MOUNTPOINT KEY: a number from `imgfs status` (the daemon writes its figures every
# quarter of a second).
field() {
	sleep 0.6
	"$IMGFS" status "$1" | sed -n "s/^$2: //p"
}

# checked_mount [ENV...]: mounts (writable, the default), checksums every file, compares.
checked_mount() {
	mkdir -p "$mnt"
	track_mount "$mnt"
	env "$@" "$IMGFS" mount "$ref" "$mnt" || fail "imgfs mount $ref failed"
	(cd "$mnt" && find . -type f -exec sha256sum {} + | sort -k2) >"$WORK/sums.mnt"
	cmp -s "$WORK/sums.ref" "$WORK/sums.mnt" || fail "the mount served different bytes"
}

umount_it() {
	"$IMGFS" umount "$mnt" || fail "umount failed"
}

# 1. First mount: inflates, and stores what it inflated.
checked_mount
units=$(field "$mnt" decoded-units)
stored=$(field "$mnt" decoded-cache-stored)
[ "${units:-0}" -gt 0 ] || fail "first mount: decoded-units '$units'"
[ "${stored:-0}" -gt 0 ] || fail "first mount: nothing stored in the cache"
umount_it
[ -n "$(ls "$cache")" ] || fail "no cache in $cache"
"$IMGFS" images >"$WORK/images" || fail "imgfs images failed"
grep -Eq 'decoded-data cache: [1-9]' "$WORK/images" || fail "imgfs images: $(cat "$WORK/images")"

# 2. Second mount: the same bytes, nothing inflated.
checked_mount
[ "$(field "$mnt" decoded-units)" = 0 ] || fail "second mount inflated again"
[ "$(field "$mnt" decoded-cache-hits)" -gt 0 ] || fail "second mount: no cache hits"
umount_it

# 3. Every entry damaged (one byte of its data flipped): never served, decoded again.
find "$cache" -type f ! -name '.tmp-*' | while read -r f; do
	python3 - "$f" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(8192)
    b = f.read(1)
    f.seek(8192)
    f.write(bytes([b[0] ^ 0x55]))
PY
done
checked_mount
[ "$(field "$mnt" decoded-cache-corrupt)" -gt 0 ] || fail "damaged entries not noticed"
[ "$(field "$mnt" decoded-units)" -gt 0 ] || fail "damaged entries: nothing decoded"
umount_it

# 4. A daemon killed while it fills the cache: the next mount reads the right bytes.
rm -rf "$cache"
mkdir -p "$mnt"
"$IMGFS" mount "$ref" "$mnt" || fail "imgfs mount failed"
pid=$("$IMGFS" status "$mnt" | sed -n 's/^daemon-pid: //p')
(cd "$mnt" && find . -type f -exec cat {} + >/dev/null 2>&1) &
reader=$!
sleep 0.05
kill -9 "$pid"
wait "$reader" 2>/dev/null
"$IMGFS" umount "$mnt" >/dev/null 2>&1 || umount -l "$mnt"
checked_mount
umount_it

# 5. The bound: $IMGFS_CACHE_MAX=2M keeps it under 2 MiB; 0 stores nothing.
rm -rf "$cache"
checked_mount IMGFS_CACHE_MAX=2M
[ "$(field "$mnt" decoded-cache-stored)" -gt 0 ] || fail "nothing stored under a 2 MiB bound"
umount_it
size=$(du -sb "$cache" | cut -f1)
[ "$size" -le $((2 * 1024 * 1024 + 65536)) ] || fail "cache of $size bytes over its 2 MiB bound"
rm -rf "$cache"
checked_mount IMGFS_CACHE_MAX=0
[ "$(field "$mnt" decoded-cache-stored)" = 0 ] || fail "IMGFS_CACHE_MAX=0 stored entries"
umount_it
[ -z "$(ls "$cache" 2>/dev/null)" ] || fail "IMGFS_CACHE_MAX=0 left a cache"

# 6. Dropped with the image by rmi + gc.
checked_mount
umount_it
[ -n "$(ls "$cache")" ] || fail "no cache before gc"
"$IMGFS" rmi "$ref" >/dev/null || fail "imgfs rmi failed"
"$IMGFS" gc >/dev/null || fail "imgfs gc failed"
[ -z "$(ls "$cache")" ] || fail "gc left the cache of a removed image: $(ls "$cache")"
echo ok
