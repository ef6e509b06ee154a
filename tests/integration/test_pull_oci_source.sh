#!/bin/bash
# `imgfs pull oci:DIR[:TAG]`: a local OCI layout as the source, no registry.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd umoci

build_image multilayer ml
build_image index multi
src=$TESTDIR/images

log "pull oci:DIR:TAG"
assert_ok imgfs pull -q "oci:$src:ml"
assert_eq "$(store_ref_digest "oci:$src:ml")" "$(oci_digest "$src" ml)" "stored ref"
check_store_consistent
view=$(store_view "oci:$src:ml")
assert_ok umoci unpack --image "$view:view" "$TESTDIR/bundle"
cmp -s "$TESTDIR/bundle/rootfs/bin/busybox" /bin/busybox || fail "bin/busybox differs"
assert_eq "$(cat "$TESTDIR/bundle/rootfs/data/a.txt")" alpha "data/a.txt"

log "relative path: the ref names the absolute directory"
use_store store-relative
(cd "$TESTDIR" && imgfs pull -q oci:images:ml) || fail "pull oci:images:ml from $TESTDIR failed"
assert_eq "$(store_ref_digest "oci:$src:ml")" "$(oci_digest "$src" ml)" "stored ref"

log "an index in the layout: the host platform's manifest"
use_store store-index
assert_ok imgfs pull -q "oci:$src:multi"
index_blob=$src/blobs/sha256/$(oci_digest "$src" multi | cut -d: -f2)
case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch="" ;; esac
if [ -n "$arch" ]; then
	want=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a) | .digest' "$index_blob")
	assert_eq "$(store_ref_digest "oci:$src:multi")" "$want" "manifest chosen from the index"
fi

log "missing tag"
use_store store-missing
assert_fails_one_line 'nosuchtag' imgfs pull -q "oci:$src:nosuchtag"

log "missing directory"
assert_fails_one_line "$TESTDIR/nowhere" imgfs pull -q "oci:$TESTDIR/nowhere:ml"

log "a corrupt blob in the layout"
use_store store-corrupt
cp -a "$src" "$TESTDIR/bad"
layer=$(jq -r '.layers[-1].digest' "$src/blobs/sha256/$(oci_digest "$src" ml | cut -d: -f2)")
f=$TESTDIR/bad/blobs/sha256/${layer#sha256:}
chmod u+w "$f"
printf '\377' | dd of="$f" bs=1 seek=4 conv=notrunc status=none # gzip MTIME: still inflates
assert_fails_one_line "${layer#sha256:}" imgfs pull -q "oci:$TESTDIR/bad:ml"
assert_no_file "$IMGFS_ROOT/blobs/sha256/${layer#sha256:}"
[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "refs after a failed pull"
