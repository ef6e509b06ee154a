#!/bin/bash
# Registry faults, injected by a proxy: retried 5xx/429, a connection dropped mid-blob
# (resumed with Range), wrong blob bytes, Content-Length beyond the body with the
# connection held open, a body longer than its descriptor, a descriptor longer than its
# blob (416 past the end), an oversized manifest, unknown media types and a missing tag.
# Every failure is one clear line and leaves no blob or ref behind.
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

# Content-Length faults with the connection held open afterwards: each pull ends on its
# own, well within HANG_S (the registry's defaults: a 30 s timeout and 5 retries).
HANG_S=30
config=$(jq -r '.config.digest' "$manifest")
config_size=$(jq -r '.config.size' "$manifest")
# pull_bounded ARGS...: imgfs pull -q, killed (and reported as a hang) after HANG_S.
pull_bounded() {
	local rc=0
	timeout -k 5 "$HANG_S" "$IMGFS_BIN" pull -q "$@" || rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "imgfs pull hung: killed after $HANG_S s" >&2
		return 1
	fi
	return "$rc"
}
# blob_absent DIGEST: DIGEST is not in the store's blobs/ (a partial download may stay in
# tmp/ for the next pull to resume).
blob_absent() {
	assert_no_file "$IMGFS_ROOT/blobs/sha256/${1#sha256:}"
}

log "config: Content-Length 1000 bytes beyond the descriptor, connection held open"
use_store store-long-config
: >"$PROXY_LOG"
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/$config\", \"action\": \"long-content-length\"}]"
assert_fails_one_line "blobs/$config: $((config_size + 1000)) bytes announced" pull_bounded "$ref"
blob_absent "$config"
nothing_stored
assert_eq "$(grep -c "blobs/$config " "$PROXY_LOG")" 1 "config requests"

log "layer: Content-Length 1000 bytes beyond the descriptor, connection held open"
use_store store-long-layer
: >"$PROXY_LOG"
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"long-content-length\"}]"
assert_fails_one_line "blobs/$layer: $((layer_size + 1000)) bytes announced" pull_bounded "$ref"
blob_absent "$layer"
nothing_stored

log "layer: a body 1000 bytes longer than the descriptor, declared as such"
use_store store-extra-layer
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"extra-body\"}]"
assert_fails_one_line "blobs/$layer: $((layer_size + 1000)) bytes announced" pull_bounded "$ref"
blob_absent "$layer"
nothing_stored

log "manifest: Content-Length 1000 bytes beyond the body, connection held open"
# The manifest's bytes have the digest the registry announces: complete after one timeout.
use_store store-long-manifest
: >"$PROXY_LOG"
proxy_rules '[{"match": "GET /v2/test/big/manifests/", "action": "long-content-length"}]'
assert_ok pull_bounded --timeout 3 "$ref"
pulled_ok
assert_eq "$(grep -c 'manifests/latest ' "$PROXY_LOG")" 1 "manifest requests"

log "layer descriptor 1000 bytes larger than the blob: the 416 past its end is final"
use_store store-416
jq -c '.layers[-1].size += 1000' "$manifest" >"$TESTDIR/long-layer.json"
: >"$PROXY_LOG"
proxy_rules "[{\"match\": \"/v2/test/big/manifests/\", \"action\": \"body\", \"file\": \"$TESTDIR/long-layer.json\",
	\"content_type\": \"application/vnd.oci.image.manifest.v1+json\"}]"
assert_fails_one_line "blobs/$layer: 416 .*bytes=$layer_size-: the server has $layer_size bytes, $((layer_size + 1000)) expected" \
	pull_bounded "$ref"
blob_absent "$layer"
nothing_stored
assert_eq "$(grep -c "blobs/$layer range=bytes=$layer_size- .*status=416" "$PROXY_LOG")" 1 "416 answers"

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
