#!/bin/bash
# Anonymous pull of a multi-layer image from a local registry: the store is an OCI layout
# that skopeo and umoci read, the image is listed and inspectable, a second pull downloads
# no blob again, and rmi + gc empty the store.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd skopeo umoci jq

start_registry
build_image multilayer ml
push_image "$TESTDIR/images:ml" test/multilayer:1.0
start_faultproxy "$REGISTRY_URL" # pass-through, to see which requests a pull makes
ref=$PROXY/test/multilayer:1.0
digest=$(oci_digest "$TESTDIR/images" ml)

log "first pull"
assert_ok imgfs pull -q "$ref"
assert_contains "$OUT" "$digest" "pull output (the manifest digest)"
assert_eq "$(store_ref_digest "$ref")" "$digest" "manifest digest of the stored ref"
check_store_consistent
grep -q ' GET /v2/test/multilayer/blobs/' "$PROXY_LOG" || fail "no blob was downloaded"

log "skopeo and umoci read the store"
assert_ok skopeo inspect "oci:$IMGFS_ROOT:$ref"
assert_eq "$(jq -r .Digest <<<"$OUT")" "$digest" "digest seen by skopeo"
assert_eq "$(jq -r '.Layers | length' <<<"$OUT")" 4 "layer count seen by skopeo"
assert_ok umoci unpack --image "$IMGFS_ROOT:$ref" "$TESTDIR/bundle"
rootfs=$TESTDIR/bundle/rootfs
cmp -s "$rootfs/bin/busybox" /bin/busybox || fail "bin/busybox differs from busybox-static"
assert_eq "$(cat "$rootfs/data/a.txt")" alpha "data/a.txt"
assert_no_file "$rootfs/data/b.txt"  # whiteout
assert_no_file "$rootfs/opaque/x.txt" # opaque directory
[ -f "$rootfs/replaced" ] || fail "replaced should be a regular file"

log "images and inspect"
assert_ok imgfs images
assert_contains "$OUT" "$PROXY/test/multilayer" "imgfs images"
assert_contains "$OUT" "1.0" "imgfs images"
assert_ok imgfs inspect "$ref"
jq -e . >/dev/null <<<"$OUT" || fail "imgfs inspect does not print JSON: $OUT"
config=$(jq -r .config.digest "$IMGFS_ROOT/blobs/sha256/${digest#sha256:}")
case $OUT in
*"$digest"* | *"$config"* | *"${config#sha256:}"*) ;;
*) fail "imgfs inspect names neither the manifest nor the config digest: $OUT" ;;
esac
assert_contains "$OUT" "/bin/sh" "imgfs inspect (the image's Cmd)"

log "second pull: nothing downloaded again, store unchanged"
blobs_before=$(blob_count)
index_before=$(sha256sum <"$IMGFS_ROOT/index.json")
: >"$PROXY_LOG"
assert_ok imgfs pull -q "$ref"
! grep -q ' GET /v2/test/multilayer/blobs/' "$PROXY_LOG" ||
	fail "second pull downloaded blobs again: $(grep blobs "$PROXY_LOG")"
assert_eq "$(blob_count)" "$blobs_before" "blob count after the second pull"
assert_eq "$(sha256sum <"$IMGFS_ROOT/index.json")" "$index_before" "index.json after the second pull"
check_store_consistent

log "rmi, then gc"
assert_ok imgfs rmi "$ref"
assert_eq "$(store_nrefs)" 0 "refs after rmi"
assert_ok imgfs images
assert_not_contains "$OUT" "test/multilayer" "imgfs images after rmi"
assert_fails_one_line "test/multilayer" imgfs rmi "$ref"
assert_ok imgfs gc
assert_eq "$(blob_count)" 0 "blobs after gc"
for kind in idx trees; do
	n=$(find "$IMGFS_ROOT/$kind" -type f 2>/dev/null | wc -l)
	assert_eq "$n" 0 "files in $kind/ after gc"
done
check_store_consistent
