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

# upload_blob DIGEST: a blob of the layout into test/soci.
upload_blob() {
	local loc
	loc=$(curl -sf -D - -o /dev/null -X POST "$REGISTRY_URL/v2/test/soci/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
	case $loc in /*) loc=$REGISTRY_URL$loc ;; esac
	curl -sf -X PUT -H 'Content-Type: application/octet-stream' \
		--data-binary "@$TESTDIR/images/blobs/sha256/${1#sha256:}" "$loc&digest=$1" >/dev/null ||
		fail "cannot upload blob $1"
}
# put_manifest DIGEST|TAG FILE MEDIATYPE
put_manifest() {
	curl -sf -X PUT -H "Content-Type: $3" --data-binary "@$2" \
		"$REGISTRY_URL/v2/test/soci/manifests/$1" >/dev/null || fail "cannot put manifest $1"
}
for z in $(jq -r '.ztocs[]' <<<"$info") $(jq -r .empty <<<"$info"); do
	upload_blob "$z"
done
for k in soci_v1 soci_v2; do
	d=$(jq -r .$k <<<"$info")
	put_manifest "$d" "$TESTDIR/images/blobs/sha256/${d#sha256:}" \
		application/vnd.oci.image.manifest.v1+json
done
# v1: the fallback tag of the image manifest lists the SOCI index.
jq -n --arg d "$(jq -r .soci_v1 <<<"$info")" --argjson s "$(jq .soci_v1_size <<<"$info")" \
	'{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [
	  {mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
	   artifactType: "application/vnd.amazon.soci.index.v1+json"}]}' >"$TESTDIR/referrers.json"
put_manifest "sha256-${image#sha256:}" "$TESTDIR/referrers.json" \
	application/vnd.oci.image.index.v1+json
mjson=$TESTDIR/images/blobs/sha256/${image#sha256:}
layers_size=$(jq '[.layers[].size] | add' "$mjson")
umoci unpack --image "$TESTDIR/images:big-soci" "$TESTDIR/bundle" >/dev/null ||
	fail "umoci unpack failed"

log "a SOCI v1 image mounts lazily from an empty store"
use_store lazy
start_linkproxy "$REGISTRY" --rate 200mbit --latency 1
mnt=$TESTDIR/mnt
mkdir -p "$mnt"
export IMGFS_LAZY_FILL_DELAY_MS=600000
assert_ok imgfs mount --ro "$LINK/test/soci:1" "$mnt"
defer "imgfs umount '$mnt' 2>/dev/null"
assert_not_contains "$ERR" "pulling it whole" "the mount of a SOCI image"
assert_contains "$ERR" "SOCI-indexed" "the mount's line"
victim=$(cd "$mnt" && find big -type f | sort | tail -n 1)
head -c 100 "$mnt/$victim" >/dev/null || fail "cannot read through the lazy mount"
link_settle
fetched=$(link_stat '.bytes_down')
[ "$fetched" -lt $((layers_size / 4)) ] ||
	fail "the lazy mount fetched $fetched bytes of $layers_size to read one file"
log "fetched $fetched of $layers_size bytes to mount and read one file"
assert_ok imgfs status "$mnt"
assert_contains "$OUT" "lazy: yes" "status of a lazy SOCI mount"

log "every file of the lazy view equals umoci unpack"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the lazy view differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "the fill completes, verifies and records the image"
export IMGFS_LAZY_FILL_DELAY_MS=0
assert_ok imgfs mount --ro "$LINK/test/soci:1" "$mnt"
for i in $(seq 600); do
	[ -n "$(store_ref_digest "$LINK/test/soci:1")" ] && break
	sleep 0.1
done
# The daemon writes its figures every 250 ms: the last of them may follow the record.
for i in $(seq 50); do
	st=$(imgfs status "$mnt")
	[ "$(sed -n 's/^lazy-bytes-present: //p' <<<"$st")" = \
		"$(sed -n 's/^lazy-bytes-total: //p' <<<"$st")" ] && break
	sleep 0.1
done
assert_eq "$(sed -n 's/^lazy-bytes-present: //p' <<<"$st")" \
	"$(sed -n 's/^lazy-bytes-total: //p' <<<"$st")" "lazy bytes present once complete"
assert_eq "$(store_ref_digest "$LINK/test/soci:1")" "$image" "the ref recorded after the fill"
check_store_consistent
# The indexes built again from the complete layers describe them as the published one did.
log_file=$(imgfs status "$mnt" | sed -n 's/^state-dir: //p')/log
assert_file "$log_file"
if grep -E 'do not describe|Sanitizer|runtime error' "$log_file"; then
	fail "the mount's log after the fill: $(tail -n 5 "$log_file")"
fi
assert_ok imgfs umount "$mnt"
link_settle
before=$(link_stat '[.request_list[] | select(.path | test("/blobs/"))] | length')
assert_ok imgfs pull -q "$LINK/test/soci:1"
link_settle
assert_eq "$(link_stat '[.request_list[] | select(.path | test("/blobs/"))] | length')" "$before" \
	"blob requests of a pull after the fill"

log "a flipped byte in a span gives EIO, never wrong bytes"
use_store corrupt
start_faultproxy "$REGISTRY_URL"
export IMGFS_LAZY_FILL_DELAY_MS=600000
assert_ok imgfs mount --ro "$PROXY/test/soci:1" "$mnt"
proxy_rules '[{"match": "GET /v2/test/soci/blobs/", "action": "corrupt", "offset": 1000}]'
if out=$(cat "$mnt/$victim" 2>&1 >/dev/null); then
	fail "a read of a corrupt span succeeded"
fi
assert_contains "$out" "Input/output error" "the read of a corrupt span"
proxy_rules '[]'
cmp "$mnt/$victim" "$TESTDIR/bundle/rootfs/$victim" || fail "$victim differs once the registry is sound"
assert_ok imgfs umount "$mnt"

log "a SOCI v2 image (the manifest's annotation) mounts lazily"
use_store v2
assert_ok imgfs mount --ro "$REGISTRY/test/soci:v2" "$mnt"
assert_contains "$ERR" "SOCI-indexed" "the mount's line"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the v2 lazy view differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "imgfs run starts a SOCI image lazily"
use_store lazyrun
unset IMGFS_LAZY_FILL_DELAY_MS
assert_ok imgfs run -q "$REGISTRY/test/soci:1" /bin/sh -c 'echo soci run'
assert_eq "$OUT" "soci run" "output of imgfs run"
assert_not_contains "$ERR" "pulling it whole" "imgfs run of a SOCI image"
