#!/bin/sh
# Local image sources mounted read-only:
# - a rootfs tarball as distributions publish it (gzip with ./ names, zstd, plain pax tar
#   without a root entry) shows the same tree as `tar -xpf` of that tarball, runs busybox
#   in a chroot, and is stored as the tarball's own bytes (the layer digest is the file's
#   sha256), never extracted;
# - a `docker save` archive (legacy layout, uncompressed layers, a duplicate layer stored
#   as a symlink) shows the same tree as skopeo + umoci unpack of that archive, and its
#   layers are stored as the archive's layer.tar members;
# - an xz tarball, a missing tag in an archive and a missing file fail with one line.
set -u
. "$(dirname "$0")/mount_lib.sh"
for c in zstd xz skopeo jq tar chroot; do
	command -v $c >/dev/null || fail "$c not installed (run make deps)"
done
MKLAYERS=$TOP/tests/integration/mklayers.py

# store_manifest REF: the manifest JSON that the store's index names for REF.
store_manifest() {
	_s_d=$(jq -er --arg r "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r
		or .annotations["io.imgfs.ref.name"] == $r) | .digest' "$IMGFS_ROOT/index.json") ||
		fail "no ref '$1' in the store"
	cat "$IMGFS_ROOT/blobs/sha256/${_s_d#sha256:}"
}

# A rootfs as a distribution ships it: busybox and /etc, plus a hardlink, a setuid
# binary and files owned by a user.
layout=$WORK/layout
sh "$TOP/contrib/mkimage.sh" multilayer "$layout:multi" >/dev/null || fail "mkimage.sh failed"
umoci unpack --image "$layout:multi" "$WORK/bundle" >/dev/null || fail "umoci unpack failed"
rootfs=$WORK/bundle/rootfs
rm -f "$rootfs/bin/su"
cp "$rootfs/bin/busybox" "$rootfs/bin/su"
chmod 4755 "$rootfs/bin/su"
ln "$rootfs/etc/passwd" "$rootfs/etc/passwd.hardlink"
mkdir -p "$rootfs/home/user"
echo "user file" >"$rootfs/home/user/notes"
chown -R 1000:1000 "$rootfs/home/user"
# whole seconds, so that every tar format records the same mtimes
touch -d @946684800 "$rootfs/bin/su" "$rootfs/bin" "$rootfs/etc" "$rootfs/home" \
	"$rootfs/home/user" "$rootfs/home/user/notes"

cd "$WORK" || fail "cd $WORK"
tar --numeric-owner -C "$rootfs" -czf rootfs.tar.gz . || fail "tar czf"
tar --numeric-owner -C "$rootfs" -cf - . | zstd -q -19 -o rootfs.tar.zst || fail "zstd"
# shellcheck disable=SC2046 # names without ./ and no entry for the root, as some do
tar --numeric-owner --format=pax -C "$rootfs" -cf rootfs.tar $(ls "$rootfs") || fail "tar cf"
tar --numeric-owner -C "$rootfs" -cJf rootfs.tar.xz . || fail "tar cJf"
mkdir ref
tar --numeric-owner -C ref -xpf rootfs.tar.gz || fail "tar xpf"

for f in rootfs.tar.gz rootfs.tar.zst rootfs.tar; do
	echo "== $f"
	mnt=$WORK/mnt-$f
	mount_ro "./$f" "$mnt"
	rootopt=""
	[ "$f" != rootfs.tar ] || rootopt=--no-root
	python3 "$TREECMP" $rootopt ref "$mnt" || fail "$f: mounted tree differs from tar -xpf"
	[ "$(stat -c %i "$mnt/etc/passwd")" = "$(stat -c %i "$mnt/etc/passwd.hardlink")" ] ||
		fail "$f: hardlink split"
	chroot "$mnt" /bin/busybox true || fail "$f: chroot $mnt /bin/busybox true failed"
	[ "$(chroot "$mnt" /bin/sh -c 'cat /home/user/notes')" = "user file" ] ||
		fail "$f: cannot read a file through a shell in the chroot"

	# The one layer is the tarball itself, byte for byte.
	manifest=$(store_manifest "$WORK/$f")
	want=sha256:$(sha256sum <"$f" | cut -d' ' -f1)
	got=$(echo "$manifest" | jq -er '.layers | if length == 1 then .[0].digest else error("layers") end') ||
		fail "$f: not a one-layer image: $manifest"
	[ "$got" = "$want" ] || fail "$f: layer $got is not the tarball ($want)"
	[ "$(sha256sum <"$IMGFS_ROOT/blobs/sha256/${got#sha256:}" | cut -d' ' -f1)" = "${want#sha256:}" ] ||
		fail "$f: stored blob differs from the tarball"
	case $f in
	*.gz) mt=application/vnd.oci.image.layer.v1.tar+gzip ;;
	*.zst) mt=application/vnd.oci.image.layer.v1.tar+zstd ;;
	*) mt=application/vnd.oci.image.layer.v1.tar ;;
	esac
	[ "$(echo "$manifest" | jq -r '.layers[0].mediaType')" = "$mt" ] ||
		fail "$f: media type is not $mt: $manifest"
	"$IMGFS" umount "$mnt" || fail "umount $mnt"
done

# Never extracted: no file of the rootfs in the store, and everything but the blobs, the
# seekable zstd copy and the decoded-data cache (the merged trees, the indexes) is far smaller
# than one extraction. The cache holds what the comparisons read, at most each layer's
# uncompressed size: three imports, so at most three times the rootfs (and its tar headers).
[ -z "$(find "$IMGFS_ROOT" -name busybox -o -name passwd -o -name notes)" ] ||
	fail "the store holds extracted files: $(find "$IMGFS_ROOT" -name busybox -o -name passwd)"
meta=$(find "$IMGFS_ROOT" -type f ! -path '*/blobs/*' ! -path '*/cache/*' ! -name '*.zst' \
	-printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
cache=$(find "$IMGFS_ROOT/cache" -type f -printf '%s\n' 2>/dev/null |
	awk '{ s += $1 } END { print s + 0 }')
extracted=$(du -sb ref | cut -f1)
echo "store metadata: $meta bytes, decoded-data cache $cache bytes, for three imports of a $extracted-byte rootfs"
[ "$meta" -lt $((extracted / 4)) ] || fail "store metadata ($meta bytes) looks like an extraction"
[ "$cache" -le $((3 * (extracted + extracted / 4))) ] ||
	fail "the decoded-data cache ($cache bytes) is larger than the three layers' contents"

# docker save archive, with a layer stored twice (the second copy a symlink).
echo "== docker-archive"
python3 "$MKLAYERS" docker-save "$WORK/save.tar" "$layout" multi busybox:latest ||
	fail "mklayers.py docker-save failed"
tar -tvf save.tar | grep -q '^l.*/layer.tar -> \.\./' || fail "the archive has no symlinked layer"
skopeo copy -q docker-archive:save.tar:busybox:latest oci:skopeo-layout:ref ||
	fail "skopeo cannot read the archive"
umoci unpack --image skopeo-layout:ref skopeo-bundle >/dev/null || fail "umoci unpack failed"
mnt=$WORK/mnt-archive
mount_ro "docker-archive:save.tar:busybox:latest" "$mnt"
python3 "$TREECMP" skopeo-bundle/rootfs "$mnt" || fail "docker archive: tree differs from skopeo + umoci"
[ "$(cat "$mnt/etc/added-twice")" = "a layer stored twice" ] || fail "duplicate layer lost"
chroot "$mnt" /bin/busybox true || fail "chroot into the docker archive mount failed"
manifest=$(store_manifest "docker-archive:$WORK/save.tar:busybox:latest")
config=$(tar -xOf save.tar "$(tar -xOf save.tar manifest.json | jq -r '.[0].Config')")
[ "$(echo "$manifest" | jq -c '[.layers[].digest]')" = "$(echo "$config" | jq -c '.rootfs.diff_ids')" ] ||
	fail "stored layers are not the archive's layer.tar members: $manifest"
[ "$(echo "$manifest" | jq -r '.layers[-1].digest')" = "$(echo "$manifest" | jq -r '.layers[-2].digest')" ] ||
	fail "the duplicate layer is not stored once and named twice: $manifest"
for d in $(echo "$manifest" | jq -r '.layers[].digest' | sort -u); do
	[ "$(sha256sum <"$IMGFS_ROOT/blobs/sha256/${d#sha256:}" | cut -d' ' -f1)" = "${d#sha256:}" ] ||
		fail "blob $d does not match its digest"
done
"$IMGFS" umount "$mnt" || fail "umount $mnt"

# Clear one-line failures, and nothing recorded for them.
echo "== failures"
nrefs=$(jq '.manifests | length' "$IMGFS_ROOT/index.json")
fails_one_line "rootfs.tar.xz.*compression not supported" "$IMGFS" pull -q ./rootfs.tar.xz
mkdir "$WORK/mnt-xz"
fails_one_line "rootfs.tar.xz.*compression not supported" \
	"$IMGFS" mount --ro ./rootfs.tar.xz "$WORK/mnt-xz"
is_imgfs_mount "$WORK/mnt-xz" && fail "an xz tarball got mounted"
fails_one_line "save.tar.*no image tagged 'alpine:latest'" \
	"$IMGFS" pull -q docker-archive:save.tar:alpine:latest
fails_one_line "nonexistent.tar.gz" "$IMGFS" pull -q ./nonexistent.tar.gz
[ "$(jq '.manifests | length' "$IMGFS_ROOT/index.json")" = "$nrefs" ] ||
	fail "a failed pull recorded a reference"
[ -z "$(ls -A "$IMGFS_ROOT/tmp" 2>/dev/null)" ] || fail "failed pulls left $(ls "$IMGFS_ROOT/tmp")"
echo "ok"
