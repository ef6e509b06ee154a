#!/bin/sh
# Hostile layers (tests/integration/mklayers.py writes them with exact tar headers, in an OCI
# layout whose digests match the bad bytes). Each `imgfs pull oci:DIR:TAG` either fails
# with one line naming the layer digest and the problem, recording nothing and leaving no
# partial, or succeeds and the mounted view is contained in the image:
# - `..` components, absolute names, hardlinks out of the tree, to missing, later or
#   directory entries, or through a symlink: dropped or made relative;
# - symlinks out of the tree, and files written "through" a lower symlink (a -> /tmp, then
#   a/evil): the link is kept as written and resolves inside a chroot; the later file lands
#   in a directory of the image, never on the host;
# - whiteouts of `.`, `..` and the root: no effect on the image or on the host;
# - duplicate entries: the last one wins (as umoci unpack);
# - a pax sparse file claiming 1 PiB: mounted as such, costing 4 KiB;
# - corrupt tar header checksum, truncated gzip, corrupt deflate data, bad gzip CRC, not a
#   tar, a path longer than PATH_MAX: refused;
# - 4 GiB of zeros in 4 MiB of gzip and in 145 KiB of zstd: indexed in bounded time and
#   memory, with a small index, and read from the end at once.
# Nothing named after the escape targets appears under /tmp, /etc, /root or /var, and files
# beside the store and the mountpoints are untouched.
set -u
. "$(dirname "$0")/mount_lib.sh"
command -v zstd >/dev/null || fail "zstd not installed (run make deps)"
MKLAYERS=$TOP/tests/integration/mklayers.py
layout=$WORK/layout
sh "$TOP/contrib/mkimage.sh" busybox "$layout:bb" >/dev/null || fail "mkimage.sh failed"
for c in dotdot symlinks hardlinks whiteouts duplicates bigsparse badchecksum truncatedgzip \
	corruptgzip badcrc notatar longpath bomb; do
	python3 "$MKLAYERS" case "$layout" $c --base "$layout:bb" || fail "mklayers.py case $c"
done
python3 "$MKLAYERS" bomb-tar 4 | zstd -q -1 -o "$WORK/zbomb.tar.zst" || fail "zstd bomb"
python3 "$MKLAYERS" wrap "$layout" zbomb --base "$layout:bb" "$WORK/zbomb.tar.zst" ||
	fail "mklayers.py wrap zbomb"

ESCAPES="imgfs-escape-dotdot imgfs-escape-dotdot2 imgfs-escape-dotdot3 imgfs-escape-abs
	imgfs-escape-evil imgfs-escape-evil2 imgfs-escape-evil3 imgfs-abs-etc"
for n in $ESCAPES; do
	for d in /tmp /etc / "$WORK" "$WORK/store"; do
		[ ! -e "$d/$n" ] || fail "$d/$n exists before the test"
	done
done
# Beside the store and the mountpoints: what `..`, `../.wh.x` or `.wh..` would reach.
echo "sentinel" >"$WORK/x"
echo "sentinel" >"$WORK/hostname"
touch "$WORK/marker"
sleep 1

# top_layer TAG: the digest of TAG's last layer in the layout.
top_layer() {
	_t_m=$(jq -er --arg t "$1" '.manifests[] |
		select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
		"$layout/index.json") || fail "no tag $1"
	jq -er '.layers[-1].digest' "$layout/blobs/sha256/${_t_m#sha256:}"
}

# refused TAG PATTERN: the pull fails in bounded time with one line naming the top layer
# and matching PATTERN; no reference, no partial download is left.
refused() {
	_r_digest=$(top_layer "$1")
	fails_one_line "oci:$layout:$1: layer $_r_digest $2" timeout 60 "$IMGFS" pull -q "oci:$layout:$1"
	echo "$1: $ERR"
	if [ -f "$IMGFS_ROOT/index.json" ] && grep -q ":$1\"" "$IMGFS_ROOT/index.json"; then
		fail "$1: a reference was recorded"
	fi
	[ -z "$(ls -A "$IMGFS_ROOT/tmp" 2>/dev/null)" ] || fail "$1: left $(ls "$IMGFS_ROOT/tmp")"
	[ ! -e "$IMGFS_ROOT/blobs/sha256/${_r_digest#sha256:}" ] || fail "$1: the bad layer was stored"
}

# accepted TAG: pulls in bounded time and mounts at $WORK/mnt-TAG (sets $mnt).
accepted() {
	timeout 60 "$IMGFS" pull -q "oci:$layout:$1" >/dev/null || fail "$1: pull failed"
	mnt=$WORK/mnt-$1
	mount_ro "oci:$layout:$1" "$mnt"
	[ -z "$(find "$mnt" -name '.wh.*')" ] || fail "$1: whiteout entries visible"
	chroot "$mnt" /bin/busybox true || fail "$1: chroot into the image failed"
}

for c in badchecksum truncatedgzip corruptgzip badcrc notatar; do
	refused $c "is corrupt or truncated"
done
refused longpath "exceeds a limit of the layer index"

echo "== .. and absolute names"
accepted dotdot
[ -z "$(find "$mnt" -name 'imgfs-escape-dotdot*')" ] || fail "an entry with .. was kept"
[ "$(cat "$mnt/tmp/imgfs-escape-abs")" = "absolute path, kept inside the image" ] ||
	fail "absolute name not made relative"
[ -f "$mnt/etc/imgfs-abs-etc" ] || fail "/etc/imgfs-abs-etc not made relative"
[ -f "$mnt/kept" ] || fail "./kept lost"
[ ! -e "$mnt/hl-dotdot" ] || fail "a hardlink to ../../../../etc/hostname was kept"

echo "== symlinks out of the tree, files written through symlinks"
accepted symlinks
[ "$(readlink "$mnt/etc/passwd")" = "../../../../etc/shadow" ] || fail "symlink target changed"
[ "$(chroot "$mnt" /bin/busybox cat /etc/passwd)" = "image shadow" ] ||
	fail "etc/passwd -> ../../../../etc/shadow does not resolve inside the chroot"
for l in a up etcdir; do
	[ -d "$mnt/$l" ] && [ ! -L "$mnt/$l" ] || fail "$l: a later layer's file under it did not make it a directory"
done
[ -f "$mnt/a/imgfs-escape-evil" ] && [ -f "$mnt/up/imgfs-escape-evil2" ] &&
	[ -f "$mnt/etcdir/imgfs-escape-evil3" ] || fail "files written through symlinks lost"
[ -z "$(ls -A "$mnt/tmp")" ] || fail "files written through a -> /tmp landed in the image's /tmp"

echo "== hardlinks"
accepted hardlinks
[ "$(stat -c %i "$mnt/hl-abs")" = "$(stat -c %i "$mnt/etc/shadow")" ] ||
	fail "hardlink to /etc/shadow does not name the image's etc/shadow"
[ "$(cat "$mnt/hl-abs")" = "image shadow" ] || fail "hl-abs content"
for l in hl-out hl-missing hl-forward hl-dir hl-through-symlink; do
	[ ! -e "$mnt/$l" ] || fail "$l was kept"
done
[ "$(stat -c %h "$mnt/later")" = 1 ] || fail "a hardlink made before its target counted"

echo "== whiteouts of ., .. and the root"
accepted whiteouts
[ "$(cat "$mnt/etc/keep")" = "lower file, must survive" ] || fail "etc/.wh.. or etc/.wh... removed etc"
[ "$(cat "$mnt/x")" = "lower x" ] || fail "../.wh.x or .wh..wh..opq/../x removed /x"
[ -x "$mnt/bin/busybox" ] || fail ".wh.. removed the root"

echo "== duplicate entries"
accepted duplicates
umoci unpack --image "$layout:duplicates" "$WORK/ref-duplicates" >/dev/null || fail "umoci unpack"
python3 "$TREECMP" "$WORK/ref-duplicates/rootfs" "$mnt" || fail "duplicates differ from umoci unpack"
[ "$(cat "$mnt/dup")" = "third: the last one wins" ] || fail "dup"

echo "== a sparse file claiming 1 PiB"
accepted bigsparse
python3 - "$mnt/huge-sparse" <<'EOF' || fail "1 PiB sparse file"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
st = os.fstat(fd)
assert st.st_size == 1 << 50, st
assert st.st_blocks * 512 == 4096, st
assert os.pread(fd, 4096, 0) == b"s" * 4096
assert os.pread(fd, 8, (1 << 50) - 8) == bytes(8)
assert os.lseek(fd, 0, os.SEEK_HOLE) == 4096
try:
    os.lseek(fd, 4096, os.SEEK_DATA)
    sys.exit("SEEK_DATA past the only segment succeeded")
except OSError:
    pass
EOF

echo "== decompression bombs"
for c in bomb zbomb; do
	blob=$(jq -er '.layers[-1].size' "$layout/blobs/sha256/$(jq -er --arg t $c '.manifests[] |
		select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
		"$layout/index.json" | cut -d: -f2)")
	before=$(du -sk "$IMGFS_ROOT" | cut -f1)
	start=$(date +%s%N)
	python3 - "$WORK/rss-$c" timeout 60 "$IMGFS" pull -q "oci:$layout:$c" <<'EOF' >/dev/null ||
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
EOF
		fail "$c: pull failed or took more than 60 s"
	ms=$((($(date +%s%N) - start) / 1000000))
	rss=$(cat "$WORK/rss-$c")
	grown=$(($(du -sk "$IMGFS_ROOT" | cut -f1) - before))
	echo "$c: $blob-byte layer, 4 GiB of zeros: pull $ms ms, max RSS $rss KiB, store +$grown KiB"
	[ "$rss" -lt 262144 ] || fail "$c: the pull used $rss KiB"
	[ "$grown" -lt $((blob / 1024 + 8192)) ] || fail "$c: the store grew by $grown KiB"
	mount_ro "oci:$layout:$c" "$WORK/mnt-$c"
	[ "$(stat -c %s "$WORK/mnt-$c/zeros")" = $((4 << 30)) ] || fail "$c: size"
	start=$(date +%s%N)
	[ "$(tail -c 4096 "$WORK/mnt-$c/zeros" | tr -d '\0' | wc -c)" = 0 ] || fail "$c: not zeros"
	ms=$((($(date +%s%N) - start) / 1000000))
	echo "$c: last 4 KiB read in $ms ms"
	[ "$ms" -lt 2000 ] || fail "$c: reading the end took $ms ms: no access point near it?"
done

echo "== containment"
for m in "$WORK"/mnt-*; do
	"$IMGFS" umount "$m" || fail "umount $m"
done
[ "$(cat "$WORK/x")" = sentinel ] && [ "$(cat "$WORK/hostname")" = sentinel ] ||
	fail "a file beside the store was changed"
for n in $ESCAPES; do
	for d in /tmp /etc / "$WORK" "$WORK/store"; do
		[ ! -e "$d/$n" ] || fail "$d/$n was created"
	done
done
found=$(find /tmp /etc /root /var -xdev -newer "$WORK/marker" \
	\( -name 'imgfs-escape-*' -o -name 'imgfs-abs-etc' \) ! -path "$WORK/ref-*" 2>/dev/null)
[ -z "$found" ] || fail "created outside the store: $found"
[ "$(find "$WORK" -maxdepth 1 -newer "$WORK/marker" ! -name 'mnt-*' ! -name 'ref-*' \
	! -name 'rss-*' ! -name store ! -name '.out' ! -name '.err' ! -path "$WORK" | wc -l)" = 0 ] ||
	fail "new files beside the store: $(find "$WORK" -maxdepth 1 -newer "$WORK/marker")"
echo "ok"
