#!/bin/bash
# Lazy pull against a real docker-registry behind the emulated link (linkproxy.py, which
# counts the bytes): `imgfs index push` publishes an image's layer indexes (twice changes
# nothing; another tool's referrer survives); a mount from an empty store is live after
# fetching a small part of the layers; its tree equals `umoci unpack`; the background fill
# completes and verifies every blob and records the ref, after which `imgfs pull` fetches
# no blob; an image without an index falls back to a whole pull with one line; a corrupt
# span is refused with EIO, never wrong bytes; `imgfs run` starts lazily too.
. "$(dirname "$0")/lib.sh"
require_imgfs
require_cmd skopeo umoci jq curl

start_registry
build_image big big 16 2 # busybox + two layers of 8 MiB of random files
build_image multilayer ml
push_image "$TESTDIR/images:big" test/big:1
push_image "$TESTDIR/images:ml" test/ml:1
manifest=$(oci_digest "$TESTDIR/images" big)
layers_size=$(jq '[.layers[].size] | add' "$TESTDIR/images/blobs/sha256/${manifest#sha256:}")

log "index push publishes the indexes; a second push changes nothing"
use_store pusher
# Another tool's referrer on the fallback tag must survive our merge (the registry wants
# the manifests an index lists to exist: push one first).
empty=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
registry_put_blob test/big "$empty" '{}'
other_art='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.other","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"'$empty'","size":2},"layers":[]}'
other_digest=sha256:$(printf '%s' "$other_art" | sha256sum | cut -d' ' -f1)
registry_put_manifest test/big "$other_digest" application/vnd.oci.image.manifest.v1+json \
	"$other_art"
other='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"'$other_digest'","size":'${#other_art}',"artifactType":"application/vnd.example.other"}]}'
registry_put_manifest test/big "sha256-${manifest#sha256:}" \
	application/vnd.oci.image.index.v1+json "$other"
assert_ok imgfs index push "$REGISTRY/test/big:1"
artifact=$OUT
case $artifact in sha256:*) ;; *) fail "index push printed '$artifact', not a digest" ;; esac
tag_index=$(curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' \
	"$REGISTRY_URL/v2/test/big/manifests/sha256-${manifest#sha256:}")
assert_contains "$tag_index" "$artifact" "the fallback tag's referrers"
assert_contains "$tag_index" "application/vnd.example.other" "the other tool's referrer"
before=$tag_index
assert_ok imgfs index push "$REGISTRY/test/big:1"
assert_eq "$OUT" "$artifact" "the artifact of a second push"
after=$(curl -sf -H 'Accept: application/vnd.oci.image.index.v1+json' \
	"$REGISTRY_URL/v2/test/big/manifests/sha256-${manifest#sha256:}")
assert_eq "$after" "$before" "the fallback tag after a second push"
art_json=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
	"$REGISTRY_URL/v2/test/big/manifests/$artifact")
assert_eq "$(jq -r .subject.digest <<<"$art_json")" "$manifest" "the artifact's subject"

log "lazy mount from an empty store, through a 200 Mbit/s link"
use_store lazy
start_linkproxy "$REGISTRY" --rate 200mbit --latency 1
mnt=$TESTDIR/mnt
mkdir -p "$mnt"
lazy_mount "$LINK/test/big:1" "$mnt"
head -c 100 "$mnt/bin/busybox" >/dev/null || fail "cannot read through the lazy mount"
lazy_fetched_below "$mnt" "$layers_size" 5 "mount and read one file"
assert_no_file "$IMGFS_ROOT/blobs/sha256/$(jq -r '.layers[-1].digest' \
	"$TESTDIR/images/blobs/sha256/${manifest#sha256:}" | cut -d: -f2)"

log "a second mount of the same image fetches nothing the first one fetched"
mnt2=$TESTDIR/mnt2
mkdir -p "$mnt2"
sum1=$(sha256sum <"$mnt/bin/busybox")
assert_ok imgfs mount --ro "$LINK/test/big:1" "$mnt2"
defer "imgfs umount '$mnt2' 2>/dev/null"
link_settle
before=$(link_stat '[.request_list[] | select(.path | test("/blobs/"))] | length')
assert_eq "$(sha256sum <"$mnt2/bin/busybox")" "$sum1" "bin/busybox on the second mount"
link_settle
assert_eq "$(link_stat '[.request_list[] | select(.path | test("/blobs/"))] | length')" \
	"$before" "blob requests of the second mount for what the first fetched"
# ... nor inflates it again: the first mount's decoded pieces are in the store's cache.
sleep 0.6
assert_ok imgfs status "$mnt2"
assert_contains "$OUT" "decoded-units: 0" "status of the second mount"
echo "$OUT" | grep -Eq '^decoded-cache-hits: [1-9]' ||
	fail "the second mount read nothing from the decoded-data cache: $OUT"
assert_ok imgfs umount "$mnt2"

log "every file of the lazy view equals umoci unpack"
umoci unpack --image "$TESTDIR/images:big" "$TESTDIR/bundle" >/dev/null ||
	fail "umoci unpack failed"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the lazy view differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "the fill completes, verifies and records the image"
lazy_fill_checks "$LINK/test/big:1" "$mnt" "$manifest"
assert_ok umoci unpack --image "$IMGFS_ROOT:$LINK/test/big:1" "$TESTDIR/bundle2"

log "a daemon killed during the fill: the next mount goes on from what was verified"
use_store killed
start_linkproxy "$REGISTRY" --rate 20mbit --latency 1
export IMGFS_LAZY_FILL_DELAY_MS=0
assert_ok imgfs mount --ro "$LINK/test/big:1" "$mnt"
sleep 2
st=$(imgfs status "$mnt")
pid=$(sed -n 's/^daemon-pid: //p' <<<"$st")
kill -KILL "$pid"
sleep 0.2
assert_ok imgfs umount "$mnt"
export IMGFS_LAZY_FILL_DELAY_MS=600000
assert_ok imgfs mount --ro "$LINK/test/big:1" "$mnt"
st=$(imgfs status "$mnt")
present=$(sed -n 's/^lazy-bytes-present: //p' <<<"$st")
total=$(sed -n 's/^lazy-bytes-total: //p' <<<"$st")
[ "$present" -gt 1000000 ] && [ "$present" -lt "$total" ] ||
	fail "after the kill, $present of $total bytes were found again"
log "$present of $total bytes kept across the kill"
"$PYTHON" "$HELPERS/treecmp.py" "$TESTDIR/bundle/rootfs" "$mnt" ||
	fail "the view after the kill differs from umoci unpack"
assert_ok imgfs umount "$mnt"

log "an image without an index falls back to the whole pull, saying so"
use_store fallback
assert_ok imgfs mount --ro "$REGISTRY/test/ml:1" "$mnt"
assert_contains "$ERR" "pulling it whole" "the fallback line"
assert_eq "$(grep -c 'pulling it whole' <<<"$ERR")" 1 "lines saying so"
assert_ok imgfs status "$mnt"
assert_contains "$OUT" "lazy: no" "status of a whole pull"
assert_ok imgfs umount "$mnt"

log "a corrupt span gives EIO, never wrong bytes"
victim=$(cd "$TESTDIR/bundle/rootfs" && find big -type f | sort | tail -n 1)
lazy_corrupt_checks test/big:1 "$mnt" "$victim" "$TESTDIR/bundle/rootfs/$victim"

log "the registry gone: a read of what is not here fails within a bounded time, the rest reads"
proxy_rules '[{"match": "GET /v2/test/big/blobs/", "action": "status", "status": 503}]'
other=$(cd "$mnt" && find big -type f | sort | head -n 1)
start=$(date +%s)
if out=$(timeout 120 cat "$mnt/$other" 2>&1 >/dev/null); then
	fail "a read of unfetched data succeeded with the registry down"
fi
assert_contains "$out" "Input/output error" "the read with the registry down"
[ $(($(date +%s) - start)) -lt 60 ] || fail "the read took $(($(date +%s) - start)) s to fail"
cmp "$mnt/$victim" "$TESTDIR/bundle/rootfs/$victim" || fail "fetched data unreadable with the registry down"
proxy_rules '[]'
cmp "$mnt/$other" "$TESTDIR/bundle/rootfs/$other" || fail "$other differs once the registry is back"
assert_ok imgfs umount "$mnt"

log "imgfs run starts lazily"
lazy_run_checks "$REGISTRY/test/big:1" 'echo lazy run' "lazy run"
