#!/bin/sh
# Extreme but valid layers, mounted read-only and compared with `umoci unpack` of the same
# image (tests/integration/treecmp.py: every attribute, every file's sha256):
# - 1 GiB sparse files, as GNU tar writes them in pax 1.0, pax 0.1 and old GNU ('S')
#   sparse format: the bytes read through the mount equal the unpacked ones,
#   SEEK_DATA/SEEK_HOLE through the mount give back the data map of the file that was
#   archived, the store holds only the stored segments (umoci cannot unpack 'S' entries:
#   that image is compared with GNU tar's extraction instead);
# - 255-byte names (pax and GNU long names), a path longer than 1024 bytes, a 1,000-byte
#   symlink target and a hardlink to the deep file;
# - an image of 121 layers, each adding, removing (whiteouts) or refilling (opaque dirs)
#   files.
set -u
. "$(dirname "$0")/mount_lib.sh"
command -v tar >/dev/null || fail "tar not installed"
MKLAYERS=$TOP/tests/integration/mklayers.py
layout=$WORK/layout
sh "$TOP/contrib/mkimage.sh" busybox "$layout:bb" >/dev/null || fail "mkimage.sh failed"

# compare TAG: mounts LAYOUT:TAG, compares it with umoci's unpack, leaves it mounted at
# $WORK/mnt-TAG with the unpacked tree in $WORK/ref-TAG/rootfs.
compare() {
	umoci unpack --image "$layout:$1" "$WORK/ref-$1" >/dev/null || fail "umoci unpack $1 failed"
	_c_start=$(date +%s%N)
	mount_ro "oci:$layout:$1" "$WORK/mnt-$1"
	echo "$1: pull + index + mount: $((($(date +%s%N) - _c_start) / 1000000)) ms"
	python3 "$TREECMP" "$WORK/ref-$1/rootfs" "$WORK/mnt-$1" ||
		fail "$1: mounted tree differs from umoci unpack"
}

# Sparse files: 1 GiB with data at the start, in the middle and at the end, archived by
# GNU tar in both sparse formats.
mkdir "$WORK/sparse"
python3 - "$WORK/sparse" <<'EOF' || fail "cannot write the sparse files"
import os, random, sys
rnd = random.Random(1)
for name in ("pax-1g", "pax01-1g", "gnu-1g"):
    with open(os.path.join(sys.argv[1], name), "wb") as f:
        f.truncate(1 << 30)
        for off, n in ((0, 4096), (512 << 20, 1 << 20), ((1 << 30) - 100, 100)):
            f.seek(off)
            f.write(bytes(rnd.getrandbits(8) for _ in range(n)))
EOF
touch -d @946684800 "$WORK/sparse"/*
(cd "$WORK/sparse" &&
	tar --sparse --format=posix --sparse-version=1.0 --owner=0 --group=0 -cf ../pax.tar pax-1g &&
	tar --sparse --format=posix --sparse-version=0.1 --owner=0 --group=0 -cf ../pax01.tar \
		pax01-1g &&
	tar --sparse --format=gnu --owner=0 --group=0 -cf ../gnu.tar gnu-1g) || fail "tar --sparse failed"
[ "$(stat -c %s "$WORK/pax.tar")" -lt 4000000 ] || fail "GNU tar did not write a sparse archive"
python3 "$MKLAYERS" wrap "$layout" sparse --base "$layout:bb" "$WORK/pax.tar" "$WORK/pax01.tar" ||
	fail "mklayers.py wrap failed"
python3 "$MKLAYERS" wrap "$layout" gnusparse --base "$layout:bb" "$WORK/gnu.tar" ||
	fail "mklayers.py wrap failed"
python3 "$MKLAYERS" case "$layout" longnames --base "$layout:sparse" || fail "mklayers.py failed"
compare longnames
mnt=$WORK/mnt-longnames
ref=$WORK/ref-longnames/rootfs

# check_sparse MNT REF SRC NAME...: the sparse files NAME in the mount against the
# unpacked ones in REF and the archived originals in SRC.
check_sparse() {
	python3 - "$@" <<'EOF' || fail "sparse files through the mount"
import hashlib, os, sys
mnt, ref, src, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def data_map(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        regions, off = [], 0
        while True:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError:
                break
            off = os.lseek(fd, d, os.SEEK_HOLE)
            regions.append((d, off))
        return regions
    finally:
        os.close(fd)

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

for name in names:
    m, s = os.path.join(mnt, name), os.path.join(src, name)
    st = os.stat(m)
    if st.st_size != 1 << 30:
        sys.exit("%s: size %d" % (name, st.st_size))
    if st.st_blocks * 512 > 4 << 20:
        sys.exit("%s: %d blocks: holes are counted as data" % (name, st.st_blocks))
    want, got = data_map(s), data_map(m)
    print("%s: data regions %s" % (name, got))
    if got != want:
        sys.exit("%s: SEEK_DATA/SEEK_HOLE map %s, archived file has %s" % (name, got, want))
    fd = os.open(m, os.O_RDONLY)
    try:
        os.lseek(fd, st.st_size, os.SEEK_DATA)
        sys.exit("%s: SEEK_DATA at EOF succeeded" % name)
    except OSError:
        pass
    if os.lseek(fd, st.st_size - 50, os.SEEK_HOLE) != st.st_size:
        sys.exit("%s: SEEK_HOLE in the last region is not EOF" % name)
    os.close(fd)
    a, b = sha(m), sha(os.path.join(ref, name))
    if a != b or a != sha(s):
        sys.exit("%s: sha256 through the mount %s, unpacked %s" % (name, a, b))
    print("%s: sha256 %s" % (name, a))
EOF
}
check_sparse "$mnt" "$ref" "$WORK/sparse" pax-1g pax01-1g

# Old GNU sparse ('S' entries), compared with GNU tar's own extraction of the layers.
umoci unpack --image "$layout:bb" "$WORK/ref-gnusparse" >/dev/null || fail "umoci unpack bb"
tar -C "$WORK/ref-gnusparse/rootfs" --sparse -xpf "$WORK/gnu.tar" || fail "tar -x gnu.tar"
mount_ro "oci:$layout:gnusparse" "$WORK/mnt-gnusparse"
# tar -x changes the root directory's mtime: the layer has no entry for the root
python3 "$TREECMP" --no-root "$WORK/ref-gnusparse/rootfs" "$WORK/mnt-gnusparse" ||
	fail "gnusparse: mounted tree differs from tar -x"
check_sparse "$WORK/mnt-gnusparse" "$WORK/ref-gnusparse/rootfs" "$WORK/sparse" gnu-1g
"$IMGFS" umount "$WORK/mnt-gnusparse" || fail "umount"

# The store holds the stored segments only: a few MB for 3 GiB of sparse files.
store_kb=$(du -sk "$IMGFS_ROOT" | cut -f1)
echo "store: $store_kb KiB"
[ "$store_kb" -lt 16384 ] || fail "the store holds $store_kb KiB for three sparse files"

# Long names, a deep path.
name255=$(printf 'n%.0s' $(seq 251)).txt
[ "$(cat "$mnt/long/$name255")" = "pax name of 255 bytes" ] || fail "255-byte pax name"
[ "$(cat "$mnt/gnu/$(printf 'g%.0s' $(seq 255))")" = "GNU long name of 255 bytes" ] ||
	fail "255-byte GNU name"
deep=$(cd "$mnt" && find deep -name "$name255")
[ "${#deep}" -gt 1024 ] || fail "deep path is only ${#deep} bytes"
[ "$(cat "$mnt/$deep")" = "at the bottom of a path longer than 1024 bytes" ] || fail "deep file"
[ "$(readlink "$mnt/long/link-to-deep")" = "$deep" ] || fail "long symlink target"
[ "$(stat -c %i "$mnt/long/hardlink-to-deep")" = "$(stat -c %i "$mnt/$deep")" ] ||
	fail "hardlink to the deep file is not the same inode"
[ "$(readlink "$mnt/gnu/$(printf 's%.0s' $(seq 255))" | wc -c)" -eq 1004 ] ||
	fail "1,003-byte symlink target"
echo "longest path: ${#deep} bytes"
"$IMGFS" umount "$mnt" || fail "umount"

# 121 layers.
python3 "$MKLAYERS" case "$layout" manylayers --base "$layout:bb" || fail "mklayers.py failed"
n=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == "manylayers") |
	.digest' "$layout/index.json")
n=$(jq '.layers | length' "$layout/blobs/sha256/${n#sha256:}")
[ "$n" -eq 121 ] || fail "manylayers has $n layers"
compare manylayers
mnt=$WORK/mnt-manylayers
[ "$(cat "$mnt/many/f119")" = "layer 119" ] || fail "top layer's file"
[ ! -e "$mnt/many/f118" ] || fail "f118 was whited out by layer 119"
[ ! -e "$mnt/many/dir118" ] || fail "dir118 was whited out by layer 119"
[ "$(ls "$mnt/many/opq" | head -n 1)" = "add111" ] || fail "opaque dir of layer 110 not applied"
[ -e "$mnt/many/opq/from110" ] || fail "opaque refill of layer 110 lost"
[ "$(ls "$mnt/many" | wc -l)" -eq $((60 + 119 + 1)) ] || fail "many/ has $(ls "$mnt/many" | wc -l) entries"
chroot "$mnt" /bin/busybox true || fail "chroot into the 121-layer image failed"
"$IMGFS" umount "$mnt" || fail "umount"
echo "ok"
