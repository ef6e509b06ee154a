#!/bin/bash
# Lazy pull of SOCI-indexed images (indexed here by mksoci.py as soci-snapshotter does,
# pushed to a real docker-registry behind the link proxy that counts the bytes): with no
# index of ours, a mount from an empty store finds the SOCI index (v1: the fallback tag of
# the image manifest, as docker-registry has no referrers API; v2: the image manifest's
# annotation), fetches the layer without a zTOC whole and the others as they are read;
# every file of the lazy view equals `umoci unpack`; the fill completes and verifies the
# blobs and records the ref; a flipped byte gives EIO, never wrong bytes; `imgfs run`
# starts lazily too.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd skopeo umoci jq curl

start_registry
build_image big big 16 2 # busybox + two layers of 8 MiB of random files
info=$("$PYTHON" "$HELPERS/mksoci.py" "$TESTDIR/images" big --min-size 2000000) ||
	fail "mksoci.py failed"
image=$(jq -r .image <<<"$info")
push_image "$TESTDIR/images:big-soci" test/soci:1
push_image "$TESTDIR/images:big-soci-v2" test/soci:v2

for z in $(jq -r '.ztocs[]' <<<"$info") $(jq -r .empty <<<"$info"); do
	registry_put_blob test/soci "$z" "@$TESTDIR/images/blobs/sha256/${z#sha256:}"
done
for k in soci_v1 soci_v2; do
	d=$(jq -r .$k <<<"$info")
	registry_put_manifest test/soci "$d" application/vnd.oci.image.manifest.v1+json \
		"@$TESTDIR/images/blobs/sha256/${d#sha256:}"
done
# v1: the fallback tag of the image manifest lists the SOCI index.
jq -n --arg d "$(jq -r .soci_v1 <<<"$info")" --argjson s "$(jq .soci_v1_size <<<"$info")" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [
	  {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
	   artifactType: "application/vnd.amazon.soci.index.v1+json"}]}' >"$TESTDIR/referrers.json"
registry_put_manifest test/soci "sha256-${image#sha256:}" \
	application/vnd.oci.image.index.v1+json "@$TESTDIR/referrers.json"
mjson=$TESTDIR/images/blobs/sha256/${image#sha256:}
layers_size=$(jq '[.layers[].size] | add' "$mjson")
umoci unpack --image "$TESTDIR/images:big-soci" "$TESTDIR/bundle" >/dev/null ||
	fail "umoci unpack failed"

log "a SOCI v1 image mounts lazily from an empty store"
use_store lazy
start_linkproxy "$REGISTRY" --rate 200mbit --latency 1
mnt=$TESTDIR/mnt
mkdir -p "$mnt"
lazy_mount "$LINK/test/soci:1" "$mnt" SOCI-indexed
victim=$(cd "$mnt" && find big -type f | sort | tail -n 1)
head -c 100 "$mnt/$victim" >/dev/null || fail "cannot read through the lazy mount"
lazy_fetched_below "$mnt" "$layers_size" 4 "mount and read one file"

log "every file of the lazy view equals umoci unpack"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the lazy view differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "the fill completes, verifies and records the image"
lazy_fill_checks "$LINK/test/soci:1" "$mnt" "$image"

log "a flipped byte in a span gives EIO, never wrong bytes"
lazy_corrupt_checks test/soci:1 "$mnt" "$victim" "$TESTDIR/bundle/rootfs/$victim"
assert_ok imgfs umount "$mnt"

log "a SOCI v2 image (the manifest's annotation) mounts lazily"
use_store v2
assert_ok imgfs mount --ro "$REGISTRY/test/soci:v2" "$mnt"
assert_contains "$ERR" "SOCI-indexed" "the mount's line"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the v2 lazy view differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "imgfs run starts a SOCI image lazily"
lazy_run_checks "$REGISTRY/test/soci:1" 'echo soci run' "soci run"
