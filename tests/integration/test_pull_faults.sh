#!/bin/bash
# Registry faults, injected by a proxy: retried 5xx/429, a connection dropped mid-blob
# (resumed with Range), wrong blob bytes, an oversized manifest, unknown media types and a
# missing tag. Every failure is one clear line and leaves no blob or ref behind.
. "$(dirname "$0")/lib.sh"
require_imgfs

start_registry
build_image big big 6 3
push_image "$TESTDIR/images:big" test/big:latest
start_faultproxy "$REGISTRY_URL"
ref=$PROXY/test/big:latest
digest=$(oci_digest "$TESTDIR/images" big)
manifest=$TESTDIR/images/blobs/sha256/${digest#sha256:}
layer=$(jq -r '.layers[-1].digest' "$manifest")
layer_size=$(jq -r '.layers[-1].size' "$manifest")
# pulled_ok: the ref is stored and every blob is sound.
pulled_ok() {
	assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
	check_store_consistent
}
# nothing_stored: no ref, and the store is consistent.
nothing_stored() {
	[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "refs after a failed pull"
	[ ! -f "$IMGFS_ROOT/index.json" ] || check_store_consistent
}

log "500 twice on the manifest, 429 with Retry-After and 503 on blobs: retried"
use_store store-retry
proxy_rules '[{"match": "GET /v2/test/big/manifests/", "action": "status", "status": 500, "times": 2},
	{"match": "GET /v2/test/big/blobs/", "action": "status", "status": 429, "retry_after": 1, "times": 1},
	{"match": "GET /v2/test/big/blobs/", "action": "status", "status": 503, "times": 1}]'
assert_ok imgfs pull -q "$ref"
pulled_ok
assert_eq "$(grep -c 'manifests/latest .*status=500' "$PROXY_LOG")" 2 "manifest requests answered 500"
grep -q 'blobs/.*status=429' "$PROXY_LOG" || fail "the 429 rule never fired"

log "connection dropped after 300000 bytes of a layer: resumed with Range"
use_store store-resume
: >"$PROXY_LOG"
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"cut\", \"after\": 300000, \"times\": 1}]"
assert_ok imgfs pull -q "$ref"
pulled_ok
grep -q "blobs/$layer range=bytes=300000- .*status=206" "$PROXY_LOG" ||
	fail "no 'Range: bytes=300000-' request for $layer: $(grep "$layer" "$PROXY_LOG")"
sent=$(grep "blobs/$layer " "$PROXY_LOG" | awk '{ sub(/.*bytes=/, ""); n += $0 } END { print n }')
assert_eq "$sent" "$layer_size" "bytes of $layer sent in total (a resume, not a restart)"

log "wrong bytes for a layer: digest mismatch"
use_store store-corrupt
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"corrupt\"}]"
assert_fails_one_line "${layer#sha256:}" imgfs pull -q "$ref"
assert_no_file "$IMGFS_ROOT/blobs/sha256/${layer#sha256:}"
[ -z "$(find "$IMGFS_ROOT" -name "*${layer#sha256:}*" 2>/dev/null)" ] ||
	fail "pieces of the corrupt blob left behind: $(find "$IMGFS_ROOT" -name "*${layer#sha256:}*")"
nothing_stored

log "manifest larger than 4 MiB"
use_store store-huge
"$PYTHON" - "$manifest" "$TESTDIR/huge.json" <<-'PY'
	import json, sys
	m = json.load(open(sys.argv[1]))
	m["annotations"] = {"padding": "x" * (5 << 20)}
	json.dump(m, open(sys.argv[2], "w"))
PY
proxy_rules "[{\"match\": \"/v2/test/big/manifests/\", \"action\": \"body\", \"file\": \"$TESTDIR/huge.json\",
	\"content_type\": \"application/vnd.oci.image.manifest.v1+json\"}]"
assert_fails_one_line 'manifest' imgfs pull -q "$ref"
grep -Eqi 'too (large|big)|exceeds|limit|size' <<<"$ERR" || fail "error does not say the manifest is too big: $ERR"
nothing_stored

log "manifest of an unknown media type"
use_store store-mediatype
jq -c '.mediaType = "application/vnd.example.unknown.v1+json"' "$manifest" >"$TESTDIR/odd-manifest.json"
proxy_rules "[{\"match\": \"/v2/test/big/manifests/\", \"action\": \"body\", \"file\": \"$TESTDIR/odd-manifest.json\",
	\"content_type\": \"application/vnd.example.unknown.v1+json\"}]"
assert_fails_one_line 'application/vnd.example.unknown.v1\+json' imgfs pull -q "$ref"
nothing_stored

log "layer of an unknown media type"
use_store store-layertype
jq -c '.layers[-1].mediaType = "application/vnd.example.unknown.layer.v1"' "$manifest" >"$TESTDIR/odd-layer.json"
proxy_rules "[{\"match\": \"/v2/test/big/manifests/\", \"action\": \"body\", \"file\": \"$TESTDIR/odd-layer.json\",
	\"content_type\": \"application/vnd.oci.image.manifest.v1+json\"}]"
assert_fails_one_line 'application/vnd.example.unknown.layer.v1' imgfs pull -q "$ref"
nothing_stored

log "missing tag"
use_store store-missing
proxy_rules '[]'
assert_fails_one_line 'nosuchtag' imgfs pull -q "$PROXY/test/big:nosuchtag"
grep -Eqi 'not found|unknown|no such|does not exist|404' <<<"$ERR" || fail "error does not say the tag is missing: $ERR"
nothing_stored

log "missing repository"
assert_fails_one_line 'test/nosuchrepo' imgfs pull -q "$PROXY/test/nosuchrepo:latest"
nothing_stored
