#!/bin/bash
# Lazy pull of eStargz images (built here by mkestargz.py, pushed to a real docker-registry
# behind the link proxy that counts the bytes): with no index of ours published, a mount
# from an empty store is live after fetching the footers and TOCs and the chunks read;
# every file of the lazy view equals `umoci unpack`; the fill completes and verifies the
# blobs and records the ref; a flipped byte in a chunk gives EIO, never wrong bytes; a TOC
# that does not have the annotated digest is refused (whole pull); `imgfs run` starts
# lazily too.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd skopeo umoci jq curl

start_registry
src=$TESTDIR/src
# Layer 1: busybox and its shell; layer 2: files of several chunks, small files that share
# a member with their headers, links, a deleted file, odd modes.
mkdir -p "$src/l1/bin" "$src/l1/etc" "$src/l2/data/sub" "$src/l2/etc"
cp /bin/busybox "$src/l1/bin/busybox"
ln -s busybox "$src/l1/bin/sh"
ln -s busybox "$src/l1/bin/cat"
echo "root:x:0:0:root:/root:/bin/sh" >"$src/l1/etc/passwd"
echo "gone" >"$src/l1/etc/obsolete"
head -c 3000000 /dev/urandom >"$src/l2/data/big.bin"
head -c 200000 /dev/urandom >"$src/l2/data/sub/medium.bin"
for i in $(seq 40); do echo "small file $i" >"$src/l2/data/sub/s$i.txt"; done
: >"$src/l2/data/empty"
ln "$src/l2/data/sub/s1.txt" "$src/l2/data/hardlink"
ln -s sub/s2.txt "$src/l2/data/symlink"
chmod 4750 "$src/l2/data/sub/s3.txt"
touch "$src/l2/etc/.wh.obsolete"
"$PYTHON" "$HELPERS/mkestargz.py" "$TESTDIR/esgz" esgz "$src/l1" "$src/l2" \
	--chunk-size 262144 --small 1024 || fail "mkestargz.py failed"
push_image "$TESTDIR/esgz:esgz" test/esgz:1
manifest=$(oci_digest "$TESTDIR/esgz" esgz)
mjson=$TESTDIR/esgz/blobs/sha256/${manifest#sha256:}
layers_size=$(jq '[.layers[].size] | add' "$mjson")
umoci unpack --image "$TESTDIR/esgz:esgz" "$TESTDIR/bundle" >/dev/null || fail "umoci unpack failed"

log "an eStargz image mounts lazily from an empty store"
use_store lazy
start_linkproxy "$REGISTRY" --rate 200mbit --latency 1
mnt=$TESTDIR/mnt
mkdir -p "$mnt"
lazy_mount "$LINK/test/esgz:1" "$mnt" eStargz
assert_eq "$(cat "$mnt/data/sub/s5.txt")" "small file 5" "a small file"
lazy_fetched_below "$mnt" "$layers_size" 4 "mount and read one small file"
assert_no_file "$IMGFS_ROOT/blobs/sha256/$(jq -r '.layers[-1].digest' "$mjson" | cut -d: -f2)"

log "every file of the lazy view equals umoci unpack"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the lazy view differs from umoci unpack"
assert_no_file "$mnt/etc/obsolete"
assert_ok imgfs umount "$mnt"

log "the fill completes, verifies and records the image"
lazy_fill_checks "$LINK/test/esgz:1" "$mnt" "$manifest"
assert_ok imgfs mount --ro "$LINK/test/esgz:1" "$mnt"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the view after the fill differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "a flipped byte in a chunk gives EIO, never wrong bytes"
lazy_corrupt_checks test/esgz:1 "$mnt" data/big.bin "$src/l2/data/big.bin"
assert_ok imgfs umount "$mnt"

log "a TOC without the annotated digest is refused: the image is pulled whole"
use_store badtoc
jq -c '.layers[1].annotations["containerd.io/snapshot/stargz/toc.digest"] = "sha256:'"$(printf 0%.0s $(seq 64))"'"' \
	"$mjson" >"$TESTDIR/bad-manifest.json"
registry_put_manifest test/esgz bad application/vnd.oci.image.manifest.v1+json \
	"@$TESTDIR/bad-manifest.json"
assert_ok imgfs mount --ro "$REGISTRY/test/esgz:bad" "$mnt"
assert_contains "$ERR" "pulling it whole" "the fallback line"
assert_contains "$ERR" "TOC has digest" "the reason"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the whole pull's view differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "imgfs run starts an eStargz image lazily"
lazy_run_checks "$REGISTRY/test/esgz:1" 'cat /data/sub/s7.txt' "small file 7"
