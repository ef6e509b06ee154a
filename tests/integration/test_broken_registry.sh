#!/bin/bash
# Broken registries, through the fault proxy: headers that never come, connections cut
# before the headers, inside them, inside a manifest and inside a blob, Content-Length
# shorter or longer than the body, a blob that never ends, redirect loops, and a redirect
# to another host that must not see the credentials. Every pull either completes or fails
# with one line naming the URL; none hangs (each runs under `timeout`), and the store is
# consistent after each. Token expiry and TLS errors are covered by test_pull_token.sh and
# test_pull_tls.sh.
. "$(dirname "$0")/lib.sh"
require_imgfs

make_htpasswd "$TESTDIR/htpasswd" alice secret
start_registry
anon_url=$REGISTRY_URL
build_image big big 2 2
push_image "$TESTDIR/images:big" test/big:latest
start_faultproxy "$REGISTRY_URL"
ref=$PROXY/test/big:latest
digest=$(oci_digest "$TESTDIR/images" big)
manifest=$TESTDIR/images/blobs/sha256/${digest#sha256:}
layer=$(jq -r '.layers[-1].digest' "$manifest")
layer_size=$(jq -r '.layers[-1].size' "$manifest")
manifest_url="http://$PROXY/v2/test/big/manifests/latest"
layer_url="http://$PROXY/v2/test/big/blobs/$layer"

# Short timeout and few, quick retries, so that each failure takes seconds.
FAST=(--timeout 1 --retry 2 --retry-delay 0.1)
HANG_S=30
# pull ARGS...: imgfs pull -q with FAST, killed (and reported as a hang) after HANG_S.
pull() {
	local rc=0
	timeout -k 5 "$HANG_S" "$IMGFS_BIN" pull -q "${FAST[@]}" "$@" || rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "imgfs pull hung: killed after $HANG_S s" >&2
		return 1
	fi
	return "$rc"
}
# store_clean: no ref, and whatever is stored is sound.
store_clean() {
	[ ! -f "$IMGFS_ROOT/index.json" ] || assert_eq "$(store_nrefs)" 0 "refs after a failed pull"
	[ ! -f "$IMGFS_ROOT/index.json" ] || check_store_consistent
}
# completes: with the faults gone, a pull into the same store completes.
completes() {
	proxy_rules '[]'
	assert_ok pull "$ref"
	assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
	check_store_consistent
}
# attempts PATTERN: requests in the proxy log matching PATTERN.
attempts() {
	grep -c -- "$1" "$PROXY_LOG" || true
}
# fault NAME RULES: a fresh store and log, and the proxy's new rules.
fault() {
	log "$1"
	use_store "store-$2"
	: >"$PROXY_LOG"
	proxy_rules "$3"
}

fault "manifest headers delayed past --timeout" delay-manifest \
	'[{"match": "GET /v2/test/big/manifests/", "action": "delay", "seconds": 20}]'
start=$(date +%s)
assert_fails_one_line "$manifest_url: .*(timed out|timeout)" pull "$ref"
assert_contains "$ERR" "after 3 attempts"
elapsed=$(($(date +%s) - start))
[ "$elapsed" -le 10 ] || fail "three 1 s timeouts took $elapsed s"
store_clean

fault "blob headers delayed past --timeout" delay-blob \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"delay\", \"seconds\": 20}]"
assert_fails_one_line "$layer_url: .*(timed out|timeout)" pull "$ref"
store_clean
completes

fault "blob body stalls after its headers" stall-blob \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"stall\", \"after\": 0}]"
assert_fails_one_line "$layer_url: .*(timed out|timeout)" pull "$ref"
store_clean
completes

fault "connection closed before the headers, every attempt" close \
	'[{"match": "GET /v2/test/big/manifests/", "action": "close"}]'
assert_fails_one_line "$manifest_url: .*after 3 attempts" pull "$ref"
assert_eq "$(attempts 'manifests/latest .*action=close')" 3 "manifest attempts"
store_clean
completes

# 12 bytes: inside the status line; 40: after Content-Length, before the blank line.
for after in 12 40; do
	fault "connection cut after $after bytes of the headers, every attempt" cut-headers-$after \
		"[{\"match\": \"GET /v2/test/big/manifests/\", \"action\": \"cut_headers\", \"after\": $after}]"
	assert_fails_one_line "$manifest_url: .*after 3 attempts" pull "$ref"
	assert_eq "$(attempts 'manifests/latest .*action=cut_headers')" 3 "manifest attempts"
	store_clean
	completes
done

fault "connection cut inside the manifest, every attempt" cut-manifest \
	'[{"match": "GET /v2/test/big/manifests/", "action": "cut", "after": 100}]'
assert_fails_one_line "$manifest_url: .*after 3 attempts" pull "$ref"
store_clean
completes

fault "connection cut at the start of a blob body, every attempt" cut-blob \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"cut\", \"after\": 0}]"
assert_fails_one_line "$layer_url: .*after 3 attempts" pull "$ref"
store_clean
completes

fault "connection cut every 300000 bytes of a blob: each attempt resumes" cut-blob-progress \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"cut\", \"after\": 300000}]"
assert_ok pull "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent
n=$(attempts "blobs/$layer range=bytes=[0-9]*- .*status=206")
[ "$n" -ge 3 ] || fail "expected at least 3 resumed requests for $layer, got $n"

fault "Content-Length 1000 bytes short, once: resumed" short-once \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"length\", \"delta\": -1000, \"times\": 1}]"
assert_ok pull "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent
assert_eq "$(attempts "blobs/$layer range=bytes=$((layer_size - 1000))- .*status=206")" 1 "resumed requests"

fault "Content-Length 1000 bytes short, always" short-always \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"length\", \"delta\": -1000}]"
assert_fails_one_line "$layer_url: .*$((layer_size - 1000)) of $layer_size" pull "$ref"
store_clean
completes

fault "Content-Length 1000 bytes longer than the blob" long-blob \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"length\", \"delta\": 1000}]"
assert_fails_one_line "$layer_url: .*$((layer_size + 1000)) bytes announced" pull "$ref"
store_clean
completes

# The bytes that did come have the digest the registry announces: the manifest is whole.
fault "Content-Length 1000 bytes longer than the manifest" long-manifest \
	'[{"match": "GET /v2/test/big/manifests/", "action": "length", "delta": 1000}]'
assert_ok pull "$ref"
assert_eq "$(store_ref_digest "$ref")" "$digest" "stored ref"
check_store_consistent
assert_eq "$(attempts 'manifests/latest ')" 1 "manifest requests"

fault "Content-Length 100 bytes short on the manifest" short-manifest \
	'[{"match": "GET /v2/test/big/manifests/", "action": "length", "delta": -100}]'
assert_fails_one_line "manifest" pull "$ref"
store_clean
completes

fault "a blob that never ends (no Content-Length)" endless-blob \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"endless\"}]"
assert_fails_one_line "$layer_url: .*longer than $layer_size bytes" pull "$ref"
sent=$(grep "blobs/$layer " "$PROXY_LOG" | awk '{ sub(/.*bytes=/, ""); n += $0 } END { print n + 0 }')
[ "$sent" -lt $((layer_size + (8 << 20))) ] || fail "read $sent bytes of an endless $layer_size-byte blob"
store_clean
completes

fault "a manifest that never ends" endless-manifest \
	'[{"match": "GET /v2/test/big/manifests/", "action": "endless"}]'
assert_fails_one_line "$manifest_url: .*longer than" pull "$ref"
store_clean
completes

fault "redirect loop on a blob" redirect-loop \
	"[{\"match\": \"GET /v2/test/big/blobs/$layer\", \"action\": \"redirect\", \"location\": \"http://$PROXY{path}\"}]"
assert_fails_one_line "$layer_url: .*redirects" pull "$ref"
n=$(attempts "blobs/$layer .*action=redirect")
[ "$n" -le 12 ] || fail "$n redirects followed"
store_clean
completes

fault "redirect loop on the manifest" redirect-loop-manifest \
	"[{\"match\": \"GET /v2/test/big/manifests/\", \"action\": \"redirect\", \"status\": 302, \"location\": \"http://$PROXY{path}\"}]"
assert_fails_one_line "$manifest_url: .*redirects" pull "$ref"
store_clean
completes

log "blobs redirected to another host: it gets no Authorization header"
# The registry behind proxy A wants Basic credentials; blob requests are redirected to
# proxy B (another address) in front of an anonymous registry holding the same image.
# B logs the auth scheme of each request it gets.
start_registry --htpasswd "$TESTDIR/htpasswd"
push_image "$TESTDIR/images:big" test/big:latest --creds alice:secret
start_faultproxy "$REGISTRY_URL"
port_b=$(free_port)
PROXY_B=127.0.0.2:$port_b
spawn faultproxy-b "$PYTHON" "$HELPERS/faultproxy.py" --listen "$PROXY_B" \
	--upstream "$anon_url" --rules /dev/null --log "$TESTDIR/proxy-b.log"
wait_http "http://$PROXY_B/v2/"
: >"$TESTDIR/proxy-b.log"
jq -n --arg r "$PROXY" --arg a "$(printf alice:secret | base64 -w0)" \
	'{auths: {($r): {auth: $a}}}' >"$DOCKER_CONFIG/config.json"
use_store store-redirect-auth
proxy_rules "[{\"match\": \"GET /v2/test/big/blobs/\", \"action\": \"redirect\", \"location\": \"http://$PROXY_B{path}\"}]"
assert_ok pull "$PROXY/test/big:latest"
check_store_consistent
grep -q 'manifests/latest .*auth=Basic .*status=200' "$PROXY_LOG" ||
	fail "the registry never got the credentials: $(cat "$PROXY_LOG")"
nb=$(grep -c 'GET /v2/test/big/blobs/' "$TESTDIR/proxy-b.log" || true)
[ "$nb" -ge 3 ] || fail "proxy B served $nb blobs: $(cat "$TESTDIR/proxy-b.log")"
if grep 'GET /v2/test/big/blobs/' "$TESTDIR/proxy-b.log" | grep -v ' auth=- '; then
	fail "the other host got an Authorization header"
fi
